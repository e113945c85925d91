"""The reconstruction network ("vocoder"): normalised log-magnitude frames in, audio out.

A Vocos-style network (Siuzdenko 2023): a ConvNeXt backbone over frames, a
magnitude head and a phase head, then an inverse STFT. Its input is exactly what
a spectral generator outputs (per-bin normalised log-magnitude, in [-1, 1]):
the bin statistics are buffers of the model, so the exported graph denormalises
inside itself and a bundle can chain generator -> vocoder with nothing between.

- The magnitude head predicts a log-magnitude residual on top of the input's
  magnitude: the input already is the magnitude, up to the 3-std clipping of the
  normalisation and the dropped Nyquist bin, so the head only corrects it.
- The phase comes from a prior the network corrects. A convolution over frames
  computes the same thing at every frame, so from a steady partial's identical
  frames it would predict an identical phase, where the STFT's phase turns by
  2 pi f hop / sample_rate every frame; learning each partial's frequency to the
  few hertz that coherence needs, through a phase that accumulates over the
  segment, is slow (the first design, which predicted the advance from scratch,
  reached -13 dB spectral convergence after 15 CPU-minutes, where Griffin-Lim
  with 32 iterations reaches -24 dB). So the graph computes a phase-locked
  vocoder's phase from the input magnitude, as Laroche and Dolson (1999)
  lock a phase vocoder's: every bin belongs to the largest bin within the Hann
  window's main lobe (2 bins either side); that peak's frequency follows from
  the ratio of its larger neighbour to itself (exact for one sinusoid under a
  Hann window: offset = (2a - 1) / (1 + a) bins); each peak's phase advances
  by 2 pi f hop / sample_rate a frame (a cumulative sum over frames), and the
  bins of its lobe take its phase plus pi per bin (the window is centred in the
  FFT frame). The head adds a learned correction to each peak's advance and
  rotates each bin by a learned unit vector ((x, y) divided by its length: no
  atan2, which neither ONNX nor a gradient handles well at the branch cut).
  Both start at zero and (1, 0), so the untrained network is the locked
  vocoder (-18.1 dB spectral convergence on synth:piano's clipped front-end
  magnitudes). Training has yet to improve on it: -17.0 dB after 2921 CPU steps.
- `projections` steps of Griffin-Lim follow inside the graph (STFT of the
  inverse STFT, keep the phase, put the magnitude back): each costs about as
  much as the backbone and takes the phase most of the way to consistency
  (on synth:piano one step gains 2 to 3 dB of spectral convergence).
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
# Floors |STFT| in a Griffin-Lim step at this fraction of the magnitude put back: where the STFT
# all but vanishes, 1 / |STFT| would make the gradient explode (training then got worse, not better).
_PROJECTION_FLOOR = 1e-2
_HANN_LOBE = 2  # bins either side of a peak in a Hann window's main lobe
_BELOW_ANY = -1e4  # a log-magnitude below any real one: padding that is never a peak


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
    projections: int = 1  # Griffin-Lim steps inside the graph after the network's phase (0: none)
    # Training only (export ignores it): the weight of an adversarial loss from SpectrogramCritic,
    # with loss.kind's loss; 0 trains with the spectral and phase losses alone.
    adversarial: float = 0.0

    def validate(self) -> None:
        self.validate_front_end()
        if self.frames < 2 or self.width < 1 or self.depth < 0 or self.expansion < 1:
            raise ValueError(f"frames >= 2, width >= 1, depth >= 0, expansion >= 1; got {self.frames}, {self.width}, {self.depth}, {self.expansion}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel: an odd size, so frames stay aligned, not {self.kernel}")
        if self.projections < 0:
            raise ValueError(f"projections: 0 or more Griffin-Lim steps, not {self.projections}")
        if self.adversarial < 0:
            raise ValueError(f"adversarial: a weight of 0 or more, not {self.adversarial}")


class PhaseLock(nn.Module):
    """(B, F, T) log-magnitude and a learned advance correction -> (B, F, T) phase of a phase-locked vocoder.

    F = n_fft // 2 + 1 linear bins. See the module docstring; every step is an
    ONNX operator (ArgMax, GatherElements, CumSum), so the prior exports with the
    network. Only the correction carries a gradient: the vocoder feeds it the
    input's log-magnitude, which no weight changes. For another window than
    Hann the lobe is one bin wide and the frequency offset zero: each bin turns
    at its centre frequency, plus the correction.
    """

    def __init__(self, n_fft: int, hop: int, window: str):
        super().__init__()
        self.hop_per_bin = 2 * math.pi * hop / n_fft  # phase advance per frame per bin of frequency
        self.lobe = _HANN_LOBE if window == "hann" else 0
        bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        # Each bin's centre-frequency advance, wrapped: the cumulative sum stays small enough for float32.
        self.register_buffer("centre", torch.remainder(bins * self.hop_per_bin, 2 * math.pi).float().view(1, -1, 1), persistent=False)
        self.register_buffer("index", bins.long().view(1, -1, 1), persistent=False)

    def forward(self, log_mag: Tensor, correction: Tensor) -> Tensor:
        """log_mag, correction: (B, F, T) -> (B, F, T) phase."""
        bins, w = log_mag.shape[1], self.lobe
        advance = self.centre + correction
        if w == 0:
            return torch.cumsum(advance, dim=2)
        padded = F.pad(log_mag, (0, 0, w, w), value=_BELOW_ANY)
        neighbourhood = torch.stack([padded[:, i : i + bins] for i in range(2 * w + 1)], dim=1)  # (B, 2w + 1, F, T)
        owner = (self.index + torch.argmax(neighbourhood, dim=1) - w).clamp(0, bins - 1)
        # The larger neighbour's side gives the sign; written as the difference of both sides'
        # offsets (the smaller side's is 0 for one sinusoid), it has no jump where they swap.
        offset = _peak_offset(padded[:, w + 1 : w + 1 + bins] - log_mag) - _peak_offset(padded[:, w - 1 : w - 1 + bins] - log_mag)
        advance = advance + self.hop_per_bin * offset
        peak_phase = torch.cumsum(torch.gather(advance, 1, owner), dim=2)
        return torch.gather(peak_phase, 1, owner) + math.pi * (owner - self.index).float()


def _peak_offset(log_ratio: Tensor) -> Tensor:
    """A neighbour's log-magnitude ratio to a Hann-windowed peak -> how far towards it the sinusoid lies, in [0, 1] bins."""
    ratio = torch.exp(log_ratio.clamp(max=0.0))
    return ((2 * ratio - 1) / (1 + ratio)).clamp(0.0, 1.0)


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
        self.head = nn.Linear(cfg.width, 4 * self.stft_bins)  # log-magnitude residual, advance correction, rotation x, y
        with torch.no_grad():  # untrained, the network is the phase-locked vocoder: no residual, correction or rotation
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.bias[2 * self.stft_bins : 3 * self.stft_bins].fill_(1.0)
        self.lock = PhaseLock(cfg.n_fft, cfg.hop, cfg.window)
        self.istft = InverseSTFT(cfg.n_fft, cfg.hop, cfg.window)
        self.stft = STFT(cfg.n_fft, cfg.hop, cfg.window) if cfg.projections else None

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
        residual, correction, x, y = out.split(self.stft_bins, dim=1)
        base = self.base_log_magnitude(log_mag)
        log_magnitude = (base + residual).clamp_max(_MAX_LOG_MAGNITUDE)
        magnitude = torch.exp(log_magnitude)
        # The prior comes from the input's peaks, not the corrected magnitude's: through the
        # phase accumulated over the segment, a small change of magnitude would turn the loss
        # chaotically (training made it worse), and an argmax over the network's output could flip
        # between near-equal bins where ONNX Runtime's arithmetic differs from PyTorch's in the last bit.
        phase = self.lock(base, correction)
        scale = magnitude * torch.rsqrt(x * x + y * y + _PHASE_EPS)
        cos, sin = torch.cos(phase), torch.sin(phase)
        real, imag = scale * (x * cos - y * sin), scale * (x * sin + y * cos)
        for _ in range(self.cfg.projections):
            real, imag = self.stft(self.istft(real, imag))
            scale = magnitude * torch.rsqrt(real * real + imag * imag + (_PROJECTION_FLOOR * magnitude) ** 2)
            real, imag = scale * real, scale * imag
        return real, imag

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
