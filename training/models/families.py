"""The model families: one entry per `model.kind`, the one place that says what a family is.

The config loader, the `train` command, export and the tests read `FAMILIES`; none of
them keeps its own list of kinds. A new family is its module here (a config dataclass,
a generator with `early_features`, a critic) and one entry below.

Each entry holds:

- `config`, `generator`, `critic`: the classes, each built from the config (the vocoder
  has no critic of its own: its optional adversarial loss is part of its training);
- `run`: the `loop.Run` (or subclass) that trains it, as "module:Class", imported only by
  `Family.run_class()`, so importing the models (as export does) never imports the loop;
- `output`: what the generator makes (`OutputKind`), which decides how export bundles it;
- `tiny`: `section.key=value` overrides that shrink any shipped config of the family until
  two training steps and an export take about a second on a CPU (tests/test_every_config.py);
- `progressive`: whether it grows in stages and reads the config's `progressive` section.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from torch import Tensor, nn

from .dcgan1d import DCGAN1DConfig, DCGAN1DCritic, DCGAN1DGenerator
from .progan import ProGANConfig, ProGANCritic, ProGANGenerator
from .specdcgan import SpecDCGANConfig, SpecDCGANCritic, SpecDCGANGenerator
from .specgan import SpecGANConfig, SpecGANCritic, SpecGANGenerator
from .vocoder import Vocoder, VocoderConfig
from .wavegan import WaveGANConfig, WaveGANCritic, WaveGANGenerator


class OutputKind(Enum):
    """What a family's generator outputs."""

    WAVEFORM = "waveform"  # z (B, latent_dim) -> audio (B, 1, segment)
    SPECTRAL = "spectral"  # z (B, latent_dim) -> normalised log-magnitude (B, 1, bins, frames); a vocoder run makes it audio
    VOCODER = "vocoder"  # not a GAN: normalised log-magnitude (B, bins, frames) -> audio (B, samples)


class LatentGenerator(Protocol):
    """What export needs of a GAN's generator (every family whose output is not VOCODER): an `nn.Module` with these."""

    def eval(self) -> LatentGenerator: ...

    def __call__(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> audio (B, 1, segment) or spectrogram (B, 1, bins, frames)."""
        ...

    def early_features(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, F): an early layer's activations, which GANSpace (export/controls.py) takes its
        principal directions from. Early, so that a direction changes the whole sound rather than a detail."""
        ...


@dataclass(frozen=True)
class Family:
    """One model family; see the module docstring for the fields."""

    kind: str
    config: type
    generator: type[nn.Module]
    critic: type[nn.Module] | None
    run: str
    output: OutputKind
    tiny: tuple[str, ...]
    progressive: bool = False

    def run_class(self) -> type:
        """The `loop.Run` (or subclass) that trains this family, imported now."""
        module, name = self.run.split(":")
        return getattr(importlib.import_module(module), name)


_GAN_RUN = "ganstream.training.loop:Run"
_SPECTRAL_RUN = "ganstream.training.spectral_train:SpectralRun"

FAMILIES: dict[str, Family] = {
    family.kind: family
    for family in (
        Family(
            "wavegan", config=WaveGANConfig, generator=WaveGANGenerator, critic=WaveGANCritic,
            run=_GAN_RUN, output=OutputKind.WAVEFORM,
            # Not width 2: its 2-channel layers can start with every ReLU dead (4 seeds in 20; run.seed 0 does).
            tiny=("model.width=4",),
        ),
        Family(
            "dcgan1d", config=DCGAN1DConfig, generator=DCGAN1DGenerator, critic=DCGAN1DCritic,
            run=_GAN_RUN, output=OutputKind.WAVEFORM,
            tiny=("model.ngf=8", "model.ndf=8", "model.min_channels=4"),
        ),
        Family(
            "specgan", config=SpecGANConfig, generator=SpecGANGenerator, critic=SpecGANCritic,
            run=_SPECTRAL_RUN, output=OutputKind.SPECTRAL,
            tiny=("model.width=2", "model.frames=32"),  # frames: the smallest multiple of 32
        ),
        Family(
            "specdcgan", config=SpecDCGANConfig, generator=SpecDCGANGenerator, critic=SpecDCGANCritic,
            run=_SPECTRAL_RUN, output=OutputKind.SPECTRAL,
            tiny=("model.ngf=2", "model.ndf=2", "model.frames=16"),
        ),
        Family(
            "progan", config=ProGANConfig, generator=ProGANGenerator, critic=ProGANCritic,
            run="ganstream.training.progressive:ProgressiveRun", output=OutputKind.SPECTRAL,
            # 128 x 16 from 32 x 4: three stages; a fade-in of one image per stage and no stable phases
            # reach the last stage at step 2, which export requires. Eight channels a stage, not fewer:
            # pixel normalisation over 2 or 4 channels amplifies float rounding past export's parity limit.
            # norm_clip 1: the untrained generator's linear output saturates at +-1, which at clip 3 is a
            # roar 3 std above every bin's mean; the vocoder's parity error on it was 5e-5 of the 1e-4
            # limit, at clip 1 it is 1.5e-6.
            tiny=(
                "model.n_fft=256", "model.hop=128", "model.frames=16", "model.base_bins=32", "model.base_frames=4",
                "model.fmap_base=64", "model.fmap_max=8", "model.latent_dim=16", "model.norm_clip=1",
                "progressive.fade_images=[1]", "progressive.stable_images=[0]", "progressive.batch_sizes=[]",
            ),
            progressive=True,
        ),
        Family(
            "vocoder", config=VocoderConfig, generator=Vocoder, critic=None,
            run="ganstream.training.vocoder_train:VocoderRun", output=OutputKind.VOCODER,
            # One Griffin-Lim step in the graph, not two: half the cost, and the step is still exported and checked.
            tiny=("model.width=8", "model.depth=1", "model.frames=16", "model.projections=1"),
        ),
    )
}


class UnknownModelKind(ValueError):
    """A model.kind no family is registered for (a config or checkpoint from elsewhere or from a newer version)."""


def family(kind: str) -> Family:
    """The family of model.kind `kind`; UnknownModelKind naming the known kinds."""
    try:
        return FAMILIES[kind]
    except KeyError:
        raise UnknownModelKind(f"model.kind: unknown model {kind!r} (known: {', '.join(sorted(FAMILIES))})") from None


def family_of(model_cfg: Any) -> Family:
    """The family of a model config (its `kind` field)."""
    return family(model_cfg.kind)
