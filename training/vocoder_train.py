"""Training the reconstruction network (models/vocoder.py) on real audio of a dataset.

`VocoderTrainer` owns the vocoder, its EMA copy, the optimiser and the losses,
as `GANTrainer` does for a GAN; the model stays a pure `nn.Module`. Each step
takes real segments, computes their normalised log-magnitude with the spectral
front end (exactly what a spectral generator outputs), reconstructs audio from
it and minimises

    spectral convergence + log-magnitude L1 at the front end's own resolution (its
    n_fft and hop: what `ganstream eval-reconstruction` measures)
    + AUX_WEIGHT x the same at the other resolutions of the multi-resolution STFT
    loss (half and twice the front end's n_fft, hop n_fft / 4) and the log-mel L1
    [+ model.adversarial x the adversarial loss of a spectrogram critic, loss.kind's].

The weights are measured on synth:piano (configs/vocoder.yaml; held-out spectral
convergence at the front end, 1200 steps, one Griffin-Lim step): the
multi-resolution loss with equal weights and the mel L1 at weight 1 reached
-19.0 dB; the front end's n_fft alone -19.6 dB. With two Griffin-Lim steps
(1500 steps), AUX_WEIGHT 0.25 and 0 came out alike (-20.4 dB), and 0.25 had
the better log-spectral distance (3.55 against 3.59 dB). The phase is not
learned (models/vocoder.py), so the phase losses of the first design
(instantaneous frequency and group delay, after APNet) are gone.

The loss logarithms floor magnitudes at the front end's log_floor (1e-5),
where the vocoder's input stops; those figures were measured with a floor of
1e-7. That floor lay under float32's rounding noise, so silent bins' noise
became loss: on four decaying tones (tests/test_vocoder.py), 70 % of the bins
lie 100 dB under the peak, and bins 60 dB under it made 0.88 of the 0.94
log-magnitude term. MKL's FFT rounds differently on AMD, and the course of the
first steps followed: the first loss 1.700 there against 1.707 here, the first
gradient norm 5.6 against 3.1 (reproduced on Intel with MKL_CBWR=COMPATIBLE;
ATen's CPU capability and oneDNN do not change the first loss). With the floor
at 1e-5 both FFT paths start at 1.138/1.136 and the gradient norm stays under
20 instead of 60. On synth:piano (600 steps, 32 held-out clips) it reached
-19.8 dB spectral convergence and 3.55 dB log-spectral distance against
-19.1 dB and 3.64 dB, and the largest logged gradient norm fell from 9.2 to 2.7.

`VocoderRun` is `loop.Run` for this task: the same run directory, config hash,
atomic checkpoints, exact resume, NaN rollback, metrics.csv, curves.png and
previews (each preview clip followed by its reconstruction). `train` picks it
when `model.kind` is `vocoder`. The loop's GAN-only parts differ: one batch per
step, no critic, and no in-training evaluation (`ganstream eval-reconstruction`
scores a trained vocoder against Griffin-Lim and PGHI).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ganstream.core.spectral import BinNorm, SpectralParams

from .config import ConfigError, TrainConfig
from .gan import EMA, grad_norm
from .loop import Run
from .data.spectrograms import spectrogram_norm
from .losses import GANLoss
from .models import build_vocoder
from .models.critics import CRITICS, FeatureTap, paired_feature_matching
from .models.vocoder import Vocoder
from .spectral import log_magnitude, magnitude, normalise, stft

GradSync = Callable[[nn.Module], None]

# The other resolutions of the multi-resolution STFT loss, as multiples of the front end's n_fft (hop = n_fft / 4):
# one finer in time, the front end's n_fft at a finer hop, and one finer in frequency.
STFT_SCALES = (0.5, 1.0, 2.0)
MEL_BINS = 64  # the mel loss' bands, at 2x the front end's n_fft
AUX_WEIGHT = 0.25  # of the other resolutions' and the mel losses, against the front end's own


class ReconstructionLoss(nn.Module):
    """Spectral losses between reconstructed and real audio, (B, T) each: see the module docstring."""

    def __init__(self, params: SpectralParams):
        super().__init__()
        rate = params.sample_rate
        self.front_end = SpectralParams(sample_rate=rate, n_fft=params.n_fft, hop=params.hop, drop_nyquist=False)
        self.resolutions = [
            SpectralParams(sample_rate=rate, n_fft=max(16, int(params.n_fft * scale)), hop=max(4, int(params.n_fft * scale)) // 4, drop_nyquist=False)
            for scale in STFT_SCALES
        ]
        self.mel = SpectralParams(sample_rate=rate, n_fft=2 * params.n_fft, hop=params.n_fft // 2, mel_bins=MEL_BINS)
        # The loss logarithms floor magnitudes where the vocoder's input does (the front end's log_floor): below it
        # the input says nothing, and a lower floor (1e-7 before) made most of the loss and gradient the float32
        # rounding noise of silent bins, which differs by FFT code path (see the module docstring).
        self.floor = params.log_floor

    def _log(self, mag: Tensor) -> Tensor:
        return torch.log(mag.clamp_min(self.floor))

    def _spectral(self, fake: Tensor, real: Tensor, p: SpectralParams) -> tuple[Tensor, Tensor]:
        """Spectral convergence and log-magnitude L1 at one resolution, each averaged over the batch."""
        f, r = magnitude(stft(fake, p), p), magnitude(stft(real, p), p)
        sc = torch.linalg.norm(r - f, dim=(1, 2)) / torch.linalg.norm(r, dim=(1, 2)).clamp_min(self.floor)
        log_mag = (self._log(f) - self._log(r)).abs().mean(dim=(1, 2))
        return sc.mean(), log_mag.mean()

    def forward(self, fake: Tensor, real: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        sc, log_mag = self._spectral(fake, real, self.front_end)
        others = [self._spectral(fake, real, p) for p in self.resolutions]
        multi = torch.stack([a + b for a, b in others]).mean()
        mel_f, mel_r = magnitude(stft(fake, self.mel), self.mel), magnitude(stft(real, self.mel), self.mel)
        mel_loss = (self._log(mel_f) - self._log(mel_r)).abs().mean()
        total = sc + log_mag + AUX_WEIGHT * (multi + mel_loss)
        parts = {"spectral_convergence": sc.detach(), "log_magnitude": log_mag.detach(), "multi_resolution": multi.detach(), "mel": mel_loss.detach()}
        return total, parts


class VocoderTrainer:
    """The vocoder, its EMA copy, the optimiser, the losses and the learning-rate state of one run."""

    def __init__(self, cfg: TrainConfig, device: torch.device, norm: BinNorm, grad_sync: GradSync | None = None):
        self.cfg = cfg
        self.device = device
        self.params = cfg.model.spectral()
        self.vocoder: Vocoder = build_vocoder(cfg.model)
        self.vocoder.set_norm(norm)
        self.vocoder.to(device)
        self.norm = norm
        self.ema = EMA(self.vocoder, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.vocoder.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.loss = ReconstructionLoss(self.params).to(device)
        # model.critics, each with its own loss (summed), one optimiser over all of them.
        self.critics = nn.ModuleDict()
        if cfg.model.adversarial > 0:
            self.critics = nn.ModuleDict({name: CRITICS[name](cfg.model, cfg.loss) for name in cfg.model.critics}).to(device)
            self.opt_d = torch.optim.Adam(self.critics.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
            self.adversarial = GANLoss(cfg.loss)
        self.lr_scale = 1.0  # halved by every NaN rollback
        self.updates = 0  # steps taken: where the learning-rate decay stands
        self.grad_sync = grad_sync or (lambda module: None)

    @property
    def export_generator(self) -> nn.Module:
        """The weights to export and preview: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.vocoder

    def features(self, audio: Tensor) -> Tensor:
        """(B, T) audio -> (B, bins, frames) normalised log-magnitude, as a spectral generator outputs it."""
        return normalise(log_magnitude(stft(audio, self.params), self.params), self.norm)

    def step(self, real_batches: list[Tensor]) -> dict[str, float]:
        """One update on the last of `real_batches` ((B, 1, T) audio)."""
        audio = real_batches[-1][:, 0]
        self.vocoder.train()
        self.opt.zero_grad(set_to_none=True)
        fake = self.vocoder(self.features(audio))
        target = audio[:, : fake.shape[-1]]
        loss, parts = self.loss(fake, target)
        if self.critics:
            parts.update(self._critic_step(target, fake.detach()))
            g_loss, fm = self._adversarial_loss(target, fake)
            loss = loss + self.cfg.model.adversarial * g_loss + self.cfg.loss.feature_matching * fm
            parts["loss_g"] = g_loss.detach()
            parts["feature_matching"] = fm.detach()
        loss.backward()
        self.grad_sync(self.vocoder)
        stats = {"loss": loss.item(), **{k: float(v) for k, v in parts.items()}}
        stats["grad_norm"] = grad_norm(self.vocoder.parameters())
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate()
        self.opt.step()
        self.updates += 1
        if self.ema is not None:
            self.ema.update(self.vocoder)
        stats["lr"] = self.opt.param_groups[0]["lr"]
        return stats

    def _critic_step(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """One update of every critic on (B, T) real and detached fake audio."""
        self.critics.train()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss = real.new_zeros(())
        stats: dict[str, Tensor] = {}
        for name, critic in self.critics.items():
            loss, s = self.adversarial.critic(critic, real.unsqueeze(1), fake.unsqueeze(1))
            d_loss = d_loss + loss
            stats |= {f"{k}_{name}": v.detach() for k, v in s.items()}
        d_loss.backward()
        self.grad_sync(self.critics)
        self.opt_d.step()
        return {"loss_d": d_loss.detach(), **stats}

    def _adversarial_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """The generator's adversarial loss and the paired feature matching of (B, T) fake (attached)
        against its real, summed over the critics, whose weights they do not train."""
        self.critics.requires_grad_(False)
        g_loss, fm = fake.new_zeros(()), fake.new_zeros(())
        for critic in self.critics.values():
            if self.cfg.loss.feature_matching > 0:
                with torch.no_grad(), FeatureTap(critic) as tap:
                    critic(real.unsqueeze(1))
                with FeatureTap(critic) as tap_fake:
                    scores = critic(fake.unsqueeze(1))
                fm = fm + paired_feature_matching(tap.features, tap_fake.features)
            else:
                scores = critic(fake.unsqueeze(1))
            g_loss = g_loss + self.adversarial.generator_from_scores(scores)
        self.critics.requires_grad_(True)
        return g_loss, fm

    def learning_rate(self) -> float:
        """optim.lr_g, decayed by a cosine from 1 to model.lr_final over train.steps, times lr_scale."""
        final = self.cfg.model.lr_final
        progress = min(1.0, self.updates / max(1, self.cfg.train.steps))
        return self.cfg.optim.lr_g * self.lr_scale * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))

    def halve_learning_rate(self) -> None:
        self.lr_scale *= 0.5
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate()
        for group in self.opt_d.param_groups if self.critics else ():
            group["lr"] = self.cfg.optim.lr_d * self.lr_scale

    @torch.no_grad()
    def reconstruct(self, audio: Tensor) -> Tensor:
        """(B, T) real audio -> (B, samples) its reconstruction by the exported (EMA) weights."""
        vocoder = self.export_generator.eval()
        return vocoder(self.features(audio))

    def state(self) -> dict[str, Any]:
        return {
            "vocoder": self.vocoder.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "opt": self.opt.state_dict(),
            "lr_scale": self.lr_scale,
            "updates": self.updates,
            **({"critics": self.critics.state_dict(), "opt_d": self.opt_d.state_dict()} if self.critics else {}),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Strict: a missing or unexpected tensor is an error, never silently skipped."""
        self.vocoder.load_state_dict(state["vocoder"])
        if self.ema is not None:
            if state["ema"] is None:
                raise KeyError("ema: the checkpoint has no EMA weights but train.ema_decay > 0")
            self.ema.module.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        if "critic" in state:
            raise KeyError("critic: this checkpoint's one spectrogram critic is gone (model.critics replaced it); train the run anew")
        if bool(self.critics) != ("critics" in state):
            raise KeyError("critics: model.adversarial and the checkpoint disagree on whether there are critics")
        if self.critics:
            self.critics.load_state_dict(state["critics"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.lr_scale = float(state["lr_scale"])
        self.updates = int(state["updates"])
        self.norm = self.vocoder.norm()


class VocoderRun(Run):
    """`loop.Run` for the reconstruction network: model.kind `vocoder`."""

    def _make_trainer(self, grad_sync: GradSync | None) -> VocoderTrainer:
        model = self.cfg.model
        if model.sample_rate != self.cfg.data.sample_rate:
            raise ConfigError(f"model.sample_rate ({model.sample_rate}) must equal data.sample_rate ({self.cfg.data.sample_rate})")
        norm = spectrogram_norm(self.data, model.spectral(), model.norm_clip)
        return VocoderTrainer(self.cfg, self.device, norm, grad_sync)

    def _make_preview_inputs(self) -> Tensor:
        """(preview_count, segment): the first training segments, in their epoch-0 placement."""
        n = min(self.cfg.train.preview_count, len(self.data))
        return torch.from_numpy(self.data.batch(np.arange(n), 0)).to(self.device)

    def _make_evaluator(self, resume: bool) -> None:
        return None

    def _batches_per_step(self) -> int:
        return 1

    def _slow_down(self) -> None:
        self.trainer.halve_learning_rate()

    def _progress(self, stats: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{stats['loss']:.3f}", "sc": f"{stats['spectral_convergence']:.3f}"}

    def generate_previews(self) -> np.ndarray:
        """(2 * preview_count, samples): each preview clip, then its reconstruction."""
        real = self.preview_inputs
        fake = self.trainer.reconstruct(real)
        pairs = torch.stack([real[:, : fake.shape[-1]], fake], dim=1)
        return pairs.flatten(0, 1).float().cpu().numpy()

