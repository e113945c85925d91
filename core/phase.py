"""Audio from a magnitude spectrogram without a network, in numpy: fast Griffin-Lim and PGHI.

Both are the baselines `ganstream eval-reconstruction` scores the trained
reconstruction network against (evaluation/recon_eval.py, which also holds the
measures), and fallbacks that need neither torch nor a network. Magnitudes
are laid out as the front end makes them (core/spectral.py): (bins, frames),
linear, with the Nyquist row dropped or mel bands as its `SpectralParams` say.
"""

from __future__ import annotations

import heapq

import numpy as np

from .spectral import SpectralParams, istft, mel_filterbank, stft

# Gaussian that best fits a Hann window of length L: exp(-pi t^2 / lambda), lambda = this * L^2
# (the constant LTFAT's pghi uses for 'hann').
HANN_LAMBDA = 0.25645


def linear_magnitude(mag: np.ndarray, p: SpectralParams) -> np.ndarray:
    """(bins, frames) front-end magnitudes -> (n_fft // 2 + 1, frames) linear STFT magnitudes.

    The Nyquist row comes back as zeros; mel bands go back through the filterbank's
    pseudo-inverse, clipped at zero (an estimate: mel loses detail).
    """
    mag = np.asarray(mag, dtype=np.float64)
    if mag.shape[-2] != p.bins:
        raise ValueError(f"magnitudes have {mag.shape[-2]} bins; the front end has {p.bins}")
    if p.mel_bins:
        return np.maximum(np.linalg.pinv(mel_filterbank(p).astype(np.float64)) @ mag, 0.0)
    if mag.shape[-2] < p.stft_bins:
        mag = np.concatenate([mag, np.zeros((p.stft_bins - mag.shape[-2], mag.shape[-1]))], axis=-2)
    return mag


def griffin_lim(mag: np.ndarray, p: SpectralParams, iters: int = 32, momentum: float = 0.99, seed: int = 0) -> np.ndarray:
    """(bins, frames) magnitudes -> (frames * hop,) float32 audio by fast Griffin-Lim.

    Perraudin, Balazs and Sondergaard (2013), "A fast Griffin-Lim algorithm": each
    iteration projects onto consistent spectrograms (istft then stft) and onto the
    given magnitude, then steps on by `momentum` times the last change (0 gives the
    original Griffin and Lim, 1984). The phase starts random from `seed`.
    """
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    target = linear_magnitude(mag, p).astype(np.float32)
    rng = np.random.default_rng(seed)
    c = (target * np.exp(2j * np.pi * rng.uniform(size=target.shape))).astype(np.complex64)
    previous = c
    for _ in range(iters):
        consistent = stft(istft(c, p), p)
        # The target magnitude under the consistent phase: c / |c| costs less than exp(i angle(c)).
        projected = target * consistent / np.maximum(np.abs(consistent), 1e-12)
        c = projected + momentum * (projected - previous)
        previous = projected
    return istft(previous, p)


def pghi(mag: np.ndarray, p: SpectralParams, tol: float = 1e-5) -> np.ndarray:
    """(bins, frames) magnitudes -> (frames * hop,) float32 audio by phase gradient heuristic integration.

    Prusa, Balazs and Sondergaard (2017), "A noniterative method for reconstruction of
    phase from STFT magnitude". For a Gaussian window exp(-pi t^2 / lambda) the phase
    gradient follows from the log-magnitude s: along time, d(phi)/dx = (1/lambda)
    ds/d(omega) + 2 pi omega; along frequency, d(phi)/d(omega) = -lambda ds/dx. The Hann
    window is taken as its best-fitting Gaussian. Starting from the largest coefficient,
    the phase is integrated (trapezoid rule) outwards to its neighbours, always from the
    largest coefficient reached so far (a heap); coefficients below `tol` times the
    largest get zero phase.
    """
    a, n = p.hop, p.n_fft
    lam = HANN_LAMBDA * n * n
    target = linear_magnitude(mag, p)
    bins, frames = target.shape
    s = np.log(np.maximum(target, 1e-12))
    # d s / d omega, with omega in cycles per sample (omega = m / n): n * ds/dm.
    ds_dm = np.gradient(s, axis=0) if bins > 1 else np.zeros_like(s)
    ds_dk = np.gradient(s, axis=1) if frames > 1 else np.zeros_like(s)
    omega = np.arange(bins)[:, None] / n
    dphi_dx = ds_dm * n / lam + 2 * np.pi * omega  # radians per sample
    dphi_domega = -lam * ds_dk / a  # radians per cycle-per-sample
    significant = s > s.max() + np.log(tol)
    phase = np.zeros_like(s)
    done = ~significant
    order = np.argsort(-s, axis=None)  # where to seed each new island: its largest coefficient
    heap: list[tuple[float, int, int]] = []
    next_seed = 0
    while True:
        while next_seed < order.size and done.flat[order[next_seed]]:
            next_seed += 1
        if next_seed >= order.size:
            break
        m0, k0 = divmod(int(order[next_seed]), frames)
        done[m0, k0] = True
        heapq.heappush(heap, (-s[m0, k0], m0, k0))
        while heap:
            _, m, k = heapq.heappop(heap)
            for dm, dk in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                mm, kk = m + dm, k + dk
                if not (0 <= mm < bins and 0 <= kk < frames) or done[mm, kk]:
                    continue
                if dk:
                    phase[mm, kk] = phase[m, k] + dk * a * 0.5 * (dphi_dx[m, k] + dphi_dx[mm, kk])
                else:
                    phase[mm, kk] = phase[m, k] + dm / n * 0.5 * (dphi_domega[m, k] + dphi_domega[mm, kk])
                done[mm, kk] = True
                heapq.heappush(heap, (-s[mm, kk], mm, kk))
    # The front end's FFT takes each frame from its start, n/2 before the window's centre:
    # that shifts bin m's phase by pi * m against the centred phase integrated above.
    phase = phase + np.pi * np.arange(bins)[:, None]
    return istft(target * np.exp(1j * phase), p)
