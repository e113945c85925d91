"""A single-producer, single-consumer ring of float32 samples between the generator and the sound card.

The producer thread writes generated audio; the audio callback reads it. Each
side moves only its own counter, and CPython updates a reference atomically, so
neither side takes a lock. The reader does a constant amount of work per
callback: at most two slice copies into the device buffer, never an array
allocation, and when the ring runs dry it fades what it has to silence over a
short, precomputed ramp instead of clicking, and counts the under-read.
"""

from __future__ import annotations

import numpy as np


class Ring:
    def __init__(self, capacity: int, fade: int = 64):
        """capacity: samples the ring holds (rounded up to a power of two); fade: samples of the underrun fade-out."""
        size = 1 << max(1, int(capacity - 1).bit_length())
        self._buf = np.zeros(size, dtype=np.float32)
        self._mask = size - 1
        self.capacity = size
        self._written = 0  # total samples ever written; only the producer changes it
        self._read = 0  # total samples ever read; only the consumer changes it
        # Row k holds a k-sample ramp from 1 down to 0, so any fade length needs no allocation.
        self.fade = fade  # samples of the underrun fade-out (and of the fade-in after it)
        self._ramps = np.zeros((fade + 1, fade), dtype=np.float32)
        for k in range(1, fade + 1):
            self._ramps[k, :k] = np.linspace(1.0, 0.0, k + 1, dtype=np.float32)[1:]
        self._fade_in = self._ramps[fade, ::-1].copy()  # 0 up to 1, after silence
        self._silent = False
        self.underruns = 0  # callbacks that found fewer samples than they needed
        self.last_underrun = -1

    def available(self) -> int:
        """Samples written and not yet read."""
        return self._written - self._read

    def space(self) -> int:
        return self.capacity - (self._written - self._read)

    @property
    def read_position(self) -> int:
        """Samples read since the start: the stream position now leaving for the device."""
        return self._read

    @property
    def write_position(self) -> int:
        return self._written

    def write(self, x: np.ndarray) -> int:
        """Producer: copies as much of x (float32, 1-D) as fits; returns how many samples were written."""
        n = min(len(x), self.space())
        start = self._written & self._mask
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = x[:first]
        if n > first:
            self._buf[: n - first] = x[first:n]
        self._written += n  # publish only after the data is in place
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Consumer (the audio callback): fills `out` (1-D float32); returns the samples that came from the ring.

        On an under-read the samples it has are faded to zero and the rest is
        silence: a short fade, never stale or garbage audio.
        """
        want = len(out)
        n = min(want, self._written - self._read)
        start = self._read & self._mask
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start : start + first]
        if n > first:
            out[first:n] = self._buf[: n - first]
        self._read += n
        if self._silent and n:
            # Coming back from an underrun: fade in rather than jump from silence.
            k = min(n, self.fade)
            out[:k] *= self._fade_in[:k]
            self._silent = False
        if n < want:
            self.underruns += 1
            self.last_underrun = self._read  # stream position of the under-read (for diagnostics)
            k = min(n, self.fade)
            if k:
                out[n - k : n] *= self._ramps[k, :k]
            out[n:] = 0.0
            self._silent = True
        return n
