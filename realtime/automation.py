"""Automation files: keyframes of time -> latent, macro values or presets, as JSON or CSV, and notes (JSON).

The format is described in docs/automation.md. `load_automation` turns a file
into an `Automation`: `Keyframe`s and note `Trigger`s stamped in model-rate
samples, checking everything up front: a bad file gives one `AutomationError`
naming the file, the keyframe or note (JSON) or line (CSV), and the problem.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .latents import CURVES, Keyframe, LatentSpace
from .stream import Trigger

_KEYFRAME_KEYS = ("time", "latent", "seed", "preset", "macros", "curve")
_PRESET_KEYS = ("latent", "seed", "macros")
_NOTE_KEYS = ("time", "note", "velocity", "off", "pitch")
_TOP_KEYS = ("presets", "keyframes", "curve", "notes")


class AutomationError(ValueError):
    """A bad automation file; the message names the file, the place and the problem."""


class _Problem(Exception):
    pass


@dataclass(frozen=True)
class Automation:
    """What an automation file holds: keyframes of the latent path, and notes for trigger mode
    (note-ons and note-offs, in time order; `SegmentStream(..., triggers=notes)`)."""

    keyframes: list[Keyframe]
    notes: list[Trigger] = field(default_factory=list)


def load_automation(
    path: str | Path,
    space: LatentSpace,
    sample_rate: int,
    presets: Mapping[str, Mapping] | None = None,
) -> Automation:
    """Keyframes (and, from JSON, notes) from a .json or .csv file (by extension); `presets` adds named
    presets (a JSON file's own win)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AutomationError(f"{path}: cannot read: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _from_json(path, text, space, sample_rate, presets or {})
    if suffix == ".csv":
        return _from_csv(path, text, space, sample_rate, presets or {})
    raise AutomationError(f"{path}: unknown automation format {suffix or '(no extension)'!r}; use .json or .csv")


def load_presets(path: str | Path, space: LatentSpace) -> dict[str, dict]:
    """The `presets` object of a JSON file, checked; for CSV automation, which cannot define presets."""
    path = Path(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise AutomationError(f"{path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise AutomationError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("presets"), dict):
        raise AutomationError(f'{path}: expected an object with a "presets" object')
    return _check_presets(path, doc["presets"], space)


# -- JSON -------------------------------------------------------------------


def _from_json(path: Path, text: str, space: LatentSpace, sr: int, extra: Mapping) -> Automation:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise AutomationError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
    if isinstance(doc, list):
        doc = {"keyframes": doc}
    if not isinstance(doc, dict):
        raise AutomationError(f'{path}: expected an object with "keyframes" (or a list of keyframes)')
    unknown = sorted(set(doc) - set(_TOP_KEYS))
    if unknown:
        raise AutomationError(f"{path}: unknown top-level key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})")
    presets = dict(extra)
    if "presets" in doc:
        if not isinstance(doc["presets"], dict):
            raise AutomationError(f'{path}: "presets" must be an object of name -> preset')
        presets.update(_check_presets(path, doc["presets"], space))
    default_curve = doc.get("curve", "linear")
    if default_curve not in CURVES:
        raise AutomationError(f"{path}: unknown curve {default_curve!r} (one of {', '.join(CURVES)})")
    notes = _notes(path, doc["notes"], sr) if "notes" in doc else []
    frames = doc.get("keyframes", [] if notes else None)  # a file of notes alone needs no keyframes
    if not isinstance(frames, list) or not (frames or notes):
        raise AutomationError(f'{path}: "keyframes" must be a non-empty list')
    out: list[Keyframe] = []
    for i, raw in enumerate(frames):
        where = f"{path}: keyframe {i}"
        try:
            if not isinstance(raw, dict):
                raise _Problem("must be an object")
            bad = sorted(set(raw) - set(_KEYFRAME_KEYS))
            if bad:
                raise _Problem(f"unknown key {bad[0]!r} (known: {', '.join(_KEYFRAME_KEYS)})")
            if "time" not in raw:
                raise _Problem('needs a "time" in seconds')
            fields = {k: raw[k] for k in ("latent", "seed", "macros") if k in raw}
            curve = raw.get("curve", default_curve)
            out.append(_keyframe(raw["time"], fields, raw.get("preset"), curve, space, sr, presets, out))
        except _Problem as e:
            raise AutomationError(f"{where}: {e}") from None
    return Automation(out, notes)


def _notes(path: Path, raw, sr: int) -> list[Trigger]:
    """The "notes" list: note-ons {"time", "note"?, "velocity"?}, note-offs {"time", "note", "off": true}, and
    a conditioned bundle's pitch changes without a sound {"time", "pitch"} (MIDI, fractions allowed)."""
    if not isinstance(raw, list):
        raise AutomationError(f'{path}: "notes" must be a list of {{"time", "note", "velocity"}} objects')
    out: list[Trigger] = []
    for i, n in enumerate(raw):
        try:
            if not isinstance(n, dict):
                raise _Problem('must be an object with "time" and "note" (and "velocity", or "off")')
            bad = sorted(set(n) - set(_NOTE_KEYS))
            if bad:
                raise _Problem(f"unknown key {bad[0]!r} (known: {', '.join(_NOTE_KEYS)})")
            if "time" not in n:
                raise _Problem('needs a "time" in seconds')
            sample = _sample(n["time"], sr)
            if out and sample < out[-1].sample:
                raise _Problem(f"time {n['time']} s is before the previous note's {out[-1].sample / sr:g} s (times must not go back)")
            if "pitch" in n:
                pitch = n["pitch"]
                if set(n) != {"time", "pitch"}:
                    raise _Problem('a pitch change holds "time" and "pitch" only')
                if isinstance(pitch, bool) or not isinstance(pitch, (int, float)) or not 0 <= pitch <= 127:
                    raise _Problem(f"pitch must be a MIDI note number in [0, 127] (fractions allowed), got {pitch!r}")
                out.append(Trigger(sample, 0.0, None, pitch=float(pitch)))
                continue
            off = n.get("off", False)
            if not isinstance(off, bool):
                raise _Problem(f"off must be true or false, got {off!r}")
            note = n.get("note")
            if note is not None and (isinstance(note, bool) or not isinstance(note, (int, float)) or not 0 <= note <= 127 or note != int(note)):
                raise _Problem(f"note must be a MIDI note number, a whole number in 0..127, got {note!r}")
            if off and note is None:
                raise _Problem('a note-off needs the "note" it releases')
            if off and "velocity" in n:
                raise _Problem("a note-off has no velocity")
            velocity = n.get("velocity", 1.0)
            if isinstance(velocity, bool) or not isinstance(velocity, (int, float)) or not 0.0 <= velocity <= 1.0:
                raise _Problem(f"velocity must be a number in [0, 1], got {velocity!r}")
            out.append(Trigger(sample, 0.0 if off else float(velocity), None if note is None else int(note), off))
        except _Problem as e:
            raise AutomationError(f"{path}: note {i}: {e}") from None
    return out


def _check_presets(path: Path, raw: Mapping, space: LatentSpace) -> dict[str, dict]:
    presets = {}
    for name, p in raw.items():
        try:
            if not isinstance(p, dict) or not p:
                raise _Problem('must be an object with "latent", "seed" and/or "macros"')
            bad = sorted(set(p) - set(_PRESET_KEYS))
            if bad:
                raise _Problem(f"unknown key {bad[0]!r} (known: {', '.join(_PRESET_KEYS)})")
            presets[name] = _resolve(p, space)
        except _Problem as e:
            raise AutomationError(f"{path}: preset {name!r}: {e}") from None
    return presets


# -- CSV --------------------------------------------------------------------


def _from_csv(path: Path, text: str, space: LatentSpace, sr: int, presets: Mapping) -> Automation:
    rows = csv.reader(text.splitlines())
    header = None
    for row in rows:
        if row and not row[0].lstrip().startswith("#") and any(c.strip() for c in row):
            header = row
            break
    if header is None:
        raise AutomationError(f"{path}: empty file; expected a header line starting with 'time'")
    line = rows.line_num
    cols = [c.strip() for c in header]
    if cols[0] != "time":
        raise AutomationError(f"{path}: line {line}: the first column must be 'time', got {cols[0]!r}")
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise AutomationError(f"{path}: line {line}: column {dup!r} appears twice")
    d = space.size
    zcols = {f"z{j}" for j in range(d)}
    got_z = [c for c in cols if c in zcols]
    if got_z and len(got_z) != d:
        missing = next(f"z{j}" for j in range(d) if f"z{j}" not in got_z)
        raise AutomationError(
            f"{path}: line {line}: latent columns z0..z{d - 1} must all be present (missing {missing})"
        )
    for c in cols[1:]:
        if c in zcols or c in ("seed", "preset", "curve") or c in space.controls:
            continue
        if c.startswith("z") and c[1:].isdigit():
            msg = f"latent column {c!r} is out of range: this generator's latent has {d} values (z0..z{d - 1})"
        else:
            known = ", ".join(space.controls) or "none"
            msg = f"unknown column {c!r}: expected z0..z{d - 1}, seed, preset, curve or a macro name (macros: {known})"
        raise AutomationError(f"{path}: line {line}: {msg}")

    out: list[Keyframe] = []
    for row in rows:
        line = rows.line_num
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        try:
            if len(row) != len(cols):
                raise _Problem(f"has {len(row)} fields, the header has {len(cols)}")
            cell = {c: v.strip() for c, v in zip(cols, row)}
            fields: dict = {}
            if got_z and any(cell[f"z{j}"] for j in range(d)):
                empty = [f"z{j}" for j in range(d) if not cell[f"z{j}"]]
                if empty:
                    raise _Problem(f"latent value {empty[0]} is empty (give all of z0..z{d - 1} or none)")
                fields["latent"] = [_number(cell[f"z{j}"], f"z{j}") for j in range(d)]
            if cell.get("seed"):
                fields["seed"] = _number(cell["seed"], "seed")
            macros = {c: _number(cell[c], c) for c in cols if c in space.controls and cell[c]}
            if macros:
                fields["macros"] = macros
            time = _number(cell["time"], "time")
            curve = cell.get("curve") or "linear"
            out.append(_keyframe(time, fields, cell.get("preset") or None, curve, space, sr, presets, out))
        except _Problem as e:
            raise AutomationError(f"{path}: line {line}: {e}") from None
    if not out:
        raise AutomationError(f"{path}: no keyframes after the header")
    return Automation(out)


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _Problem(f"{name} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise _Problem(f"{name} is not finite: {text!r}")
    return v


# -- shared -----------------------------------------------------------------


def _keyframe(
    time, fields: dict, preset, curve, space: LatentSpace, sr: int, presets: Mapping, prev: list[Keyframe]
) -> Keyframe:
    """One checked keyframe: preset expanded, seed resolved, time in samples after the previous one's."""
    sample = _sample(time, sr)
    if curve not in CURVES:
        raise _Problem(f"unknown curve {curve!r} (one of {', '.join(CURVES)})")
    if prev and sample <= prev[-1].sample:
        raise _Problem(
            f"time {time} s is not after the previous keyframe's {prev[-1].sample / sr:g} s (times must increase)"
        )
    latent, macros = None, {}
    if preset is not None:
        if not isinstance(preset, str) or preset not in presets:
            known = ", ".join(presets) or "none defined"
            raise _Problem(f"unknown preset {preset!r} (known: {known})")
        latent, macros = presets[preset]["latent"], dict(presets[preset]["macros"])
    own = _resolve(fields, space)
    if own["latent"] is not None:
        latent = own["latent"]
    macros.update(own["macros"])
    if latent is None and not macros:
        raise _Problem('sets nothing: give "latent", "seed", "preset" or "macros"')
    return Keyframe(sample, latent, macros, curve)


def _sample(time, sr: int) -> int:
    """A keyframe's or note's time in seconds -> the nearest model-rate sample."""
    if isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
        raise _Problem(f"time must be a finite number of seconds, got {time!r}")
    if time < 0:
        raise _Problem(f"time must not be negative, got {time}")
    return round(time * sr)


def _resolve(spec: Mapping, space: LatentSpace) -> dict:
    """{"latent" | "seed", "macros"} -> {"latent": (D,) or None, "macros": {name: v}}, checked."""
    if "latent" in spec and "seed" in spec:
        raise _Problem('give "latent" or "seed", not both')
    latent = None
    if "latent" in spec:
        z = spec["latent"]
        if not isinstance(z, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in z):
            raise _Problem("latent must be a list of numbers")
        if len(z) != space.size:
            raise _Problem(f"latent has {len(z)} values, this generator's latent has {space.size}")
        latent = np.asarray(z, dtype=np.float64)
        if not np.all(np.isfinite(latent)):
            raise _Problem("latent has a NaN or infinite value")
    if "seed" in spec:
        s = spec["seed"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s != int(s) or s < 0:
            raise _Problem(f"seed must be a non-negative integer, got {s!r}")
        latent = space.seed_latent(int(s))
    macros = spec.get("macros", {})
    if not isinstance(macros, dict):
        raise _Problem("macros must be an object of name -> value")
    for name, v in macros.items():
        if name not in space.controls:
            known = ", ".join(space.controls) or "this bundle has no controls"
            raise _Problem(f"unknown macro {name!r} (known: {known})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Problem(f"macro {name!r} must be a finite number, got {v!r}")
    return {"latent": latent, "macros": {k: float(v) for k, v in macros.items()}}
