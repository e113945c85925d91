"""MIDI control of the live engine, with python-rtmidi (ports) and mido (messages).

`MidiInput` opens a MIDI input port, by name or by part of its name, or
creates a virtual one that other programs connect to (CoreMIDI, ALSA and
JACK; not Windows, where loopMIDI makes virtual cables), and turns what
arrives into `Controls` calls through a `MidiMap` (realtime/midi_map.py):

- control change: through the map's binding for that CC (range and curve) to
  a latent dimension, a macro, the gain, the walk's rate or depth, the seed,
  or a preset (recalled when the value crosses the middle upwards). A 14-bit
  pair sends its MSB, then its LSB: the MSB alone sets MSB<<7 (the MIDI rule:
  a new MSB clears the LSB), the LSB then sets MSB<<7 | LSB.
- note on / note off: `controls.trigger(velocity / 127, note)` / `note_off(note)`; in trigger mode
  the note transposes its voice from the root note (docs/live.md, Notes).
- program change N: loads the Nth preset in name order (0 = the first).

Messages on other channels than the map's, CCs the map does not bind and
values the controls refuse are ignored (refusals are logged at most once a
second per kind); nothing a controller sends can stop the engine or leave a
control half-set.

MIDI learn: `learn("macro/pc1")` arms; the next CC moved is bound to that
target over its default range (a CC 0..31 whose very next message is its LSB,
CC+32, becomes a 14-bit pair), replacing any binding of that CC or target.
`learn("pad/36")` (a kit's pad) binds the next note played instead: from then on
that note plays pad 36 (the map's `pads:`), and this first hit already does.
`save_map()` writes the map, learned bindings included, as YAML.

Threads: rtmidi queues incoming messages in its own ring buffer; a daemon
thread of ours polls it every millisecond (4 ms when idle for a while) and
applies them. No Python code runs on the MIDI system's thread: with JACK that
thread is JACK's real-time process thread, and taking Python's GIL there
would put every JACK client, our audio included, at the mercy of the GIL.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import mido
import rtmidi

from .midi_map import (
    PAD_TARGET,
    CCBinding,
    MidiMap,
    MidiMapError,
    NoteBinding,
    default_binding,
    default_midi_map,
    save_midi_map,
    target_problem,
)
from .ratelog import RateLimitedLog

log = logging.getLogger("ganstream.midi")

CLIENT_NAME = "ganstream"
INPUT_PORT_NAME = "midi_in"  # our end of a connection to an existing port (JACK shows ganstream:midi_in)
QUEUE_SIZE = 4096  # messages rtmidi holds between two polls
POLL_S = 0.001
IDLE_POLL_S = 0.004
IDLE_AFTER_S = 0.5
LSB_WAIT_S = 0.25  # how long MIDI learn waits for a 14-bit pair's LSB

APIS = {
    "alsa": rtmidi.API_LINUX_ALSA,
    "jack": rtmidi.API_UNIX_JACK,
    "coremidi": rtmidi.API_MACOSX_CORE,
    "winmm": rtmidi.API_WINDOWS_MM,
}
API_LABELS = {
    rtmidi.API_LINUX_ALSA: "ALSA",
    rtmidi.API_UNIX_JACK: "JACK",
    rtmidi.API_MACOSX_CORE: "CoreMIDI",
    rtmidi.API_WINDOWS_MM: "Windows MultiMedia",
}


class MidiError(RuntimeError):
    """No usable MIDI API, no such port, or a port that cannot be opened; the message says which and why."""


# -- APIs and ports -------------------------------------------------------------------------------


def _auto_candidates() -> list[tuple[int, str | None]]:
    """(api, reason to skip it or None) in the platform's order of preference."""
    if sys.platform.startswith("linux"):
        alsa_reason = None if os.path.exists("/dev/snd/seq") else "no ALSA sequencer here (/dev/snd/seq is missing; `modprobe snd-seq`)"
        return [(rtmidi.API_LINUX_ALSA, alsa_reason), (rtmidi.API_UNIX_JACK, None)]
    if sys.platform == "darwin":
        return [(rtmidi.API_MACOSX_CORE, None), (rtmidi.API_UNIX_JACK, None)]
    if sys.platform == "win32":
        return [(rtmidi.API_WINDOWS_MM, None)]
    return [(a, None) for a in rtmidi.get_compiled_api() if a != rtmidi.API_RTMIDI_DUMMY]


def _candidates(api: str) -> list[tuple[int, str | None]]:
    key = api.lower()
    if key == "auto":
        return _auto_candidates()
    if key not in APIS:
        raise MidiError(f"unknown MIDI API {api!r} (auto, {', '.join(APIS)})")
    return [(APIS[key], None)]


def open_midi_api(api: str = "auto", client_name: str = CLIENT_NAME) -> tuple[rtmidi.MidiIn, str]:
    """An rtmidi input client on the first API that works -> (client, API label).

    "auto": the platform's own API (ALSA, CoreMIDI, Windows MultiMedia), then
    JACK where there is one (Linux without an ALSA sequencer, or a JACK setup).
    """
    compiled = set(rtmidi.get_compiled_api())
    problems = []
    for rtapi, skip in _candidates(api):
        label = API_LABELS.get(rtapi, str(rtapi))
        if rtapi not in compiled:
            problems.append(f"{label}: not compiled into python-rtmidi")
            continue
        if skip:
            problems.append(f"{label}: {skip}")
            continue
        try:
            return rtmidi.MidiIn(rtapi, client_name, QUEUE_SIZE), label
        except (rtmidi.RtMidiError, OSError) as e:
            reason = str(e)
            if rtapi == rtmidi.API_UNIX_JACK:
                reason = "no JACK server running (start one, e.g. with qjackctl or `jackd -d alsa`)"
            problems.append(f"{label}: {reason}")
    raise MidiError("no MIDI API works here: " + "; ".join(problems))


def list_midi_inputs(api: str = "auto") -> list[str]:
    """The names of the MIDI inputs (ports that send to us) on the API `api` resolves to."""
    midi_in, _ = open_midi_api(api, f"{CLIENT_NAME}-list")
    try:
        return list(midi_in.get_ports())
    finally:
        midi_in.delete()


def describe_midi_inputs(api: str = "auto") -> str:
    """Lines for `ganstream devices`: the API and its input ports, or why there is no MIDI."""
    try:
        midi_in, label = open_midi_api(api, f"{CLIENT_NAME}-list")
    except MidiError as e:
        return f"MIDI: {e}"
    try:
        ports = list(midi_in.get_ports())
    finally:
        midi_in.delete()
    lines = [f"MIDI inputs ({label}):"]
    lines += [f"  {i}  {name}" for i, name in enumerate(ports)] or ["  (none; --midi-virtual NAME makes a port to connect to)"]
    return "\n".join(lines)


def match_port(ports: list[str], spec: str) -> int:
    """The index of the port `spec` names: an exact name, an index, or a unique case-insensitive part of a name."""
    if spec in ports:
        return ports.index(spec)
    if spec.isascii() and spec.isdigit() and int(spec) < len(ports):
        return int(spec)  # the number `ganstream devices` shows
    hits = [i for i, name in enumerate(ports) if spec.lower() in name.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(p) for p in ports) or "none"
    if hits:
        raise MidiError(f"MIDI input {spec!r} matches {len(hits)} ports: {', '.join(repr(ports[i]) for i in hits)}; be more specific")
    raise MidiError(f"no MIDI input matches {spec!r} (inputs: {listing})")


# -- the input --------------------------------------------------------------------------------------


class MidiInput:
    """A MIDI input driving `controls` through `midi_map` (None: `default_midi_map`).

    port: an input to open (name, part of a name, or index); virtual: the name of a
    virtual input port to create instead. api: "auto", "alsa", "jack", "coremidi"
    or "winmm". map_path: where `save_map()` writes by default (the --midi-map file).

    Counters (ints): `received` messages (counted once handled), `applied`,
    `ignored` (other channel, unmapped, unparsable), `refused` (a value the
    controls refused).
    """

    def __init__(
        self,
        controls: Any,
        midi_map: MidiMap | None = None,
        port: str | None = None,
        virtual: str | None = None,
        api: str = "auto",
        client_name: str = CLIENT_NAME,
        map_path: str | Path | None = None,
        logger: logging.Logger | None = None,
    ):
        if (port is None) == (virtual is None):
            raise ValueError("give either port (an existing MIDI input) or virtual (a port to create), not both or neither")
        if virtual is not None and not virtual.strip():
            raise ValueError("a virtual MIDI port needs a name")
        _candidates(api)  # an unknown API name fails here, before anything opens
        self.controls = controls
        if midi_map is None:
            midi_map = default_midi_map(int(controls.latent_size), tuple(controls.macro_names))
        else:
            midi_map.check_targets(int(controls.latent_size), tuple(controls.macro_names))
        self._map = midi_map
        self.port_spec = port
        self.virtual = virtual
        self.api = api
        self.client_name = client_name
        self.map_path = Path(map_path) if map_path is not None else None
        self.log = RateLimitedLog(logger or log)
        self.api_label: str | None = None
        self.port_name: str | None = None  # what was opened, after start()
        self.received = self.applied = self.ignored = self.refused = 0
        self._rt: rtmidi.MidiIn | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # learn state, shared with the OSC thread
        self._learning: tuple[str, Callable[[CCBinding], None] | None] | None = None
        self._pending: tuple[int, CCBinding, float, Callable[[CCBinding], None] | None] | None = None  # (channel, binding, deadline, callback)
        self._msb: dict[tuple[int, int], int] = {}  # (channel, MSB cc) -> last MSB
        self._last_raw: dict[tuple[int, int], int] = {}  # (channel, cc) -> last raw value (presets, seed)

    # -- life cycle

    @property
    def midi_map(self) -> MidiMap:
        """The map in use now (MIDI learn replaces it)."""
        return self._map

    def start(self) -> "MidiInput":
        if self._thread is not None:
            raise RuntimeError("the MIDI input is already running")
        midi_in, self.api_label = open_midi_api(self.api, self.client_name)
        try:
            if self.virtual is not None:
                try:
                    midi_in.open_virtual_port(self.virtual)
                except rtmidi.UnsupportedOperationError:
                    raise MidiError(
                        f"{self.api_label} cannot make virtual MIDI ports; make one with loopMIDI and open it with --midi-in"
                    ) from None
                self.port_name = self.virtual
            else:
                ports = list(midi_in.get_ports())
                index = match_port(ports, self.port_spec or "")
                midi_in.open_port(index, INPUT_PORT_NAME)
                self.port_name = ports[index]
            midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
        except (rtmidi.RtMidiError, OSError) as e:
            midi_in.delete()
            raise MidiError(f"cannot open MIDI input {self.virtual or self.port_spec!r} ({self.api_label}): {e}") from None
        except BaseException:
            midi_in.delete()
            raise
        self._rt = midi_in
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="ganstream-midi", daemon=True)
        self._thread.start()
        kind = "virtual port" if self.virtual is not None else "input"
        log.info("MIDI: %s %r open (%s), map %s", kind, self.port_name, self.api_label, self._map.source)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._rt is not None:
            self._rt.close_port()
            self._rt.delete()
            self._rt = None

    def __enter__(self) -> "MidiInput":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        return {"received": self.received, "applied": self.applied, "ignored": self.ignored, "refused": self.refused}

    # -- learn

    def learn(self, target: str, on_learned: Callable[[CCBinding], None] | None = None) -> None:
        """Arm MIDI learn: the next CC moved is bound to `target`; `on_learned(binding)` is called then.

        Raises MidiMapError (a ValueError) for a target the bundle does not have.
        """
        kind = target.partition("/")[0] if isinstance(target, str) else ""
        presets = tuple(self.controls.presets) if kind == "preset" else None
        if isinstance(target, str) and target.startswith(PAD_TARGET):
            problem = self._pad_problem(target)
        else:
            problem = target_problem(target, int(self.controls.latent_size), tuple(self.controls.macro_names), presets)
        if problem:
            raise MidiMapError(f"MIDI learn: {problem}" if problem.startswith("unknown") else f"MIDI learn: target {target}: {problem}")
        with self._lock:
            self._learning = (target, on_learned)
        log.info("MIDI learn: move a control to bind it to %s", target)

    def _pad_problem(self, target: str) -> str | None:
        """Why a pad/<note> target cannot be learned (None if it can): a kit is needed, and the pad must be in it."""
        arg = target[len(PAD_TARGET) :]
        if not (arg.isascii() and arg.isdigit() and 0 <= int(arg) <= 127):
            return f"unknown target {target!r} (pad/<note>, the note 0..127 of a kit pad)"
        kit = getattr(self.controls, "kit", None)
        if kit is None:
            return "this session has no kit (a kit plays in trigger mode: --kit FILE, or a bundle that ships one)"
        if kit.pad(int(arg)) is None:
            return f"the kit has no pad on note {arg} (pads: {', '.join(map(str, sorted(kit.pads)))})"
        return None

    def cancel_learn(self) -> None:
        with self._lock:
            self._learning = None

    @property
    def learning(self) -> str | None:
        """The target MIDI learn is waiting to bind, or None."""
        armed = self._learning
        return armed[0] if armed else None

    def save_map(self, path: str | Path | None = None) -> Path:
        """Write the current map as YAML to `path` (default: `map_path`); returns where it went."""
        target = Path(path) if path is not None else self.map_path
        if target is None:
            raise MidiMapError("no file to save the MIDI map to: start with --midi-map FILE")
        return save_midi_map(self._map, target)

    # -- the thread

    def _poll(self) -> None:
        rt = self._rt
        assert rt is not None
        last_activity = time.monotonic()
        while not self._stop.is_set():
            got = False
            while True:
                try:
                    item = rt.get_message()
                except Exception:  # rtmidi should never raise here; if it does, keep polling
                    self.log("poll", "MIDI: error reading the input", exc_info=True)
                    item = None
                if item is None:
                    break
                got = True
                self.handle(item[0])
            now = time.monotonic()
            if got:
                last_activity = now
            pending = self._pending
            if pending is not None and now >= pending[2]:
                self._finish_pending()
            time.sleep(POLL_S if now - last_activity < IDLE_AFTER_S else IDLE_POLL_S)

    def handle(self, data: Iterable[int]) -> None:
        """Apply one raw MIDI message (bytes); never raises. `received` counts it once it is handled."""
        try:
            self._handle(data)
        except ValueError as e:  # ControlError (a ValueError): a value the controls refused
            self.refused += 1
            self.log("refused", f"MIDI: refused: {e}")
        except Exception:
            self.refused += 1
            self.log("internal", "MIDI: unexpected error handling a message", exc_info=True)
        finally:
            self.received += 1

    def _handle(self, data: Iterable[int]) -> None:
        try:
            msg = mido.Message.from_bytes(list(data))
        except (ValueError, TypeError):
            self.ignored += 1
            return
        channel = getattr(msg, "channel", None)
        if channel is None or not self._map.accepts(channel):
            self.ignored += 1
            return
        if msg.type == "control_change":
            self._control_change(channel, msg.control, msg.value)
        elif msg.type == "note_on" and msg.velocity > 0:
            armed = self._learning
            if armed is not None and armed[0].startswith(PAD_TARGET):
                self._learn_note(msg.note)
            self.controls.trigger(msg.velocity / 127.0, self._map.note_for(msg.note))
            self.applied += 1
        elif msg.type in ("note_off", "note_on"):  # note on with velocity 0 is a note off
            self.controls.note_off(self._map.note_for(msg.note))
            self.applied += 1
        elif msg.type == "program_change":
            self._program_change(msg.program)
        else:
            self.ignored += 1

    def _program_change(self, program: int) -> None:
        names = sorted(self.controls.presets)
        if program >= len(names):
            self.ignored += 1
            self.log("program", f"MIDI: program change {program}: there are {len(names)} presets (0..{len(names) - 1})")
            return
        self.controls.load_preset(names[program])
        self.applied += 1

    def _control_change(self, channel: int, cc: int, value: int) -> None:
        if self._pending is not None:
            self._learn_lsb(channel, cc)
        armed = self._learning  # one read: the OSC thread may cancel it meanwhile
        if armed is not None and not armed[0].startswith(PAD_TARGET):
            self._learn_cc(channel, cc)
        self._msb[(channel, cc)] = value  # the last value of every CC: an MSB when a pair's LSB follows
        b = self._map.binding_for(cc)
        if b is None:
            self.ignored += 1
            return
        if b.lsb is None:
            raw, bits = value, 7
        elif cc == b.cc:  # MSB: a new MSB clears the LSB
            raw, bits = value << 7, 14
        else:
            msb = self._msb.get((channel, b.cc))
            if msb is None:  # an LSB before any MSB: nothing to combine it with yet
                self.ignored += 1
                return
            raw, bits = (msb << 7) | value, 14
        self._apply(channel, b, raw, bits)

    def _apply(self, channel: int, b: CCBinding, raw: int, bits: int) -> None:
        kind, _, arg = b.target.partition("/")
        key = (channel, b.cc)
        previous = self._last_raw.get(key)
        self._last_raw[key] = raw
        if kind == "preset":
            half = 1 << (bits - 1)
            if raw >= half and (previous is None or previous < half):
                self.controls.load_preset(arg)
                self.applied += 1
            return
        value = b.value(raw, bits)
        if kind == "latent":
            self.controls.set_latent_dim(int(arg), value)
        elif kind == "macro":
            self.controls.set_macro(arg, value)
        elif b.target == "gain":
            self.controls.set_gain(value)
        elif b.target == "walk/rate":
            self.controls.set_walk(rate=value)
        elif b.target == "walk/depth":
            self.controls.set_walk(depth=value)
        elif b.target == "seed":
            seed = int(round(value))
            if previous is not None and int(round(b.value(previous, bits))) == seed:
                return  # the knob moved within one seed: no reseed
            self.controls.set_seed(seed)
        self.applied += 1

    # learn internals (on the MIDI thread)

    def _learn_cc(self, channel: int, cc: int) -> None:
        with self._lock:
            armed, self._learning = self._learning, None
        if armed is None:
            return
        target, callback = armed
        binding = default_binding(cc, target)
        self._map = self._map.with_binding(binding)
        if cc < 32 and self._map.binding_for(cc + 32) is None:
            self._pending = (channel, binding, time.monotonic() + LSB_WAIT_S, callback)  # wait for a possible LSB
        else:
            self._learned(binding, callback)

    def _learn_note(self, note: int) -> None:
        with self._lock:
            armed, self._learning = self._learning, None
        if armed is None:
            return
        target, callback = armed
        binding = NoteBinding(note, int(target[len(PAD_TARGET) :]))
        self._map = self._map.with_note(binding)
        log.info("MIDI learn: note %d -> %s", note, binding.target)
        if callback is not None:
            try:
                callback(binding)
            except Exception:
                self.log("learn", "MIDI learn: the learned-callback failed", exc_info=True)

    def _learn_lsb(self, channel: int, cc: int) -> None:
        """The first CC after a learned MSB: its LSB makes the binding a 14-bit pair."""
        pending_channel, binding, _, callback = self._pending  # type: ignore[misc]
        if channel == pending_channel and cc == binding.cc + 32 and self._map.binding_for(cc) is None:
            self._pending = None
            pair = replace(binding, lsb=cc)
            self._map = self._map.with_binding(pair)
            self._learned(pair, callback)
        elif channel != pending_channel or cc != binding.cc:
            self._finish_pending()  # something else moved: it was a 7-bit control

    def _finish_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._learned(pending[1], pending[3])

    def _learned(self, binding: CCBinding, callback: Callable[[CCBinding], None] | None) -> None:
        pair = f" (14-bit, LSB on CC {binding.lsb})" if binding.lsb is not None else ""
        log.info("MIDI learn: CC %d%s -> %s", binding.cc, pair, binding.target)
        if callback is not None:
            try:
                callback(binding)
            except Exception:
                self.log("learn", "MIDI learn: the learned-callback failed", exc_info=True)


def learn_interactively(
    midi: MidiInput,
    lines: Iterable[str],
    write: Callable[[str], None] = print,
    timeout: float | None = None,
) -> int:
    """`--learn`: for each target read from `lines` (one a line), wait for a CC and bind it.

    The map is saved after every binding when `midi.map_path` is set. An empty
    line or "q" ends. Returns the number of bindings learned. Runs on the
    caller's thread (the CLI gives it one reading stdin).
    """
    learned = 0
    write("MIDI learn: type a target (macro/<name>, latent/<i>, gain, walk/rate, walk/depth, seed, preset/<name>, "
          "or pad/<note> for a kit's pad, then hit the pad), then move a control; an empty line ends.")
    for line in lines:
        target = line.strip()
        if not target or target == "q":
            break
        done = threading.Event()
        result: list[CCBinding] = []
        try:
            midi.learn(target, lambda b: (result.append(b), done.set()))
        except ValueError as e:
            write(str(e))
            continue
        write(f"move a control for {target} ...")
        if not done.wait(timeout):
            midi.cancel_learn()
            write(f"no control moved for {target}")
            continue
        b = result[0]
        if isinstance(b, NoteBinding):
            write(f"note {b.note} -> {b.target}")
        else:
            pair = f" + LSB CC {b.lsb} (14-bit)" if b.lsb is not None else ""
            write(f"CC {b.cc}{pair} -> {b.target}")
        learned += 1
        if midi.map_path is not None:
            write(f"saved {midi.save_map()}")
    return learned
