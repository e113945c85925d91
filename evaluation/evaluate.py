"""Scoring generated audio against real data, while training and after it (`ganstream eval`).

    real = load_real(cfg.data, segment, seed)             # real clips, chosen once per run
    ref = Reference.build(real, sample_rate, classifier)  # their features, computed once
    scores = ref.score(audio)                             # {"fd_logmel": ..., "ndb": ..., ...}

The real clips play three parts, always drawn the same way for a given data
source and seed, so the numbers of a training run and of `ganstream eval`
agree:

- `heldout`: the holdout split, which the generator never saw. Frechet
  distances and the loudness and flatness distributions compare with it.
  When the data is not the run's own (`ganstream eval RUN OTHER`, e.g. a set's
  held-out folder of other voices or kits), every clip of it is held out, and
  `train` and `spare` come from the run's own training split: the floor is then
  the training data scored against the unseen data, the most a generator that
  learned its training set perfectly could reach.
- `train`: half of the training clips (at most 1024 segments). NDB fits its
  bins on them (as Richardson & Weiss do, on training data) and the
  memorisation check looks for generated clips that sit on top of one of them.
  A copy of a clip from the other half goes unseen, so `mem_copies` can
  undercount copying by up to half; copying at any scale still shows.
- `spare`: the other half of the training clips: real clips scored exactly like
  generated ones, the floor of `ganstream eval`'s table.

`Evaluator` is the training loop's hook and `main` the `ganstream eval` command.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from ganstream.training.checkpoint import CheckpointError, load_checkpoint, load_generator, resolve_checkpoint
from .classifier import Classifier, ClassifierError, load_classifier
from ganstream.training.config import ConfigError, DataConfig, TrainConfig
from ganstream.training.data import AudioSegments, DataError, load_dataset
from .metrics import (
    METRICS,
    NDBBins,
    clip_features,
    frame_features,
    frechet_gaussians,
    gaussian_stats,
    inception_score,
    log_mel,
    loudness_db,
    memorisation_scores,
    nearest_distances,
    spectral_flatness,
    spectrogram_features,
    wasserstein_1d,
)
from ganstream.training.models import OutputKind, family_of, sample_latents
from ganstream.training.spectral_train import griffin_lim_audio

MAX_HELDOUT = 1000  # held-out segments compared with
MAX_TRAIN = 1024  # training segments NDB bins and the memorisation check searches
NDB_BINS = 50
LATENT_SEED = 0x5EED  # added to run.seed: the evaluation latents, never the preview ones
EVAL_GL_ITERS = 32  # fast Griffin-Lim iterations that make a spectrogram GAN's output audible to score it


# ---- the real clips -----------------------------------------------------------------------


@dataclass
class RealSets:
    """Real clips in their three parts (see the module docstring)."""

    heldout: np.ndarray  # (R, T)
    train: np.ndarray  # (M, T)
    spare_source: AudioSegments
    spare_index: np.ndarray  # segments of spare_source not in `train`
    note: str  # how the parts were chosen, for reports

    def spare(self, n: int) -> np.ndarray:
        """(min(n, available), T) real clips from the spare half, the same ones on every call."""
        rng = np.random.default_rng(0x5FA2E)
        pick = self.spare_index if len(self.spare_index) <= n else np.sort(rng.choice(self.spare_index, n, replace=False))
        return self.spare_source.batch(pick, 0)


def _segments_of(segs: AudioSegments, clips: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(segs.clips, clips))


def _split_clips(segs: AudioSegments, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Segment indices of `parts` disjoint groups of whole clips (contiguous runs of segments when
    there are too few clips, e.g. one long recording: neighbours may then overlap by one hop)."""
    clips = np.unique(segs.clips)
    if len(clips) >= parts:
        return [_segments_of(segs, group) for group in np.array_split(rng.permutation(clips), parts)]
    return np.array_split(np.arange(len(segs)), parts)


def _subset(index: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return index if len(index) <= limit else np.sort(rng.choice(index, limit, replace=False))


def load_real(data: DataConfig, segment: int, seed: int, train_data: DataConfig | None = None, against_train: bool = False) -> RealSets:
    """The real clips of a data source, split as a run with `seed` splits them (epoch-0 offsets).

    With `train_data` (the run's own data, when `data` is another source), every clip of `data` is
    held out, and the training parts come from train_data's training split. With `against_train`
    (train.eval_against=train), a third of the training clips stands in for the held-out part."""
    if train_data is not None:
        return _load_real_apart(data, segment, seed, train_data)
    train = load_dataset(data, segment, seed, "train", progress=False)
    held = load_dataset(data, segment, seed, "holdout", progress=False)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xE7A1])
    if len(held) >= 2 and not against_train:
        ref_idx, spare_idx = _split_clips(train, 2, rng)
        held_src, held_idx = held, np.arange(len(held))
        note = f"{data.source}: held-out split ({held.clip_count} clips)"
    else:
        if against_train:
            note = f"{data.source}: a third of the training clips (train.eval_against=train)"
        else:
            warnings.warn(
                f"{data.source} has {len(held)} held-out segments (data.holdout={data.holdout}): evaluating against a "
                "third of the training clips instead, which flatters a generator that memorises",
                stacklevel=2,
            )
            note = f"{data.source}: too small a holdout, a third of the training clips stand in for it"
        ref_idx, spare_idx, held_idx = _split_clips(train, 3, rng)
        held_src = train
    if len(ref_idx) < 2 or len(held_idx) < 2:
        raise DataError(f"{data.source}: too few clips to evaluate with ({len(train)} training and {len(held)} held-out segments)")
    held_idx = _subset(held_idx, MAX_HELDOUT, rng)
    ref_idx = _subset(ref_idx, MAX_TRAIN, rng)
    return RealSets(held_src.batch(held_idx, 0), train.batch(ref_idx, 0), train, spare_idx, note)


def _load_real_apart(data: DataConfig, segment: int, seed: int, train_data: DataConfig) -> RealSets:
    parts = [load_dataset(data, segment, seed, split, progress=False) for split in ("train", "holdout")]
    train = load_dataset(train_data, segment, seed, "train", progress=False)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xE7A1])
    ref_idx, spare_idx = _split_clips(train, 2, rng)
    count = sum(len(p) for p in parts)
    if count < 2 or len(ref_idx) < 2:
        raise DataError(f"{data.source}: too few clips to evaluate with ({count} held-out and {len(train)} training segments of {train_data.source})")
    take = _subset(np.arange(count), MAX_HELDOUT, rng)
    held = np.concatenate([p.batch(take[(take >= lo) & (take < lo + len(p))] - lo, 0)
                           for p, lo in zip(parts, np.cumsum([0, len(parts[0])])) if len(p)])
    clips = sum(p.clip_count for p in parts)
    note = f"{data.source}: all of it held out ({clips} clips); {train_data.source}'s training split for NDB, memorisation and the floor"
    return RealSets(held, train.batch(_subset(ref_idx, MAX_TRAIN, rng), 0), train, spare_idx, note)


# ---- the reference features and scoring -------------------------------------------------


@dataclass
class Reference:
    """What generated clips are compared with, computed once from `RealSets`."""

    sample_rate: int
    frames: tuple[np.ndarray, np.ndarray]  # Gaussian of held-out log-mel frames
    loudness: np.ndarray  # (R,) dBFS of held-out clips
    flatness: np.ndarray  # (R,)
    bins: NDBBins  # on the training half's clip features
    train_spec: np.ndarray  # (M, D) float32 spectrogram features of the training half
    heldout_nn: np.ndarray  # (R,) distance of every held-out clip to its nearest training-half clip
    classifier: Classifier | None = None
    embeddings: tuple[np.ndarray, np.ndarray] | None = None  # Gaussian of held-out classifier embeddings

    @classmethod
    def build(cls, real: RealSets, sample_rate: int, classifier: Classifier | None = None) -> Reference:
        held, train = log_mel(real.heldout, sample_rate), log_mel(real.train, sample_rate)
        train_spec = spectrogram_features(train)
        embeddings = None
        if classifier is not None:
            if classifier.cfg.sample_rate != sample_rate:
                raise ClassifierError(f"the classifier was trained at {classifier.cfg.sample_rate} Hz; this audio is at {sample_rate} Hz")
            embeddings = gaussian_stats(classifier.predict(real.heldout)[1])
        return cls(
            sample_rate=sample_rate,
            frames=gaussian_stats(frame_features(held)),
            loudness=loudness_db(real.heldout),
            flatness=spectral_flatness(real.heldout),
            bins=NDBBins.fit(clip_features(train), NDB_BINS, seed=0),
            train_spec=train_spec,
            heldout_nn=nearest_distances(spectrogram_features(held), train_spec),
            classifier=classifier,
            embeddings=embeddings,
        )

    def score(self, audio: np.ndarray) -> dict[str, float]:
        """(N, T) clips at sample_rate -> every metric of metrics.METRICS that applies (the classifier's need one)."""
        audio = np.asarray(audio, dtype=np.float32)
        lm = log_mel(audio, self.sample_rate)
        out = {"fd_logmel": frechet_gaussians(*gaussian_stats(frame_features(lm)), *self.frames)}
        if self.classifier is not None and self.embeddings is not None:
            probs, emb = self.classifier.predict(audio)
            out["fd_classifier"] = frechet_gaussians(*gaussian_stats(emb), *self.embeddings)
            out["is"], out["is_std"] = inception_score(probs, splits=10)
        out["ndb"] = self.bins.score(clip_features(lm))
        out.update(memorisation_scores(nearest_distances(spectrogram_features(lm), self.train_spec), self.heldout_nn))
        loud, flat = loudness_db(audio), spectral_flatness(audio)
        with warnings.catch_warnings():  # all-silent sets have no flatness: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            out |= {
                "loudness_w1": wasserstein_1d(loud, self.loudness),
                "loudness_mean": float(np.mean(loud)),
                "flatness_w1": wasserstein_1d(flat, self.flatness),
                "flatness_mean": float(np.nanmean(flat)),
            }
        return out


def shaped_noise(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, T) white noise filtered to the mean magnitude spectrum of `real` (R, T), each clip at the
    RMS level of a random real clip: right spectrum and loudness, no structure. The ceiling."""
    t = real.shape[1]
    mag = np.zeros(t // 2 + 1)
    for i in range(0, len(real), 128):
        mag += np.abs(np.fft.rfft(real[i : i + 128], axis=1)).sum(0)
    mag /= len(real)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal((n, t)), axis=1) * mag, n=t, axis=1)
    rms = lambda x: np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True))  # noqa: E731
    noise *= rms(real[rng.integers(len(real), size=n)]) / np.maximum(rms(noise), 1e-12)
    return np.clip(noise, -1, 1).astype(np.float32)


# ---- during training ------------------------------------------------------------------------


def eval_latents(cfg: TrainConfig, n: int) -> torch.Tensor:
    """The fixed latents every evaluation of a run (and `ganstream eval` of it) generates from."""
    return sample_latents(cfg.model, n, torch.Generator().manual_seed(cfg.run.seed + LATENT_SEED))


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, model: Any, batch: int = 64) -> np.ndarray:
    """(N, latent_dim) -> (N, segment) float32 numpy audio, in eval mode. `model` is the run's model
    config: a spectrogram family's (N, bins, frames) output becomes audio by fast Griffin-Lim, so its
    scores include the phase reconstruction's artefacts."""
    generator.eval()
    out = np.concatenate([generator(z[i : i + batch])[:, 0].float().cpu().numpy() for i in range(0, len(z), batch)])
    if family_of(model).output is OutputKind.SPECTRAL:
        return griffin_lim_audio(out, model.spectral(), generator.norm(), iters=EVAL_GL_ITERS)
    return out


def check_best_metric(name: str, classifier: str) -> None:
    """Refuses a train.best_metric that is not a quality metric, or that needs a classifier the run lacks."""
    selectable = sorted(n for n, m in METRICS.items() if m.selectable)
    if name not in selectable:
        raise ConfigError(f"train.best_metric: unknown or not a quality metric {name!r} (known: {', '.join(selectable)})")
    if METRICS[name].needs_classifier and not classifier:
        raise ConfigError(f"train.best_metric: {name} needs a classifier (train.classifier=PATH, from `ganstream train-classifier`)")


class Evaluator:
    """Scores a run's generator every train.eval_every steps and decides when best.pt is replaced.

    It draws nothing from the global RNGs a checkpoint restores (its latents have
    their own torch.Generator, k-means its own numpy Generator, the classifier is
    built under fork_rng), so evaluating never changes what is trained. The real
    clips and their features are prepared at the first evaluation.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, best_path: Path | None = None):
        check_best_metric(cfg.train.best_metric, cfg.train.classifier)
        if cfg.train.classifier and not Path(cfg.train.classifier).expanduser().is_file():
            raise ConfigError(f"train.classifier: no such file {cfg.train.classifier} (make one with `ganstream train-classifier DATA`)")
        self.cfg = cfg
        self.metric = cfg.train.best_metric
        self.latents = eval_latents(cfg, cfg.train.eval_samples).to(device)
        self._reference: Reference | None = None
        self.unusable = False
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"} of best.pt
        if best_path is not None and best_path.is_file():
            record = load_checkpoint(best_path).get("best")
            if record and record["metric"] == self.metric:
                self.best = dict(record)

    @property
    def reference(self) -> Reference:
        if self._reference is None:
            c = self.cfg
            classifier = load_classifier(c.train.classifier) if c.train.classifier else None
            real = load_real(c.data, c.model.segment, c.run.seed, against_train=c.train.eval_against == "train")
            self._reference = Reference.build(real, c.data.sample_rate, classifier)
        return self._reference

    def __call__(self, generator: nn.Module) -> dict[str, float]:
        """The scores, or {} when the data cannot be evaluated against (warned once; training goes on)."""
        if self.unusable:
            return {}
        try:
            reference = self.reference
        except (ClassifierError, DataError) as e:
            self.unusable = True
            warnings.warn(f"evaluation is off for this run: {e}", stacklevel=2)
            return {}
        return reference.score(generate(generator, self.latents, self.cfg.model))

    def improved(self, scores: dict[str, float], step: int) -> bool:
        """Whether `scores` beat best.pt's; if so they become the best (the caller writes best.pt)."""
        value = scores[self.metric]
        if not math.isfinite(value):
            return False
        if self.best is not None:
            old = self.best["value"]
            better = value > old if METRICS[self.metric].higher_is_better else value < old
            if not better:
                return False
        self.best = {"metric": self.metric, "value": float(value), "step": int(step)}
        return True


# ---- the `ganstream eval` command -------------------------------------------------------------


class Source(NamedTuple):
    """What `ganstream eval` scores: a run's checkpoint or a bundle."""

    description: str
    sample_rate: int
    segment: int
    data: DataConfig  # the run's data settings (or the defaults, for a bundle) with source=DATA
    train_data: DataConfig | None  # the data it was trained on, when DATA is another source: DATA is then all held out
    seed: int  # the split seed
    classifier: str  # the run's train.classifier
    generate: Callable[[int], np.ndarray]  # n -> (n, segment)
    default_samples: int


def open_run(run_dir: Path, which: str, data: str, device: str) -> Source:
    from ganstream.training.distributed import pick_device

    path = resolve_checkpoint(run_dir, which)
    generator, cfg, state = load_generator(path)
    dev = pick_device(device)
    generator.to(dev)
    weights = "EMA" if state["trainer"].get("ema") is not None else "raw"
    best = f", best {state['best']['metric']} {state['best']['value']:.4g}" if "best" in state else ""
    return Source(
        f"{path} (step {state['step']}, {weights} weights{best})",
        cfg.data.sample_rate,
        cfg.model.segment,
        replace(cfg.data, source=data),
        None if data == cfg.data.source else cfg.data,
        cfg.run.seed,
        cfg.train.classifier,
        lambda n: generate(generator, eval_latents(cfg, n).to(dev), cfg.model),
        cfg.train.eval_samples,
    )


def _resolve_source(arg: str) -> Path:
    """An existing path (a run or a bundle), else a shipped bundle's directory by name
    (`ganstream eval piano set:piano/heldout`): the players' `resolve_bundle`, its error a ConfigError."""
    from ganstream.realtime.bundle import BundleError, resolve_bundle

    try:
        return resolve_bundle(arg)
    except BundleError as e:
        raise ConfigError(f"{arg}: neither a run directory nor a bundle ({e.problem})") from None


def open_bundle(path: Path, data: str) -> Source:
    from ganstream.realtime.bundle import BundleError, load_bundle
    from ganstream.realtime.inference import Generator, ProviderError

    try:
        bundle = load_bundle(path)
        if bundle.kind != "waveform":
            raise ConfigError(f"{path}: a {bundle.kind!r} bundle; eval scores waveform bundles")
        runner = Generator(bundle)
    except (BundleError, ProviderError) as e:
        raise ConfigError(str(e)) from None
    prov = bundle.provenance
    made = f", from {prov.get('run_name', '?')} step {prov.get('step', '?')}" if prov else ""
    return Source(
        f"bundle {path} ({bundle.name}{made})",
        bundle.sample_rate,
        bundle.segment,
        DataConfig(source=data, sample_rate=bundle.sample_rate),
        None,
        0,
        "",
        lambda n: np.concatenate([runner.generate(z) for z in np.array_split(bundle.random_rows(n, np.random.default_rng(LATENT_SEED)), -(-n // 64))]),
        256,
    )


COLUMNS = ("generated", "floor", "ceiling")


def evaluate_source(src: Source, samples: int, classifier: Classifier | None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Scores the source's clips, real clips (floor) and shaped noise (ceiling) against the same reference."""
    log(f"reading {src.data.source} at {src.sample_rate} Hz in segments of {src.segment} ...")
    real = load_real(src.data, src.segment, src.seed, src.train_data)
    reference = Reference.build(real, src.sample_rate, classifier)
    floor = real.spare(samples)
    log(f"generating {samples} clips ...")
    sets = {
        "generated": src.generate(samples),
        "floor": floor,
        "ceiling": shaped_noise(real.heldout, samples, np.random.default_rng(0xCE11)),
    }
    scores = {name: reference.score(audio) for name, audio in sets.items()}
    return {
        "generated": src.description,
        "data": {
            "source": src.data.source,
            "sample_rate": src.sample_rate,
            "segment": src.segment,
            "split": real.note,
            "heldout_clips": len(real.heldout),
            "train_reference_clips": len(real.train),
            "floor_clips": len(floor),
        },
        "samples": samples,
        "classifier": None if classifier is None else {"classes": classifier.classes, **classifier.info},
        "metrics": {
            name: {**{col: _finite(scores[col][name]) for col in COLUMNS},
                   "better": METRICS[name].better, "help": METRICS[name].help}
            for name in scores["generated"]
        },
    }


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def format_table(report: dict[str, Any]) -> str:
    d = report["data"]
    lines = [
        f"generated: {report['generated']}, {report['samples']} clips",
        f"data:      {d['split']}; {d['heldout_clips']} held-out clips, {d['train_reference_clips']} training clips as reference",
        f"floor:     {d['floor_clips']} other real clips (real vs real);  ceiling: noise shaped to the data's spectrum and loudness",
        "",
        f"{'metric':<15}{'generated':>11}{'floor':>11}{'ceiling':>11}   better  what it measures",
    ]
    cell = lambda v: f"{'n/a':>11}" if v is None else f"{v:>11.4g}"  # noqa: E731
    for name, row in report["metrics"].items():
        lines.append(f"{name:<15}{cell(row['generated'])}{cell(row['floor'])}{cell(row['ceiling'])}   {row['better']:<7} {row['help']}")
    if report["classifier"] is None:
        lines += ["", "no classifier: fd_classifier and is need one (ganstream train-classifier DATA, then --classifier PATH)"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganstream eval",
        description="Score a run's generator (or a bundle's) against real audio, beside real audio itself "
        "(the floor) and noise shaped to the data's spectrum (the ceiling).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="metrics:\n" + "\n".join(f"  {k:<14} {m.help}" for k, m in METRICS.items()),
    )
    p.add_argument("source", metavar="RUN_DIR|BUNDLE", help="a training run directory, or a bundle (a directory or .zip with manifest.json)")
    p.add_argument("data", metavar="DATA", help="a folder of audio or synth:NAME, read at the generator's sample rate and segment")
    p.add_argument("--checkpoint", default="latest", help="latest, best or a checkpoint file (runs only; default: %(default)s)")
    p.add_argument("--samples", type=int, help="clips per column (default: the run's train.eval_samples, so it matches the training logs; 256 for bundles)")
    p.add_argument("--classifier", help="a classifier from `ganstream train-classifier` (default: the run's train.classifier)")
    p.add_argument("--json", metavar="OUT", help="also write the table as JSON")
    p.add_argument("--train-data", metavar="SOURCE", help="the data the generator was trained on (default: a run's own data.source): "
                   "when DATA is another source, all of DATA is held out, and SOURCE's training split gives the floor, "
                   "NDB's bins and the memorisation check; for a bundle, without it DATA is split as a run would split it")
    p.add_argument("--seed", type=int, help="the data split seed (default: the run's run.seed; 0 for bundles)")
    p.add_argument("--cache-dir", help="where decoded audio is cached (default: the run's data.cache_dir)")
    p.add_argument("--device", default="cpu", help="where a run's generator runs: cpu, cuda, auto (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        path = _resolve_source(args.source)
        is_bundle = (path / "manifest.json").is_file() or path.suffix == ".zip"
        if is_bundle:
            src = open_bundle(path, args.data)
        elif path.is_dir():
            src = open_run(path, args.checkpoint, args.data, args.device)
        else:
            raise ConfigError(f"{path}: neither a run directory nor a bundle")
        if args.train_data is not None:
            apart = args.train_data != src.data.source  # the same source: DATA is split as a run splits it
            src = src._replace(train_data=replace(src.train_data or src.data, source=args.train_data) if apart else None)
        if args.seed is not None:
            src = src._replace(seed=args.seed)
        if args.cache_dir is not None:
            src = src._replace(data=replace(src.data, cache_dir=args.cache_dir),
                               train_data=src.train_data and replace(src.train_data, cache_dir=args.cache_dir))
        samples = args.samples or src.default_samples
        if samples < 2:
            raise ConfigError(f"--samples: at least 2, not {samples}")
        clf_path = args.classifier or src.classifier
        classifier = load_classifier(clf_path) if clf_path else None
        report = evaluate_source(src, samples, classifier, log)
    except (CheckpointError, ClassifierError, ConfigError, DataError) as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
