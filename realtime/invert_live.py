"""Inversion while playing: `/ganstream/invert PATH` and `/ganstream/invert/input SECONDS` (issue 14).

    worker = InvertWorker(bundle, engine.controls, input_device="system").start()
    worker.invert_file("kick.wav", reply)      # reply(address, args), called once, on the worker's thread
    worker.invert_input(2.0, reply)            # records 2 s from the input device, then inverts that
    worker.stop()

`InvertWorker` owns one daemon thread and a queue of one: a request may wait while another is worked
on, and a third is refused at once with `InvertBusy` (OSC answers it on /ganstream/error) rather than
queued without bound. The thread runs `inversion.Inverter` (the bundle's encoder, then its generator to
score the guess), off the audio callback and off the producer thread, and applies the result as a
preset recall would: `Controls.set_pitch` of the estimated pitch for a pitch-conditioned bundle, then
`Controls.set_latent`, the path of /ganstream/latent, heard at once (a step, crossfaded by the engine).

Every request accepted gets exactly one reply:

    /ganstream/invert/done   distance seconds message    (float, float, str: "" when nothing was done to the sample)
    /ganstream/invert/error  reason                     (str: names the file, or "input", and the problem)

`seconds` is the time from the worker taking the request to the latent being set: reading and preparing
the sample, the encoder and scoring (for /invert/input, after the recording). `distance` is
`core.distance.spectral_distance` between the prepared sample and what the latent generates.

The Inverter is built on the worker thread at the first request (threads=1, on the CPU by default: the
encoder, its proposals heard where it makes several, its refiner's corrections where the bundle has one (each a
generator call and a refiner call: about 50 ms in all for a one-second WaveGAN with eight proposals, two
corrections and a beam of two) and one generator call to score, without the provider probe that redirects stderr while the audio
plays), so `play` starts as fast as without it. Measured on the factory bundle (tests/bundle_factory.py)
on a busy 2-core machine: building it 4 ms, an inversion from a file 3-7 ms, neither holding the GIL
for more than 2 ms at a time.

The input: `audio.AudioCapture` records SECONDS (CAPTURE_MIN_S..CAPTURE_MAX_S) from the input device on
a stream of its own, its callback copying into a preallocated buffer; the output stream plays on. The
recording goes through `Inverter.prepare(audio, rate, source="input")`: mixed to mono, resampled, cut
from its onset when longer than a segment. So the encoder hears the sound from 5 ms before its onset
(core.distance.ONSET_LEAD_S), as it hears a file: tests/test_invert_live.py plays a note into `play`'s
JACK input with its phase set for that cut, because the factory's encoders measure phase-0 sines.

The worker thread is started after `play` asked for real-time priority, so it inherits SCHED_FIFO 1 like
the producer and the OSC thread: a thread that holds the GIL must not be preempted by ordinary processes
while the audio callback waits for it. Its work is a few tens of milliseconds per request (refine=0, random=0),
each ONNX Runtime call releasing the GIL;
a live refinement or random search (the `refine`, `random` arguments) would hold the CPU for seconds.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ratelog import RateLimitedLog

DONE_ADDRESS = "/ganstream/invert/done"
ERROR_ADDRESS = "/ganstream/invert/error"
CAPTURE_MIN_S = 0.05  # inversion.MIN_SECONDS: anything shorter is refused by prepare anyway
CAPTURE_MAX_S = 30.0
STOP_TIMEOUT_S = 2.0
_POLL_S = 0.2  # how often the idle worker looks at its stop flag

log = logging.getLogger("ganstream.invert")

Reply = Callable[[str, Sequence[Any]], None]  # (address, args)
Capture = Callable[[float, threading.Event], tuple[np.ndarray, int]]  # (seconds, stop) -> (samples, rate)


class InvertBusy(RuntimeError):
    """A request refused because another is already waiting (or the worker has stopped)."""


@dataclass(frozen=True)
class FileRequest:
    """Invert the audio file at `path` (relative paths: to the directory `play` runs in)."""

    path: str
    reply: Reply


@dataclass(frozen=True)
class InputRequest:
    """Record `seconds` from the input device, then invert the recording."""

    seconds: float
    reply: Reply


class InvertWorker:
    """The worker thread behind /ganstream/invert and /ganstream/invert/input (module docstring).

    bundle: the playing bundle; it must have an encoder (else BundleError, as `Inverter` raises).
    controls: the engine's `control.Controls`.
    provider: where the Inverter runs ("cpu": see the module docstring).
    input_device: the input device for `invert_input`: an index, a name or part of one (None: the default
        input); resolved at each recording (`audio.resolve_input_device`), its errors replied.
    input_option: the option that named it, for those errors ("--input-device", or "--device" when play's
        output device stands in).
    refine, random, seed: passed to `Inverter.invert` (0, 0: the encoder's guess alone, a few ms).
    capture: (seconds, stop) -> (samples, rate), to record with (tests); default `audio.AudioCapture`.

    Counters (ints): `done` and `failed` requests, `refused` (busy).
    """

    def __init__(
        self,
        bundle: Any,
        controls: Any,
        *,
        provider: str = "cpu",
        input_device: str | int | None = None,
        input_option: str = "--input-device",
        refine: int = 0,
        random: int = 0,
        seed: int = 0,
        capture: Capture | None = None,
        logger: logging.Logger | None = None,
    ):
        if bundle.encoder is None:
            from .bundle import BundleError

            raise BundleError(str(bundle.source), "has no encoder: export it with `ganstream export RUN --encoder`", "encoder")
        self.bundle, self.controls = bundle, controls
        self.provider = provider
        self.input_device, self.input_option = input_device, input_option
        self.refine, self.random, self.seed = int(refine), int(random), int(seed)
        self._capture = capture if capture is not None else self._record
        self.log = RateLimitedLog(logger or log)
        self.done = self.failed = self.refused = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1)  # one waiting; the one worked on is off the queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inverter: Any = None  # built on the worker thread at the first request

    # -- life cycle

    def start(self) -> "InvertWorker":
        """Start the worker thread (before the audio: it imports what the Inverter needs, a few ms)."""
        if self._thread is not None:
            raise RuntimeError("the inversion worker is already running")
        from . import inversion  # noqa: F401  (the import holds the GIL: here, not while the audio plays)

        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ganstream-invert", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop taking requests, end a recording under way, and wait at most `timeout` s for the thread (a
        daemon: one still inside an onnxruntime call cannot keep the process alive). Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "InvertWorker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    # -- requests (any thread; they only enqueue)

    def invert_file(self, path: str, reply: Reply) -> None:
        """Queue the inversion of the audio file `path`; `reply` gets its one answer. InvertBusy if one waits."""
        if not isinstance(path, str) or not path:
            raise ValueError(f"path: expected the path of an audio file, got {path!r}")
        self._put(FileRequest(path, reply))

    def invert_input(self, seconds: float, reply: Reply) -> None:
        """Queue a recording of `seconds` (CAPTURE_MIN_S..CAPTURE_MAX_S) from the input device and its inversion.
        ValueError for a bad length, InvertBusy if a request waits."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError(f"seconds: expected a finite number, got {seconds!r}")
        if not CAPTURE_MIN_S <= seconds <= CAPTURE_MAX_S:
            raise ValueError(f"seconds: {seconds:g} is out of range [{CAPTURE_MIN_S:g}, {CAPTURE_MAX_S:g}]")
        self._put(InputRequest(float(seconds), reply))

    def _put(self, request: FileRequest | InputRequest) -> None:
        if not self.running:
            self.refused += 1
            raise InvertBusy("the inversion worker is not running (it has stopped)")
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self.refused += 1
            raise InvertBusy("busy: an inversion is under way and another waits; send again when one replies") from None

    # -- the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            try:
                self._serve(request)
            except Exception:  # the last line of defence: the worker never dies
                self.log("internal", "invert: unexpected error serving a request", exc_info=True)
        try:  # stopping: the request still waiting gets its one reply too
            request = self._queue.get_nowait()
        except queue.Empty:
            return
        self.failed += 1
        self._reply(request, ERROR_ADDRESS, ["not inverted: ganstream play is stopping"])

    def _serve(self, request: FileRequest | InputRequest) -> None:
        from .audio import AudioError
        from .bundle import BundleError
        from .inference import ProviderError
        from .inversion import InversionError

        what = request.path if isinstance(request, FileRequest) else f"input ({request.seconds:g} s)"
        try:
            inverter = self._get_inverter()
            if isinstance(request, FileRequest):
                t0 = time.perf_counter()
                audio, message = inverter.load(request.path)
            else:
                samples, rate = self._capture(request.seconds, self._stop)
                if self._stop.is_set():
                    raise AudioError("the recording was cut short: ganstream play is stopping")
                t0 = time.perf_counter()
                audio, message = inverter.prepare(samples, rate, source="input")
            result = inverter.invert(audio, self.refine, self.random, self.seed, message)
            self._apply(result)
            seconds = time.perf_counter() - t0
        except (InversionError, BundleError, ProviderError, AudioError, ValueError) as e:  # ControlError is a ValueError
            self.failed += 1
            self.log("failed", f"invert: {what}: {e}")
            self._reply(request, ERROR_ADDRESS, [str(e)])
            return
        except Exception as e:
            self.failed += 1
            self.log("internal", f"invert: {what}: unexpected error", exc_info=True)
            self._reply(request, ERROR_ADDRESS, [f"internal error: {type(e).__name__}: {e}"])
            return
        self.done += 1
        self._reply(request, DONE_ADDRESS, [float(result.distance), float(seconds), result.message or ""])

    def _get_inverter(self):
        if self._inverter is None:
            from .inversion import Inverter

            self._inverter = Inverter(self.bundle, self.provider, threads=1)
        return self._inverter

    def _apply(self, result: Any) -> None:
        """As a preset recall: the pitch first (a conditioned bundle), then the latent, both steps heard at once."""
        if result.condition is not None and self.controls.pitch_range is not None:
            self.controls.set_pitch(float(result.condition[0]))
        self.controls.set_latent(np.asarray(result.latent, dtype=np.float64))

    def _record(self, seconds: float, stop: threading.Event) -> tuple[np.ndarray, int]:
        from .audio import AudioCapture

        capture = AudioCapture(seconds, self.input_device, self.input_option)
        return capture.record(stop), capture.sample_rate

    def _reply(self, request: FileRequest | InputRequest, address: str, args: list) -> None:
        try:
            request.reply(address, args)
        except Exception:  # a reply that fails must not stop the worker
            self.log("reply", f"invert: cannot send {address}", exc_info=True)
