"""The STFT and its inverse made of fixed-weight operators, so that they export to ONNX.

torch.istft does not export (the exporter fails, and ONNX has no inverse STFT
operator). `InverseSTFT` computes what the front end's istft computes
(core/spectral.py, whose framing it follows: frame k centred on sample
k * hop, F frames -> F * hop samples) from a transposed convolution and a
division, both of which every ONNX runtime has:

1. Each frame's inverse real DFT, multiplied by the synthesis window, is one
   matrix product with a fixed basis; with stride `hop`, `conv_transpose1d`
   does that product for every frame and overlap-adds the results in one op.
   The real and imaginary parts are its input channels: (B, 2F, T) -> (B, 1, L).
2. The overlap-added squared window (the "window envelope") is divided out
   (as a multiplication by its reciprocal, `gain`, which callers may share),
   floored as the front end floors it (ENVELOPE_FLOOR: the last hop fades
   instead of blowing up), so that analysis followed by synthesis is the
   identity. The envelope depends only on the number of frames; it comes from
   the same transposed convolution, of ones with the squared window, so one
   graph serves any length.
3. The n_fft // 2 samples of padding before frame 0's centre are cut off, and
   the output ends F * hop samples later.

`STFT` is the forward transform the same way (a strided conv1d with the
windowed DFT basis), for networks that need the spectrum inside the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstream.core.spectral import ENVELOPE_FLOOR


def window_tensor(name: str, n_fft: int) -> Tensor:
    """(n_fft,) float64 periodic analysis/synthesis window: "hann" or "rect"."""
    if name == "hann":
        return torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    if name in ("rect", "boxcar", "ones"):
        return torch.ones(n_fft, dtype=torch.float64)
    raise ValueError(f"window: unknown window {name!r} (known: hann, rect)")


def _dft_basis(n_fft: int, window: str) -> tuple[Tensor, Tensor, Tensor]:
    """(bins, n_fft) float64 cos and sin of the DFT, and the (n_fft,) window."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * n / n_fft
    return torch.cos(angle), torch.sin(angle), window_tensor(window, n_fft)


class InverseSTFT(nn.Module):
    """Overlap-add inverse of a one-sided STFT, as the front end's istft computes it, in exportable operators.

    forward(real, imag): (B, n_fft // 2 + 1, T) each -> (B, hop * T) audio. floor: the smallest
    envelope divided by (ENVELOPE_FLOOR, the front end's; 1e-11 gives torch.istft's division).
    """

    def __init__(self, n_fft: int, hop: int, window: str = "hann", floor: float = ENVELOPE_FLOOR):
        super().__init__()
        if n_fft < 2 or not 1 <= hop <= n_fft // 2:
            raise ValueError(f"InverseSTFT: need n_fft >= 2 and 1 <= hop <= n_fft / 2, got n_fft={n_fft}, hop={hop}")
        self.n_fft, self.hop, self.floor = n_fft, hop, floor
        self.bins = n_fft // 2 + 1
        cos, sin, win = _dft_basis(n_fft, window)
        # A one-sided spectrum stands for its mirror image too: every bin but DC (and Nyquist,
        # for even n_fft) counts twice. The sine of DC and Nyquist is zero, so their imaginary
        # parts drop out, as in irfft.
        weight = torch.full((self.bins, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if n_fft % 2 == 0:
            weight[-1] = 1.0
        real = weight * cos * win / n_fft
        imag = -weight * sin * win / n_fft
        self.register_buffer("basis", torch.cat([real, imag]).unsqueeze(1).float(), persistent=False)  # (2F, 1, n_fft)
        self.register_buffer("window_sq", (win**2).view(1, 1, n_fft).float(), persistent=False)

    def gain(self, like: Tensor) -> Tensor:
        """(1, hop * T): the reciprocal of the floored window envelope for frames like `like` (B, F, T).

        The same for every call with T frames: a network that inverts several spectra of one
        length (Griffin-Lim steps) computes it once and passes it to each call.
        """
        ones = torch.ones_like(like[:1, :1])
        return 1.0 / self._crop(F.conv_transpose1d(ones, self.window_sq, stride=self.hop)).clamp_min(self.floor)

    def forward(self, real: Tensor, imag: Tensor, gain: Tensor | None = None) -> Tensor:
        """(B, F, T) real and imaginary parts -> (B, samples) audio; gain: `self.gain(real)`, if at hand."""
        spectrum = torch.cat([real, imag], dim=1)
        audio = self._crop(F.conv_transpose1d(spectrum, self.basis, stride=self.hop))  # (B, hop * T)
        return audio * (self.gain(real) if gain is None else gain)

    def _crop(self, x: Tensor) -> Tensor:
        """(B, 1, hop * (T - 1) + n_fft) -> (B, hop * T) samples from frame 0's centre."""
        # Drop n_fft // 2 samples before frame 0's centre and `tail` at the end.
        start = self.n_fft // 2
        tail = self.n_fft - start - self.hop
        return x[:, 0, start : x.shape[-1] - tail] if tail else x[:, 0, start:]


class STFT(nn.Module):
    """One-sided STFT as the front end's stft computes it: (B, T) -> real, imag (B, n_fft // 2 + 1, T // hop)."""

    def __init__(self, n_fft: int, hop: int, window: str = "hann"):
        super().__init__()
        if n_fft < 2 or not 1 <= hop <= n_fft // 2:
            raise ValueError(f"STFT: need n_fft >= 2 and 1 <= hop <= n_fft / 2, got n_fft={n_fft}, hop={hop}")
        self.n_fft, self.hop = n_fft, hop
        cos, sin, win = _dft_basis(n_fft, window)
        self.register_buffer("basis", torch.cat([cos * win, -sin * win]).unsqueeze(1).float(), persistent=False)  # (2F, 1, n_fft)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        pad = self.n_fft // 2
        # The end is padded a hop short of the start, so no frame is centred past the last sample.
        spectrum = F.conv1d(F.pad(audio.unsqueeze(1), (pad, pad - self.hop)), self.basis, stride=self.hop)
        return spectrum.chunk(2, dim=1)
