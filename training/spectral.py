"""The spectral front end on torch tensors: core/spectral.py's functions, differentiable, on any device.

The framing, bins and normalisation are those of core/spectral.py (read its
docstring); the parameters and statistics are its `SpectralParams` and
`BinNorm`. Tests hold every function here to 1e-5 of its numpy twin.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from ganstream.core.spectral import (
    ENVELOPE_FLOOR,
    BinNorm,
    SpectralError,
    SpectralParams,
    envelope,
    mel_filterbank,
    mel_filters,
)
from ganstream.core.distance import EPS as DISTANCE_EPS
from ganstream.core.distance import LOG_FLOOR as DISTANCE_FLOOR
from ganstream.core.distance import RESOLUTIONS as DISTANCE_RESOLUTIONS

__all__ = [
    "BinNorm", "SpectralParams", "SpectralError", "mel_filterbank", "mel_filters", "mel_pseudo_inverse",
    "window", "stft", "istft", "magnitude", "log_magnitude", "normalise", "denormalise",
    "dataset_moments", "spectral_distance",
]


def window(p: SpectralParams, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(n_fft,) periodic Hann window."""
    return torch.hann_window(p.n_fft, periodic=True, device=device, dtype=dtype)


def stft(audio: Tensor, p: SpectralParams) -> Tensor:
    """(..., T) -> complex (..., n_fft // 2 + 1, T // hop): centred frames, zero padded."""
    lead = audio.shape[:-1]
    x = audio.reshape(-1, audio.shape[-1])
    spec = torch.stft(
        x, p.n_fft, p.hop, window=window(p, x.device, x.dtype), center=True, pad_mode="constant", return_complex=True
    )
    spec = spec[..., : p.frames(audio.shape[-1])]  # the frame centred past the end goes
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: Tensor, p: SpectralParams, length: int | None = None) -> Tensor:
    """complex (..., n_fft // 2 + 1 or n_fft // 2, F) -> (..., length or F * hop); istft(stft(x)) == x."""
    if spec.shape[-2] == p.n_fft // 2:
        spec = torch.cat([spec, torch.zeros_like(spec[..., :1, :])], dim=-2)
    if spec.shape[-2] != p.stft_bins:
        raise SpectralError(f"istft: a spectrum needs {p.stft_bins} (or {p.n_fft // 2}) rows, not {spec.shape[-2]}")
    lead = spec.shape[:-2]
    s = spec.reshape(-1, *spec.shape[-2:])
    n = s.shape[-1]
    # One silent frame more puts a second window over the last hop, so torch.istft never sees the
    # bare tail of the envelope there (below its 1e-11 check from n_fft 2048 at hop n_fft / 2);
    # the frame adds nothing to the overlap-add, and the division is redone with our floor.
    padded = torch.cat([s, torch.zeros_like(s[..., :1])], dim=-1)
    out = torch.istft(padded, p.n_fft, p.hop, window=window(p, s.device, s.real.dtype), center=True, length=p.samples(n))
    covered = envelope(p.n_fft, p.hop, n + 1)[: p.samples(n)]
    fade = torch.as_tensor(covered / np.maximum(envelope(p.n_fft, p.hop, n), ENVELOPE_FLOOR), device=out.device, dtype=out.dtype)
    out = (out * fade).reshape(*lead, out.shape[-1])
    if length is not None:
        out = out[..., :length] if length <= out.shape[-1] else torch.nn.functional.pad(out, (0, length - out.shape[-1]))
    return out


def _spectrum(x: Tensor, p: SpectralParams) -> Tensor:
    """Audio (..., T), real, goes through `stft`; a complex STFT (..., n_fft // 2 + 1, F) is used as it is."""
    if not torch.is_complex(x):
        return stft(x, p)
    if x.dim() < 2 or x.shape[-2] != p.stft_bins:
        raise SpectralError(f"a spectrum needs {p.stft_bins} rows (n_fft // 2 + 1), not shape {tuple(x.shape)}")
    return x


def magnitude(x: Tensor, p: SpectralParams) -> Tensor:
    """Audio (..., T) or its complex STFT (..., n_fft // 2 + 1, F) -> (..., bins, F): |STFT|, Nyquist dropped or mel-mapped."""
    mag = _spectrum(x, p).abs()
    if p.mel_bins:
        fb = torch.as_tensor(mel_filterbank(p), device=mag.device, dtype=mag.dtype)
        return torch.einsum("mk,...kf->...mf", fb, mag)
    return mag[..., : p.bins, :]


def log_magnitude(x: Tensor, p: SpectralParams) -> Tensor:
    """Audio (..., T) or its complex STFT -> (..., bins, F): log(max(magnitude, log_floor))."""
    return torch.log(magnitude(x, p).clamp_min(p.log_floor))


def _stats(norm: BinNorm | Tensor, std: Tensor | None, clip: float | None, like: Tensor) -> tuple[Tensor, Tensor, float]:
    if isinstance(norm, BinNorm):
        mean, std = (torch.as_tensor(a, device=like.device, dtype=like.dtype) for a in norm.to_arrays())
        return mean, std, norm.clip
    if std is None or clip is None:
        raise TypeError("give a BinNorm, or mean, std and clip")
    return norm.to(like), std.to(like), float(clip)


def normalise(log_mag: Tensor, norm: BinNorm | Tensor, std: Tensor | None = None, clip: float | None = None) -> Tensor:
    """(..., bins, F) -> [-1, 1]: (x - mean) / std clipped at +-clip, over clip. Takes a BinNorm or (mean, std, clip)."""
    mean, std, clip = _stats(norm, std, clip, log_mag)
    return ((log_mag - mean[:, None]) / std[:, None]).clamp(-clip, clip) / clip


def denormalise(x: Tensor, norm: BinNorm | Tensor, std: Tensor | None = None, clip: float | None = None) -> Tensor:
    """The inverse of `normalise` where nothing was clipped."""
    mean, std, clip = _stats(norm, std, clip, x)
    return x * clip * std[:, None] + mean[:, None]


def mel_pseudo_inverse(p: SpectralParams) -> Tensor:
    """(n_fft // 2 + 1, mel_bins): least-squares map from mel magnitudes back to linear ones."""
    return torch.linalg.pinv(torch.tensor(mel_filterbank(p), dtype=torch.float64)).float()


def dataset_moments(
    data: Any, p: SpectralParams, clip: float = 3.0, batch: int = 64, max_segments: int | None = 4096
) -> BinNorm:
    """Per-bin mean and std of the log-magnitude over a training split: the SpecGAN normalisation.

    data: an AudioSegments (training/data), read at epoch 0 in order, or an iterable of
    (B, T) arrays. At most `max_segments` segments, evenly spread, are read: the moments
    settle long before a large set is through, and this runs before the first step.
    """
    total = total_sq = None
    count = 0
    for chunk in _chunks(data, batch, max_segments):
        with torch.no_grad():
            lm = log_magnitude(torch.as_tensor(np.asarray(chunk, np.float32)), p).double()
        s, s2 = lm.sum(dim=(0, 2)), (lm**2).sum(dim=(0, 2))
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        count += lm.shape[0] * lm.shape[2]
    if total is None:
        raise SpectralError("norm: no audio to compute the per-bin statistics from")
    return BinNorm.from_moments(total.numpy(), total_sq.numpy(), count, clip)


def _chunks(data: Any, batch: int, max_segments: int | None) -> Iterable[np.ndarray]:
    if hasattr(data, "batch") and hasattr(data, "__len__"):
        n = len(data)
        idx = np.arange(n) if max_segments is None or n <= max_segments else np.linspace(0, n - 1, max_segments).astype(np.int64)
        for i in range(0, len(idx), batch):
            yield data.batch(idx[i : i + batch], 0)
    else:
        for chunk in data:
            yield np.atleast_2d(chunk)



def spectral_distance(reference: Tensor, candidates: Tensor, sample_rate: int = 16000) -> Tensor:
    """core.distance.spectral_distance in torch, differentiable: reference (T,) or (B, T), candidates (B, T) -> (B,).

    The same resolutions, floor and framing (tests hold the two to 1e-3); in the inputs' dtype (float64
    for `ganstream invert`'s refinement, float32 for training the encoder). sample_rate: only for
    SpectralParams (the resolutions are in samples)."""
    total = candidates.new_zeros(candidates.shape[0])
    for n_fft, hop in DISTANCE_RESOLUTIONS:
        p = SpectralParams(sample_rate=sample_rate, n_fft=n_fft, hop=hop, drop_nyquist=False)
        r, c = magnitude(reference, p), magnitude(candidates, p)
        sc = torch.linalg.vector_norm(c - r, dim=(-2, -1)) / (torch.linalg.vector_norm(r, dim=(-2, -1)) + DISTANCE_EPS)
        log_l1 = (torch.log(r + DISTANCE_FLOOR) - torch.log(c + DISTANCE_FLOOR)).abs().mean(dim=(-2, -1))
        total = total + sc + log_l1
    return total / len(DISTANCE_RESOLUTIONS)
