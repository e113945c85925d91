"""The GAN training wrapper: owns the generator, critic, their optimisers, the EMA copy and the loss.

The models stay pure `nn.Module`s; everything about how they are trained lives
here. `GANTrainer.step(real)` runs `critic_steps` critic updates and one
generator update, and returns scalars for logging.

Beside the family's critic it trains the critics `loss.critics` names
(models/critics.py), each with its own loss, summed; the lazy R1 penalty;
feature matching; and adaptive augmentation of the critic's input (augment.py).
Off, as by default, none of them draws a random number or changes an operation,
so runs train bit for bit as they did before they existed.

A conditioned model (models/condition.py) gets the real batch's labels: its fakes are
generated for them, the family's critic scores real, fake and interpolates under them,
and with `condition_critic: acgan` the auxiliary classifier's loss joins both losses.
"""

from __future__ import annotations

import copy
import math
import warnings
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .augment import AdaptiveAugment
from .config import OptimConfig, TrainConfig
from .losses import GANLoss
from .models import build_generator, condition_size, sample_latents
from .models.critics import CRITICS, FeatureTap, feature_matching

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


def bf16_autocast(device: torch.device) -> Callable[[], Any]:
    """bf16 autocast for the trainer's forward passes (weights, optimiser state and losses stay float32).

    On CPUs with native bf16 (AVX512-BF16, AMX) oneDNN's bf16 convolutions make a WaveGAN step about
    1.8x cheaper (docs/quality.md); without them bf16 is emulated and slower, so a warning says so.
    Other devices (mps) train in float32, as before CPU autocast was added."""
    if device.type not in ("cpu", "cuda"):
        return nullcontext
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn("train.bf16: this CPU has no native bf16 (AVX512-BF16 or AMX): training will be slower, not faster", stacklevel=3)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


class GANTrainer:
    """Generator, critic, EMA generator, optimisers, loss and learning-rate state of one run."""

    def __init__(self, cfg: TrainConfig, device: torch.device, grad_sync: GradSync | None = None):
        self.cfg = cfg
        self.device = device
        self.generator = build_generator(cfg.model).to(device)
        critics = {name: CRITICS[name](cfg.model, cfg.loss).to(device) for name in cfg.loss.critics}
        self.critic = critics.pop("wave")  # the family's critic: `score` calls it (a progressive one takes its stage)
        self.extra_critics = nn.ModuleDict(critics)  # the others, each called on the audio alone
        self.augment = AdaptiveAugment(cfg.augment) if cfg.augment.enabled else None
        self.critic_updates = 0  # critic steps taken: the clock of the lazy R1 penalty
        self.ema = EMA(self.generator, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.kick = LRKick(cfg.optim)
        self.lr_scale = 1.0  # halved by every NaN rollback
        self.new_optimisers()
        self.loss = GANLoss(cfg.loss)
        self.grad_sync = grad_sync or (lambda module: None)
        self.autocast = bf16_autocast(device) if cfg.train.bf16 else nullcontext
        self.conditioned = condition_size(cfg.model) > 0
        self._cond: Tensor | None = None  # the labels of the batch being scored (conditioned models)

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
        self.opt_d = torch.optim.Adam(self.critic_parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        self._set_lrs(2.0**self.kick.kicks)

    # What a progressive trainer (progressive.py) replaces: the networks at its stage and fade-in.

    def generate(self, z: Tensor) -> Tensor:
        """(B, latent_dim [+ C]) -> what the generator makes of `z` now."""
        return self.generator(z)

    def score(self, x: Tensor) -> Tensor:
        """The critic's (B,) scores for `x`; the loss calls this, the gradient penalty included.
        A conditioned critic scores under the labels of the batch at hand."""
        return self.critic(x, self._cond) if self.conditioned else self.critic(x)

    def _fake_latents(self, cond: Tensor | None, n: int) -> Tensor:
        """Latents for n fakes: for a conditioned model, z with the real batch's labels appended."""
        if cond is None:
            return self.latents(n)
        return torch.cat([sample_latents(self.cfg.model, n, device=self.device, conditions=False), cond], dim=1)

    def _aux_loss(self, passes: int) -> Tensor | None:
        """AC-GAN: the classifier's loss over the family critic's first `passes` forward passes since the last call
        (the critic step's real and fake; the generator step's fake), all under this batch's labels."""
        if not (self.conditioned and self.critic.kind == "acgan"):
            return None
        return self.critic.aux_loss(self._cond, passes)

    def real_input(self, real: Tensor) -> Tensor:
        """A batch of real data as the critic should see it now."""
        return real

    def critic_parameters(self) -> list[nn.Parameter]:
        """Every critic's weights, the family's first: what the critic optimiser trains."""
        return [*self.critic.parameters(), *self.extra_critics.parameters()]

    def _critic_calls(self) -> list[tuple[str, nn.Module, Callable[[Tensor], Tensor]]]:
        """(name, module, call) of every critic; the family's is called through `score`."""
        return [("wave", self.critic, self.score), *((name, c, c) for name, c in self.extra_critics.items())]

    def _augmented(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """real and fake as the critic sees them: under one augmentation draw when augmenting."""
        return (real, fake) if self.augment is None else self.augment.pair(real, fake)

    def _critic_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Every critic's loss on one batch, summed; the family's stats keep their names, the others' are prefixed."""
        r1 = self.cfg.loss.r1_gamma > 0 and self.critic_updates % self.cfg.loss.r1_every == 0
        loss: Tensor | None = None
        stats: dict[str, Tensor] = {}
        real_scores: list[Tensor] = []
        for name, _, call in self._critic_calls():
            part, part_stats, d_real = self.loss.critic_with_scores(call, real, fake, r1)
            loss = part if loss is None else loss + part
            stats.update(part_stats if name == "wave" else {f"{name}/{k}": v for k, v in part_stats.items()})
            real_scores.append(d_real)
        assert loss is not None  # "wave" is always among the critics
        if self.augment is not None:
            self.augment.observe(real_scores)
        return loss, stats

    def _generator_loss(self, fake: Tensor, real_batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The generator's loss against every critic, plus feature matching against `real_batch` when weighted."""
        weight = self.cfg.loss.feature_matching
        real = self.real_input(real_batch) if weight > 0 else real_batch  # only feature matching reads it
        transform = self.augment.draw(fake.shape[0], fake.shape[-1], fake.device) if self.augment is not None else None
        if transform is not None:
            # A fresh draw, applied to the critics' copy of G's output, never to what G returns; the reals
            # that feature matching compares with get the same one.
            fake = transform(fake)
            real = transform(real) if weight > 0 else real
        loss: Tensor | None = None
        matched: list[Tensor] = []
        for _, critic, call in self._critic_calls():
            if weight > 0:
                with FeatureTap(critic) as tap:
                    scores = call(fake)
                fake_features = tap.features
                with torch.no_grad(), FeatureTap(critic) as tap:
                    call(real)
                matched.append(feature_matching(tap.features, fake_features))
            else:
                scores = call(fake)
            part = self.loss.generator_from_scores(scores)
            loss = part if loss is None else loss + part
        assert loss is not None  # "wave" is always among the critics
        stats: dict[str, float] = {}
        if matched:
            fm = torch.stack(matched).sum()
            loss = loss + weight * fm
            stats["feature_matching"] = fm.item()
        return loss, stats

    def _set_lrs(self, g_factor: float) -> None:
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.optim.lr_g * self.lr_scale * g_factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.cfg.optim.lr_d * self.lr_scale

    def step(self, real_batches: list[Tensor], conditions: list[Tensor] | None = None) -> dict[str, float]:
        """One generator step after one critic step per item of `real_batches` (each (B, C, T)); a conditioned
        model needs each batch's labels, `conditions` ((B, C) each, models/condition.py's columns)."""
        if self.conditioned != (conditions is not None):
            raise ValueError("a conditioned model trains on labelled batches, an unconditioned one on plain batches")
        conds: list[Tensor | None] = list(conditions) if conditions is not None else [None] * len(real_batches)
        stats: dict[str, Any] = {}
        self.generator.train()
        for critic in (self.critic, self.extra_critics):
            critic.train()
            critic.requires_grad_(True)
        d_loss = torch.zeros((), device=self.device)
        for real, cond in zip(real_batches, conds):
            self._cond = cond
            real = self.real_input(real)
            with torch.no_grad(), self.autocast():
                fake = self.generate(self._fake_latents(cond, real.shape[0]))
            real, fake = self._augmented(real, fake.float())
            self.opt_d.zero_grad(set_to_none=True)
            with self.autocast():
                d_loss, d_stats = self._critic_loss(real, fake)
                aux = self._aux_loss(2)  # the real and the fake pass; a gradient penalty's third is not classified
            if aux is not None:
                d_loss = d_loss + aux
                d_stats["aux_d"] = aux.detach()
            d_loss.backward()
            for critic in (self.critic, *self.extra_critics.values()):
                self.grad_sync(critic)
            stats["grad_norm_d"] = grad_norm(iter(self.critic_parameters()))
            self.opt_d.step()
            self.critic_updates += 1
        stats.update({k: float(v) for k, v in d_stats.items()})

        # The critics' weights are not trained in the generator step; freezing them saves their grads.
        self.critic.requires_grad_(False)
        self.extra_critics.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        self._cond = conds[-1]
        with self.autocast():
            fake = self.generate(self._fake_latents(conds[-1], real_batches[-1].shape[0]))
            g_loss, g_stats = self._generator_loss(fake, real_batches[-1])
            aux = self._aux_loss(1)  # the fake pass, the first the family critic made in this step
        if aux is not None:
            g_loss = g_loss + aux
            g_stats["aux_g"] = aux.item()
        self._cond = None
        stats.update(g_stats)
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
        if self.augment is not None:
            stats["augment_p"], stats["augment_r"] = self.augment.p, self.augment.r
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
            **self._recipe_state(),
        }

    def _recipe_state(self) -> dict[str, Any]:
        """What the optional critics, R1 and augmentation add to the state: nothing when they are off,
        so a default run's checkpoints hold what they held before these existed."""
        state: dict[str, Any] = {}
        if self.extra_critics:
            state["extra_critics"] = self.extra_critics.state_dict()
        if self.cfg.loss.r1_gamma > 0:
            state["critic_updates"] = self.critic_updates
        if self.augment is not None:
            state["augment"] = self.augment.state()
        return state

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
        # Strict as above: a run with these on needs them in its checkpoint (a KeyError names the missing one).
        if self.extra_critics:
            self.extra_critics.load_state_dict(state["extra_critics"])
        if self.cfg.loss.r1_gamma > 0:
            self.critic_updates = int(state["critic_updates"])
        if self.augment is not None:
            self.augment.load(state["augment"])
