"""Streaming resampling from the model rate to the output rate.

`ResampledStream(source, in_rate, out_rate).read(n)` pulls from any source with
`read(n)` (a `SegmentStream`) and returns n samples at `out_rate`. It feeds
`soxr.ResampleStream` in fixed input blocks, so the output does not depend on
how it is read, and it never flushes: the source is endless, so the resampler
simply pulls enough input to fill the samples asked for. Output sample j is
the resampled signal at time j / out_rate (soxr removes its own delay), and a
render of S seconds is exactly round(S * out_rate) samples with no tail
padding. Equal rates are a bit-exact passthrough.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import soxr


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
        self._soxr = None
        if not self.passthrough:
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
