"""Numbers that track how real generated audio is, where a GAN's losses do not.

All functions take numpy audio of shape (N, T) in [-1, 1] at `sample_rate`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import linalg


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, each with unit area."""
    fmax = fmax or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (bins[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - bins[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    return (fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-10)).astype(np.float32)


def power_spectrogram(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """(N, T) -> (N, frames, n_fft // 2 + 1) power of Hann-windowed frames (no padding)."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft, axis=1)[:, ::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=-1)) ** 2


def log_mel(audio: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 64) -> np.ndarray:
    """(N, T) -> (N, frames, n_mels) log mel energies (natural log, floored at 1e-6)."""
    return np.log(power_spectrogram(audio, n_fft, hop) @ mel_filterbank(sample_rate, n_fft, n_mels).T + 1e-6)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of a and b, (n, F) each
    (Heusel et al., 2017, "GANs trained by a two time-scale update rule ...", the FID formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.asarray(linalg.sqrtm(cov_a @ cov_b)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def log_mel_frechet(generated: np.ndarray, real: np.ndarray, sample_rate: int) -> float:
    """Frechet distance between the log-mel frame statistics of two sets of clips
    (the frame-level analogue of FAD, Kilgour et al., 2019, with log-mel features instead of VGGish)."""
    fa = log_mel(generated, sample_rate).reshape(-1, 64)
    fb = log_mel(real, sample_rate).reshape(-1, 64)
    return frechet_distance(fa.astype(np.float64), fb.astype(np.float64))


def spectral_flatness(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """(N, T) -> (N,) mean over frames of geometric / arithmetic mean power: 1 for white noise, near 0 for tones
    (Johnston, 1988). Frames that are silent are left out."""
    p = power_spectrogram(audio, n_fft, hop) + 1e-12
    flat = np.exp(np.log(p).mean(-1)) / p.mean(-1)
    loud = p.mean(-1) > 1e-8
    return np.array([f[m].mean() if m.any() else np.nan for f, m in zip(flat, loud)])


def loudness_db(audio: np.ndarray) -> np.ndarray:
    """(N, T) -> (N,) RMS level in dBFS."""
    rms = np.sqrt(np.mean(np.square(np.atleast_2d(audio), dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))
