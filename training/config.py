"""Typed training configuration: dataclasses, YAML loading and `section.key=value` overrides.

A run's whole configuration is one `TrainConfig`. It is written into the run
directory before step 1 and stored in every checkpoint, so a run can always be
rebuilt from what it wrote. Unknown keys and badly typed values are errors that
name the field; nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .models import FAMILIES, OutputKind, UnknownModelKind, family
from .models.critics import CRITICS


class ConfigError(ValueError):
    """A configuration problem, with the offending field or file in the message."""


@dataclass
class RunConfig:
    name: str = "run"  # the run directory is NAME-<config hash>
    out_dir: str = "runs"
    seed: int = 0


@dataclass
class DataConfig:
    source: str = "synth:piano"  # a folder of audio (searched recursively), or synth:piano / synth:gaussian
    sample_rate: int = 16000  # audio is resampled to this rate
    hop: float = 0.5  # distance between segment starts, as a fraction of the segment length
    random_offset: bool = True  # shift every segment by a fresh random offset (< hop) each epoch
    silence_db: float = -60.0  # segments whose RMS is below this (dBFS) are dropped; a padded clip is measured over its own samples, so padding never makes a quiet one-shot silent
    pad_short: bool = True  # clips shorter than one segment are zero-padded at the end (as WaveGAN does) and give one segment each, starting at the onset; false: they are skipped
    trim_leading: bool = True  # cut each clip's leading silence to 5 ms before its onset, so the attack stays whole and one-shots line up; a long recording loses only its lead-in
    trim_db: float = -50.0  # the onset is the first sample within this many dB of the clip's peak (relative, so quiet recordings trim alike); also what min_ms counts as sound
    min_ms: float = 20.0  # clips whose sound (first to last sample within trim_db of the peak) lasts less are skipped: a click, not a sound; 0 keeps all
    normalize: bool = True  # peak-normalise each segment to 1
    holdout: float = 0.05  # fraction of clips (files or synth items) kept out of training, for evaluation
    synth_items: int = 2048  # how many items a synth:* set holds
    cache_dir: str = ""  # where decoded audio is cached; empty: ~/.cache/ganstream

    def validate(self) -> None:
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate: at least 1000 Hz, not {self.sample_rate}")
        if not 0.0 < self.hop <= 1.0:
            raise ValueError(f"hop: a fraction of the segment in (0, 1], not {self.hop}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout: a fraction in [0, 1), not {self.holdout}")
        if not self.trim_db < 0.0:
            raise ValueError(f"trim_db: below the peak, so negative dB, not {self.trim_db}")
        if not self.min_ms >= 0.0:
            raise ValueError(f"min_ms: 0 (keep all) or more, not {self.min_ms}")


@dataclass
class LossConfig:
    kind: str = "wgan-gp"  # wgan-gp | bce | hinge
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp)
    critic_steps: int = 5  # critic updates per generator update
    drift: float = 0.0  # epsilon of the drift term on real scores (Karras et al.); 0 disables
    label_smooth: float = 0.0  # bce: real targets are 1 - label_smooth (one-sided smoothing)
    label_noise: float = 0.0  # bce: std of Gaussian noise added to every target ("soft, noisy labels")
    # The critics that judge the generator, each with its own loss, summed (training/models/critics.py's CRITICS):
    # wave (the family's own), stft (multi-resolution spectrogram), multiscale (waveform at several rates),
    # period (waveform folded by periods).
    critics: list[str] = field(default_factory=lambda: ["wave"])
    stft_ffts: list[int] = field(default_factory=lambda: [512, 1024, 256])  # stft: one resolution per FFT size, hop n_fft / 4
    stft_channels: int = 16  # stft: channels of every 2D convolution
    multiscale_scales: list[int] = field(default_factory=lambda: [1, 2, 4])  # multiscale: average-pooling factors, one critic each
    multiscale_channels: int = 16  # multiscale: channels of the first layer (a multiple of 4: the grouped layers need it)
    period_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])  # period: HiFi-GAN's primes, one critic each
    period_channels: int = 8  # period: channels of the first layer (then 2x, 4x)
    r1_gamma: float = 0.0  # gamma of the R1 penalty (gamma / 2) E||grad D(real)||^2 (Mescheder et al.); 0 disables
    r1_every: int = 16  # R1 runs lazily on every r1_every-th critic step, scaled by r1_every (StyleGAN2)
    feature_matching: float = 0.0  # weight of L1 between the batch-mean critic activations of real and fake in G's loss; 0 disables

    def validate(self) -> None:
        if self.kind not in ("wgan-gp", "bce", "hinge"):
            raise ValueError(f"kind: unknown loss {self.kind!r} (known: bce, hinge, wgan-gp)")
        if self.critic_steps < 1:
            raise ValueError(f"critic_steps: at least 1, not {self.critic_steps}")
        unknown = [c for c in self.critics if c not in CRITICS]
        if unknown or "wave" not in self.critics or len(set(self.critics)) != len(self.critics):
            raise ValueError(f"critics: 'wave' and any of {', '.join(sorted(set(CRITICS) - {'wave'}))}, each once, not {self.critics}")
        if not self.stft_ffts or any(n < 16 or n % 4 for n in self.stft_ffts) or self.stft_channels < 1:
            raise ValueError(f"stft_ffts: multiples of 4 from 16, stft_channels: at least 1, not {self.stft_ffts} and {self.stft_channels}")
        if not self.multiscale_scales or min(self.multiscale_scales) < 1 or self.multiscale_channels < 4 or self.multiscale_channels % 4:
            raise ValueError(f"multiscale_scales: at least 1 each, multiscale_channels: a multiple of 4, not {self.multiscale_scales} and {self.multiscale_channels}")
        if not self.period_periods or min(self.period_periods) < 1 or self.period_channels < 1:
            raise ValueError(f"period_periods: at least 1 each, period_channels: at least 1, not {self.period_periods} and {self.period_channels}")
        if self.r1_gamma < 0 or self.r1_every < 1 or self.feature_matching < 0:
            raise ValueError(f"r1_gamma and feature_matching: 0 (off) or more, r1_every: at least 1, not {self.r1_gamma}, {self.feature_matching} and {self.r1_every}")


@dataclass
class AugmentConfig:
    """Adaptive augmentation of everything the critic sees, real and fake alike (training/augment.py, after ADA).

    Each operation is applied to an item with probability p. Every `interval` critic steps p moves
    toward keeping r = E[sign D(real)] at `target`: up while the critic is surer of the reals than that
    (overfitting), down otherwise, by batch x interval / ramp_images, within [0, p_max].
    """

    enabled: bool = False
    target: float = 0.6  # the r_t ADA aims at (Karras et al. 2020; ASGAN uses it for audio)
    p_init: float = 0.0  # p at step 0
    p_max: float = 0.8  # ADA found most augmentations leak into the output beyond about 0.8
    interval: int = 4  # critic steps between adjustments of p
    ramp_images: int = 20000  # real items the critic sees while p could rise from 0 to 1 (ADA: 500k, for runs 100x longer)
    gain_db: float = 6.0  # gain: uniform in +-gain_db dB; 0 disables
    polarity: bool = True  # polarity: multiply by -1
    shift: float = 0.125  # time shift: uniform in +-shift x the segment; 0 disables
    shift_mode: str = "zero"  # zero: the vacated samples are silence | circular: they wrap around
    tilt_db: float = 6.0  # spectral tilt: a first-order filter whose DC-to-Nyquist gain ratio is uniform in +-tilt_db dB; 0 disables

    def validate(self) -> None:
        if not -1.0 <= self.target <= 1.0:
            raise ValueError(f"target: E[sign D(real)] lies in [-1, 1], not {self.target}")
        if not 0.0 <= self.p_init <= self.p_max <= 1.0:
            raise ValueError(f"p_init and p_max: 0 <= p_init <= p_max <= 1, not {self.p_init} and {self.p_max}")
        if self.interval < 1 or self.ramp_images < 1:
            raise ValueError(f"interval and ramp_images: at least 1, not {self.interval} and {self.ramp_images}")
        if self.gain_db < 0 or self.tilt_db < 0 or not 0.0 <= self.shift < 1.0:
            raise ValueError(f"gain_db and tilt_db: 0 (off) or more, shift: a fraction in [0, 1), not {self.gain_db}, {self.tilt_db} and {self.shift}")
        if self.shift_mode not in ("zero", "circular"):
            raise ValueError(f"shift_mode: 'zero' or 'circular', not {self.shift_mode!r}")


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    kick: bool = False  # double G's learning rate while its loss exceeds kick_ratio x D's (the DCGAN article's heuristic)
    kick_ratio: float = 10.0
    kick_max: int = 5  # at most this many doublings; reset once the losses are balanced again


@dataclass
class TrainLoopConfig:
    steps: int = 100000  # generator steps
    batch_size: int = 64  # global batch, split across processes
    ema_decay: float = 0.999  # EMA of the generator's weights, the copy that is exported; 0 disables
    ckpt_every: int = 1000  # steps between checkpoints
    ckpt_minutes: float = 15.0  # also checkpoint when this many minutes passed since the last one
    keep_checkpoints: int = 3  # older numbered checkpoints are deleted; `latest` always stays
    log_every: int = 50  # steps between scalar logs
    preview_every: int = 1000  # steps between audio/spectrogram previews and PNG plots
    preview_count: int = 8  # fixed latents rendered at every preview
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = False  # bf16 autocast of the forward passes, on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16)
    tf32: bool = True  # allow TF32 matmuls on CUDA
    max_rollbacks: int = 3  # NaN/inf losses roll back to the last checkpoint with halved learning rates, at most this often
    tensorboard: bool = True
    progress: bool = True
    eval_every: int = 500  # steps between scoring the EMA generator against held-out data (evaluate.py); 0 disables
    eval_samples: int = 256  # clips generated from fixed latents at every evaluation (NDB needs ~250 to see a missing bin)
    best_metric: str = "fd_logmel"  # checkpoints/best.pt holds the step that scored best on this (evaluation/metrics.py's METRICS; checked by the evaluator)
    classifier: str = ""  # a `ganstream train-classifier` file: evaluations add fd_classifier and is
    # What evaluations compare with: "holdout" (data.holdout's clips, which the run never trains on) or
    # "train" (a third of the training clips). A small folder's holdout is a few clips whose mix of
    # sounds (kicks against cymbals) decides which step best.pt keeps; the training clips are the
    # distribution the generator is fitted to. It only misleads about memorisation, which a laptop run
    # is far from.
    eval_against: str = "holdout"

    def validate(self) -> None:
        for name in ("steps", "batch_size", "ckpt_every", "log_every", "preview_every", "preview_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, not {getattr(self, name)}")
        if self.eval_every < 0 or self.eval_samples < 2:
            raise ValueError(f"eval_every: 0 (off) or more, eval_samples: at least 2, not {self.eval_every} and {self.eval_samples}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: in [0, 1), not {self.ema_decay}")
        if self.eval_against not in ("holdout", "train"):
            raise ValueError(f"eval_against: holdout or train, not {self.eval_against!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device: auto, cpu, cuda or cuda:N, not {self.device!r}")


@dataclass
class ProgressiveConfig:
    """The stage schedule of progressive growing (model.kind progan; training/progressive.py).

    Each list holds one value per stage, from the first; where a list ends, its
    last value holds for the later stages. Images are real images the critic is
    shown (batch x loss.critic_steps per generator step).
    """

    fade_images: list[int] = field(default_factory=lambda: [600_000])  # fade-in of stages 1, 2, ... (stage 0 has none)
    stable_images: list[int] = field(default_factory=lambda: [600_000])  # full-alpha training per stage; the last stage goes on to train.steps
    batch_sizes: list[int] = field(default_factory=list)  # global batch per stage; empty: train.batch_size throughout

    def validate(self) -> None:
        if not self.fade_images or not self.stable_images:
            raise ValueError("fade_images and stable_images: at least one value each")
        if min(self.fade_images) < 1 or min(self.stable_images) < 0 or min(self.batch_sizes, default=1) < 1:
            raise ValueError("fade_images and batch_sizes must be positive, stable_images at least 0")


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default_factory=lambda: FAMILIES["wavegan"].config())
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        """Short hash of everything that changes what is trained (not where it is written)."""
        d = self.to_dict()
        d["run"] = {k: v for k, v in d["run"].items() if k != "out_dir"}
        d["train"] = {k: v for k, v in d["train"].items() if k not in OPERATIONAL}
        if d["model"]["kind"] not in PROGRESSIVE_KINDS:
            del d["progressive"]  # unused: runs of other models keep the names they had before it existed
        # Off, the recipe's settings leave the hash alone: runs keep the names they had before they existed.
        d["loss"] = {k: v for k, v in d["loss"].items() if k not in RECIPE_LOSS_FIELDS or v != RECIPE_LOSS_FIELDS[k]}
        if d["model"].get("condition", "none") == "none":
            # Unconditioned: runs keep the names they had before conditioning existed.
            for key in ("condition", "condition_critic", "track_pitch", "harmonics"):
                d["model"].pop(key, None)
        d["model"].pop("labels", None)  # derived from the data when the run starts (models/condition.py)
        if d["augment"] == asdict(AugmentConfig()):
            del d["augment"]
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


# train.* fields that say how long and where a run trains, not what it trains: they stay out of
# the run's hash and may change when it is resumed.
OPERATIONAL = frozenset({
    "steps", "device", "progress", "tensorboard", "log_every", "preview_every",
    "ckpt_every", "ckpt_minutes", "keep_checkpoints", "max_rollbacks",
    # Evaluation reads the generator and draws from its own RNGs: it never changes what is trained.
    "eval_every", "eval_samples", "best_metric", "classifier", "eval_against",
})

# loss.* fields added with the spectral critics, R1 and feature matching, with their defaults.
RECIPE_LOSS_FIELDS = {
    f.name: getattr(LossConfig(), f.name)
    for f in fields(LossConfig)
    if f.name in ("critics", "stft_ffts", "stft_channels", "multiscale_scales", "multiscale_channels",
                  "period_periods", "period_channels", "r1_gamma", "r1_every", "feature_matching")
}

SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "train": TrainLoopConfig,
    "progressive": ProgressiveConfig,
}
PROGRESSIVE_KINDS = frozenset(kind for kind, family in FAMILIES.items() if family.progressive)  # they read the `progressive` section


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against the annotation `tp`, converting ints to floats and lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 3e-4 (no decimal point) as a string; people write it that way.
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported field type {tp}")


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Builds `cls` from a mapping, refusing unknown keys and wrong types with the field's path."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return obj


def config_from_dict(d: dict[str, Any], source: str = "config") -> TrainConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    known = set(SECTIONS) | {"model"}
    for key in d:
        if key not in known:
            raise ConfigError(f"{source}: unknown section {key!r} (known: {', '.join(sorted(known))})")
    parts: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        parts[name] = build_dataclass(cls, d.get(name) or {}, f"{source}: {name}")
    model = dict(d.get("model") or {})
    kind = model.get("kind", "wavegan")
    try:
        fam = family(kind)
    except UnknownModelKind as e:  # the registry's one message for an unknown kind
        raise ConfigError(f"{source}: {e}") from None
    parts["model"] = build_dataclass(fam.config, model, f"{source}: model")
    # Saved configs hold every section, so only settings other than the defaults are an error.
    if parts["progressive"] != ProgressiveConfig() and kind not in PROGRESSIVE_KINDS:
        raise ConfigError(f"{source}: progressive: only models that grow in stages read it ({', '.join(sorted(PROGRESSIVE_KINDS))}), not {kind}")
    if (parts["loss"].critics != ["wave"] or parts["augment"].enabled) and fam.output is not OutputKind.WAVEFORM:
        # The extra critics and the augmentations (tilt, shift) are defined on audio, not on spectrograms.
        raise ConfigError(f"{source}: loss.critics beyond [wave] and augment.enabled need a model that outputs audio, not {kind}")
    return TrainConfig(**parts)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value), the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    path, raw = text.split("=", 1)
    keys = path.strip().split(".")
    if len(keys) != 2 or not all(keys):
        raise ConfigError(f"override {text!r}: the key must be section.key, for example train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e.problem})") from None
    return keys, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Reads a YAML config (or the defaults when `path` is None) and applies overrides."""
    d: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: no such config file")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
    d = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in d.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in SECTIONS and section != "model":
            raise ConfigError(f"override {text!r}: unknown section {section!r}")
        d.setdefault(section, {})[key] = value
    return config_from_dict(d, source)


def describe_fields() -> str:
    """Every field of every section with its default, for `train --help`."""
    lines = []

    def emit(section: str, cls: type, note: str = "") -> None:
        lines.append(f"  {section}:{note}")
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"    {section}.{f.name} = {json.dumps(default)}")

    for name, cls in SECTIONS.items():
        emit(name, cls)
    for kind, family in FAMILIES.items():
        emit("model", family.config, f"  (model.kind={kind})")
    return "\n".join(lines)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
