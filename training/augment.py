"""Adaptive augmentation of what the critic sees (Karras et al., "Training GANs with limited data", 2020, for audio).

Small folders let the critic memorise the real clips; the generator then learns nothing more.
Augmenting every clip the critic sees, real and fake alike, with operations that keep the
distribution recoverable (each applied with probability p < 1) shows the critic more varied
data without teaching the generator to make augmented sound: the generator's own output is
never augmented, only the critic's input is (GANTrainer calls this; export and previews use
the generator alone).

The operations, each drawn per item with probability p:

- gain: a factor uniform in +-gain_db dB;
- polarity: multiply by -1 when a coin says so (so at most half the items flip; inaudible, so harmless even if it leaked);
- time shift: by up to +-shift of the segment, the vacated samples silent or wrapped around;
- spectral tilt: the first-order filter (x[n] + a x[n-1]) / sqrt(1 + a^2), whose DC-to-Nyquist
  gain ratio (1 + a) / (1 - a) is uniform in +-tilt_db dB; the sqrt keeps white noise's power.

All are differentiable in the audio, so the generator's gradient passes through them.

p adapts as ADA's does: r = E[sign D(real)] over the last `interval` critic steps measures how
sure the critic is of the real clips; above `target` it is overfitting and p rises, below it p
falls, by (items seen) / ramp_images each time, within [0, p_max].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from .config import AugmentConfig


def tilt_coefficient(tilt_db: Tensor) -> Tensor:
    """The first-order coefficient a whose DC-to-Nyquist gain ratio (1 + a) / (1 - a) is `tilt_db` dB."""
    return torch.tanh(tilt_db * (math.log(10.0) / 40.0))


@dataclass(frozen=True)
class Transform:
    """One draw of per-item parameters, applied alike to every batch it is called on."""

    gain: Tensor  # (B,) linear factor, polarity included; 1 where neither was drawn
    shift: Tensor  # (B,) integer samples, positive: later; 0 where not drawn
    tilt: Tensor  # (B,) coefficient a of the first-order filter; 0 where not drawn
    circular: bool  # the vacated samples wrap around rather than being silent

    def __call__(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        a = self.tilt.to(x.dtype)[:, None, None]
        previous = F.pad(x, (1, 0))[..., :-1]
        x = (x + a * previous) / torch.sqrt(1 + a * a)
        length = x.shape[-1]
        source = torch.arange(length, device=x.device)[None, :] - self.shift[:, None]  # (B, T): where each sample comes from
        if self.circular:
            x = x.gather(-1, (source % length)[:, None, :].expand_as(x))
        else:
            inside = (source >= 0) & (source < length)
            x = x.gather(-1, source.clamp(0, length - 1)[:, None, :].expand_as(x)) * inside[:, None, :].to(x.dtype)
        return x * self.gain.to(x.dtype)[:, None, None]


class AdaptiveAugment:
    """The augmentation probability p, its adaptation, and draws of `Transform`s at p."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.p = cfg.p_init
        self.r = 0.0  # the last r = E[sign D(real)] that p was adjusted by
        self._signs = 0.0  # sum over real items of sign D(item), averaged over critics, since the last adjustment
        self._items = 0  # real items seen since the last adjustment
        self._steps = 0  # critic steps since the last adjustment

    def draw(self, batch: int, length: int, device: Any) -> Transform | None:
        """Parameters for `batch` items of `length` samples; None while p is 0 (nothing to apply)."""
        if self.p <= 0:
            return None
        c = self.cfg

        def chosen() -> Tensor:
            return torch.rand(batch, device=device) < self.p

        ones = torch.ones(batch, device=device)
        gain = ones
        if c.gain_db > 0:
            db = (torch.rand(batch, device=device) * 2 - 1) * c.gain_db
            gain = torch.where(chosen(), 10.0 ** (db / 20.0), ones)
        if c.polarity:
            # Chosen, then a coin (ADA's flips): even at p = 1 half keep their polarity, so the op stays random.
            flip = chosen() & (torch.rand(batch, device=device) < 0.5)
            gain = torch.where(flip, -gain, gain)
        shift = torch.zeros(batch, dtype=torch.long, device=device)
        most = int(c.shift * length)
        if most > 0:
            shift = torch.where(chosen(), torch.randint(-most, most + 1, (batch,), device=device), shift)
        tilt = torch.zeros(batch, device=device)
        if c.tilt_db > 0:
            db = (torch.rand(batch, device=device) * 2 - 1) * c.tilt_db
            tilt = torch.where(chosen(), tilt_coefficient(db), tilt)
        return Transform(gain, shift, tilt, c.shift_mode == "circular")

    def pair(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, T) each -> both under the same draw: item i of real and of fake get the same transform."""
        transform = self.draw(real.shape[0], real.shape[-1], real.device)
        if transform is None:
            return real, fake
        return transform(real), transform(fake)

    def observe(self, real_scores: list[Tensor]) -> None:
        """After a critic step: its (detached) scores of the real batch, one tensor per critic, each (B,) or (B, K).

        Each critic counts alike, whatever its K: an item's sign is averaged over a critic's K scores, then over critics.
        """
        per_critic = [s.float().sign().reshape(s.shape[0], -1).mean(1) for s in real_scores]
        self._signs += float(torch.stack(per_critic).mean(0).sum())
        self._items += real_scores[0].shape[0]
        self._steps += 1
        if self._steps >= self.cfg.interval:
            self._adjust(real_scores[0].device)

    def _adjust(self, device: torch.device) -> None:
        # On the scores' device: NCCL reduces only GPU tensors.
        counts = torch.tensor([self._signs, self._items], dtype=torch.float64, device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every process moves p alike, by the signal of the whole global batch.
            torch.distributed.all_reduce(counts)
        signs, items = counts.tolist()
        self.r = signs / max(items, 1.0)
        direction = 1.0 if self.r > self.cfg.target else -1.0
        self.p = min(max(self.p + direction * items / self.cfg.ramp_images, 0.0), self.cfg.p_max)
        self._signs, self._items, self._steps = 0.0, 0, 0

    def state(self) -> dict[str, Any]:
        return {"p": self.p, "r": self.r, "signs": self._signs, "items": self._items, "steps": self._steps}

    def load(self, state: dict[str, Any]) -> None:
        self.p, self.r = float(state["p"]), float(state["r"])
        self._signs, self._items, self._steps = float(state["signs"]), int(state["items"]), int(state["steps"])
