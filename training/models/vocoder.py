"""The reconstruction network ("vocoder"): normalised log-magnitude frames in, audio out.

After Vocos (Siuzdenko 2023): a ConvNeXt backbone over frames and a magnitude
head; a phase computed from the magnitude; `projections` Griffin-Lim steps; an
inverse STFT. Its input is exactly what
a spectral generator outputs (per-bin normalised log-magnitude, in [-1, 1]):
the bin statistics are buffers of the model, so the exported graph denormalises
inside itself and a bundle can chain generator -> vocoder with nothing between.

- The head predicts a log-magnitude residual on top of the input's magnitude:
  the input already is the magnitude, up to the 3-std clipping of the
  normalisation (which flattens the loudest peaks) and the dropped Nyquist bin,
  so the head only corrects it.
- The phase is not learned; the graph computes it from the input. A convolution
  over frames computes the same thing at every frame, so from a steady
  partial's identical frames it would predict an identical phase, where the
  STFT's phase turns by 2 pi f hop / sample_rate every frame. The first design
  learned the phase advance from nothing and reached -13 dB spectral
  convergence after 15 CPU-minutes (Griffin-Lim with 32 iterations: -24 dB on
  the same, unclipped magnitudes). Learned corrections on top of the prior below
  fitted a training batch but made held-out clips worse (-17.0 dB after 2921
  steps against -18.1 untrained), where learning the magnitude alone improves
  them. So `PhaseLock` computes a phase-locked vocoder's phase, as Laroche and
  Dolson (1999) lock a phase vocoder's: every bin belongs to the largest bin
  within the Hann window's main lobe (2 bins either side); that peak's
  frequency follows from the ratio of its larger neighbour to itself (exact for
  one sinusoid under a Hann window: offset = (2a - 1) / (1 + a) bins); each
  peak's phase advances by 2 pi f hop / sample_rate a frame (a cumulative sum
  over frames), and the bins of its lobe take its phase plus pi per bin (the
  window is centred in the FFT frame). Its input is the input's magnitude, not
  the corrected one: through the phase accumulated over the segment, a small
  change of magnitude turned the loss chaotically (training made it worse).
- `projections` steps of Griffin-Lim follow inside the graph (STFT of the
  inverse STFT, keep the phase, put the magnitude back), with fast Griffin-Lim's
  momentum when `projection_momentum` is set. Each costs two transforms, more
  than the backbone, and brings the phase nearer to consistency: on synth:piano
  one step gains 2 to 3 dB of spectral convergence.
- `phase` residual or learned adds a phase head (an angle per bin, used through
  its cosine and sine): residual adds it to the prior's phase, learned replaces
  the prior. On the real piano set the residual head gained 0.5 dB on held-out
  notes at 6 CPU-minutes (benchmarks/vocoder_sweep.py), where on synth:piano
  (above) the same idea made held-out clips worse.
- The inverse STFT (`istft.InverseSTFT`) uses the front end's n_fft, hop and
  window, so the frame rate of the input is the frame rate of the synthesis.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstream.core.spectral import BinNorm

from ..spectral import denormalise, mel_pseudo_inverse, normalise
from .istft import STFT, InverseSTFT
from .spectrogram import SpectrogramFrontEnd

_MAX_LOG_MAGNITUDE = math.log(1e3)  # a hann frame of full-scale audio peaks near n_fft / 2; this is far above
# Floors |STFT| in a Griffin-Lim step at this fraction of the magnitude put back: where the STFT
# all but vanishes, 1 / |STFT| would make the gradient explode (training then got worse, not better).
_PROJECTION_FLOOR = 1e-2
_HANN_LOBE = 2  # bins either side of a peak in a Hann window's main lobe
_BELOW_ANY = -1e4  # a log-magnitude below any real one: padding that is never a peak
PHASES = ("locked", "residual", "learned")  # model.phase


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
    # Fast Griffin-Lim's momentum for those steps (Perraudin et al. 2013; 0: plain Griffin-Lim). From
    # the locked prior of a network trained 6 CPU-minutes on the piano set, 2 steps at 0.99 reached
    # -19.5 dB on 24 held-out clips against -19.1 at 0, 4 steps -21.3 against -20.2.
    projection_momentum: float = 0.0
    # Where the phase comes from (see the module docstring): "locked", the phase-locked prior alone;
    # "learned", a phase head as Vocos's (an angle per bin, used through its cosine and sine, a unit
    # vector); "residual", the head's angle added to the prior's (zero-initialised: untrained, it is
    # the prior).
    phase: str = "locked"
    # Training only (export ignores it): the weight of the adversarial loss from `critics` (names in
    # models/critics.py's CRITICS, set up by loss.*: "period" is HiFi-GAN's multi-period critic, "stft"
    # the multi-resolution spectrogram critic of UnivNet and Vocos), with loss.kind's loss and
    # loss.feature_matching's weight of paired feature matching; 0 trains with the spectral losses alone.
    adversarial: float = 0.0
    critics: list[str] = field(default_factory=lambda: ["period", "stft"])
    # Training only: the learning rate at train.steps, as a fraction of optim.lr_g, reached by a
    # cosine decay (Vocos decays it so); 1 keeps it constant. On synth:piano the held-out spectral
    # convergence wandered by +-0.3 dB from step to step at a constant 1e-3.
    lr_final: float = 1.0

    @property
    def channels(self) -> int:
        """Audio channels of the output: what the critics (models/critics.py) take."""
        return 1

    def validate(self) -> None:
        self.validate_front_end()
        if self.frames < 2 or self.width < 1 or self.depth < 0 or self.expansion < 1:
            raise ValueError(f"frames >= 2, width >= 1, depth >= 0, expansion >= 1; got {self.frames}, {self.width}, {self.depth}, {self.expansion}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel: an odd size, so frames stay aligned, not {self.kernel}")
        if self.projections < 0:
            raise ValueError(f"projections: 0 or more Griffin-Lim steps, not {self.projections}")
        if not 0 <= self.projection_momentum < 1.5:
            raise ValueError(f"projection_momentum: in [0, 1.5), not {self.projection_momentum}")
        if self.phase not in PHASES:
            raise ValueError(f"phase: one of {', '.join(PHASES)}, not {self.phase!r}")
        if self.adversarial < 0:
            raise ValueError(f"adversarial: a weight of 0 or more, not {self.adversarial}")
        from .critics import CRITICS  # here: critics.py imports the package this module is part of

        known = sorted(set(CRITICS) - {"wave"})  # "wave" is a GAN family's own critic; a vocoder has none
        if self.adversarial > 0 and (not self.critics or any(c not in known for c in self.critics) or len(set(self.critics)) != len(self.critics)):
            raise ValueError(f"critics: one or more of {', '.join(known)}, each once, not {self.critics}")
        if not 0 < self.lr_final <= 1:
            raise ValueError(f"lr_final: a fraction of optim.lr_g in (0, 1], not {self.lr_final}")


class PhaseLock(nn.Module):
    """(B, F, T) log-magnitude -> (B, F, T) phase of a phase-locked vocoder.

    F = n_fft // 2 + 1 linear bins. See the module docstring; every step is an
    ONNX operator (MaxPool, Where, GatherElements, CumSum), so the prior exports with the
    network. No weight reaches it: the vocoder feeds it the input's
    log-magnitude. For another window than Hann the lobe is one bin wide and the
    frequency offset zero: each bin turns at its centre frequency.
    """

    def __init__(self, n_fft: int, hop: int, window: str):
        super().__init__()
        self.hop_per_bin = 2 * math.pi * hop / n_fft  # phase advance per frame per bin of frequency
        self.lobe = _HANN_LOBE if window == "hann" else 0
        bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        # Each bin's centre-frequency advance, wrapped: the cumulative sum stays small enough for float32.
        self.register_buffer("centre", torch.remainder(bins * self.hop_per_bin, 2 * math.pi).float().view(1, -1, 1), persistent=False)
        self.register_buffer("index", bins.long().view(1, -1, 1), persistent=False)

    def forward(self, log_mag: Tensor) -> Tensor:
        bins, w = log_mag.shape[1], self.lobe
        if w == 0:
            return torch.cumsum(self.centre.expand_as(log_mag), dim=2)
        padded = F.pad(log_mag, (0, 0, w, w), value=_BELOW_ANY)
        shifted = [padded[:, i : i + bins] for i in range(2 * w + 1)]
        # The first bin of the lobe that holds its maximum, as argmax finds it: a max pool and
        # comparisons, which ONNX Runtime runs faster than an ArgMax over the stacked lobe (the
        # whole graph took 3% less time). The padding is below any real bin, so an owner never
        # falls outside the spectrum.
        largest = F.max_pool2d(padded.unsqueeze(1), (2 * w + 1, 1), stride=1).squeeze(1)
        owner = self.index + w
        for d in range(w - 1, -w - 1, -1):  # nearest to the lowest offset last, so it wins ties
            owner = torch.where(shifted[w + d] == largest, self.index + d, owner)
        # The larger neighbour's side gives the sign; written as the difference of both sides'
        # offsets (the smaller side's is 0 for one sinusoid), it has no jump where they swap.
        offset = _peak_offset(log_mag - shifted[w + 1]) - _peak_offset(log_mag - shifted[w - 1])
        advance = self.centre + self.hop_per_bin * offset
        peak_phase = torch.cumsum(torch.gather(advance, 1, owner), dim=2)
        return torch.gather(peak_phase, 1, owner) + math.pi * (owner - self.index).float()


def _peak_offset(log_ratio: Tensor) -> Tensor:
    """log(peak / neighbour) of a Hann-windowed peak -> how far towards that neighbour the sinusoid lies, in [0, 1/2] bins.

    With a = neighbour / peak, the offset is (2a - 1) / (1 + a) = 2 - 3 sigmoid(log_ratio), where
    a > 1/2. Only peaks are read (their neighbours are smaller, a <= 1); other bins' values, over
    1/2 where a > 1, are never used.
    """
    return torch.relu(2 - 3 * torch.sigmoid(log_ratio))


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
        self.head = nn.Linear(cfg.width, self.stft_bins)  # the log-magnitude residual
        # The phase head (model.phase residual or learned): an angle per bin, which the graph uses
        # through its cosine and sine, so the phase it gives is a unit vector and wraps smoothly.
        self.phase_head = nn.Linear(cfg.width, self.stft_bins) if cfg.phase != "locked" else None
        with torch.no_grad():  # untrained, the network is the phase-locked vocoder: no residual
            self.head.weight.zero_()
            self.head.bias.zero_()
            if cfg.phase == "residual":
                self.phase_head.weight.zero_()
                self.phase_head.bias.zero_()
        self.lock = PhaseLock(cfg.n_fft, cfg.hop, cfg.window) if cfg.phase != "learned" else None
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

    def spectrum(self, frames: Tensor, gain: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, bins, T) -> the predicted STFT's real and imaginary parts, (B, n_fft // 2 + 1, T) each.

        gain: the inverse STFT's `gain` for T frames, if at hand (it is the same for every step).
        """
        clip = self.cfg.norm_clip
        log_mag = denormalise(frames, self.input_mean, self.input_std, clip)
        features = frames if self._input_is_features() else normalise(log_mag, self.norm_mean, self.norm_std, clip)
        h = self.embed_norm(self.embed(features).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        h = self.out_norm(h.transpose(1, 2))  # (B, T, width)
        residual = self.head(h).transpose(1, 2)  # (B, F, T)
        base = self.base_log_magnitude(log_mag)
        magnitude = torch.exp((base + residual).clamp_max(_MAX_LOG_MAGNITUDE))
        if self.phase_head is None:
            phase = self.lock(base.detach())  # from the input's peaks alone: see the module docstring
        else:
            phase = self.phase_head(h).transpose(1, 2)
            if self.lock is not None:
                phase = phase + self.lock(base.detach())
        real, imag = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
        if self.cfg.projections:
            gain = self.istft.gain(real) if gain is None else gain
            floor = (_PROJECTION_FLOOR * magnitude) ** 2
        momentum = self.cfg.projection_momentum
        projected = real, imag
        for _ in range(self.cfg.projections):
            r, i = self.stft(self.istft(real, imag, gain))
            scale = magnitude * torch.rsqrt(r * r + i * i + floor)
            r, i = scale * r, scale * i
            if momentum:  # fast Griffin-Lim: step on past the projection by momentum times its change
                real, imag = r + momentum * (r - projected[0]), i + momentum * (i - projected[1])
            else:
                real, imag = r, i
            projected = r, i
        return projected

    def _input_is_features(self) -> bool:
        """Whether the input is normalised with the training data's statistics (the vocoder's own
        bundle), so that renormalising would give the input back: the exported graph then skips it."""
        return torch.equal(self.input_mean, self.norm_mean) and torch.equal(self.input_std, self.norm_std)

    def synthesise(self, real: Tensor, imag: Tensor, gain: Tensor | None = None) -> Tensor:
        """(B, n_fft // 2 + 1, T) spectrum -> (B, hop * T) audio in [-1, 1]."""
        # Bundles promise audio in [-1, 1]; a generated spectrogram louder than any training clip would overshoot.
        return self.istft(real, imag, gain).clamp(-1.0, 1.0)

    def forward(self, frames: Tensor) -> Tensor:
        """(B, bins, T) normalised log-magnitude -> (B, hop * T) audio in [-1, 1]."""
        gain = self.istft.gain(frames)
        return self.synthesise(*self.spectrum(frames, gain), gain)
