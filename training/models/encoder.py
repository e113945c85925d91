"""The encoder: a segment of audio -> the latent (and, for a conditioned GAN, the condition) that regenerates it.

It inverts a trained generator for `ganstream invert` and /ganstream/invert, as DrumGAN's plugin and
RAVE's encoder let a performer start from a sound of their own. Log-mel frames feed a small strided
convolutional stack; the frames are computed inside the module from the audio (a fixed-weight STFT,
`istft.STFT`, and a mel matrix), so the exported graph takes audio and a host needs no DSP of its own.

- Its input is one generator segment, (B, segment) samples: the stack ends in a dense layer over the
  remaining frames, so where in the segment a sound starts (an onset, a decay) reaches the latent.
- The latent head matches the GAN's distribution: tanh for uniform latents (their range is [-1, 1]),
  none for normal ones.
- A conditioned GAN's condition is estimated beside it: the pitch as a MIDI number (a regression
  around C4, in octaves) and, for pitch+velocity, the velocity through a sigmoid.
- It proposes `hypotheses` latents (multiple choice learning, Guzman-Rivera et al. 2012), trained
  winner-takes-all (training/encoder_train.py): a sound whose frames allow several readings gets one
  proposal for each instead of their average. Calling the module gives the first; `propose` all,
  and `IterativeEncoder.nearest` (a host, realtime/inversion.py) picks by what the generator makes of them.
- The log-mel frames are standardised with per-band statistics measured on the generator's own
  samples before training (buffers), so the same numbers travel into the exported graph.

`IterativeEncoder` then corrects the encoder's latent a few times, as ReStyle does for image GANs
(Alaluf et al. 2021): a `Refiner` compares the sample's frames with those of what the generator makes of
the latent so far and returns a better latent, and the nearest of the latents so found is kept. Export
writes the encoder and one correction (`RefinerStep`) as two graphs; the host runs the bundle's own
generator between corrections (realtime/inversion.py), so the bundle holds the generator once. With the
refiner (and phase 2's closer fit), the share of 60 held-out piano clips on which the latent is nearer
than the best of 1000 random latents rose from 43% to 68% at three corrections, of speech clips from 65%
to 73% (benchmarks/inversion.py, docs/invert.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ganstream.core.distance import EPS as DISTANCE_EPS
from ganstream.core.spectral import mel_filters

from .istft import STFT

PITCH_CENTRE = 60.0  # C4: the pitch head predicts octaves from here
LOG_FLOOR = 1e-5


@dataclass
class EncoderConfig:
    """The encoder's shape and how `training/encoder_train.py` trains it (saved in the bundle's provenance)."""

    n_fft: int = 512
    hop: int = 128
    mels: int = 64
    width: int = 64  # channels of the convolutional stack
    depth: int = 4  # stride-2 convolutions: the frames shrink 2**depth times
    hidden: int = 256  # the dense layer before the heads
    # Training: steps on the generator's own samples (latent loss, and the spectral loss of G(E(x)) every
    # `spectral_every` steps), then steps on the GAN's real training clips (the spectral loss and the targets below).
    pool: int = 2048  # generated (latent, audio) pairs drawn once and reused: generating costs more than encoding
    # Chosen on held-out piano and speech clips (benchmarks/inversion.py, docs/invert.md): the real phase, its
    # search targets and the blurred distance each moved the encoder nearer than the best of 1000 random latents
    # more often; more generated steps did not. The per-clip latents (`code_lr`) with a latent weight of 5 and
    # 2000 real steps brought drums to 80% of held-out clips nearer than random (from 70%), at about twice
    # the time; piano's and speech's counts swing with the seed more than with the recipe (README).
    generated_steps: int = 1000
    spectral_every: int = 2
    real_steps: int = 2000
    # Phase 2 also regresses, for each real clip, the latent of the nearest of the pool's generated segments
    # (found among the `search_candidates` nearest by coarse log-mel frames): see training/encoder_train.py.
    search_targets: bool = True
    # Weight of a blurred log-mel distance beside the spectral one in both phases (training/encoder_train.py).
    coarse_weight: float = 1.0
    search_candidates: int = 16
    # Adam's rate on per-clip latents optimised beside the encoder in phase 2, whose best become its targets
    # (training/encoder_train.py `_Codes`); 0 keeps the pool's nearest as the targets.
    code_lr: float = 0.05
    # Real clips whose targets each phase-2 step regresses: the spectral batch's own, and more drawn beside them
    # up to this many (the regression costs an encoder pass, not a generator's, so it can afford a larger batch).
    # With the decay below it fitted the targets closer (piano's training clips nearer than random: 33% -> 73%).
    target_batch: int = 64
    # Phases 2 and 3: the learning rate falls along a cosine to this fraction of `lr` by the last step (1: constant).
    final_lr: float = 0.1
    # Iterative refinement (ReStyle, Alaluf et al. 2021): a second network looks at the sample beside what the
    # generator makes of the current latent and corrects the latent, `iterations` times (the bundle's refiner
    # graph; the host runs the generator between corrections). Trained after phase 2 for `iteration_steps` steps on the
    # real clips, the encoder frozen, unrolling `trained_iterations` corrections a step (whatever `iterations`
    # is: each correction is the same network, and it learns from where the earlier ones leave a clip);
    # 0 iterations: the encoder alone. The nearest of the latents (the encoder's and each correction's) to the
    # sample is kept, by the spectral distance at the encoder's own STFT (`frame_distance`, one more generator
    # run): corrections past the trained ones wander as often as they improve, and one can make a clip worse.
    # Two: with eight proposals and a beam of two (below), two corrections win 80% of every set's held-out clips;
    # a third won none more (benchmarks/results/inversion.json `sets`' corrections_scan), and each costs a
    # generator call on the beam.
    iterations: int = 2
    trained_iterations: int = 3
    iteration_steps: int = 1500
    # Latents the encoder proposes for each sample (multiple choice learning, Guzman-Rivera et al. 2012): each
    # phase trains the proposal nearest its target (winner takes all, the others a `spread_weight` share), so
    # where a sound is ambiguous (which octave, which kit piece, which voice) the proposals cover the readings
    # instead of averaging them into a latent that sounds like none. The host hears every proposal through the
    # bundle's generator, in one batched call, and corrects the nearest (the refiner's distance); 1: one
    # latent, as before. Eight, not four: with four, speech stayed near 75%; eight lift it, and the first call
    # measures all eight at once (one batched generator call and one refiner call that takes the sample's STFT once).
    hypotheses: int = 8
    # Proposals the host corrects side by side (the refiner's first call ranks all of them): the `beam` nearest,
    # each correction one generator call on `beam` latents. The refiner's distance at the first call does not
    # always rank first the proposal that corrects best, so a second start wins some clips the first loses:
    # with eight proposals and two corrections, speech 75% -> 82%, piano 87% -> 90% (inversion.json `sets`
    # against `eight_proposals_two_corrections`, the same bundles and clips).
    beam: int = 2
    spread_weight: float = 0.05
    batch: int = 32
    spectral_batch: int = 8  # batch of the steps that run the generator
    lr: float = 1e-3
    latent_weight: float = 5.0
    spectral_weight: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.n_fft < 16 or not 1 <= self.hop <= self.n_fft // 2:
            raise ValueError(f"encoder: n_fft >= 16 and 1 <= hop <= n_fft / 2, got {self.n_fft}, {self.hop}")
        for name in ("mels", "width", "hidden", "pool", "batch", "spectral_batch", "spectral_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder: {name} must be 1 or more, got {getattr(self, name)}")
        if min(self.depth, self.generated_steps, self.real_steps, self.iterations, self.iteration_steps) < 0:
            raise ValueError("encoder: depth, generated_steps, real_steps, iterations and iteration_steps must be 0 or more")
        if self.trained_iterations < 1:
            raise ValueError(f"encoder: trained_iterations must be 1 or more, got {self.trained_iterations}")
        if self.target_batch < 1 or not 0 < self.final_lr <= 1:
            raise ValueError(f"encoder: target_batch must be 1 or more and 0 < final_lr <= 1, got {self.target_batch}, {self.final_lr}")
        if not self.lr > 0:
            raise ValueError(f"encoder: lr must be > 0, got {self.lr}")
        if self.beam < 1:
            raise ValueError(f"encoder: beam must be 1 or more, got {self.beam}")
        if self.hypotheses < 1 or not 0 <= self.spread_weight <= 1:
            raise ValueError(f"encoder: hypotheses must be 1 or more and 0 <= spread_weight <= 1, got {self.hypotheses}, {self.spread_weight}")


class Encoder(nn.Module):
    """(B, segment) audio -> (B, latent_dim) latent, or (latent, (B, C) condition) for a conditioned GAN: the
    first of its `cfg.hypotheses` proposals; `propose` gives them all."""

    def __init__(self, cfg: EncoderConfig, sample_rate: int, segment: int, latent_dim: int, latent_dist: str, condition_columns: int = 0):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.latent_dist = latent_dist
        self.condition_columns = condition_columns
        self.stft = STFT(cfg.n_fft, cfg.hop)
        self.register_buffer("mel", torch.tensor(np.array(mel_filters(sample_rate, cfg.n_fft, cfg.mels)), dtype=torch.float32))  # (mels, bins)
        self.register_buffer("band_mean", torch.zeros(cfg.mels, 1))
        self.register_buffer("band_std", torch.ones(cfg.mels, 1))
        self.stack, self.dense = _stack(cfg, cfg.mels, segment)
        self.latent_dim = latent_dim
        self.latent = nn.Linear(cfg.hidden, latent_dim * cfg.hypotheses)
        self.condition = nn.Linear(cfg.hidden, condition_columns) if condition_columns else None

    def magnitude(self, audio: Tensor) -> Tensor:
        """(B, segment) -> (B, n_fft // 2 + 1, frames) |STFT|, floored at LOG_FLOOR."""
        real, imag = self.stft(audio)
        return torch.sqrt(real * real + imag * imag + LOG_FLOOR**2)

    def features(self, audio: Tensor, magnitude: Tensor | None = None) -> Tensor:
        """(B, segment) -> (B, mels, frames) log-mel, not yet standardised (from `magnitude` where given)."""
        mag = self.magnitude(audio) if magnitude is None else magnitude
        return torch.log(torch.einsum("mf,bft->bmt", self.mel, mag) + LOG_FLOOR)

    def set_statistics(self, audio: Tensor) -> None:
        """Per-band mean and std of the log-mel frames of `audio` (N, segment): the standardisation."""
        with torch.no_grad():
            feats = torch.cat([self.features(chunk) for chunk in audio.split(64)])
            self.band_mean.copy_(feats.mean(dim=(0, 2)).unsqueeze(1))
            self.band_std.copy_(feats.std(dim=(0, 2)).clamp_min(1e-3).unsqueeze(1))

    def standardised(self, audio: Tensor, magnitude: Tensor | None = None) -> Tensor:
        """(B, segment) -> (B, mels, frames) log-mel, standardised per band (from `magnitude` where given)."""
        return (self.features(audio, magnitude) - self.band_mean) / self.band_std

    def forward(self, audio: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        z, c = self.propose(audio)
        return z[:, 0] if c is None else (z[:, 0], c)

    def propose(self, audio: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, segment) -> ((B, hypotheses, D) proposed latents, (B, C) condition or None)."""
        h = self.dense(self.stack(self.standardised(audio)))
        z = self.latent(h).reshape(-1, self.cfg.hypotheses, self.latent_dim)
        if self.latent_dist == "uniform":
            z = torch.tanh(z)
        if self.condition is None:
            return z, None
        c = self.condition(h)
        pitch = PITCH_CENTRE + 12.0 * c[:, :1]
        if self.condition_columns == 1:
            return z, pitch
        return z, torch.cat([pitch, torch.sigmoid(c[:, 1:])], dim=1)


class Refiner(nn.Module):
    """One correction of the latent: (B, mels, frames) standardised log-mel of the sample and of what the
    generator makes of the current latent, and that latent (B, D) -> the corrected latent (B, D).

    It sees both spectrograms and their difference, so it learns the step that brings the second nearer the
    first, as `ganstream invert --refine` does by search, but in one pass. Its last layer starts at zero: an
    untrained refiner returns the latent it was given. Uniform latents are corrected in tanh's argument, so
    they stay inside (-1, 1)."""

    def __init__(self, cfg: EncoderConfig, segment: int, latent_dim: int, latent_dist: str):
        super().__init__()
        self.latent_dist = latent_dist
        self.stack, self.dense = _stack(cfg, 3 * cfg.mels, segment)
        self.head = nn.Sequential(nn.Linear(cfg.hidden + latent_dim, cfg.hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, latent_dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, sample: Tensor, heard: Tensor, z: Tensor) -> Tensor:
        h = self.dense(self.stack(torch.cat([sample, heard, sample - heard], dim=1)))
        delta = self.head(torch.cat([h, z], dim=1))
        if self.latent_dist == "uniform":
            z = z.clamp(-UNIFORM_EDGE, UNIFORM_EDGE)
            return torch.tanh(0.5 * (torch.log1p(z) - torch.log1p(-z)) + delta)  # atanh, which the ONNX exporter lacks
        return z + delta


UNIFORM_EDGE = 0.999  # a uniform latent's refinement starts from atanh of it, finite inside this


class RefinerStep(nn.Module):
    """One correction, as the bundle's refiner graph runs it: (B, segment) sample (or (1, segment), one sample for
    every row), (B, segment) what the generator makes of the latent, (B, D) the latent -> ((B, D) the corrected
    latent, (B,) `frame_distance` of the second audio to the first). The host runs the generator between steps
    (realtime/inversion.py), so the graph holds the refiner and the encoder's STFT and statistics, not a copy of
    the generator."""

    def __init__(self, encoder: Encoder, refiner: Refiner):
        super().__init__()
        self.encoder, self.refiner = encoder, refiner

    def forward(self, audio: Tensor, heard: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        got = self.encoder.magnitude(heard)
        one = self.encoder.magnitude(audio)  # a single sample's STFT is taken once, whatever the rows
        target = one.expand_as(got)
        sample = self.encoder.standardised(audio, one).expand(got.shape[0], -1, -1)
        corrected = self.refiner(sample, self.encoder.standardised(heard, got), z)
        return corrected, frame_distance(target, got)


class IterativeEncoder(nn.Module):
    """The encoder, then `iterations` refinements, each given what `generator` makes of the latent so far:
    (B, segment) audio -> what `Encoder` returns. The generator ((B, D [+ C]) -> audio) is frozen. The
    corrections start from the `beam` proposals nearest the sample, side by side, and the latent returned is
    the nearest to the sample of every one measured (`frame_distance`). This is the torch twin of what a host
    does with a bundle's encoder and refiner graphs (realtime/inversion.py `Inverter.encode`), which export
    splits so the bundle keeps one generator."""

    def __init__(self, encoder: Encoder, refiner: Refiner, generator: nn.Module, iterations: int, beam: int = 1):
        super().__init__()
        self.encoder, self.refiner, self.generator, self.iterations, self.beam = encoder, refiner, generator, iterations, beam
        self.step = RefinerStep(encoder, refiner)
        self.cfg = encoder.cfg

    def forward(self, audio: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        proposals, c = self.encoder.propose(audio)
        starts = self.nearest(audio, proposals, c, self.beam)  # (B, n, D)
        b, n, d = starts.shape
        rows_c = None if c is None else c.repeat_interleave(n, dim=0)
        latents, distances = self.run(audio.repeat_interleave(n, dim=0), starts.reshape(b * n, d), rows_c, self.iterations, measure=True)
        # (B, n * (iterations + 1)), start by start: every latent measured, the nearest kept.
        table = torch.stack(distances, dim=1).reshape(b, -1)
        every = torch.stack(latents, dim=1).reshape(b, -1, d)
        best = table.argmin(dim=1)
        z = every[torch.arange(b), best]
        return z if c is None else (z, c)

    def nearest(self, audio: Tensor, proposals: Tensor, condition: Tensor | None, k: int | None = None) -> Tensor:
        """(B, segment) audio, (B, M, D) proposals -> the proposal whose audio is nearest the sample by
        `frame_distance`, (B, D), as the host picks it (the first call of the refiner, on all M at once); with
        `k`, the k nearest, nearest first, (B, min(k, M), D)."""
        b, m, d = proposals.shape
        if m == 1:
            return proposals[:, 0] if k is None else proposals
        flat = proposals.reshape(b * m, d)
        rows = generator_rows(flat, None if condition is None else condition.repeat_interleave(m, dim=0))
        heard = self.encoder.magnitude(self.generator(rows).reshape(b * m, -1))  # the distance alone: no correction is needed
        distance = frame_distance(self.encoder.magnitude(audio).repeat_interleave(m, dim=0), heard).reshape(b, m)
        order = torch.sort(distance, dim=1, stable=True).indices[:, : 1 if k is None else k]
        picked = proposals[torch.arange(b)[:, None], order]
        return picked[:, 0] if k is None else picked

    def run(self, audio: Tensor, z: Tensor, condition: Tensor | None, iterations: int, measure: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """audio: (B, segment); z: (B, D) -> ([z, then the latent after each of `iterations` corrections],
        [each one's `frame_distance` to the audio, (B,)] where `measure`, else [])."""
        latents, distances = [z], []
        for k in range(iterations + int(measure)):
            corrected, distance = self.step(audio, self.generator(generator_rows(z, condition)).reshape(z.shape[0], -1), z)
            if measure:
                distances.append(distance)
            if k < iterations:
                z = corrected
                latents.append(z)
        return latents, distances


def generator_rows(z: Tensor, condition: Tensor | None) -> Tensor:
    """(B, D) latents [and (B, C) condition] -> (B, D [+ C]): the generator's input rows."""
    return z if condition is None else torch.cat([z, condition], dim=1)


def frame_distance(reference: Tensor, candidate: Tensor) -> Tensor:
    """(B, bins, frames) magnitudes each -> (B,): spectral convergence plus log-magnitude L1, core/distance.py's
    terms at one resolution (the encoder's STFT, n_fft 512 and hop 128 by default: the middle one of its three)."""
    sc = torch.sqrt(((candidate - reference) ** 2).sum(dim=(1, 2))) / (torch.sqrt((reference**2).sum(dim=(1, 2))) + DISTANCE_EPS)
    return sc + (torch.log(reference) - torch.log(candidate)).abs().mean(dim=(1, 2))


def _stack(cfg: EncoderConfig, channels: int, segment: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(B, channels, segment // hop) frames -> (B, hidden): a convolution, `depth` stride-2 ones, a dense layer."""
    frames = segment // cfg.hop
    layers: list[nn.Module] = [nn.Conv1d(channels, cfg.width, 5, padding=2), nn.LeakyReLU(0.2)]
    for _ in range(cfg.depth):
        layers += [nn.Conv1d(cfg.width, cfg.width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        frames = frames // 2
    if frames < 1:
        raise ValueError(f"encoder: depth {cfg.depth} leaves no frame of a {segment}-sample segment at hop {cfg.hop}")
    return nn.Sequential(*layers), nn.Sequential(nn.Flatten(), nn.Linear(cfg.width * frames, cfg.hidden), nn.LeakyReLU(0.2))


def octaves(pitch: Tensor) -> Tensor:
    """MIDI pitch -> octaves from PITCH_CENTRE: the scale the pitch loss compares in."""
    return (pitch - PITCH_CENTRE) / 12.0

