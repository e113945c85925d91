"""Generators and critics: pure `nn.Module`s, each built from its config dataclass.

`FAMILIES` (models/families.py) maps `model.kind` to its family: config, generator,
critic, the run that trains it, what it outputs and how tests shrink it. Export imports
`build_generator` (and `build_vocoder`, for the reconstruction network) and nothing of
the training loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .condition import ConditionedCritic, ConditionedGenerator, condition_size, sample_conditions
from .families import FAMILIES, Family, LatentGenerator, OutputKind, UnknownModelKind, family, family_of
from .vocoder import Vocoder, VocoderConfig

__all__ = [
    "FAMILIES", "Family", "LatentGenerator", "OutputKind", "UnknownModelKind", "family", "family_of",
    "build_generator", "build_critic", "build_vocoder", "sample_latents",
]


def build_generator(cfg: Any) -> nn.Module:
    """The generator for a model config; `cfg.kind` picks the family. A conditioned config's takes
    (B, latent_dim + C), its condition appended (models/condition.py)."""
    build = family_of(cfg).generator
    return ConditionedGenerator(cfg, build) if condition_size(cfg) else build(cfg)


def build_vocoder(cfg: VocoderConfig) -> Vocoder:
    """The reconstruction network for a `model.kind: vocoder` config."""
    return Vocoder(cfg)


def build_critic(cfg: Any) -> nn.Module:
    """The critic for a model config; it returns one raw score (logit) per item."""
    critic = family_of(cfg).critic
    if critic is None:
        raise ValueError(f"model {cfg.kind!r} has no critic")
    return ConditionedCritic(cfg, critic(cfg)) if condition_size(cfg) else critic(cfg)


def sample_latents(
    cfg: Any, n: int, generator: torch.Generator | None = None, device: Any = None, conditions: bool = True
) -> Tensor:
    """(n, latent_dim) latents from the config's distribution: uniform in [-1, 1] or standard normal.
    A conditioned config's are (n, latent_dim + C): conditions drawn as the training labels hold them
    appended, unless `conditions` is False (the caller appends its own)."""
    if cfg.latent_dist == "uniform":
        z = torch.rand(n, cfg.latent_dim, generator=generator, device=device) * 2 - 1
    else:
        z = torch.randn(n, cfg.latent_dim, generator=generator, device=device)
    if not (conditions and condition_size(cfg)):
        return z
    return torch.cat([z, sample_conditions(cfg, n, generator).to(z.device)], dim=1)
