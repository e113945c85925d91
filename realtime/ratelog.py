"""A log that cannot be flooded: at most one line per kind per interval, with a count of the rest.

A stream of bad OSC messages or a MIDI controller sending garbage must not fill
the terminal or slow the engine down with I/O; it must still be visible.

    log = RateLimitedLog(logging.getLogger("ganstream.osc"))
    log("arity", "/ganstream/gain: takes 1 number, got 2")
    # -> one line now; the same kind again within a second is counted, and the
    #    next line of that kind says "(37 more like this in the last 1.0 s)"
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Thread-safe; `interval` seconds per kind; `clock` is injectable for tests."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 1.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.interval = float(interval)
        self.level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # kind -> time of its last line
        self._suppressed: dict[str, int] = {}
        self.lines = 0  # lines written, for tests and status

    def __call__(self, kind: str, message: str, exc_info: bool = False) -> bool:
        """Log `message` unless a line of this kind went out less than `interval` ago; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
            self.lines += 1
        if suppressed:
            message = f"{message} ({suppressed} more like this suppressed)"
        self.logger.log(self.level, message, exc_info=exc_info)
        return True

    def suppressed(self, kind: str) -> int:
        with self._lock:
            return self._suppressed.get(kind, 0)
