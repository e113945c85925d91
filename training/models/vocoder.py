"""The reconstruction network ("vocoder"): normalised log-magnitude frames in, audio out.

A Vocos-style network (Siuzdenko 2023): a ConvNeXt backbone over frames, a
magnitude head and a phase head, then an inverse STFT. Its input is exactly what
a spectral generator outputs (per-bin normalised log-magnitude, in [-1, 1]):
the bin statistics are buffers of the model, so the exported graph denormalises
inside itself and a bundle can chain generator -> vocoder with nothing between.

- The magnitude head predicts a log-magnitude residual on top of the input's
  magnitude: the input already is the magnitude, up to the 3-std clipping of the
  normalisation and the dropped Nyquist bin, so the head only corrects it.
- The phase head predicts an unnormalised (x, y) pair per bin; dividing by its
  length gives cos and sin of the phase without atan2, which neither ONNX nor a
  gradient handles well at the branch cut.
- A convolution over frames computes the same thing at every frame, so from a
  steady partial's identical frames it would predict an identical phase, where
  the STFT's phase turns by 2 pi f hop / sample_rate every frame. So the phase
  head also predicts each frame's phase advance, which is the same at every
  frame of a steady partial (its frequency), and the graph integrates it over
  frames (a cumulative sum); the (x, y) pair rotates the result locally.
  (Predicting the advance relative to each bin's centre frequency instead, a
  fixed rotation of 2 pi k hop / n_fft per frame, trained worse: 3 dB less
  spectral convergence after 3000 steps.)
- The inverse STFT (`istft.InverseSTFT`) uses the front end's n_fft, hop and
  window, so the frame rate of the input is the frame rate of the synthesis.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstream.realtime.spectral import BinNorm

from ..spectral import denormalise, mel_pseudo_inverse, normalise
from .istft import STFT, InverseSTFT
from .spectrogram import SpectrogramFrontEnd

_MAX_LOG_MAGNITUDE = math.log(1e3)  # a hann frame of full-scale audio peaks near n_fft / 2; this is far above
_PHASE_EPS = 1e-7  # keeps the (x, y) -> unit-vector division finite when the head outputs (0, 0)


@dataclass
class VocoderConfig(SpectrogramFrontEnd):
    """The front end's fields (what the input frames are; a spectral GAN's must match) and the network's."""

    kind: str = "vocoder"
    frames: int = 64  # frames per training segment (hop * frames samples): the network is convolutional, so any length runs
    width: int = 64  # channels of the ConvNeXt backbone
    depth: int = 4  # ConvNeXt blocks
    kernel: int = 7  # depthwise kernel over frames (odd, so frames stay aligned)
    expansion: int = 3  # pointwise hidden width = expansion * width
    layer_scale: float = 0.1  # initial scale of each block's residual branch
    # Training only (export ignores it): the weight of an adversarial loss from SpectrogramCritic,
    # with loss.kind's loss; 0 trains with the spectral and phase losses alone.
    adversarial: float = 0.0

    def validate(self) -> None:
        self.validate_front_end()
        if self.frames < 2 or self.width < 1 or self.depth < 0 or self.expansion < 1:
            raise ValueError(f"frames >= 2, width >= 1, depth >= 0, expansion >= 1; got {self.frames}, {self.width}, {self.depth}, {self.expansion}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel: an odd size, so frames stay aligned, not {self.kernel}")
        if self.adversarial < 0:
            raise ValueError(f"adversarial: a weight of 0 or more, not {self.adversarial}")


class ConvNeXtBlock(nn.Module):
    """(B, C, T) -> (B, C, T): depthwise conv over frames, LayerNorm, pointwise MLP, scaled residual."""

    def __init__(self, width: int, hidden: int, kernel: int, layer_scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.gamma = nn.Parameter(torch.full((width,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = self.depthwise(x).transpose(1, 2)  # (B, T, C): LayerNorm and Linear act on the last axis
        h = self.down(F.gelu(self.up(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Vocoder(nn.Module):
    """(B, bins, T) normalised log-magnitude frames -> (B, hop * T) audio."""

    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        self.cfg = cfg
        params = cfg.spectral()
        self.bins = params.bins
        self.stft_bins = cfg.n_fft // 2 + 1
        # The per-bin statistics of the training data (norm_*) and of the input (input_*): the
        # trainer sets both before step 1 and they travel in the checkpoint. They differ only in a
        # bundle whose GAN measured its own statistics: the input is denormalised with the GAN's
        # and renormalised with the vocoder's, so the backbone sees what it was trained on.
        for name, value in (("norm_mean", 0.0), ("norm_std", 1.0), ("input_mean", 0.0), ("input_std", 1.0)):
            self.register_buffer(name, torch.full((self.bins,), value))
        if cfg.mel_bins:
            # Mel input: the base magnitude spreads each band back over its STFT bins.
            self.register_buffer("to_linear", mel_pseudo_inverse(params), persistent=False)  # (stft_bins, mel_bins)
        self.embed = nn.Conv1d(self.bins, cfg.width, cfg.kernel, padding=cfg.kernel // 2)
        self.embed_norm = nn.LayerNorm(cfg.width, eps=1e-6)
        hidden = cfg.expansion * cfg.width
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.width, hidden, cfg.kernel, cfg.layer_scale) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, 4 * self.stft_bins)  # log-magnitude residual, phase advance, phase x, y
        with torch.no_grad():  # the magnitude starts as the input's, and the phase advance at zero
            self.head.weight[: 2 * self.stft_bins].zero_()
            self.head.bias[: 2 * self.stft_bins].zero_()
        self.istft = InverseSTFT(cfg.n_fft, cfg.hop, cfg.window)

    def set_norm(self, norm: BinNorm) -> None:
        """Takes the training data's per-bin statistics, which are also the input's."""
        self._copy_norm(norm, "norm")
        self._copy_norm(norm, "input")

    def with_input_norm(self, norm: BinNorm) -> "Vocoder":
        """A copy that takes input normalised with `norm` (a GAN's statistics) instead of the training data's."""
        other = copy.deepcopy(self)
        other._copy_norm(norm, "input")
        return other

    def norm(self) -> BinNorm:
        """The BinNorm the input frames are normalised with."""
        return BinNorm.from_arrays(self.input_mean.cpu().numpy(), self.input_std.cpu().numpy(), clip=self.cfg.norm_clip)

    def _copy_norm(self, norm: BinNorm, prefix: str) -> None:
        mean, std = norm.to_arrays()
        if mean.shape != (self.bins,) or std.shape != (self.bins,):
            raise ValueError(f"BinNorm has {mean.shape[0]} bins, the vocoder {self.bins}")
        if norm.clip != self.cfg.norm_clip:
            raise ValueError(f"BinNorm clips at {norm.clip} std, model.norm_clip is {self.cfg.norm_clip}")
        getattr(self, f"{prefix}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
        getattr(self, f"{prefix}_std").copy_(torch.as_tensor(std, dtype=torch.float32))

    def base_log_magnitude(self, log_mag: Tensor) -> Tensor:
        """(B, bins, T) log-magnitude of the input -> (B, n_fft // 2 + 1, T) log-magnitude the head corrects."""
        if self.cfg.mel_bins:
            linear = torch.einsum("fm,bmt->bft", self.to_linear, torch.exp(log_mag))
            return torch.log(linear.clamp_min(self.cfg.log_floor))
        if self.bins < self.stft_bins:  # the Nyquist bin was dropped: start it from the floor
            return F.pad(log_mag, (0, 0, 0, self.stft_bins - self.bins), value=math.log(self.cfg.log_floor))
        return log_mag

    def spectrum(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, bins, T) -> the predicted STFT's real and imaginary parts, (B, n_fft // 2 + 1, T) each."""
        clip = self.cfg.norm_clip
        log_mag = denormalise(frames, self.input_mean, self.input_std, clip)
        features = normalise(log_mag, self.norm_mean, self.norm_std, clip)
        h = self.embed_norm(self.embed(features).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        out = self.head(self.out_norm(h.transpose(1, 2))).transpose(1, 2)  # (B, 4F, T)
        residual, advance, x, y = out.split(self.stft_bins, dim=1)
        magnitude = torch.exp((self.base_log_magnitude(log_mag) + residual).clamp_max(_MAX_LOG_MAGNITUDE))
        scale = magnitude * torch.rsqrt(x * x + y * y + _PHASE_EPS)
        phase = torch.cumsum(advance, dim=2)
        cos, sin = torch.cos(phase), torch.sin(phase)
        return scale * (x * cos - y * sin), scale * (x * sin + y * cos)

    def synthesise(self, real: Tensor, imag: Tensor) -> Tensor:
        """(B, n_fft // 2 + 1, T) spectrum -> (B, hop * T) audio in [-1, 1]."""
        # Bundles promise audio in [-1, 1]; a generated spectrogram louder than any training clip would overshoot.
        return self.istft(real, imag).clamp(-1.0, 1.0)

    def forward(self, frames: Tensor) -> Tensor:
        """(B, bins, T) normalised log-magnitude -> (B, hop * T) audio in [-1, 1]."""
        return self.synthesise(*self.spectrum(frames))


class SpectrogramCritic(nn.Module):
    """(B, 1, T) audio -> (B,) scores, from its log-power STFT at the front end's resolution.

    A one-resolution version of the spectrogram discriminators of UnivNet and Vocos: 2-D
    convolutions over (frequency, frames), strided along frequency, then the mean score.
    """

    def __init__(self, cfg: VocoderConfig, width: int = 16):
        super().__init__()
        self.stft = STFT(cfg.n_fft, cfg.hop, cfg.window)
        layers: list[nn.Module] = [nn.Conv2d(1, width, (9, 3), padding=(4, 1)), nn.LeakyReLU(0.2)]
        for _ in range(3):
            layers += [nn.Conv2d(width, width, (9, 3), stride=(2, 1), padding=(4, 1)), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, audio: Tensor) -> Tensor:
        real, imag = self.stft(audio[:, 0])
        log_power = torch.log(real * real + imag * imag + 1e-10).unsqueeze(1)  # (B, 1, F, T)
        return self.body(0.1 * log_power).mean(dim=(1, 2, 3))
