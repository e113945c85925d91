"""How near one sound is to another: the one multi-resolution spectral distance (numpy only), and the
onset cut that lines a recording up with a generated segment.

`spectral_distance(reference, candidates)` scores candidates against a reference, lower is nearer,
0 for identical audio. For each resolution (n_fft, hop) of RESOLUTIONS, with M = |STFT| (periodic
Hann window, frames centred on k * hop, zero padded: `ganstream.core.spectral.stft`, which keeps
T // hop frames):

    spectral convergence  ||M_ref - M_c||_F / (||M_ref||_F + EPS)
  + log-magnitude L1      mean |log(M_ref + LOG_FLOOR) - log(M_c + LOG_FLOOR)|

and the two are averaged over the resolutions. The first term weighs the loud partials, the second
every bin alike, quiet ones too (the usual multi-resolution STFT loss of Parallel WaveGAN, with an L1
log term). `ganstream invert` ranks latents by it; export/invert.py has its torch twin (held to 1e-3
of this one by tests/test_invert.py), through which a run's generator is refined by gradient.

Measured on one busy core of a 2-core CPU: 1000 candidates of 16384 samples in 3 to 5 s, most of it
numpy's FFT; chunks of CHUNK candidates keep one chunk's spectra near 35 MB at every resolution.
"""

from __future__ import annotations

import numpy as np

from numpy.lib.stride_tricks import sliding_window_view

from .spectral import SpectralParams, window

RESOLUTIONS: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop)
LOG_FLOOR = 1e-5  # added to magnitudes before the log
EPS = 1e-8  # keeps the convergence term finite for a silent reference
CHUNK = 32  # candidates per STFT batch
ONSET_LEAD_S = 0.005  # kept before the onset: the first rise of an attack can sit below the threshold



def magnitudes(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(..., T) -> (..., T // hop, n_fft // 2 + 1) float64 |STFT|, frames before bins.

    `ganstream.core.spectral.stft`'s framing and window (tests hold the two together), on a strided view of
    the padded signal instead of a copy of every frame: 1.6x faster. float64, because numpy's float32 FFT
    was no faster here, and its rounding noise (~1e-7 of the peak) sits near LOG_FLOOR in the empty bins of
    tonal audio, where the log term would count it."""
    x = np.asarray(audio, dtype=np.float64)
    half = n_fft // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)])
    frames = sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :][..., : x.shape[-1] // hop, :]
    return np.abs(np.fft.rfft(frames * window(SpectralParams(n_fft=n_fft, hop=hop)), axis=-1))


def spectral_distance(reference: np.ndarray, candidates: np.ndarray) -> np.ndarray | float:
    """reference (T,), candidates (B, T) or (T,) -> (B,) float64 distances (a float for (T,) candidates).

    T must be at least the largest hop (256) so every resolution has a frame."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidates, dtype=np.float64)
    single = cand.ndim == 1
    cand = np.atleast_2d(cand)
    if ref.ndim != 1 or cand.ndim != 2 or cand.shape[1] != ref.shape[0]:
        raise ValueError(f"spectral_distance: reference (T,) and candidates (B, T) or (T,), got {ref.shape} and {np.shape(candidates)}")
    if ref.shape[0] < max(hop for _, hop in RESOLUTIONS):
        raise ValueError(f"spectral_distance: needs at least {max(hop for _, hop in RESOLUTIONS)} samples, got {ref.shape[0]}")
    out = np.zeros(cand.shape[0], dtype=np.float64)
    for n_fft, hop in RESOLUTIONS:
        m_ref = magnitudes(ref, n_fft, hop)
        log_ref = np.log(m_ref + LOG_FLOOR)
        norm_ref = float(np.sqrt(np.sum(np.square(m_ref)))) + EPS
        for start in range(0, cand.shape[0], CHUNK):
            m = magnitudes(cand[start : start + CHUNK], n_fft, hop)  # (b, bins, frames)
            diff = np.sqrt(np.sum(np.square(m - m_ref), axis=(1, 2)))
            log_l1 = np.mean(np.abs(np.log(m + LOG_FLOOR) - log_ref), axis=(1, 2))
            out[start : start + CHUNK] += diff / norm_ref + log_l1
    out /= len(RESOLUTIONS)
    return float(out[0]) if single else out


def onset(audio: np.ndarray, threshold_db: float = -40.0) -> int:
    """(T,) -> the first sample within `threshold_db` (< 0) of the peak; 0 for digital silence. Relative to
    the peak, so a quiet recording's onset is found where a loud one's is."""
    x = np.abs(np.asarray(audio, dtype=np.float32))
    peak = float(x.max(initial=0.0))
    if peak == 0.0:
        return 0
    return int(np.argmax(x >= peak * 10.0 ** (threshold_db / 20.0)))


def onset_cut(
    audio: np.ndarray, segment: int, threshold_db: float = -40.0, *, sample_rate: int = 16000, lead_s: float = ONSET_LEAD_S
) -> tuple[np.ndarray, int]:
    """(T,) -> ((segment,) float32, onset sample): the `segment` samples from `lead_s` before the onset
    (`onset`), zero-padded at the end where the audio ends sooner."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    at = onset(x, threshold_db)
    start = max(0, at - int(round(lead_s * sample_rate)))
    piece = x[start : start + segment]
    return np.pad(piece, (0, segment - piece.shape[0])), at
