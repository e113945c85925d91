"""Generators and critics: pure `nn.Module`s, each built from its config dataclass.

`MODELS` maps `model.kind` to (config, generator, critic). Export imports
`build_generator` (and `build_vocoder`, for the reconstruction network) and
nothing of the training loop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .dcgan1d import DCGAN1DConfig, DCGAN1DCritic, DCGAN1DGenerator
from .progan import ProGANConfig, ProGANCritic, ProGANGenerator
from .specdcgan import SpecDCGANConfig, SpecDCGANCritic, SpecDCGANGenerator
from .specgan import SpecGANConfig, SpecGANCritic, SpecGANGenerator
from .vocoder import Vocoder, VocoderConfig
from .wavegan import WaveGANConfig, WaveGANCritic, WaveGANGenerator


class ModelFamily(NamedTuple):
    config: type
    generator: type[nn.Module]
    critic: type[nn.Module]


MODELS: dict[str, ModelFamily] = {
    "wavegan": ModelFamily(WaveGANConfig, WaveGANGenerator, WaveGANCritic),
    "dcgan1d": ModelFamily(DCGAN1DConfig, DCGAN1DGenerator, DCGAN1DCritic),
    # Spectrogram GANs: (B, 1, bins, frames) normalised log-magnitude (models/spectrogram.py).
    "specgan": ModelFamily(SpecGANConfig, SpecGANGenerator, SpecGANCritic),
    "specdcgan": ModelFamily(SpecDCGANConfig, SpecDCGANGenerator, SpecDCGANCritic),
    "progan": ModelFamily(ProGANConfig, ProGANGenerator, ProGANCritic),
}
VOCODER_KIND = "vocoder"  # model.kind of the reconstruction network (models/vocoder.py): not a GAN, so not in MODELS
MODEL_CONFIGS: dict[str, type] = {**{kind: family.config for kind, family in MODELS.items()}, VOCODER_KIND: VocoderConfig}


def build_generator(cfg: Any) -> nn.Module:
    """The generator for a model config; `cfg.kind` picks the family."""
    return MODELS[cfg.kind].generator(cfg)


def build_vocoder(cfg: VocoderConfig) -> Vocoder:
    """The reconstruction network for a `model.kind: vocoder` config."""
    return Vocoder(cfg)


def build_critic(cfg: Any) -> nn.Module:
    """The critic for a model config; it returns one raw score (logit) per item."""
    return MODELS[cfg.kind].critic(cfg)


def sample_latents(cfg: Any, n: int, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
    """(n, latent_dim) latents from the config's distribution: uniform in [-1, 1] or standard normal."""
    if cfg.latent_dist == "uniform":
        return torch.rand(n, cfg.latent_dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, cfg.latent_dim, generator=generator, device=device)
