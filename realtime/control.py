"""Control state of the live engine: the thread-safe front that OSC, MIDI and the CLI talk to.

`Controls` is called from any number of control threads (the OSC server, the
MIDI input, the status line). Every setter checks its arguments and raises
`ControlError` (a ValueError whose message names the parameter and the
problem) before anything changes, so bad input never reaches the latent. A
valid value is appended to a `collections.deque` (an atomic operation in
CPython) as a `Command` holding a typed event (realtime/events.py); the
engine's producer thread drains the deque once per step and applies each
event, stamped at the stream position it is applied at. The producer never waits for
a control thread, and a control thread never waits for the producer.

Controls also keeps a *mirror* of what has been asked for (base latent, macro
values, gain, walk, seed) so that `set_latent_dim` can send a whole latent,
`save_preset` can store the state without asking the producer, and a control
surface can read values back. The mirror is guarded by a lock that only
control threads take.

Ranges (a value outside is refused, not clamped, so OSC can answer an error):

| parameter | accepted |
| --- | --- |
| latent values | finite, within +-LATENT_LIMIT (8) |
| macro | finite, within [-1, 1] (a knob at +-1 moves two standard deviations of random latents) |
| gain | finite, within [0, 2] (linear; smoothed by the engine) |
| walk rate | finite, within [0, 50] Hz (0 freezes the walk where it is) |
| walk depth | finite, within [0, 4] latent units |
| seed | an integer (or an integral float) within [0, 2**32 - 1] |
| trigger velocity | finite, within [0, 1]; note 0..127 or None |
| preset name | 1..64 printable characters, no '/' |
| morph time | finite, within [0, 600] s (0 recalls at once) |

Presets are stored as JSON in the `presets` format of automation files
(docs/automation.md), so a preset file saved live also works with
`ganstream render --presets FILE`:

    {"presets": {"calm": {"latent": [0.1, ...], "macros": {"pc1": 0.5, ...}}}}
"""

from __future__ import annotations

import collections
import json
import math
import numbers
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganstream.core.pitch import note_name

from . import events as ev
from .kit import Kit, Pad, default_pad_name
from .latents import LatentSpace

LATENT_LIMIT = 8.0
MACRO_LIMIT = 1.0
GAIN_MAX = 2.0
WALK_RATE_MAX = 50.0
WALK_DEPTH_MAX = 4.0
SEED_MAX = 2**32 - 1
MORPH_MAX_S = 600.0
NAME_MAX = 64
QUEUE_MAX = 65536  # commands the producer has not drained yet; beyond this the oldest are dropped

class ControlError(ValueError):
    """A control value that cannot be used; the message names the parameter and the problem."""


@dataclass(frozen=True)
class Command:
    """One accepted control change on its way to the producer.

    event: the change (realtime/events.py), already checked.
    arrival: `Controls.clock()` when the setter accepted it (the engine sets the
    clock to the audio stream's, so latency can be measured to the DAC).
    """

    event: ev.ControlEvent
    arrival: float


class Controls:
    """The live engine's controls, safe to call from any thread (see the module docstring).

    space: the bundle's latent space (size, distribution, macro directions).
    seed: the seed whose latent the engine starts from.
    walk_rate, walk_depth: the random walk the engine starts with.
    presets_path: a JSON file of presets, read if it exists, written by save_preset.
    """

    def __init__(
        self,
        space: LatentSpace,
        *,
        seed: int = 0,
        walk_rate: float = 0.2,
        walk_depth: float = 0.0,
        gain: float = 1.0,
        presets_path: str | os.PathLike | None = None,
        latent: np.ndarray | None = None,
    ):
        self.space = space
        self.latent_size: int = space.size
        self.macro_names: tuple[str, ...] = tuple(space.controls)
        self.clock: Callable[[], float] = time.monotonic
        self._queue: collections.deque[Command] = collections.deque(maxlen=QUEUE_MAX)
        self._lock = threading.Lock()  # control threads only; the producer never takes it
        self._seed = self._check_seed(seed)
        self._latent = space.seed_latent(self._seed) if latent is None else self._check_latent(latent)
        self._macros: dict[str, float] = {}
        self._gain = self._check_range("gain", gain, 0.0, GAIN_MAX)
        self._walk = (
            self._check_range("walk rate", walk_rate, 0.0, WALK_RATE_MAX),
            self._check_range("walk depth", walk_depth, 0.0, WALK_DEPTH_MAX),
        )
        self.presets_path = Path(presets_path) if presets_path is not None else None
        self._presets: dict[str, dict] = self._read_presets() if self.presets_path else {}
        self._status_source: Callable[[], dict] | None = None
        self.rejected = 0  # setter calls refused with ControlError
        # A conditioned bundle's trained notes, and whether notes outside them are refused (else the
        # stream folds them in by octaves); the engine sets these from the bundle and --out-of-range.
        self.pitch_range: tuple[int, int] | None = None
        self.refuse_out_of_range = False
        self.kit: Kit | None = None  # trigger mode's pads, which set_pad changes

    @classmethod
    def from_bundle(cls, bundle, **kwargs) -> "Controls":
        """Controls for a loaded bundle; walk defaults come from its `streaming` settings."""
        kwargs.setdefault("walk_rate", bundle.streaming.walk_rate)
        kwargs.setdefault("walk_depth", bundle.streaming.walk_depth)
        return cls(LatentSpace.from_bundle(bundle), **kwargs)

    # -- setters (any thread) -------------------------------------------------

    def set_latent(self, values) -> None:
        """The whole base latent: D finite numbers within +-LATENT_LIMIT."""
        z = self._check_latent(values)
        with self._lock:
            self._latent = z
            self._push(ev.LatentChange(z.copy()))

    def set_latent_dim(self, index: int, value: float) -> None:
        """One component of the base latent."""
        i = self._check_index(index)
        v = self._check_range(f"latent[{i}]", value, -LATENT_LIMIT, LATENT_LIMIT)
        with self._lock:
            z = self._latent.copy()
            z[i] = v
            self._latent = z
            self._push(ev.LatentChange(z.copy()))

    def set_macro(self, name: str, value: float) -> None:
        """A named control direction (the bundle's `controls.items`), knob units in [-1, 1]."""
        if not isinstance(name, str) or name not in self.space.controls:
            known = ", ".join(self.macro_names) or "this bundle has no macros"
            self._fail(f"macro {name!r}: unknown (known: {known})")
        v = self._check_range(f"macro {name!r}", value, -MACRO_LIMIT, MACRO_LIMIT)
        with self._lock:
            self._macros[name] = v
            self._push(ev.MacroChange(name, v))

    def set_gain(self, value: float) -> None:
        """Master gain, linear 0..2; the engine glides to it (one pole, `gain_smoothing_s`)."""
        v = self._check_range("gain", value, 0.0, GAIN_MAX)
        with self._lock:
            self._gain = v
            self._push(ev.GainChange(v))

    def set_walk(self, rate: float | None = None, depth: float | None = None) -> None:
        """The random walk: knots per second (0 freezes it) and/or depth in latent units (0 stops it)."""
        if rate is None and depth is None:
            self._fail("walk: give a rate, a depth or both")
        r = None if rate is None else self._check_range("walk rate", rate, 0.0, WALK_RATE_MAX)
        d = None if depth is None else self._check_range("walk depth", depth, 0.0, WALK_DEPTH_MAX)
        with self._lock:
            self._walk = (self._walk[0] if r is None else r, self._walk[1] if d is None else d)
            self._push(ev.WalkChange(*self._walk))

    def set_seed(self, seed: int) -> None:
        """Jump the base latent to the latent `seed` names (the walk keeps its own path)."""
        s = self._check_seed(seed)
        z = self.space.seed_latent(s)
        with self._lock:
            self._seed, self._latent = s, z
            self._push(ev.SeedChange(s, z.copy()))

    def save_preset(self, name: str) -> None:
        """Store the current base latent and macro values under `name`, in the presets file if there is one."""
        name = self._check_name(name)
        with self._lock:
            preset = {"latent": self._latent.copy(), "macros": {m: self._macros.get(m, 0.0) for m in self.macro_names}}
            presets = {**self._presets, name: preset}
            if self.presets_path is not None:
                write_presets(self.presets_path, presets)
            self._presets = presets

    def load_preset(self, name: str) -> None:
        """Recall a preset at once (a step, heard at once like a knob move)."""
        self.morph_preset(name, 0.0)

    def morph_preset(self, name: str, seconds: float) -> None:
        """Glide (eased) from wherever the controls are to the preset over `seconds`."""
        secs = self._check_range("morph time", seconds, 0.0, MORPH_MAX_S)
        with self._lock:
            preset = self._presets.get(name) if isinstance(name, str) else None
            if preset is None:
                known = ", ".join(sorted(self._presets)) or "none saved"
                self._fail(f"preset {name!r}: unknown (known: {known})")
            latent = preset["latent"]
            macros = dict(preset["macros"])
            if latent is not None:
                self._latent = np.array(latent, dtype=np.float64)
            self._macros.update(macros)
            self._push(ev.PresetRecall(name, None if latent is None else self._latent.copy(), macros, secs))

    def trigger(self, velocity: float = 1.0, note: int | None = None) -> None:
        """Start a one-shot voice (trigger mode; other modes ignore it, but for a conditioned bundle's pitch).
        velocity 0..1 scales its gain."""
        v = self._check_range("velocity", velocity, 0.0, 1.0)
        n = None if note is None else self._check_trained(self._check_note(note), "note")
        self._push(ev.NoteOn(v, n))

    def note_off(self, note: int) -> None:
        """Release the voices `note` started (trigger mode with note-off enabled; otherwise one-shots ignore it)."""
        self._push(ev.NoteOff(self._check_note(note)))

    def note(self, note: int, velocity: float = 1.0) -> None:
        """A note as a keyboard plays it: velocity 0 is its note-off (MIDI's running-status convention)."""
        if velocity == 0:
            self.note_off(note)
        else:
            self.trigger(velocity, note)

    def set_pitch(self, pitch: float) -> None:
        """A conditioned bundle's pitch (MIDI, fractions allowed) without a note: the drone's, or note-less triggers'."""
        if self.pitch_range is None:
            self._fail("pitch: this bundle is not pitch-conditioned (notes transpose it, in trigger mode)")
        p = self._check_trained(self._check_range("pitch", pitch, 0.0, 127.0), "pitch")
        self._push(ev.PitchChange(p))

    def set_pad(self, note: int, seed: int | None = None) -> None:
        """Trigger mode with a kit: `note` plays the latent `seed` names, or (None) the current base latent, from now on.
        A pad that exists keeps its name, gain and choke group."""
        n = self._check_note(note)
        if self.kit is None:
            self._fail("pad: this session has no kit (play a kit with --kit FILE, or a bundle that ships one, in trigger mode)")
        with self._lock:
            if seed is not None:
                latent = self.space.seed_latent(self._check_seed(seed))
            else:  # what the knobs set: the base latent and the macros' offsets (the walk wanders around it)
                latent = self._latent + self.space.macro_offset(self._macros)
            old = self.kit.pad(n)
            pad = Pad(n, old.name if old is not None else default_pad_name(n), latent.astype(np.float32),
                      old.gain if old is not None else 1.0, old.choke if old is not None else None)
            self.kit = Kit(self.kit.name, {**self.kit.pads, n: pad}, self.kit.path)  # MIDI learn sees the new pad
            self._push(ev.PadChange(n, pad.name, latent, pad.gain, pad.choke))

    def _check_trained(self, note: float, what: str) -> float:
        """`note` unless --out-of-range refuse and it lies outside the conditioned bundle's trained notes."""
        if self.refuse_out_of_range and self.pitch_range is not None:
            lo, hi = self.pitch_range
            if not lo <= note <= hi:
                self._fail(f"{what} {note:g} ({note_name(note)}): outside the notes this bundle was trained on, "
                           f"{lo} ({note_name(lo)}) to {hi} ({note_name(hi)}); --out-of-range fold folds it in by octaves")
        return note

    # -- reading back ---------------------------------------------------------

    @property
    def presets(self) -> tuple[str, ...]:
        """Names of the presets, sorted."""
        return tuple(sorted(self._presets))

    @property
    def latent(self) -> np.ndarray:
        """(D,) float64 copy of the base latent last asked for."""
        return self._latent.copy()

    @property
    def macros(self) -> dict[str, float]:
        """Every macro's value last asked for (0 for those never set)."""
        m = self._macros
        return {name: m.get(name, 0.0) for name in self.macro_names}

    @property
    def gain(self) -> float:
        return self._gain

    @property
    def walk(self) -> tuple[float, float]:
        """(rate Hz, depth)."""
        return self._walk

    @property
    def seed(self) -> int:
        return self._seed

    def status(self) -> dict:
        """The engine's live status (provider, rtf, load, buffer_fill, underruns, latency_ms, position, ...).

        Without an engine attached: the control values only, with "engine": None.
        """
        source = self._status_source
        if source is not None:
            return source()
        return {
            "engine": None,
            "gain": self._gain,
            "walk_rate": self._walk[0],
            "walk_depth": self._walk[1],
            "seed": self._seed,
            "macros": self.macros,
            "pending": len(self._queue),
        }

    # -- the producer's side --------------------------------------------------

    def attach(self, status_source: Callable[[], dict], clock: Callable[[], float] | None = None) -> None:
        """The engine registers its status function and (optionally) the clock arrivals are stamped with."""
        self._status_source = status_source
        if clock is not None:
            self.clock = clock

    def pending(self) -> int:
        return len(self._queue)

    def pop(self) -> Command | None:
        """The oldest command not yet applied, or None; the producer calls this, never blocking."""
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    # -- checks -----------------------------------------------------------------

    def _push(self, event: ev.ControlEvent) -> None:
        self._queue.append(Command(event, self.clock()))

    def _fail(self, message: str):
        self.rejected += 1
        raise ControlError(message)

    def _number(self, what: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._fail(f"{what}: expected a number, got {type(value).__name__} {value!r}")
        v = float(value)
        if not math.isfinite(v):
            self._fail(f"{what}: {v} is not finite")
        return v

    def _check_range(self, what: str, value, low: float, high: float) -> float:
        v = self._number(what, value)
        if not low <= v <= high:
            self._fail(f"{what}: {v:g} is out of range [{low:g}, {high:g}]")
        return v

    def _integer(self, what: str, value) -> int:
        if isinstance(value, bool):
            self._fail(f"{what}: expected an integer, got bool {value!r}")
        if isinstance(value, numbers.Integral):
            return int(value)
        v = self._number(what, value)
        if v != int(v):
            self._fail(f"{what}: expected an integer, got {v:g}")
        return int(v)

    def _check_index(self, index) -> int:
        i = self._integer("latent index", index)
        if not 0 <= i < self.latent_size:
            self._fail(f"latent index: {i} is out of range (this latent has {self.latent_size} dimensions, 0..{self.latent_size - 1})")
        return i

    def _check_seed(self, seed) -> int:
        s = self._integer("seed", seed)
        if not 0 <= s <= SEED_MAX:
            self._fail(f"seed: {s} is out of range [0, {SEED_MAX}]")
        return s

    def _check_note(self, note) -> int:
        n = self._integer("note", note)
        if not 0 <= n <= 127:
            self._fail(f"note: {n} is out of range [0, 127]")
        return n

    def _check_latent(self, values) -> np.ndarray:
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            self._fail(f"latent: expected {self.latent_size} numbers, got {type(values).__name__}")
        if len(values) != self.latent_size:
            self._fail(f"latent: expected {self.latent_size} values, got {len(values)}")
        out = np.empty(self.latent_size, dtype=np.float64)
        for i, v in enumerate(values):
            out[i] = self._check_range(f"latent[{i}]", v, -LATENT_LIMIT, LATENT_LIMIT)
        return out

    def _check_name(self, name) -> str:
        try:
            return check_preset_name(name)
        except ControlError:
            self.rejected += 1
            raise

    # -- the presets file -------------------------------------------------------

    def _read_presets(self) -> dict[str, dict]:
        path = self.presets_path
        if not path.exists():
            return {}
        from .automation import AutomationError, load_presets

        try:
            return load_presets(path, self.space)
        except AutomationError as e:
            raise ControlError(f"presets file: {e}") from None


def check_preset_name(name) -> str:
    """`name` if a preset may have it (1..NAME_MAX printable characters, no '/', so an OSC address can
    name it); ControlError saying why otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ControlError(f"preset name: expected a non-empty string, got {name!r}")
    if len(name) > NAME_MAX or "/" in name or not name.isprintable():
        raise ControlError(f"preset name {name[:80]!r}: use 1..{NAME_MAX} printable characters without '/'")
    return name


def write_presets(path: str | os.PathLike, presets: Mapping[str, Mapping]) -> None:
    """Write `presets` (name -> {"latent": (D,) or None, "macros": {name: value}}, as `load_presets` gives them)
    to the JSON file `path`, sorted by name, atomically (a temporary file beside it, then renamed over it);
    ControlError naming the file if it cannot be written. `ganstream invert` writes its presets here too."""
    doc = {
        "presets": {
            name: {
                **({"latent": [float(v) for v in p["latent"]]} if p["latent"] is not None else {}),
                "macros": {k: float(v) for k, v in p["macros"].items()},
            }
            for name, p in sorted(presets.items())
        }
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ControlError(f"preset: cannot write {path}: {e.strerror or e}") from None
