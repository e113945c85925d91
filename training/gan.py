"""The GAN training wrapper: owns the generator, critic, their optimisers, the EMA copy and the loss.

The models stay pure `nn.Module`s; everything about how they are trained lives
here. `GANTrainer.step(real)` runs `critic_steps` critic updates and one
generator update, and returns scalars for logging.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .config import OptimConfig, TrainConfig
from .losses import GANLoss
from .models import build_critic, build_generator, sample_latents

GradSync = Callable[[nn.Module], None]


class EMA:
    """Exponential moving average of a module's parameters; buffers (BatchNorm statistics) are copied."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), source.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), source.buffers()):
            ema_b.copy_(b)


class LRKick:
    """The spectrogram-DCGAN article's heuristic: double G's learning rate while G's loss exceeds
    `ratio` times D's, at most `max_kicks` times; back to the base rate once they are balanced."""

    def __init__(self, cfg: OptimConfig):
        self.cfg = cfg
        self.kicks = 0

    def factor(self, g_loss: float, d_loss: float) -> float:
        if not self.cfg.kick or d_loss <= 0 or g_loss <= 0:
            return 2.0**self.kicks
        if g_loss > self.cfg.kick_ratio * d_loss:
            self.kicks = min(self.kicks + 1, self.cfg.kick_max)
        else:
            self.kicks = 0
        return 2.0**self.kicks


def grad_norm(params: Iterator[nn.Parameter]) -> float:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


class GANTrainer:
    """Generator, critic, EMA generator, optimisers, loss and learning-rate state of one run."""

    def __init__(self, cfg: TrainConfig, device: torch.device, grad_sync: GradSync | None = None):
        self.cfg = cfg
        self.device = device
        self.generator = build_generator(cfg.model).to(device)
        self.critic = build_critic(cfg.model).to(device)
        self.ema = EMA(self.generator, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.kick = LRKick(cfg.optim)
        self.lr_scale = 1.0  # halved by every NaN rollback
        self.new_optimisers()
        self.loss = GANLoss(cfg.loss)
        self.grad_sync = grad_sync or (lambda module: None)
        use_bf16 = cfg.train.bf16 and device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext

    @property
    def export_generator(self) -> nn.Module:
        """The weights to export and preview: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.generator

    def latents(self, n: int) -> Tensor:
        return sample_latents(self.cfg.model, n, device=self.device)

    def new_optimisers(self) -> None:
        """Adam for both networks with fresh moment estimates, at the current learning rates."""
        o = self.cfg.optim
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        self._set_lrs(2.0**self.kick.kicks)

    # What a progressive trainer (progressive.py) replaces: the networks at its stage and fade-in.

    def generate(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> what the generator makes of `z` now."""
        return self.generator(z)

    def score(self, x: Tensor) -> Tensor:
        """The critic's (B,) scores for `x`; the loss calls this, the gradient penalty included."""
        return self.critic(x)

    def real_input(self, real: Tensor) -> Tensor:
        """A batch of real data as the critic should see it now."""
        return real

    def _set_lrs(self, g_factor: float) -> None:
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.optim.lr_g * self.lr_scale * g_factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.cfg.optim.lr_d * self.lr_scale

    def step(self, real_batches: list[Tensor]) -> dict[str, float]:
        """One generator step after one critic step per item of `real_batches` (each (B, C, T))."""
        stats: dict[str, Any] = {}
        self.generator.train()
        self.critic.train()
        self.critic.requires_grad_(True)
        d_loss = torch.zeros((), device=self.device)
        for real in real_batches:
            real = self.real_input(real)
            with torch.no_grad(), self.autocast():
                fake = self.generate(self.latents(real.shape[0]))
            self.opt_d.zero_grad(set_to_none=True)
            with self.autocast():
                d_loss, d_stats = self.loss.critic(self.score, real, fake.float())
            d_loss.backward()
            self.grad_sync(self.critic)
            stats["grad_norm_d"] = grad_norm(self.critic.parameters())
            self.opt_d.step()
        stats.update({k: float(v) for k, v in d_stats.items()})

        # The critic's weights are not trained in the generator step; freezing them saves their grads.
        self.critic.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            g_loss = self.loss.generator(self.score, self.generate(self.latents(real_batches[-1].shape[0])))
        g_loss.backward()
        self.grad_sync(self.generator)
        stats["grad_norm_g"] = grad_norm(self.generator.parameters())
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.generator)

        stats["loss_d"], stats["loss_g"] = d_loss.item(), g_loss.item()
        self._set_lrs(self.kick.factor(stats["loss_g"], stats["loss_d"]))
        stats["lr_g"] = self.opt_g.param_groups[0]["lr"]
        stats["lr_d"] = self.opt_d.param_groups[0]["lr"]
        return stats

    @staticmethod
    def finite(stats: dict[str, float]) -> bool:
        return all(math.isfinite(v) for v in stats.values())

    def state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "kicks": self.kick.kicks,
            "lr_scale": self.lr_scale,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Strict: a missing or unexpected tensor is an error, never silently skipped."""
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.ema is not None:
            if state["ema"] is None:
                raise KeyError("ema: the checkpoint has no EMA weights but train.ema_decay > 0")
            self.ema.module.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.kick.kicks = int(state["kicks"])
        self.lr_scale = float(state["lr_scale"])
        self._set_lrs(2.0**self.kick.kicks)
