"""The training run: data order, steps, checkpoints, previews, rollbacks, resume and stop.

`Run` owns everything one `train` invocation does around `GANTrainer.step`:
it feeds batches in a seeded order that can be replayed from a checkpoint,
checkpoints on a step or minute schedule and on Ctrl-C/SIGTERM, rolls back to
the last good checkpoint when a loss goes NaN or inf, and writes logs and
previews from the main process only.
"""

from __future__ import annotations

import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from .checkpoint import BEST, FORMAT, LATEST, CheckpointError, load_checkpoint, save_atomic, save_checkpoint
from .config import ConfigError, TrainConfig, config_from_dict, save_config
from .data import load_dataset
from .distributed import DistInfo, any_flags, average_gradients, gather_objects
from .gan import GANTrainer
from .models import condition_size, sample_latents
from .monitor import Monitor

Callback = Callable[["Run"], None]


class TrainingDiverged(RuntimeError):
    """Losses stayed non-finite after the allowed number of rollbacks."""


def run_dir_for(cfg: TrainConfig) -> Path:
    """runs/<name>-<config hash>: runs with different settings never share a directory."""
    return Path(cfg.run.out_dir) / f"{cfg.run.name}-{cfg.hash()}"


class DataOrder:
    """Which dataset items each step reads: a seeded permutation per epoch, cut into global batches.

    The state is (epoch, position), so a checkpoint replays the exact order, and
    each process takes its slice of the global batch whatever the world size.
    """

    def __init__(self, n_items: int, global_batch: int, seed: int, dist: DistInfo):
        self.n, self.seed, self.dist = n_items, seed, dist
        self.set_batch(global_batch)
        self.epoch, self.position = 0, 0
        self._perm = self._permutation(0)

    def set_batch(self, global_batch: int) -> None:
        """The size of the global batches from the next one on (progressive growing changes it per stage)."""
        if self.n < global_batch:
            raise ConfigError(f"train.batch_size: {global_batch} is larger than the dataset ({self.n} segments)")
        if global_batch % self.dist.world:
            raise ConfigError(f"train.batch_size: {global_batch} does not split evenly over {self.dist.world} processes")
        self.batch = global_batch

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next(self) -> tuple[np.ndarray, int]:
        """This process's indices for the next global batch, and their epoch."""
        if self.position + self.batch > self.n:
            self.epoch, self.position = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        local = self.batch // self.dist.world
        start = self.position + self.dist.rank * local
        self.position += self.batch
        return self._perm[start : start + local], self.epoch

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation(self.epoch)


def _rng_state() -> dict[str, Any]:
    # Plain tensors and numbers only, so checkpoints load with weights_only=True.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class QualityHook(Protocol):
    """What the loop needs of an evaluator (evaluation/evaluate.py's `Evaluator` is one)."""

    best: dict[str, Any] | None  # {"metric", "value", "step"} of best.pt

    def __call__(self, generator: torch.nn.Module) -> dict[str, float]: ...

    def improved(self, scores: dict[str, float], step: int) -> bool: ...


EvaluatorFactory = Callable[[TrainConfig, torch.device, "Path | None"], QualityHook]


class Run:
    """One training run in `run_dir`, fresh or resumed from its latest checkpoint."""

    conditions: np.ndarray | None = None  # (N, C) labels of the training segments, for a conditioned model
    _batch_conditions: list[torch.Tensor] = []  # (B, C) each: the labels of the last `_batches()`

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        device: torch.device,
        dist: DistInfo = DistInfo(),
        resume: bool = False,
        evaluator: EvaluatorFactory | None = None,
    ):
        """`evaluator` scores the generator every train.eval_every steps and keeps best.pt
        (`ganstream.evaluation.Evaluator`, which the `train` command passes); without one a run
        trains with no quality evaluation. It is passed in because the evaluation package sits
        above training (it also scores bundles), so training may not import it."""
        self.cfg, self.run_dir, self.device, self.dist = cfg, run_dir, device, dist
        self._evaluator_factory = evaluator
        self.ckpt_dir = run_dir / "checkpoints"
        self.step = 0
        self.rollbacks = 0
        self.stop_requested = False
        self._last_ckpt_time = time.monotonic()
        self._last_ckpt_step = -1

        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.train.tf32
            torch.backends.cudnn.allow_tf32 = cfg.train.tf32
        _seed_all(cfg.run.seed * 1000 + dist.rank)

        # Before the data, so a bad eval setting fails before a long load.
        self.evaluator = self._make_evaluator(resume)
        self.data = self._load_data()
        self.order = DataOrder(len(self.data), self._first_batch_size(), cfg.run.seed, dist)
        self.trainer = self._make_trainer(average_gradients if dist.enabled else None)
        # The preview inputs are fixed for the whole run, so previews show progress, not luck.
        self.preview_inputs = self._make_preview_inputs()

        if resume:
            self._restore(load_checkpoint(run_dir / "checkpoints" / LATEST))
        self.monitor = Monitor(run_dir, cfg.data.sample_rate, dist.main, cfg.train.tensorboard, self.step if resume else None)
        if not resume:
            if dist.main:
                run_dir.mkdir(parents=True, exist_ok=True)
                save_config(cfg, run_dir / "config.yaml")
            self.checkpoint()  # step 0: the rollback target before the first scheduled checkpoint

    # ---- what a subclass for another task replaces (vocoder_train.py, spectral_train.py, progressive.py)

    def _make_trainer(self, grad_sync: Callable[[torch.nn.Module], None] | None) -> Any:
        return GANTrainer(self.cfg, self.device, grad_sync=grad_sync)

    def _make_preview_inputs(self) -> torch.Tensor:
        """(preview_count, latent_dim) latents, seeded by the run."""
        seeded = torch.Generator().manual_seed(self.cfg.run.seed + 12345)
        return sample_latents(self.cfg.model, self.cfg.train.preview_count, seeded).to(self.device)

    def _make_evaluator(self, resume: bool) -> QualityHook | None:
        # Only the main process evaluates; the others wait for it at the next collective.
        if not (self._evaluator_factory and self.dist.main and self.cfg.train.eval_every):
            return None
        return self._evaluator_factory(self.cfg, self.device, self.ckpt_dir / BEST if resume else None)

    def _batches_per_step(self) -> int:
        return self.cfg.loss.critic_steps

    def _first_batch_size(self) -> int:
        """The global batch size of step 1 (progressive growing sets one per stage)."""
        return self.cfg.train.batch_size

    def _slow_down(self) -> None:
        """After a rollback: halve the learning rates and undo the learning-rate kick."""
        self.trainer.lr_scale *= 0.5
        self.trainer.kick.kicks = 0
        self.trainer._set_lrs(1.0)

    def _progress(self, stats: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows after a step."""
        return {"d": f"{stats['loss_d']:.3f}", "g": f"{stats['loss_g']:.3f}"}

    def _load_data(self) -> Any:
        """The main process prepares the cache first; the others then read it instead of racing to write it.
        A conditioned model's labels are read here too (`self.conditions`, and `model.labels` in the config)."""
        load = lambda: load_dataset(self.cfg.data, self.cfg.model.segment, self.cfg.run.seed, "train", progress=self.dist.main and self.cfg.train.progress)  # noqa: E731
        if not self.dist.enabled:
            data = load()
        else:
            import torch.distributed as tdist

            data = load() if self.dist.main else None
            tdist.barrier()
            data = data if data is not None else load()
        self.conditions = self._label(data)
        return data

    def _label(self, data: Any) -> np.ndarray | None:
        """(N, C) condition columns of the training segments for a conditioned model (models/condition.py), else None.

        The labels' record goes into `model.labels`; a resumed run checks that the data still labels as it did."""
        m = self.cfg.model
        c = condition_size(m)
        if not c:
            return None
        from .data.labels import segment_conditions

        try:
            conditions, record = segment_conditions(data, c, track=m.track_pitch)
        except ValueError as e:
            raise ConfigError(f"model.condition {m.condition}: {e}") from None
        if m.labels is not None and m.labels.get("pitch_counts") != record["pitch_counts"]:
            raise ConfigError(f"model.condition {m.condition}: the data's pitch labels changed since the run began "
                              f"(now {record['summary']})")
        m.labels = record
        return conditions

    # ---- checkpoints -------------------------------------------------------------------------

    def checkpoint(self) -> None:
        rngs = gather_objects(_rng_state())  # collective: every process takes part
        if self.dist.main:
            state = {
                "config": self.cfg.to_dict(),
                "step": self.step,
                "trainer": self.trainer.state(),
                "loop": {"data": self.order.state(), "rollbacks": self.rollbacks, "world": self.dist.world},
                "rng": rngs,
            }
            save_checkpoint(self.ckpt_dir, state, self.cfg.train.keep_checkpoints)
        self._last_ckpt_time = time.monotonic()
        self._last_ckpt_step = self.step

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.trainer.load(state["trainer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{self.ckpt_dir / LATEST}: does not match the model of this config: {e}") from None
        self.step = int(state["step"])
        self.order.load(state["loop"]["data"])
        self.rollbacks = int(state["loop"]["rollbacks"])
        rngs = state["rng"]
        if len(rngs) == self.dist.world:
            _set_rng_state(rngs[self.dist.rank])
        else:
            # Another world size: the data order still resumes exactly; random streams are reseeded.
            _seed_all(self.cfg.run.seed * 1000 + self.dist.rank + 7919 * self.step)

    def _rollback(self, stats: dict[str, float]) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in stats.items() if not np.isfinite(v))
        if self.rollbacks >= self.cfg.train.max_rollbacks:
            raise TrainingDiverged(
                f"non-finite loss at step {self.step + 1} ({bad}) after {self.rollbacks} rollbacks; "
                f"the last good checkpoint is {self.ckpt_dir / LATEST}"
            )
        state = load_checkpoint(self.ckpt_dir / LATEST)
        rollbacks = self.rollbacks + 1
        self._restore(state)
        self.rollbacks = rollbacks
        self._slow_down()
        if self.dist.main:
            warnings.warn(
                f"non-finite loss ({bad}): rolled back to step {self.step} with learning rates halved "
                f"(x{self.trainer.lr_scale:g}); rollback {rollbacks} of at most {self.cfg.train.max_rollbacks}",
                stacklevel=2,
            )

    # ---- the loop ----------------------------------------------------------------------------

    def _batches(self) -> list[torch.Tensor]:
        out = []
        self._batch_conditions = []
        for _ in range(self._batches_per_step()):
            idx, epoch = self.order.next()
            out.append(torch.from_numpy(self.data.batch(idx, epoch)).unsqueeze(1).to(self.device, non_blocking=True))
            if self.conditions is not None:
                self._batch_conditions.append(torch.from_numpy(self.conditions[idx]).to(self.device))
        return out

    def _step(self) -> dict[str, float]:
        """One trainer step on the next batches (with their labels, for a conditioned model)."""
        batches = self._batches()
        if self.conditions is None:
            return self.trainer.step(batches)
        return self.trainer.step(batches, self._batch_conditions)

    @torch.no_grad()
    def generate_previews(self) -> np.ndarray:
        """(preview_count, segment) from the fixed preview latents, through the EMA generator."""
        g = self.trainer.export_generator
        g.eval()
        return g(self.preview_inputs)[:, 0].float().cpu().numpy()

    def write_previews(self) -> None:
        """Previews of this step in the run directory (audio and its spectrograms, by `Monitor`)."""
        self.monitor.previews(self.step, self.generate_previews())

    def evaluate(self) -> dict[str, float]:
        """Scores the EMA generator against held-out data; writes best.pt when train.best_metric improves."""
        scores = self.evaluator(self.trainer.export_generator)
        if not scores:
            return scores
        self.monitor.scalars(self.step, {f"eval/{k}": v for k, v in scores.items()})
        if self.evaluator.improved(scores, self.step):
            state = {"format": FORMAT, "config": self.cfg.to_dict(), "step": self.step, "trainer": self.trainer.state(), "best": self.evaluator.best}
            save_atomic(state, self.ckpt_dir / BEST)
        return scores

    def request_stop(self) -> None:
        """Asks the loop to checkpoint and return at the end of the current step (Ctrl-C, SIGTERM)."""
        self.stop_requested = True

    def train(self, callbacks: tuple[Callback, ...] = ()) -> Path:
        """Trains until train.steps or a stop request; returns the run directory."""
        cfg = self.cfg.train
        bar = None
        if self.dist.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True, file=sys.stderr)
        try:
            while self.step < cfg.steps:
                stats = self._step()
                (bad,) = any_flags([not GANTrainer.finite(stats)], self.device)
                if bad:
                    self._rollback(stats)
                    if bar is not None:
                        bar.n = self.step
                        bar.refresh()
                    continue
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(self._progress(stats), refresh=False)
                if self.step % cfg.log_every == 0 or self.step == 1:
                    self.monitor.scalars(self.step, stats)
                if self.evaluator is not None and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if self.step % cfg.preview_every == 0:
                    self.write_previews()
                    self.monitor.plot()
                for cb in callbacks:
                    cb(self)
                due = self.step % cfg.ckpt_every == 0 or time.monotonic() - self._last_ckpt_time > 60 * cfg.ckpt_minutes
                stop, due = any_flags([self.stop_requested, due], self.device)
                if due or stop:
                    self.checkpoint()
                if stop:
                    if self.dist.main:
                        print(f"\nstopped at step {self.step}; continue with: train --resume {self.run_dir}", file=sys.stderr)
                    break
            else:
                if self._last_ckpt_step != self.step:
                    self.checkpoint()
                self.write_previews()
        finally:
            if bar is not None:
                bar.close()
            self.monitor.plot()
            self.monitor.close()
        return self.run_dir


def install_stop_handlers(run: Run) -> None:
    """Ctrl-C or SIGTERM checkpoints at the end of the step; a second Ctrl-C stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if run.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        run.request_stop()
        print(f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint...", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def config_of_run(run_dir: Path) -> TrainConfig:
    """The config a run was trained with, as stored in its latest checkpoint."""
    state = load_checkpoint(run_dir / "checkpoints" / LATEST)
    return config_from_dict(state["config"], f"{run_dir / 'checkpoints' / LATEST}")
