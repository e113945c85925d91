"""Audio from a magnitude spectrogram without a network, in numpy: fast Griffin-Lim and PGHI.

Both are the baselines `ganstream eval-reconstruction` scores the trained
reconstruction network against (evaluation/recon_eval.py, which also holds the
measures), and the fallback of a spectral bundle exported without a network
(`PhaseReconstructor`, docs/bundle.md format version 4), which the live engine
runs in numpy. Magnitudes are laid out as the front end makes them
(core/spectral.py): (bins, frames), linear, with the Nyquist row dropped or mel
bands as its `SpectralParams` say.
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .spectral import ENVELOPE_FLOOR, BinNorm, SpectralParams, envelope, istft, mel_filterbank, window

# Gaussian that best fits a Hann window of length L: exp(-pi t^2 / lambda), lambda = this * L^2
# (the constant LTFAT's pghi uses for 'hann').
HANN_LAMBDA = 0.25645
# The method names of a bundle's `spectral.reconstruction` (core/manifest.py gives each its format version).
GRIFFIN_LIM = "griffin-lim"
PGHI = "pghi"
MOMENTUM = 0.99  # fast Griffin-Lim's step (Perraudin et al. 2013)
SEED = 0  # the initial phase of every segment a bundle rebuilds: fixed, so that a render is the live stream to the bit
# Where Griffin-Lim's phase starts: "random" (uniform, from SEED) or "locked" (`locked_phase`, a phase-locked
# vocoder's). From the locked phase fast Griffin-Lim gets nearer the exact magnitudes on all three real sets'
# held-out folders (spectral convergence, benchmarks/reconstruction_real_sets.py): 32 iterations reach
# -34.2 / -27.1 / -28.1 dB on piano / drums / speech against -24.7 / -25.9 / -26.7 from random (piano's beats
# 100 iterations from random, -32.1); 16 iterations from it reach -30.5 / -24.2 / -24.7. The phase costs
# about as much as three iterations.
RANDOM, LOCKED = "random", "locked"
INITIAL_PHASES = (RANDOM, LOCKED)
_HANN_LOBE = 2  # bins either side of a peak in a Hann window's main lobe


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


def locked_phase(log_mag: np.ndarray, n_fft: int, hop: int, window_name: str = "hann") -> np.ndarray:
    """(n_fft // 2 + 1, frames) log-magnitude -> (n_fft // 2 + 1, frames) phase of a phase-locked vocoder.

    Laroche and Dolson (1999): every bin belongs to the largest bin within the Hann window's main lobe
    (2 bins either side; the lowest of tied bins); that peak's frequency follows from the ratio of its
    larger neighbour to itself (exact for one sinusoid under a Hann window: the offset is
    (2a - 1) / (1 + a) bins for a = neighbour / peak); each peak's phase advances by
    2 pi f hop / sample_rate a frame, summed over frames; the bins of its lobe take its phase plus pi
    per bin (the window is centred in the FFT frame). The numpy twin of the reconstruction network's
    `PhaseLock` (training/models/vocoder.py). For another window than Hann every bin turns at its centre.
    """
    s = np.asarray(log_mag, dtype=np.float32)
    bins = s.shape[0]
    per_bin = np.float32(2 * np.pi * hop / n_fft)  # phase advance per frame per bin of frequency
    centre = np.remainder(np.arange(bins, dtype=np.float64) * (2 * np.pi * hop / n_fft), 2 * np.pi).astype(np.float32)[:, None]
    if window_name != "hann":
        return np.cumsum(np.broadcast_to(centre, s.shape), axis=1)
    w = _HANN_LOBE
    padded = np.pad(s, ((w, w), (0, 0)), constant_values=np.float32(-1e4))
    shifted = [padded[i : i + bins] for i in range(2 * w + 1)]  # shifted[w + d][m] = s[m + d]
    largest = shifted[0].copy()
    for row in shifted[1:]:
        np.maximum(largest, row, out=largest)
    index = np.arange(bins)[:, None]
    owner = np.broadcast_to(index + w, s.shape).copy()
    for d in range(w - 1, -w - 1, -1):  # the lowest offset last, so it wins ties
        np.copyto(owner, index + d, where=shifted[w + d] == largest)

    def peak_offset(log_ratio: np.ndarray) -> np.ndarray:  # 2 - 3 sigmoid(log(peak / neighbour)), floored at 0
        return np.maximum(2 - 3 / (1 + np.exp(-np.minimum(log_ratio, 50))), 0)

    offset = peak_offset(s - shifted[w + 1]) - peak_offset(s - shifted[w - 1])
    advance = centre + per_bin * offset
    peak_phase = np.cumsum(np.take_along_axis(advance, owner, axis=0), axis=1)
    return np.take_along_axis(peak_phase, owner, axis=0) + np.float32(np.pi) * (owner - index)


class GriffinLim:
    """Fast Griffin-Lim for magnitudes of one front end and one number of frames, its buffers allocated once.

    Perraudin, Balazs and Sondergaard (2013), "A fast Griffin-Lim algorithm": each
    iteration projects onto consistent spectrograms (inverse STFT, then STFT) and onto
    the given magnitude, then steps on by `momentum` times the last change (0 gives the
    original Griffin and Lim, 1984). The phase starts random from a seed.

    It computes what `istft` and `stft` (core/spectral.py) do, in float32 and frames by
    rows: the inverse STFT overlap-adds into one padded signal, whose frames the forward
    STFT then reads in place, the window and the inverse envelope folded into one (frames,
    n_fft) factor. The forward transform is `rfft(norm="forward")`, scaled by 1 / n_fft:
    the projection keeps only the phase, so the scale cancels, and numpy 2.4's float32
    `rfft` unscaled took 3.8 times as long here (208 against 54 us on 128 frames of 256).
    32 iterations at SpecGAN's front end (n_fft 256, hop 128, 128 frames) took 7 ms of
    one core, against 22 ms through `stft(istft(.))` in float64 (best of 7, on a busy
    2-core machine); the audio differs by rounding only.
    Not thread-safe: one call at a time.
    """

    def __init__(self, p: SpectralParams, frames: int, momentum: float = MOMENTUM):
        n, hop, frames = p.n_fft, p.hop, int(frames)
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.params, self.frames, self.momentum = p, frames, np.float32(momentum)
        self._chunks = -(-n // hop)  # hop-long chunks a frame spans, the last one zero-padded
        blocks = frames + self._chunks - 1
        self._signal = np.zeros(blocks * hop, np.float32)  # frame k's window starts at sample k * hop
        self._inner = slice(n // 2, n // 2 + frames * hop)  # the clip inside the padding
        inverse_envelope = np.zeros(blocks * hop, np.float32)
        inverse_envelope[self._inner] = 1.0 / np.maximum(envelope(n, hop, frames), ENVELOPE_FLOOR)
        self._inverse_envelope = inverse_envelope
        w = window(p)
        self._synthesis = np.zeros(self._chunks * hop, np.float32)  # the window, zero-padded to whole chunks
        self._synthesis[:n] = w
        self._analysis = (_frames_of(inverse_envelope, frames, n, hop) * w).astype(np.float32)
        self._signal_frames = _frames_of(self._signal, frames, n, hop)
        # Where n_fft is not a whole number of hops, the inverse FFTs are copied into whole chunks first.
        self._padded = np.zeros((frames, self._chunks * hop), np.float32) if self._chunks * hop != n else None
        self._x = np.empty((frames, n), np.float32)
        shape = (frames, n // 2 + 1)
        self._target = np.empty(shape, np.float32)
        self._gain = np.empty(shape, np.float32)
        self._c = np.empty(shape, np.complex64)
        self._projected = np.empty(shape, np.complex64)
        self._previous = np.empty(shape, np.complex64)
        self._seed: int | None = None
        self._phase0 = np.empty(shape, np.complex64)

    def __call__(self, mag: np.ndarray, iters: int, seed: int = SEED, out: np.ndarray | None = None, initial: str = RANDOM) -> np.ndarray:
        """(bins, frames) magnitudes -> (frames * hop,) float32 audio (written into `out` when given).
        initial: where the phase starts, RANDOM (from `seed`) or LOCKED (`locked_phase` of the magnitudes)."""
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        if np.ndim(mag) != 2:
            raise ValueError(f"magnitudes must be (bins, frames), got shape {np.shape(mag)}")
        target = linear_magnitude(mag, self.params)
        if target.shape[1] != self.frames:
            raise ValueError(f"magnitudes have {target.shape[1]} frames; this Griffin-Lim was planned for {self.frames}")
        t, c, projected, previous = self._target, self._c, self._projected, self._previous
        np.copyto(t, target.T)
        if initial == LOCKED:
            log_mag = np.log(np.maximum(target, self.params.log_floor))
            phase = locked_phase(log_mag, self.params.n_fft, self.params.hop, self.params.window).T
            previous.real, previous.imag = np.cos(phase), np.sin(phase)
            previous *= t
        elif initial == RANDOM:
            np.multiply(self._initial_phase(seed, target.shape), t, out=previous)
        else:
            raise ValueError(f"initial phase: one of {', '.join(INITIAL_PHASES)}, not {initial!r}")
        np.copyto(c, previous)
        for _ in range(iters):
            self._synthesise(c)
            h = self._analyse()
            gain = np.abs(h, out=self._gain)
            np.maximum(gain, 1e-30, out=gain)
            np.divide(t, gain, out=gain)
            np.multiply(h, gain, out=projected)  # the target magnitude under the consistent phase
            np.subtract(projected, previous, out=c)
            c *= self.momentum
            c += projected
            projected, previous = previous, projected
        self._projected, self._previous = projected, previous
        self._synthesise(previous)
        if out is None:
            out = np.empty(self.frames * self.params.hop, np.float32)
        np.multiply(self._signal[self._inner], self._inverse_envelope[self._inner], out=out)
        return out

    def _initial_phase(self, seed: int, shape: tuple[int, int]) -> np.ndarray:
        """(frames, bins) unit phasors drawn from `seed` as (bins, frames) uniform phases; kept for the next call."""
        if seed != self._seed:
            rng = np.random.default_rng(seed)
            np.copyto(self._phase0, np.exp(2j * np.pi * rng.uniform(size=shape)).T)
            self._seed = seed
        return self._phase0

    def _synthesise(self, c: np.ndarray) -> None:
        """Windowed inverse FFTs of the (frames, bins) spectrum overlap-added into the padded signal (not yet
        divided by the envelope)."""
        hop, frames, chunks = self.params.hop, self.frames, self._chunks
        y = np.fft.irfft(c, n=self.params.n_fft, axis=-1)
        if self._padded is not None:
            self._padded[:, : y.shape[1]] = y
            y = self._padded
        y *= self._synthesis
        parts = y.reshape(frames, chunks, hop)
        blocks = self._signal.reshape(-1, hop)
        blocks[:frames] = parts[:, 0]
        blocks[frames:] = 0.0
        for i in range(1, chunks):
            blocks[i : i + frames] += parts[:, i]

    def _analyse(self) -> np.ndarray:
        """(frames, bins): the STFT of the signal over n_fft, envelope and window applied."""
        np.multiply(self._signal_frames, self._analysis, out=self._x)
        return np.fft.rfft(self._x, axis=-1, norm="forward")


def _frames_of(signal: np.ndarray, frames: int, n: int, hop: int) -> np.ndarray:
    """A read-only (frames, n) view of a padded signal: row k is samples k * hop .. k * hop + n."""
    step = signal.strides[0]
    return as_strided(signal, shape=(frames, n), strides=(hop * step, step), writeable=False)


def griffin_lim(
    mag: np.ndarray, p: SpectralParams, iters: int = 32, momentum: float = MOMENTUM, seed: int = SEED, initial: str = RANDOM
) -> np.ndarray:
    """(bins, frames) magnitudes -> (frames * hop,) float32 audio by fast Griffin-Lim (`GriffinLim`)."""
    return GriffinLim(p, np.shape(mag)[-1], momentum)(mag, iters, seed, initial=initial)


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

    The integration is one Python loop over the coefficients, on flat lists (numpy's
    scalar indexing costs more than the arithmetic), with each step's phase increment
    computed beforehand, a border that needs no bounds checks and integer ranks on the
    heap: 17 ms of one core for SpecGAN's 128 x 128 coefficients, against 43 ms indexing
    the arrays with (level, m, k) on the heap, with the same result to the bit.
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
    # On a grid with a border of one coefficient on every side, marked done, so that the loop needs no
    # bounds checks: the trapezoid rule's phase step from (m, k) to (m, k + 1), and to (m + 1, k).
    width = frames + 2
    along_time = np.zeros((bins + 2, width))
    along_time[1:-1, 1:-2] = a * 0.5 * (dphi_dx[:, :-1] + dphi_dx[:, 1:])
    along_freq = np.zeros((bins + 2, width))
    along_freq[1:-2, 1:-1] = 1 / n * 0.5 * (dphi_domega[:-1] + dphi_domega[1:])
    padded = np.full((bins + 2, width), -np.inf)
    padded[1:-1, 1:-1] = s
    # The heap holds ranks, not (level, index) tuples (which cost twice the time): the rank of a coefficient
    # is its place from the largest down, ties in index order, so the order popped is the same.
    by_rank = np.argsort(-padded, axis=None, kind="stable")
    rank = np.empty_like(by_rank)
    rank[by_rank] = np.arange(by_rank.size)
    step_k, step_m, rank_of, at_rank = along_time.ravel().tolist(), along_freq.ravel().tolist(), rank.tolist(), by_rank.tolist()
    done = bytearray((padded.ravel() <= s.max() + np.log(tol)).tobytes())
    phase = [0.0] * padded.size
    heap: list[int] = []
    push, pop = heapq.heappush, heapq.heappop
    for seed in at_rank:  # each new island starts at its largest coefficient
        if done[seed]:
            continue
        done[seed] = 1
        push(heap, rank_of[seed])
        while heap:
            i = at_rank[pop(heap)]
            here = phase[i]
            if not done[i + 1]:
                phase[i + 1] = here + step_k[i]
                done[i + 1] = 1
                push(heap, rank_of[i + 1])
            if not done[i - 1]:
                phase[i - 1] = here - step_k[i - 1]
                done[i - 1] = 1
                push(heap, rank_of[i - 1])
            if not done[i + width]:
                phase[i + width] = here + step_m[i]
                done[i + width] = 1
                push(heap, rank_of[i + width])
            if not done[i - width]:
                phase[i - width] = here - step_m[i - width]
                done[i - width] = 1
                push(heap, rank_of[i - width])
    # The front end's FFT takes each frame from its start, n/2 before the window's centre:
    # that shifts bin m's phase by pi * m against the centred phase integrated above.
    integrated = np.asarray(phase).reshape(bins + 2, width)[1:-1, 1:-1] + np.pi * np.arange(bins)[:, None]
    return istft(target * np.exp(1j * integrated), p)


class PhaseReconstructor:
    """A spectral bundle's reconstruction without a network: normalised log-magnitude spectrograms (B, bins,
    frames) -> audio (B, frames * hop) float32, by fast Griffin-Lim (`iterations` per spectrogram) or PGHI.

    The numpy counterpart of `ganstream.realtime.inference.Reconstructor`, for the fixed length a
    generator makes: each spectrogram is denormalised with the bundle's `BinNorm` and rebuilt on its
    own, from the same initial phase (SEED, or the locked phase of its own magnitudes), so a row's audio does not depend on the rows beside it
    or on what came before: render equals the live stream. Not thread-safe: one call at a time.
    """

    def __init__(
        self, params: SpectralParams, norm: BinNorm, frames: int, method: str, iterations: int | None = None, initial_phase: str = RANDOM
    ):
        if initial_phase not in INITIAL_PHASES:
            raise ValueError(f"initial phase: one of {', '.join(INITIAL_PHASES)}, not {initial_phase!r}")
        self.initial_phase = initial_phase
        if method == GRIFFIN_LIM:
            if iterations is None or iterations < 1:
                raise ValueError(f"griffin-lim needs at least 1 iteration, got {iterations}")
            self._griffin_lim = GriffinLim(params, frames)
        elif method != PGHI:
            raise ValueError(f"unknown phase reconstruction {method!r} (known: {GRIFFIN_LIM}, {PGHI})")
        self.params, self.norm, self.frames = params, norm, int(frames)
        self.method, self.iterations = method, iterations if method == GRIFFIN_LIM else None

    @property
    def samples(self) -> int:
        """Samples of audio per spectrogram: frames * hop."""
        return self.params.samples(self.frames)

    def reconstruct(self, spectrograms: np.ndarray) -> np.ndarray:
        """(B, bins, frames) normalised spectrograms -> (B, frames * hop) float32 audio."""
        out = np.empty((len(spectrograms), self.samples), np.float32)
        return self.reconstruct_into(spectrograms, out)

    def reconstruct_into(self, spectrograms: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Like reconstruct, writing into `out`, (B, frames * hop) float32; returns it."""
        shape = (self.params.bins, self.frames)
        if spectrograms.ndim != 3 or spectrograms.shape[1:] != shape:
            raise ValueError(f"spectrograms must have shape (B, {shape[0]}, {shape[1]}), got {spectrograms.shape}")
        if out.shape != (len(spectrograms), self.samples):
            raise ValueError(f"out must have shape ({len(spectrograms)}, {self.samples}), got {out.shape}")
        for x, audio in zip(spectrograms, out):
            mag = np.exp(self.norm.denormalise(x))
            if self.method == GRIFFIN_LIM:
                self._griffin_lim(mag, self.iterations, SEED, out=audio, initial=self.initial_phase)
            else:
                audio[:] = pghi(mag, self.params)
        return out
