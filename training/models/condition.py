"""Pitch (and velocity) conditioning for the GAN families: one home for every conditioned model.

`model.condition` is "none", "pitch" or "pitch+velocity". A conditioned generator takes
its latent with the condition appended, so everything that feeds a generator latents
(previews, evaluation, export's parity checks, GANSpace controls) works unchanged:

    input (B, latent_dim + C): z, then C condition columns
        column latent_dim:     MIDI pitch (float; -1 = unknown, the model's unconditioned mode)
        column latent_dim + 1: velocity in [0, 1] (pitch+velocity only; -1 = unknown)

`sample_latents` draws those columns from the training labels' histogram (`model.labels`,
filled from the data when a run starts), so previews and evaluations ask for notes as
often as the data holds them. Export splits the input into the bundle's `z` and
`condition` inputs.

The generator reads the condition as GANSynth does, a one-hot pitch appended to z, plus
one scalar, the pitch in octaves from C4, so that neighbouring notes share what the
first layer learns of height (with a handful of clips per note, a one-hot alone has
nothing to carry one note's lesson to the next). Velocity is one-hot over
`VELOCITY_BINS` bins plus its scalar.

`model.harmonics: K` (WaveGAN only) gives the generator an oscillator prior: K harmonics of
the asked pitch, each with an amplitude envelope a small head reads off the generator's last
hidden layer, added before its final tanh, to the generator's own output scaled by a learnt
gain that starts at 0.1 (so training starts from a plain tone, not from noise). The GAN learns their envelopes (the timbre and
decay of each note) and the residual (attack, noise); the pitch itself is then exact by
construction instead of learnt from a few clips per note, which a WaveGAN trained for an
hour on a CPU does not manage (its early output is ringing at 16000 / 4^k Hz, the
transposed convolutions' own tones).

The critic is conditioned one of two ways (`model.condition_critic`):
- projection (Miyato and Koyama, 2018): score = out(h) + <embed(y), h>, h the critic's
  last features; the label enters the score itself.
- acgan (Odena et al., 2017; GANSynth): the score ignores the label, and an auxiliary
  head classifies h; its cross-entropy on real and fake items joins the critic's loss,
  on fake items the generator's. `aux_logits` returns the head's logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

CONDITIONS = ("none", "pitch", "pitch+velocity")
CONDITION_CRITICS = ("projection", "acgan")
PITCHES = 128  # one-hot over every MIDI note: the architecture never depends on which notes the data holds
VELOCITY_BINS = 4  # pp, p, f, ff
UNKNOWN = -1.0


@dataclass
class Conditioning:
    """The conditioning fields every conditionable family's config carries (WaveGAN, SpecGAN)."""

    condition: str = "none"  # none | pitch | pitch+velocity
    condition_critic: str = "projection"  # projection | acgan
    # The training labels as the run found them (labels.ClipLabels.as_dict(), with per-pitch and
    # per-velocity-bin counts): filled from the data when a run starts, saved in its config.yaml,
    # exported into the bundle. Derived, so it stays out of the run's hash.
    labels: Any = None
    track_pitch: bool = False  # clips that neither labels.csv nor their file name labels get a pitch tracker's label (librosa pYIN)
    harmonics: int = 0  # WaveGAN: K harmonics of the asked pitch under learnt envelopes (0: none)

    def validate_condition(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition: one of {', '.join(CONDITIONS)}, not {self.condition!r}")
        if self.condition_critic not in CONDITION_CRITICS:
            raise ValueError(f"condition_critic: one of {', '.join(CONDITION_CRITICS)}, not {self.condition_critic!r}")
        if self.harmonics < 0 or (self.harmonics and (self.condition == "none" or getattr(self, "kind", "") != "wavegan")):
            raise ValueError(f"harmonics: {self.harmonics}: a number >= 0, and above 0 only for a conditioned wavegan")
        if self.harmonics and getattr(self, "post_filter", 0):
            raise ValueError("harmonics: the oscillator prior goes before the final tanh, which a post_filter would follow; use one of them")


def condition_size(cfg: Any) -> int:
    """C, the condition columns a model of config `cfg` takes after z: 0, 1 or 2."""
    return {"none": 0, "pitch": 1, "pitch+velocity": 2}[getattr(cfg, "condition", "none")]


def velocity_bin(velocity: Tensor) -> Tensor:
    """(...) velocity in [0, 1] -> (...) int64 bin in [0, VELOCITY_BINS); -1 for unknown (negative) velocity."""
    b = (velocity * VELOCITY_BINS).floor().clamp(0, VELOCITY_BINS - 1).long()
    return torch.where(velocity < 0, torch.full_like(b, -1), b)


def pitch_index(pitch: Tensor) -> Tensor:
    """(...) MIDI pitch -> (...) int64 index in [0, PITCHES); -1 for unknown or out-of-range pitch."""
    p = pitch.round().long()
    return torch.where((p >= 0) & (p < PITCHES), p, torch.full_like(p, -1))


def _one_hot(index: Tensor, n: int) -> Tensor:
    """(B,) int64 with -1 for none -> (B, n) float32, a zero row for -1. Comparisons, so ONNX exports it plainly."""
    return (index[:, None] == torch.arange(n, device=index.device)[None, :]).float()


def encode(cond: Tensor, columns: int | None = None) -> Tensor:
    """(B, C) condition columns -> (B, encoded_size(C)) what the generator appends to z. `columns`: C, given by a
    module that knows it, so an ONNX trace reads no tensor's shape as a Python number."""
    pitch = cond[:, 0]
    known = (pitch >= 0).float()[:, None]
    parts = [_one_hot(pitch_index(pitch), PITCHES), known * (pitch[:, None] - 60.0) / 24.0]
    if (columns if columns is not None else cond.shape[1]) > 1:
        v = cond[:, 1]
        parts += [_one_hot(velocity_bin(v), VELOCITY_BINS), (v[:, None] >= 0).float() * v[:, None]]
    return torch.cat(parts, dim=1)


def encoded_size(c: int) -> int:
    return 0 if c == 0 else PITCHES + 1 + (VELOCITY_BINS + 1 if c > 1 else 0)


class HarmonicPrior(nn.Module):
    """K harmonics of a pitch under envelopes read off hidden features: (B, C, L) features, (B,) MIDI pitch
    -> (B, 1, T) audio, T = L * stride; harmonics above Nyquist and items of unknown pitch are silent."""

    def __init__(self, channels: int, harmonics: int, sample_rate: int):
        super().__init__()
        self.sample_rate = sample_rate
        self.head = nn.Conv1d(channels, harmonics, 1)
        k = torch.arange(1, harmonics + 1, dtype=torch.float32)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # the envelopes start at 0.3 / k, a plain tone: the first steps already sound pitched
            self.head.bias.copy_(torch.log(torch.expm1(0.3 / k)))
        self.register_buffer("k", k[None, :, None], persistent=False)
        # The generator's own output enters scaled by this, from 0.1: at first the tone dominates, and the critic
        # has the residual (attacks, noise) grow only as far as the real notes hold it.
        self.residual = nn.Parameter(torch.tensor(0.1))

    def forward(self, h: Tensor, pitch: Tensor, length: int) -> Tensor:
        amp = F.interpolate(F.softplus(self.head(h)), size=length, mode="linear", align_corners=False)  # (B, K, T)
        f0 = 440.0 * torch.pow(2.0, (pitch.float() - 69.0) / 12.0)[:, None, None]  # (B, 1, 1) Hz
        t = torch.arange(length, device=h.device, dtype=torch.float32)[None, None, :] / self.sample_rate
        # The phase of each harmonic, wrapped per cycle of its own so float32 keeps it to 1e-3 rad over a segment.
        cycles = f0 * self.k * t
        keep = ((f0 * self.k < 0.5 * self.sample_rate) & (pitch[:, None, None] >= 0)).float()
        return (amp * keep * torch.sin(2.0 * torch.pi * (cycles - torch.floor(cycles)))).sum(1, keepdim=True)


class ConditionedGenerator(nn.Module):
    """A family's generator, built for latent_dim + encoded_size(C) inputs, taking (B, latent_dim + C)."""

    def __init__(self, cfg: Any, build: Any):
        super().__init__()
        self.latent_dim, self.c = cfg.latent_dim, condition_size(cfg)
        self.inner = build(dataclasses.replace(cfg, latent_dim=cfg.latent_dim + encoded_size(self.c)))
        self.cfg = cfg
        harmonics = getattr(cfg, "harmonics", 0)
        # WaveGAN's body: transposed convolutions and ReLUs, the last convolution making the audio.
        hidden = self.inner.body[-1].in_channels if harmonics else 0
        # The data's rate, which the run's labels record (WaveGAN's config has no rate of its own).
        rate = int((cfg.labels or {}).get("sample_rate", 16000))
        self.harmonic = HarmonicPrior(hidden, harmonics, rate) if harmonics else None

    def _input(self, zc: Tensor) -> Tensor:
        z, cond = zc[:, : self.latent_dim], zc[:, self.latent_dim :]
        return torch.cat([z, encode(cond, self.c).to(z.dtype)], dim=1)

    def forward(self, zc: Tensor) -> Tensor:
        """(B, latent_dim + C) -> what the family's generator makes."""
        if self.harmonic is None:
            return self.inner(self._input(zc))
        h = self.inner.body[:-1](self.inner._first(self._input(zc)))  # (B, C, segment / 4)
        x = self.inner.body[-1](h)  # (B, 1, segment), before WaveGAN's tanh
        tone = self.harmonic(h, zc[:, self.latent_dim], x.shape[-1]).to(x.dtype)
        return torch.tanh(self.harmonic.residual.to(x.dtype) * x + tone)

    def early_features(self, zc: Tensor) -> Tensor:
        return self.inner.early_features(self._input(zc))

    # The spectral families keep their data's per-bin moments in the generator (spectral_train.py).
    def set_norm(self, norm: Any) -> None:
        self.inner.set_norm(norm)

    def norm(self) -> Any:
        return self.inner.norm()


class ConditionedCritic(nn.Module):
    """A family's critic (it has `body` and a linear `out`), conditioned by projection or an auxiliary classifier.

    forward(x, cond): (B, ...) input and (B, C) condition -> (B,) scores."""

    def __init__(self, cfg: Any, inner: nn.Module):
        super().__init__()
        self.inner, self.c, self.kind = inner, condition_size(cfg), cfg.condition_critic
        width = inner.out.in_features
        if self.kind == "projection":
            # Index PITCHES (VELOCITY_BINS) stands for unknown: a zero row that never trains, so an
            # unlabelled item is scored as by the unconditioned critic.
            self.pitch_embed = nn.Embedding(PITCHES + 1, width, padding_idx=PITCHES)
            self.velocity_embed = nn.Embedding(VELOCITY_BINS + 1, width, padding_idx=VELOCITY_BINS) if self.c > 1 else None
            for e in (self.pitch_embed, self.velocity_embed):
                if e is not None:
                    nn.init.normal_(e.weight, std=0.02)
                    with torch.no_grad():
                        e.weight[e.padding_idx].zero_()
        else:
            self.pitch_head = nn.Linear(width, PITCHES)
            self.velocity_head = nn.Linear(width, VELOCITY_BINS) if self.c > 1 else None
        self._passes: list[Tensor] = []  # acgan: the features of each forward pass since the last aux_loss

    def features(self, x: Tensor) -> Tensor:
        return self.inner.body(x).flatten(1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.features(x)
        score = self.inner.out(h).squeeze(1)
        if self.kind == "projection":
            p = pitch_index(cond[:, 0])
            e = self.pitch_embed(torch.where(p < 0, torch.full_like(p, PITCHES), p))
            if self.velocity_embed is not None:
                v = velocity_bin(cond[:, 1])
                e = e + self.velocity_embed(torch.where(v < 0, torch.full_like(v, VELOCITY_BINS), v))
            score = score + (e.to(h.dtype) * h).sum(1)
        elif self.training:
            self._passes.append(h)  # what `aux_loss` classifies: the same forward passes, not new ones
        return score

    def aux_loss(self, cond: Tensor, passes: int) -> Tensor:
        """AC-GAN: the cross-entropy of the first `passes` forward passes since the last call against the
        labels `cond` (B, C) (unknown ones skipped), summed over passes; forgets every pass it kept."""
        if self.kind != "acgan" or len(self._passes) < passes:
            raise RuntimeError(f"aux_loss: {len(self._passes)} forward passes kept, {passes} asked for (acgan critics only)")
        kept, self._passes = self._passes[:passes], []
        loss = torch.zeros((), device=cond.device)
        for h in kept:
            loss = loss + _labelled_ce(self.pitch_head(h).float(), pitch_index(cond[:, 0]))
            if self.velocity_head is not None:
                loss = loss + _labelled_ce(self.velocity_head(h).float(), velocity_bin(cond[:, 1]))
        return loss

    def aux_logits(self, x: Tensor) -> Tensor:
        """AC-GAN: (B, ...) -> (B, PITCHES) the pitch head's logits."""
        return self.pitch_head(self.features(x))


def _labelled_ce(logits: Tensor, target: Tensor) -> Tensor:
    known = target >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], target[known])


def label_counts(labels: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of `labels[key]` ({value: count}), for drawing conditions as the data holds them."""
    counts = (labels or {}).get(key) or {}
    if not counts:
        return np.array([UNKNOWN]), np.array([1.0])
    values = np.array([float(k) for k in counts])
    weights = np.array([float(v) for v in counts.values()])
    return values, weights / weights.sum()


def sample_conditions(cfg: Any, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, C) conditions drawn from the training labels' histograms (pitch and velocity drawn apart)."""
    c = condition_size(cfg)
    u = torch.rand(n, c, generator=generator).double().numpy()
    out = np.empty((n, c), dtype=np.float32)
    for j, key in enumerate(("pitch_counts", "velocity_counts")[:c]):
        values, probs = label_counts(cfg.labels, key)
        out[:, j] = values[np.minimum(np.searchsorted(np.cumsum(probs), u[:, j], side="right"), len(values) - 1)]
    return torch.from_numpy(out)
