"""Transposition as a sampler does it: a clip resampled by the ratio of a note to its root, band-limited.

A voice `s` semitones above its root plays the clip r = 2^(s/12) times faster:
output sample j is the clip at time j * r, so it sounds r times higher and
lasts 1/r as long (a higher note is shorter). Going up, everything the clip
holds above the output's Nyquist frequency would fold back as aliasing; it is
removed first.

How. A clip is known whole when it is generated, so it is resampled in the
frequency domain: the rfft of the clip zero-padded to A samples, its bins up
to the lower of the two Nyquist frequencies kept (and the rest dropped), the
irfft of them as B samples. Bin i is i / A cycles per input sample in the
first and i / B cycles per output sample in the second, so every component is
played A / B times higher and nothing above the output's Nyquist frequency is
left to fold back: tests/test_transpose.py finds nothing above -95 dB beside
the tones that belong (its window's own floor), against the -60 dB asked. The
kept bins' top tenth falls to zero as a raised cosine, so the cut does not ring
for long: an impulse spreads over 49 output samples above -60 dB (197 two
octaves down), and the padding keeps what the clip's end wraps round onto its
start below -115 dB. A / B is the ratio the voice
plays at: A (from the padded clip's length up to 1.25 times it) and B are
chosen with no prime factor above 31, the pair nearest 2^(s/12): within 0.01
cent for 16384-sample segments, 0.08 for 4096, 0.5 for 100. numpy's FFT of
such a size costs at most 1.5 times a power of two's; a size with a large
prime factor cost 5-13 times as much (-22 semitones took 12 ms a voice, when
A and B were first sought among 7-smooth sizes and few pairs were found).

What was tried first: a windowed-sinc polyphase filter, one table per semitone
(as `core/resample.PolyphaseResampler` streams the output rate). With 32 taps
it cost 2.7 ms per voice at unison and 10.7 ms two octaves down on this
project's 2-core machine (a gather and a product per output sample and tap),
against 0.3-1.9 ms (median 0.6 ms over +-24 semitones) for the two FFTs here,
which are also exact in the band. All measured on 16384-sample clips while two
benchmarks kept both cores busy.

`Transposer(length)` precomputes a `TransposePlan` per interval (sizes and the
kept bins' gains) the first time it is asked for one; the live engine asks for
all of them when the stream is built, so a voice costs its two FFTs only. numpy only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

MAX_SEMITONES = 24  # the range where transposition is specified (two octaves each way)
ROLLOFF = 0.9  # the kept band is flat to this fraction of the lower Nyquist frequency, then falls to 0 at it
PAD = 1024  # zeros after the clip (at least): the kernel's tail must fit in them
SEARCH = 1.25  # A is sought from the padded clip's length up to this times it
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31)  # FFT sizes made of these alone are fast


@dataclass(frozen=True)
class TransposePlan:
    """How one interval is played: clips of `a` samples (zero-padded) become `b`, of which the first
    `length` are the voice; `gains` ((min(a, b) // 2 + 1,) float64) weight the kept bins, B / A included."""

    semitones: float
    a: int
    b: int
    length: int
    gains: np.ndarray

    @property
    def ratio(self) -> float:
        """Input samples per output sample: how many times higher the voice sounds."""
        return self.a / self.b

    @property
    def cents_off(self) -> float:
        """How far the played ratio is from 2^(semitones / 12), in cents."""
        return 1200.0 * math.log2(self.ratio) - 100.0 * self.semitones


@functools.lru_cache(maxsize=8)
def _fast_sizes(hi: int) -> np.ndarray:
    """(hi + 1,) bool: whether n has no prime factor above 31."""
    m = np.arange(hi + 1, dtype=np.int64)
    for p in _PRIMES:
        while True:
            divisible = (m % p == 0) & (m > 0)
            if not divisible.any():
                break
            m[divisible] //= p
    return m == 1


def make_plan(length: int, semitones: float) -> TransposePlan:
    """The plan that transposes clips of `length` samples by `semitones` (within +-MAX_SEMITONES)."""
    if not (math.isfinite(semitones) and abs(semitones) <= MAX_SEMITONES):
        raise ValueError(f"semitones must be within +-{MAX_SEMITONES}, got {semitones}")
    if length < 1:
        raise ValueError(f"clips must have at least one sample, got {length}")
    target = 2.0 ** (semitones / 12.0)
    lo = length + max(PAD, length // 16)
    hi = int(SEARCH * lo)
    a = np.arange(lo, hi + 1)
    b = np.maximum(2, np.rint(a / target)).astype(np.int64)
    fast = _fast_sizes(int(math.ceil(hi * 2.0 ** (MAX_SEMITONES / 12.0))) + 2)
    off = np.abs(np.log2(a / b / target))
    off[~(fast[a] & fast[b])] = np.inf
    i = int(np.argmin(off))  # the first of the nearest; with no fast pair at all, the first A
    a, b = int(a[i]), int(b[i])
    k = min(a, b) // 2
    i = np.arange(k + 1, dtype=np.float64)
    edge = ROLLOFF * k
    gains = np.where(i <= edge, 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip((i - edge) / max(k - edge, 1e-9), 0.0, 1.0)))
    gains *= b / a  # irfft of B samples from an rfft of A: scale back to the clip's level
    return TransposePlan(float(semitones), a, b, -(-length * b // a), gains)


class Transposer:
    """Transposes clips of `length` samples: `plan(semitones)` (cached), then `apply(x, plan, out)`."""

    def __init__(self, length: int):
        self.length = int(length)
        self._plans: dict[float, TransposePlan] = {}

    def plan(self, semitones: float) -> TransposePlan:
        key = float(semitones)
        p = self._plans.get(key)
        if p is None:
            p = self._plans[key] = make_plan(self.length, key)
        return p

    def apply(self, x: np.ndarray, plan: TransposePlan, out: np.ndarray) -> np.ndarray:
        """Write clip x ((length,) float32) transposed as `plan` says into out[:plan.length]; returns that view."""
        spectrum = np.fft.rfft(x, plan.a)
        kept = np.zeros(plan.b // 2 + 1, dtype=spectrum.dtype)
        np.multiply(spectrum[: len(plan.gains)], plan.gains, out=kept[: len(plan.gains)])
        view = out[: plan.length]
        view[:] = np.fft.irfft(kept, plan.b)[: plan.length]
        return view

    def transpose(self, x: np.ndarray, semitones: float) -> np.ndarray:
        """x ((length,)) transposed by `semitones`: a new (plan.length,) float32 array (x itself at 0)."""
        x = np.asarray(x, dtype=np.float32)
        if semitones == 0:
            return x.copy()
        plan = self.plan(semitones)
        return self.apply(x, plan, np.empty(plan.length, dtype=np.float32))
