"""A live session: the engine, its control inputs (OSC, MIDI, terminal MIDI learn), the status line, and
a shutdown that always ends.

    session = Session(engine, osc=OscOptions(port=9000), midi=MidiOptions(virtual="ganstream"))
    reason = session.play(seconds=None)      # until Ctrl-C or SIGTERM: "interrupted"
    session.report(reason); session.write_stats("stats.json")

`ganstream play` parses and checks its options, builds the engine and hands it
to a Session; everything that runs while it plays and everything that has to
stop afterwards lives here.

Start order: MIDI, then OSC (so /ganstream/learn can reach the MIDI input),
then the terminal learn thread, then the audio. The inputs' imports and set-up
come before the audio so they cannot hold up its callback.

Stop order, and why it is bounded. The status is taken first (what played,
before anything closes). Then the OSC server stops, then the audio and the
producer, and only then the MIDI input. Closing a JACK MIDI client
(rtmidi: jack_port_unregister, jack_deactivate, jack_client_close) is a request
to the JACK server that completes only after the server's next process cycle;
python-rtmidi keeps the GIL through it, and while our PortAudio stream is
running its process callback is part of that cycle and needs the GIL to run.
So closing MIDI while the audio still plays can stall until JACK gives up on
our audio client (the old order, MIDI first, did exactly that, and `play`
sometimes did not exit after Ctrl-C). With the audio closed first, nothing in
the cycle waits for this process. Each part's stop also runs with a deadline
(`STOP_TIMEOUT_S`): a part that still does not return is reported and left
behind, and the rest stops. Last, the CLI arms `faulthandler` as a watchdog
(`exit_after_s`) while the session closes: if closing takes that long (a C
library stuck with the GIL, where no Python code can run, so the per-part
deadlines cannot help), it writes every thread's stack to stderr and exits
the process with status 1.

Measured (python-rtmidi 1.5.8, JACK2 dummy driver, a PortAudio JACK stream
with a Python callback running): `close_port()` holds the GIL for 4-13 ms and
`delete()` for 40-160 ms, where a 256-frame period is 5.3 ms; closing MIDI
before the audio gave 39 JACK xrun reports in three open/close rounds, audio
first 15.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ganstream.core.pitch import note_name

from .engine import Engine, status_line

STOP_TIMEOUT_S = 5.0  # per part (OSC, engine, MIDI)


class SessionError(Exception):
    """A problem the user can fix (a port in use, a MIDI map target the bundle lacks, no audio device)."""


class SessionFailed(RuntimeError):
    """The session stopped by itself: the producer failed (an internal error, not the user's)."""


@dataclass(frozen=True)
class OscOptions:
    host: str = "127.0.0.1"
    port: int = 9000  # 0: any free port
    reply_port: int | None = None  # None: reply to the port each message came from


@dataclass(frozen=True)
class MidiOptions:
    """port: an input to open; virtual: a virtual port to create (neither: a virtual port "ganstream")."""

    port: str | None = None
    virtual: str | None = None
    api: str = "auto"
    map_path: str | None = None  # the map to load (unless `learn` starts it afresh) and save learned bindings to
    learn: bool = False  # MIDI learn on the terminal (stdin)
    fresh_map: bool = False  # learn into a map file that does not exist yet


class Session:
    """One live session of `engine` (see the module docstring).

    label: what plays, for the start line (the bundle's name).
    output: "device" (PortAudio, `device` picks which), "null", or an output object (tests).
    launched: time.monotonic() when the command began (for the summary line).
    exit_after_s: while `close` runs, a faulthandler watchdog ends the process if closing takes this
        long (the CLI's last resort; None for library use and tests).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        label: str = "",
        osc: OscOptions | None = None,
        midi: MidiOptions | None = None,
        output: Any = "device",
        device: str | int | None = None,
        quiet: bool = False,
        out: TextIO | None = None,
        launched: float | None = None,
        exit_after_s: float | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        invert: Any = None,
    ):
        """invert: an InvertWorker (realtime/invert_live.py) behind OSC's /ganstream/invert, or None."""
        self.engine = engine
        self.invert = invert
        self.label = label
        self.osc_options, self.midi_options = osc, midi
        self.output, self.device = output, device
        self.quiet = quiet
        self.out = out if out is not None else sys.stderr
        self.launched = time.monotonic() if launched is None else launched
        self.exit_after_s = exit_after_s
        self.stop_timeout_s = stop_timeout_s
        self.osc: Any = None  # OscServer, once open
        self.midi: Any = None  # MidiInput, once open
        self.final_status: dict | None = None
        self.stuck: list[str] = []  # parts whose stop did not return in time
        self._closed = False

    # -- the whole session

    def play(self, seconds: float | None = None) -> str:
        """Open, play until `seconds` have passed ("done") or Ctrl-C / SIGTERM ("interrupted"), close.

        Raises SessionError (the user's to fix) or SessionFailed (the producer failed); it has closed by then.
        """
        with _sigterm_interrupts():
            try:
                self.open()
                return self.run(seconds)
            except KeyboardInterrupt:
                return "interrupted"
            finally:
                self.close()

    def open(self) -> None:
        """Start the control inputs, then the audio (which fills the ring first)."""
        from .audio import AudioError

        try:
            if self.invert is not None:
                self.invert.start()
            if self.midi_options is not None:
                self.midi = self._open_midi(self.midi_options)
            if self.osc_options is not None:
                self.osc = self._open_osc(self.osc_options)
            if self.midi_options is not None and self.midi_options.learn:
                self._start_learning()
            try:
                self.engine.start(self.output, device=self.device)
            except AudioError as e:
                raise SessionError(str(e)) from None
            except Exception as e:
                if e is self.engine.error:  # the producer failed while filling the ring
                    raise SessionFailed(f"the audio producer stopped: {e}") from e
                raise
        except BaseException:
            self.close()
            raise
        print(self.start_line(), file=self.out)  # even when quiet: it says where controls go

    def run(self, seconds: float | None = None) -> str:
        """The status line until `seconds` pass (None: until interrupted); returns "done"."""
        engine = self.engine
        tty = self.out.isatty() and not self.quiet
        last_line = 0.0
        end = None if seconds is None else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            time.sleep(0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))
            if engine.error is not None:
                raise SessionFailed(f"the audio producer stopped: {engine.error}")
            now = time.monotonic()
            if tty and now - last_line >= 0.25:
                print("\r" + status_line(engine.status()) + "\x1b[K", end="", file=self.out, flush=True)
                last_line = now
            elif not tty and not self.quiet and now - last_line >= 10.0:
                print(status_line(engine.status()), file=self.out, flush=True)
                last_line = now
        return "done"

    def close(self) -> None:
        """Stop everything, each part within `stop_timeout_s`; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        watchdog = self.exit_after_s is not None and _arm_watchdog(self.exit_after_s)
        try:
            with _signals_ignored():  # a second Ctrl-C must not leave half the session running
                # The status as it played: closing a JACK MIDI client can make JACK itself xrun.
                engine = self.engine
                self.final_status = engine.status() if engine.running else None
                if self.osc is not None:
                    self._stop("OSC", self.osc.stop)
                # Before the audio: a recording under way closes its input stream before the output's.
                if self.invert is not None:
                    self._stop("inversion", self.invert.stop)
                self._stop("engine", engine.stop)
                # After the audio: see the module docstring.
                if self.midi is not None:
                    self._stop("MIDI", self.midi.stop)
        finally:
            if watchdog:
                faulthandler.cancel_dump_traceback_later()

    def _stop(self, name: str, stop: Callable[[], None]) -> None:
        """Run `stop` on a helper thread and wait at most `stop_timeout_s`; a part that hangs is left behind."""
        failed: list[BaseException] = []

        def run() -> None:
            try:
                stop()
            except BaseException as e:  # stopping must go on with the other parts
                failed.append(e)

        t = threading.Thread(target=run, name=f"ganstream-stop-{name.lower()}", daemon=True)
        t.start()
        t.join(self.stop_timeout_s)
        if t.is_alive():
            self.stuck.append(name)
            print(f"ganstream play: warning: {name} did not stop within {self.stop_timeout_s:g} s; left behind",
                  file=self.out)
        elif failed:
            print(f"ganstream play: warning: stopping {name}: {failed[0]}", file=self.out)

    # -- reporting

    def start_line(self) -> str:
        engine, out = self.engine, self.engine.output
        s = engine.settings
        osc, midi = self.osc, self.midi
        stream = engine.stream_settings
        notes = ""
        if stream.pitch_range is not None:  # a pitch-conditioned bundle
            lo, hi = stream.pitch_range
            refused = "refused" if engine.controls.refuse_out_of_range else "folded in"
            notes = f" (notes ask for their pitch, {note_name(lo)}..{note_name(hi)}; others {refused})"
        elif stream.mode == "trigger" and stream.kit is not None:
            notes = f" (kit of {len(stream.kit.pads)} pads{': ' + stream.kit.name if stream.kit.name else ''})"
        elif stream.mode == "trigger":
            root = stream.root_note
            notes = " (notes untransposed)" if root is None else f" (notes transpose from {root:g}, {note_name(root)})"
        return (
            f"ganstream play: {self.label} ({engine.model_rate} Hz) on "
            f"{getattr(out, 'name', out)}, {s.sample_rate} Hz, {s.blocksize}-frame blocks, {engine.provider}, "
            f"{stream.mode} mode{notes}, producer {engine.priority}"
            + (f"; OSC on {osc.host}:{osc.port}" if osc else "")
            + (f"; MIDI {midi.port_name!r} ({midi.api_label})" if midi else "")
            + ("; /ganstream/invert with the bundle's encoder" if osc and self.invert is not None else "")
        )

    @property
    def status(self) -> dict:
        """The status as it played (taken before anything closed), or the engine's now."""
        return self.final_status or self.engine.final_status or self.engine.status()

    def report(self, reason: str) -> None:
        """The final status line (unless quiet) and one summary line."""
        st = self.status
        if not self.quiet:
            print(("\n" if self.out.isatty() else "") + status_line(st), file=self.out)
        first = st["first_sound_s"]
        print(
            f"ganstream play: {reason} after {st['position_s']:.1f} s of audio, {st['underruns']} underruns"
            + (f", first sound {first:.2f} s after the engine started" if first is not None else "")
            + f", {time.monotonic() - self.launched:.1f} s since launch",
            file=self.out,
        )

    def stats(self) -> dict:
        """The final status with the control values, the inputs' counters and where the audio was late (JSON-ready)."""
        engine, out = self.engine, self.engine.output
        per_block = engine.settings.blocksize / engine.settings.sample_rate

        def seconds_of(blocks, count) -> list[float]:
            return [round(int(b) * per_block, 3) for b in blocks[: min(64, count)]]

        first = getattr(out, "first_sound", None)
        return {
            **jsonable(self.status),
            "latent": engine.controls.latent.tolist(),
            "macros": engine.controls.macros,
            "osc": None if self.osc is None else {
                k: getattr(self.osc, k) for k in ("received", "messages", "applied", "refused", "malformed")
            },
            "midi": None if self.midi is None else {
                k: getattr(self.midi, k) for k in ("received", "applied", "ignored", "refused")
            },
            "first_sound_monotonic": None if first is None else first[1],
            "last_ring_underrun_s": engine.ring.last_underrun / engine.settings.sample_rate if engine.ring.underruns else None,
            "late_seconds": seconds_of(getattr(out, "late_blocks", ()), getattr(out, "late_callbacks", 0)),
            "xrun_seconds": seconds_of(getattr(out, "xrun_blocks", ()), getattr(out, "xruns", 0)),
            "stuck": list(self.stuck),
        }

    def write_stats(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.stats()) + "\n")

    def write_record(self, path: str | Path) -> None:
        """The control timeline (`engine.Timeline`) as JSON (the engine must record)."""
        Path(path).write_text(json.dumps(self.engine.timeline().to_dict()) + "\n")

    # -- parts

    def _open_midi(self, o: MidiOptions):
        from .midi import MidiError, MidiInput
        from .midi_map import MidiMapError, load_midi_map

        try:
            midi_map = load_midi_map(o.map_path) if o.map_path and not o.fresh_map else None
            virtual = o.virtual
            if o.port is None and virtual is None:
                virtual = "ganstream"
            return MidiInput(
                self.engine.controls, midi_map, port=o.port, virtual=virtual, api=o.api, map_path=o.map_path
            ).start()
        except (MidiError, MidiMapError, ValueError) as e:
            raise SessionError(str(e)) from None

    def _open_osc(self, o: OscOptions):
        from .osc import OscServer

        try:
            return OscServer(
                self.engine.controls, host=o.host, port=o.port, learn=self.midi, reply_port=o.reply_port, invert=self.invert
            ).start()
        except OSError as e:
            raise SessionError(
                f"cannot listen for OSC on {o.host}:{o.port} ({e.strerror or e}); use another --osc-port, or --no-osc"
            ) from None
        except ValueError as e:
            raise SessionError(f"--osc-reply-port: {e}") from None

    def _start_learning(self) -> None:
        from .midi import learn_interactively

        # stdin blocks; a daemon thread lets Ctrl-C stop the session while it waits for a line.
        threading.Thread(
            target=learn_interactively, args=(self.midi, sys.stdin, lambda text: print(text, file=self.out)),
            name="ganstream-learn", daemon=True,
        ).start()


@contextmanager
def _sigterm_interrupts():
    """SIGTERM stops as cleanly as Ctrl-C (signal handlers can only be set from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _arm_watchdog(seconds: float) -> bool:
    """faulthandler's timer is a C thread: it fires even while a C library holds the GIL."""
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    except (AttributeError, ValueError, OSError):  # no real stderr to write the stacks to (embedded, pythonw)
        return False
    return True


@contextmanager
def _signals_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def jsonable(x):
    """A status dict with numpy scalars made plain numbers, for json.dumps."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
