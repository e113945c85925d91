"""Adversarial losses: WGAN-GP, non-saturating BCE with soft and noisy labels, and hinge; the R1 penalty.

Each loss turns critic scores into a critic loss and a generator loss. Only
WGAN-GP and R1 need the critic itself (for gradients with respect to its input).
Scores are (B,) or (B, K) for critics with K sub-critics; the losses average
over every element, so each sub-critic has its own loss (the gradient penalty
and R1 differentiate the sum of an item's K scores).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from .config import LossConfig

Critic = Callable[[Tensor], Tensor]


class GANLoss:
    """Critic and generator losses for one `LossConfig`; returns (loss, scalars for logging)."""

    def __init__(self, cfg: LossConfig):
        if cfg.kind not in LOSSES:
            raise ValueError(f"loss.kind: unknown loss {cfg.kind!r} (known: {', '.join(sorted(LOSSES))})")
        self.cfg = cfg
        self._d, self._g = LOSSES[cfg.kind]

    def critic(self, critic: Critic, real: Tensor, fake: Tensor, r1: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """real, fake: (B, C, T); fake must be detached from the generator. r1: add this step's lazy R1 penalty."""
        loss, stats, _ = self.critic_with_scores(critic, real, fake, r1)
        return loss, stats

    def critic_with_scores(self, critic: Critic, real: Tensor, fake: Tensor, r1: bool = False) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """`critic`, and the detached real scores (what adaptive augmentation reads the critic's confidence from)."""
        if r1:
            real = real.detach().requires_grad_(True)  # the penalty differentiates the same forward pass the loss uses
        d_real, d_fake = critic(real), critic(fake)
        loss = self._d(self.cfg, d_real, d_fake)
        stats = {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
        if self.cfg.kind == "wgan-gp" and self.cfg.gp_weight > 0:
            gp = gradient_penalty(critic, real, fake)
            loss = loss + self.cfg.gp_weight * gp
            stats["gp"] = gp.detach()
        if self.cfg.drift > 0:
            # Karras et al.: keeps real scores from drifting far from zero.
            loss = loss + self.cfg.drift * d_real.pow(2).mean()
        if r1:
            penalty = r1_penalty(d_real, real)
            # StyleGAN2's lazy regularisation: every r1_every-th step, r1_every times as strong.
            loss = loss + 0.5 * self.cfg.r1_gamma * self.cfg.r1_every * penalty
            stats["r1"] = penalty.detach()
        return loss, stats, d_real.detach()

    def generator(self, critic: Critic, fake: Tensor) -> Tensor:
        """fake: (B, C, T) still attached to the generator."""
        return self.generator_from_scores(critic(fake))

    def generator_from_scores(self, d_fake: Tensor) -> Tensor:
        """The generator's loss from the critic's scores of its output (still attached to the generator)."""
        return self._g(d_fake)


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
    """(||grad_x D(x)|| - 1)^2 on random interpolates of real and fake (Gulrajani et al., 2017)."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(d_real: Tensor, real: Tensor) -> Tensor:
    """E ||grad_x D(x)||^2 over real items x (Mescheder et al., 2018); `real` required grad when `d_real` was computed."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()


def _wgan_d(cfg: LossConfig, d_real: Tensor, d_fake: Tensor) -> Tensor:
    return d_fake.mean() - d_real.mean()


def _wgan_g(d_fake: Tensor) -> Tensor:
    return -d_fake.mean()


def _bce_targets(cfg: LossConfig, like: Tensor, value: float) -> Tensor:
    """Targets of `value`, smoothed one-sidedly (real only) and jittered, as the 1D DCGAN article does."""
    target = torch.full_like(like, value - cfg.label_smooth if value == 1.0 else value)
    if cfg.label_noise > 0:
        target = (target + cfg.label_noise * torch.randn_like(like)).clamp(0.0, 1.0)
    return target


def _bce_d(cfg: LossConfig, d_real: Tensor, d_fake: Tensor) -> Tensor:
    real = F.binary_cross_entropy_with_logits(d_real, _bce_targets(cfg, d_real, 1.0))
    fake = F.binary_cross_entropy_with_logits(d_fake, _bce_targets(cfg, d_fake, 0.0))
    return real + fake


def _bce_g(d_fake: Tensor) -> Tensor:
    # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


def _hinge_d(cfg: LossConfig, d_real: Tensor, d_fake: Tensor) -> Tensor:
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


LOSSES = {
    "wgan-gp": (_wgan_d, _wgan_g),
    "bce": (_bce_d, _bce_g),
    "hinge": (_hinge_d, _wgan_g),
}
