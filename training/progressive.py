"""Progressive growing (Karras et al., 2018): the stage schedule, and the trainer and run that follow it.

The schedule (the config's `progressive` section) says, for every generator
step, which stage trains, the fade-in weight alpha of its newest block and the
batch size:

    stage 0:  stable_images[0]                       alpha 1
    stage s:  fade_images[s - 1], alpha 0 -> 1 linearly, then stable_images[s] at alpha 1
    last:     its fade-in, then alpha 1 until train.steps

Alpha is the fraction of the fade-in's images shown before the step, so a
fade-in starts at exactly 0 and ends just below 1. The schedule is a pure
function of the step, so a run resumed in the middle of a fade-in carries on
with the same alpha, stage and batch size.

`ProgressiveTrainer` runs the networks at the schedule's stage and alpha, shows
the critic real spectrograms average-pooled to the stage's size (blended with
their half-resolution version during a fade-in, as the paper does), and
starts both optimisers afresh whenever a stage begins, as the paper's code
does. `ProgressiveRun` sets the phase and the batch size before every step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .config import ConfigError, ProgressiveConfig, TrainConfig
from .gan import GANTrainer
from .spectral_train import SpectralRun

log = logging.getLogger("ganstream.training")


@dataclass(frozen=True)
class Phase:
    """What one generator step trains."""

    stage: int
    alpha: float  # weight of the stage's newest block; 1 outside fade-ins
    batch: int  # global batch size
    images: int  # real images the critic was shown before this step


def _per_stage(values: list[int], stage: int) -> int:
    return values[min(stage, len(values) - 1)]


class Schedule:
    """The stage, alpha and batch size of every generator step of a progressive run."""

    def __init__(self, prog: ProgressiveConfig, stages: int, default_batch: int, critic_steps: int):
        self.stages = stages
        self.critic_steps = critic_steps
        # (stage, fading, steps, batch) in order; the last stage's stable phase has no end (steps None).
        self.phases: list[tuple[int, bool, int | None, int]] = []
        for s in range(stages):
            batch = _per_stage(prog.batch_sizes, s) if prog.batch_sizes else default_batch
            per_step = batch * critic_steps
            if s > 0:
                self.phases.append((s, True, math.ceil(_per_stage(prog.fade_images, s - 1) / per_step), batch))
            stable = None if s == stages - 1 else math.ceil(_per_stage(prog.stable_images, s) / per_step)
            self.phases.append((s, False, stable, batch))
        self.fade_images = [_per_stage(prog.fade_images, s - 1) for s in range(stages)]

    def batch_sizes(self) -> list[int]:
        return [batch for _, fading, _, batch in self.phases if not fading]

    def phase(self, step: int) -> Phase:
        """The phase of generator step `step`, counted from 0."""
        start, images = 0, 0
        for stage, fading, steps, batch in self.phases:
            per_step = batch * self.critic_steps
            if steps is None or step < start + steps:
                done = step - start
                alpha = min(1.0, done * per_step / self.fade_images[stage]) if fading else 1.0
                return Phase(stage, alpha, batch, images + done * per_step)
            start += steps
            images += steps * per_step
        raise AssertionError("unreachable: the last phase has no end")

    def describe(self) -> str:
        """One line per phase: where it starts, in steps and images."""
        lines, start, images = [], 0, 0
        for stage, fading, steps, batch in self.phases:
            what = "fade-in" if fading else "stable "
            span = f"{steps} steps" if steps is not None else "until train.steps"
            lines.append(f"  stage {stage} {what} from step {start:>8} ({images:>10} images): batch {batch}, {span}")
            if steps is not None:
                start += steps
                images += steps * batch * self.critic_steps
        return "\n".join(lines)


class ProgressiveTrainer(GANTrainer):
    """`GANTrainer` for networks that grow: they run at `stage` with fade-in weight `alpha`."""

    def __init__(self, cfg: TrainConfig, device: torch.device, grad_sync: Any = None):
        super().__init__(cfg, device, grad_sync)
        self.stages = cfg.model.stages
        self.stage = -1  # no stage yet: the first phase starts one and its optimisers
        self.alpha = 1.0

    def set_phase(self, phase: Phase) -> None:
        if phase.stage != self.stage:
            # New layers join at every stage; the paper's code resets Adam's moments then.
            self.new_optimisers()
            self.stage = phase.stage
        self.alpha = phase.alpha

    def generate(self, z: Tensor) -> Tensor:
        return self.generator(z, self.stage, self.alpha)

    def score(self, x: Tensor) -> Tensor:
        return self.critic(x, self.stage, self.alpha)

    def real_input(self, real: Tensor) -> Tensor:
        """(B, 1, bins, frames) -> (B, 1, *resolution(stage)): average-pooled, and during a fade-in
        blended with its own half-resolution version, as the generator's output is."""
        return downsample(real, self.stages - 1 - self.stage, self.alpha)

    def step(self, real_batches: list[Tensor]) -> dict[str, float]:
        stats = super().step(real_batches)
        stats["stage"], stats["alpha"] = float(self.stage), self.alpha
        return stats

    def state(self) -> dict[str, Any]:
        return {**super().state(), "stage": self.stage, "alpha": self.alpha}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.stage, self.alpha = int(state["stage"]), float(state["alpha"])


def downsample(x: Tensor, halvings: int, alpha: float = 1.0) -> Tensor:
    """(B, C, H, W) -> (B, C, H / 2^halvings, W / 2^halvings) by average pooling; with alpha < 1 the result
    is blended with its own 2x-pooled, nearest-upsampled version: lerp(coarse, x, alpha)."""
    if halvings:
        x = F.avg_pool2d(x, 2**halvings)
    if alpha < 1.0:
        x = torch.lerp(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, alpha)
    return x


class ProgressiveRun(SpectralRun):
    """`loop.Run` for model.kind progan: the phase and batch size of every step come from the schedule."""

    @cached_property
    def schedule(self) -> Schedule:
        c = self.cfg
        return Schedule(c.progressive, c.model.stages, c.train.batch_size, c.loss.critic_steps)

    def _first_batch_size(self) -> int:
        c = self.cfg
        for batch in self.schedule.batch_sizes():
            if batch > len(self.data) or batch % self.dist.world:
                raise ConfigError(f"progressive.batch_sizes: {batch} must be at most the dataset's {len(self.data)} segments and split over {self.dist.world} processes")
        if self.dist.main:
            first, last = c.model.resolution(0), c.model.resolution(c.model.stages - 1)
            log.info("progressive schedule, %d stages from %s to %s:\n%s", c.model.stages, first, last, self.schedule.describe())
        return self.schedule.phase(0).batch

    def _make_trainer(self, grad_sync: Any) -> ProgressiveTrainer:
        return self._with_norm(ProgressiveTrainer(self.cfg, self.device, grad_sync))

    def _make_evaluator(self, resume: bool) -> None:
        if self.cfg.train.eval_every:
            raise ConfigError(
                "train.eval_every: the progressive GAN's early stages make smaller spectrograms than its front end, "
                "which the evaluation's phase reconstruction needs; set train.eval_every=0"
            )
        return None

    def _batches(self) -> list[Tensor]:
        phase = self.schedule.phase(self.step)
        self.order.set_batch(phase.batch)
        self.trainer.set_phase(phase)
        return super()._batches()

    @torch.no_grad()
    def spectrograms(self, z: Tensor) -> np.ndarray:
        """(N, bins, frames): the EMA generator at the current stage and alpha, nearest-upsampled to full size."""
        g = self.trainer.export_generator.eval()
        stage = max(self.trainer.stage, 0)
        x = g(z, stage, self.trainer.alpha)
        return F.interpolate(x, scale_factor=2 ** (self.trainer.stages - 1 - stage), mode="nearest")[:, 0].float().cpu().numpy()
