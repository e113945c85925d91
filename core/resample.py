"""Resampling: whole clips (`resample_clip`, for training data) and streams from the model rate to
the output rate.

`ResampledStream(source, in_rate, out_rate).read(n)` pulls from any source with
`read(n)` (a `SegmentStream`) and returns n samples at `out_rate`. It feeds
`soxr.ResampleStream` in fixed input blocks, so the output does not depend on
how it is read, and it never flushes: the source is endless, so the resampler
simply pulls enough input to fill the samples asked for. Output sample j is
the resampled signal at time j / out_rate (soxr removes its own delay), and a
render of S seconds is exactly round(S * out_rate) samples with no tail
padding. Equal rates are a bit-exact passthrough.

quality: soxr's "HQ" (the default, what `render` uses), "VHQ", "MQ", "LQ"; or
"live", a `PolyphaseResampler`: soxr works in blocks of about 20-30 ms, so
its output arrives in bursts and a sample leaves it up to ~50 ms after it went
in, which a live engine cannot afford. "live" is a windowed-sinc polyphase
filter that turns each input block into output at once, with a delay of 32
input samples (2 ms at 16 kHz), a passband to ~0.86 of the lower Nyquist and
about 70 dB of stopband. It is exact and read-size independent too.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import soxr

QUALITIES = ("VHQ", "HQ", "MQ", "LQ", "live")


def resample_clip(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(T,) at rate_in -> (round(T * rate_out / rate_in),) float32 at rate_out: a whole clip at once,
    with soxr's very high quality (the training data pipeline decodes every file through this)."""
    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out:
        return x
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    return soxr.resample(x, rate_in, rate_out, quality="VHQ").astype(np.float32, copy=False)


class Source(Protocol):
    def read(self, n: int) -> np.ndarray: ...


class ResampledStream:
    def __init__(self, source: Source, in_rate: int, out_rate: int, quality: str = "HQ", block: int = 4096):
        """source: pulled at `in_rate`; block: input samples per soxr call (fixed, for block independence)."""
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.source, self.in_rate, self.out_rate = source, int(in_rate), int(out_rate)
        self.passthrough = self.in_rate == self.out_rate
        self._block = int(block)
        if quality not in QUALITIES:
            raise ValueError(f"unknown resampling quality {quality!r} (one of {', '.join(QUALITIES)})")
        self.quality = quality
        self._soxr = None
        if not self.passthrough:
            if quality == "live":
                self._soxr = PolyphaseResampler(self.in_rate, self.out_rate)
            else:
                self._soxr = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        self._buf = np.zeros(0, dtype=np.float32)  # resampled, not yet read
        self._start = 0

    def read(self, n: int) -> np.ndarray:
        """The next n samples at out_rate, (n,) float32."""
        if self.passthrough:
            return np.asarray(self.source.read(n), dtype=np.float32)
        parts = []
        have = len(self._buf) - self._start
        while have < n:
            y = self._soxr.resample_chunk(np.ascontiguousarray(self.source.read(self._block), dtype=np.float32))
            parts.append(y)
            have += len(y)
        if parts:
            self._buf = np.concatenate([self._buf[self._start :], *parts])
            self._start = 0
        out = self._buf[self._start : self._start + n].copy()
        self._start += n
        return out


class PolyphaseResampler:
    """A streaming windowed-sinc resampler with a short, fixed delay: `resample_chunk(x) -> y`.

    The ratio is reduced to L/M (48000/16000 = 3/1, 48000/44100 = 160/147). Output
    sample j is the signal at input time j * M / L, interpolated from the `taps`
    input samples around it (a Kaiser-windowed sinc, cutoff `rolloff` of the lower
    Nyquist, each phase normalised to unit gain at DC). It is emitted as soon as
    the input reaches `taps / 2` samples past that time, so the delay is taps / 2
    input samples, and nothing is emitted early: the first call holds the filter's
    half-length back, like soxr, and output j always means time j / out_rate. Each
    output sample is one dot product in a fixed order, so the output is the same
    however the input is cut into chunks.
    """

    def __init__(self, in_rate: int, out_rate: int, taps: int = 64, rolloff: float = 0.93, beta: float = 7.0):
        g = math.gcd(int(in_rate), int(out_rate))
        self.up, self.down = int(out_rate) // g, int(in_rate) // g
        ratio = self.down / self.up  # input samples per output sample
        t = int(math.ceil(taps * max(1.0, ratio) / 2)) * 2  # longer when it must cut below the input Nyquist
        self.taps = t
        cutoff = 0.5 * rolloff * min(1.0, 1.0 / ratio)  # cycles per input sample
        # Row p interpolates at p / up of an input sample past the window's centre sample.
        k = np.arange(t, dtype=np.float64)
        tau = np.arange(self.up, dtype=np.float64)[:, None] / self.up + (t / 2 - 1) - k[None, :]
        window = np.i0(beta * np.sqrt(np.clip(1.0 - (tau / (t / 2)) ** 2, 0.0, 1.0))) / np.i0(beta)
        h = 2 * cutoff * np.sinc(2 * cutoff * tau) * window
        h /= h.sum(axis=1, keepdims=True)
        self._h = h.astype(np.float32)
        self._buf = np.zeros(t, dtype=np.float32)  # input from absolute index self._x0 on
        self._x0 = -(t // 2)  # silence before the stream starts
        self._have = 0  # input samples received
        self._j = 0  # next output sample
        self._k = np.arange(t)

    @property
    def delay(self) -> float:
        """Input samples between a sample going in and its time coming out."""
        return self.taps / 2

    def resample_chunk(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        # Keep only the input the next outputs can still need.
        first_needed = (self._j * self.down) // self.up - self.taps // 2 + 1
        drop = max(0, first_needed - self._x0)
        self._buf = np.concatenate([self._buf[drop:], x])
        self._x0 += drop
        self._have += len(x)
        # Output j needs input up to floor(j * down / up) + taps / 2.
        last = self._have - 1 - self.taps // 2  # the latest centre sample with its whole window in
        if last < 0:
            return np.zeros(0, dtype=np.float32)
        j_end = (last * self.up) // self.down + 1  # outputs whose centre c = floor(j*down/up) <= last
        if j_end <= self._j:
            return np.zeros(0, dtype=np.float32)
        j = np.arange(self._j, j_end, dtype=np.int64)
        pos = j * self.down
        centre, phase = pos // self.up, pos % self.up
        start = centre - (self.taps // 2 - 1) - self._x0
        windows = self._buf[start[:, None] + self._k[None, :]]
        windows *= self._h[phase]
        self._j = j_end
        return windows.sum(axis=1, dtype=np.float32)
