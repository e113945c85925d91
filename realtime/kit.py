"""Drum kits: which sound of a bundle each MIDI note plays in trigger mode (issue 12, item 4).

A kit file is YAML:

    format: 1                       # optional; the only version there is
    name: General MIDI kit          # optional
    pads:
      36: {name: kick, seed: 1234}                   # a note number 0..127 ...
      D2: {name: snare, preset: snare-ish, gain: 0.9}  # ... or a name (C4 is 60, so D2 is 38)
      42: {latent: [0.1, ...], choke: hats}          # name defaults to the General MIDI one
      46: {name: open hat, seed: 77, choke: hats}

Each pad gives exactly one of
- `seed`: an integer >= 0, the latent `LatentSpace.seed_latent(seed)` names (the same sound as
  `seed` in the live controls and in automation files);
- `preset`: the name of a preset (the `presets` of a presets file, `automation.load_presets`); the
  pad plays the preset's latent plus its macros' offsets, what the stream plays after recalling it;
- `latent`: the whole latent, as many finite numbers as the bundle's latent size;

and optionally `name` (default: the General MIDI name of the note, else the note's name),
`gain` (linear, in (0, 4], default 1), `choke` (a group name) and `descriptors` (name -> number:
kept as written; `ganstream.export.kit` records there why it chose the sound).

Choke groups: a note-on of a pad fades out the sounding voices of every *other* pad of its group
(`Kit.chokes`), as a closed hat cuts the open one; the pad's own earlier voices are left to the
usual polyphony rules, so fast repeats of one hat do not cut each other.

Every problem raises one `KitError` naming the file and the field: `kit.yaml: pads.38.gain: must
be in (0, 4], got 9`. Numpy and PyYAML only: this module is part of the live engine.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ganstream.core.pitch import NOTE_MAX, NOTE_MIN, note_name, parse_note

from .latents import LatentSpace

FORMAT = 1
GAIN_MAX = 4.0
TOP_KEYS = ("format", "name", "pads")
PAD_KEYS = ("name", "seed", "preset", "latent", "gain", "choke", "descriptors")
SOURCES = ("seed", "preset", "latent")  # exactly one per pad

# The General MIDI percussion map (channel 10), notes 35..81: the one home for these names.
GM_DRUMS: dict[int, str] = {
    35: "acoustic bass drum", 36: "bass drum 1", 37: "side stick", 38: "acoustic snare", 39: "hand clap",
    40: "electric snare", 41: "low floor tom", 42: "closed hi-hat", 43: "high floor tom", 44: "pedal hi-hat",
    45: "low tom", 46: "open hi-hat", 47: "low-mid tom", 48: "hi-mid tom", 49: "crash cymbal 1",
    50: "high tom", 51: "ride cymbal 1", 52: "chinese cymbal", 53: "ride bell", 54: "tambourine",
    55: "splash cymbal", 56: "cowbell", 57: "crash cymbal 2", 58: "vibraslap", 59: "ride cymbal 2",
    60: "hi bongo", 61: "low bongo", 62: "mute hi conga", 63: "open hi conga", 64: "low conga",
    65: "high timbale", 66: "low timbale", 67: "high agogo", 68: "low agogo", 69: "cabasa",
    70: "maracas", 71: "short whistle", 72: "long whistle", 73: "short guiro", 74: "long guiro",
    75: "claves", 76: "hi wood block", 77: "low wood block", 78: "mute cuica", 79: "open cuica",
    80: "mute triangle", 81: "open triangle",
}


class KitError(ValueError):
    """A kit that cannot be played: `file` names the file (or what was parsed), `field` the place in it."""

    def __init__(self, file: str, problem: str, field: str | None = None):
        self.file, self.field, self.problem = file, field, problem
        super().__init__(f"{file}: {field}: {problem}" if field else f"{file}: {problem}")


def default_pad_name(note: int) -> str:
    """The General MIDI name of `note`, else its note name (`C4`)."""
    return GM_DRUMS.get(note, note_name(note))


@dataclass(frozen=True, eq=False)
class Pad:
    """One note of a kit. `latent`: (D,) float32, read-only, what the generator is given.

    `seed` or `preset` says where the latent came from (both None: the file gave the latent
    itself); `to_yaml` writes that back, so a kit round-trips without spelling out seeded latents.
    """

    note: int
    name: str
    latent: np.ndarray
    gain: float = 1.0
    choke: str | None = None
    seed: int | None = None
    preset: str | None = None
    descriptors: Mapping[str, float] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """Where the sound comes from, in words: `seed 1234`, `preset snare` or `latent`."""
        if self.seed is not None:
            return f"seed {self.seed}"
        if self.preset is not None:
            return f"preset {self.preset}"
        return "latent"

    def to_dict(self) -> dict[str, Any]:
        """The pad's YAML mapping (plain Python types)."""
        out: dict[str, Any] = {"name": self.name}
        if self.seed is not None:
            out["seed"] = int(self.seed)
        elif self.preset is not None:
            out["preset"] = self.preset
        else:
            # float32 -> float is exact and repr round-trips it, so a reload gives the same bits.
            out["latent"] = [float(v) for v in self.latent]
        if self.gain != 1.0:
            out["gain"] = float(self.gain)
        if self.choke is not None:
            out["choke"] = self.choke
        if self.descriptors:
            out["descriptors"] = {k: float(v) for k, v in self.descriptors.items()}
        return out


@dataclass(frozen=True, eq=False)
class Kit:
    """MIDI note -> `Pad`; `path` is the file it was read from or last written to (None: built in memory)."""

    name: str | None
    pads: Mapping[int, Pad]
    path: Path | None = None

    def pad(self, note: int) -> Pad | None:
        """The pad `note` plays, or None: a note without a pad is silent in a kit."""
        return self.pads.get(note)

    @property
    def choke_groups(self) -> dict[str, tuple[int, ...]]:
        """group name -> its notes, ascending; groups in the order their first pad comes."""
        groups: dict[str, list[int]] = {}
        for note in sorted(self.pads):
            group = self.pads[note].choke
            if group is not None:
                groups.setdefault(group, []).append(note)
        return {g: tuple(notes) for g, notes in groups.items()}

    def chokes(self, note: int) -> tuple[int, ...]:
        """The notes whose sounding voices a note-on of `note` fades out: the rest of its choke group."""
        pad = self.pads.get(note)
        if pad is None or pad.choke is None:
            return ()
        return tuple(n for n in self.choke_groups[pad.choke] if n != note)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT}
        if self.name is not None:
            out["name"] = self.name
        out["pads"] = {note: self.pads[note].to_dict() for note in sorted(self.pads)}
        return out

    def to_yaml(self) -> str:
        """The kit as YAML that `load_kit` reads back to the same pads (a pad per line where it fits)."""
        # default_flow_style=None writes the innermost mappings and lists inline: a pad's latent or
        # descriptors on one line instead of one line per number.
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
        return "# ganstream drum kit: MIDI note -> sound (realtime/kit.py)\n" + body

    def write(self, path: str | os.PathLike) -> "Kit":
        """Write `to_yaml()` to `path` (atomically: a temporary file, then a rename); returns the kit with that path."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self.to_yaml(), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise KitError(str(path), f"cannot write: {e.strerror or e}") from None
        return Kit(self.name, self.pads, path)


# ---------------------------------------------------------------------------------------------
# Reading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last silently)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
            seen.setdefault(key, line)
        except TypeError:  # an unhashable key: let the constructor report it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first at line {first})", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_kit(
    path: str | os.PathLike, space: LatentSpace, presets: Mapping[str, Mapping] | None = None
) -> Kit:
    """Read and check a kit file against a bundle's latent space.

    presets: name -> {"latent": (D,) or None, "macros": {name: value}}, as `automation.load_presets`
    and the live controls hold them; only needed when a pad names a preset.
    """
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KitError(where, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise KitError(where, f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise KitError(where, f"{at}not valid YAML: {problem}") from None
    kit = parse_kit(data, space, where, presets)
    return Kit(kit.name, kit.pads, path)


def parse_kit(
    data: Any, space: LatentSpace, where: str = "kit", presets: Mapping[str, Mapping] | None = None
) -> Kit:
    """A kit from its parsed YAML (a mapping); `where` names it in errors. See `load_kit`."""
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else type(data).__name__
        raise KitError(where, f"must be a mapping with `pads` (note -> pad), got {got}")
    _no_unknown_keys(data, TOP_KEYS, where, None)
    if "format" in data and (isinstance(data["format"], bool) or data["format"] != FORMAT):
        raise KitError(where, f"unknown kit format {data['format']!r} (this ganstream reads {FORMAT})", "format")
    name = data.get("name")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise KitError(where, f"must be a non-empty string, got {name!r}", "name")
    raw_pads = data.get("pads")
    if raw_pads is None:
        raise KitError(where, "missing: a kit needs `pads`, a mapping of note -> pad", "pads")
    if not isinstance(raw_pads, Mapping):
        raise KitError(where, f"must be a mapping of note -> pad, got {type(raw_pads).__name__}", "pads")
    if not raw_pads:
        raise KitError(where, "empty: a kit needs at least one pad", "pads")

    pads: dict[int, Pad] = {}
    keys: dict[int, Any] = {}  # note -> the key that gave it, to name both of a duplicate
    for key, raw in raw_pads.items():
        place = f"pads.{key}"
        note = _note(key, where, place)
        if note in keys:
            raise KitError(where, f"note {note} is already given as pads.{keys[note]}", place)
        keys[note] = key
        pads[note] = _pad(note, raw, space, presets or {}, where, place)
    return Kit(name, pads)


def _no_unknown_keys(data: Mapping, allowed: tuple[str, ...], where: str, place: str | None) -> None:
    for key in data:
        if key not in allowed:
            inner = f"{place}.{key}" if place else str(key)
            raise KitError(where, f"unknown key (allowed: {', '.join(allowed)})", inner)


def _note(key: Any, where: str, place: str) -> int:
    """A pad's key -> its MIDI note: an integer 0..127 or a note name (C4 is 60)."""
    if isinstance(key, bool) or not isinstance(key, (str, numbers.Real)):
        raise KitError(where, f"a pad's key must be a MIDI note (36) or a note name (C2), got {key!r}", place)
    try:
        note = parse_note(str(key))
    except ValueError as e:
        raise KitError(where, str(e), place) from None
    if note != int(note):
        raise KitError(where, f"{key} is between notes: a pad plays a whole MIDI note {NOTE_MIN}..{NOTE_MAX}", place)
    return int(note)


def _pad(
    note: int, raw: Any, space: LatentSpace, presets: Mapping[str, Mapping], where: str, place: str
) -> Pad:
    if not isinstance(raw, Mapping):
        raise KitError(where, f"must be a mapping with one of {', '.join(SOURCES)}, got {raw!r}", place)
    _no_unknown_keys(raw, PAD_KEYS, where, place)
    given = [k for k in SOURCES if k in raw]
    if len(given) != 1:
        some = "none" if not given else " and ".join(given)
        raise KitError(where, f"give exactly one of {', '.join(SOURCES)}, got {some}", place)

    seed = preset = None
    if "seed" in raw:
        seed = _seed(raw["seed"], where, f"{place}.seed")
        latent = space.seed_latent(seed)
    elif "preset" in raw:
        preset = raw["preset"]
        latent = _preset_latent(preset, space, presets, where, f"{place}.preset")
    else:
        latent = _latent(raw["latent"], space.size, where, f"{place}.latent")
    latent = np.asarray(latent, dtype=np.float32)
    latent.setflags(write=False)

    name = raw.get("name", default_pad_name(note))
    if not (isinstance(name, str) and name.strip()):
        raise KitError(where, f"must be a non-empty string, got {name!r}", f"{place}.name")
    choke = raw.get("choke")
    if choke is not None and not (isinstance(choke, str) and choke.strip()):
        raise KitError(where, f"must be a group name (a non-empty string), got {choke!r}", f"{place}.choke")
    return Pad(
        note=note,
        name=name,
        latent=latent,
        gain=_gain(raw.get("gain", 1.0), where, f"{place}.gain"),
        choke=choke,
        seed=seed,
        preset=preset,
        descriptors=_descriptors(raw.get("descriptors", {}), where, f"{place}.descriptors"),
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _seed(v: Any, where: str, place: str) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
        raise KitError(where, f"must be an integer >= 0, got {v!r}", place)
    return int(v)


def _gain(v: Any, where: str, place: str) -> float:
    if not _is_number(v) or not math.isfinite(v):
        raise KitError(where, f"must be a number in (0, {GAIN_MAX:g}], got {v!r}", place)
    if not 0.0 < v <= GAIN_MAX:
        raise KitError(where, f"must be in (0, {GAIN_MAX:g}], got {v!r}", place)
    return float(v)


def _latent(v: Any, size: int, where: str, place: str) -> np.ndarray:
    """(D,) float64 from a list of D finite numbers."""
    if not isinstance(v, list) or not all(_is_number(x) for x in v):
        raise KitError(where, f"must be a list of {size} numbers (the bundle's latent size), got {_brief(v)}", place)
    if len(v) != size:
        raise KitError(where, f"has {len(v)} values, this bundle's latent has {size}", place)
    z = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(z)):
        bad = int(np.flatnonzero(~np.isfinite(z))[0])
        raise KitError(where, f"value {bad} is {v[bad]!r}: every value must be finite", place)
    return z


def _preset_latent(name: Any, space: LatentSpace, presets: Mapping[str, Mapping], where: str, place: str) -> np.ndarray:
    """(D,) float64: the preset's latent plus its macros' offsets (what a recalled preset plays)."""
    if not isinstance(name, str) or name not in presets:
        known = ", ".join(sorted(presets)) or "none were given (load a presets file)"
        raise KitError(where, f"unknown preset {name!r} (known: {known})", place)
    preset = presets[name]
    if preset.get("latent") is None:
        raise KitError(where, f"preset {name!r} sets only macros; a pad needs one with a latent", place)
    return np.asarray(preset["latent"], dtype=np.float64) + space.macro_offset(preset.get("macros", {}))


def _descriptors(v: Any, where: str, place: str) -> dict[str, float]:
    if not isinstance(v, Mapping):
        raise KitError(where, f"must be a mapping of name -> number, got {_brief(v)}", place)
    for k, x in v.items():
        if not isinstance(k, str) or not _is_number(x) or not math.isfinite(x):
            raise KitError(where, f"must be a finite number, got {x!r}", f"{place}.{k}")
    return {k: float(x) for k, x in v.items()}


def _brief(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
