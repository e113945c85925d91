"""Control events: one small frozen class per kind of change, and their JSON form.

A control thread (OSC, MIDI, the CLI) makes an event through `Controls`, which
checks it; the producer stamps it with the stream position it is applied at
(`Stamped`) and hands it to the chain (`engine.Chain.apply`, dispatched on
the event's type). A recorded session (`play --record`) is a list of stamped
events; `stamped_to_json` / `stamped_from_json` are the one place their JSON
form is written and read, so timeline files written before these classes
existed still load:

    {"sample": 8000, "kind": "latent", "latent": [...]}                       LatentChange
    {"sample": 8000, "kind": "latent", "latent": [...], "seed": 7}            SeedChange
    {"sample": 8000, "kind": "macro", "name": "pc1", "value": 0.5}            MacroChange
    {"sample": 8000, "kind": "recall", "preset": "calm", "latent": [...] | null,
     "macros": {...}, "samples": 4800}                                        PresetRecall
    {"sample": 8000, "kind": "walk", "rate": 0.5, "depth": 0.2}               WalkChange
    {"sample": 8000, "kind": "gain", "gain": 0.7}                             GainChange
    {"sample": 8000, "kind": "trigger", "velocity": 1.0, "note": 60 | null}   NoteOn
    {"sample": 8000, "kind": "note_off", "note": 60}                          NoteOff
    {"sample": 8000, "kind": "pitch", "pitch": 61.5}                          PitchChange
    {"sample": 8000, "kind": "pad", "note": 36, "name": "kick", "latent": [...],
     "gain": 1.0, "choke": "hats" | null}                                     PadChange

"sample" and "samples" count model-rate samples. Latents are (D,) float64
arrays; events holding one compare with `np.array_equal`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


class ControlEvent:
    """Base of the event classes: equality by type and fields (latents compared element by element)."""

    kind: ClassVar[str]  # the "kind" of its JSON form

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            _same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
        )

    __hash__ = None  # type: ignore[assignment]  # latents are arrays

    def to_json(self, model_rate: int) -> dict[str, Any]:
        """The JSON fields besides "sample" and "kind": by default the class's own fields, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, d: Mapping, model_rate: int) -> "ControlEvent":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(a, b)
    return a == b


def _latent(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


# eq=False everywhere: `ControlEvent.__eq__` compares latent arrays, which the generated one cannot.


@dataclass(frozen=True, eq=False)
class LatentChange(ControlEvent):
    """The whole base latent, (D,) float64 (set_latent, set_latent_dim)."""

    latent: np.ndarray
    kind: ClassVar[str] = "latent"

    def to_json(self, model_rate: int) -> dict[str, Any]:
        return {"latent": self.latent.tolist()}

    @classmethod
    def from_json(cls, d: Mapping, model_rate: int) -> ControlEvent:
        if "seed" in d:  # a seed change is written as a latent change that names its seed
            return SeedChange(int(d["seed"]), _latent(d["latent"]))
        return cls(_latent(d["latent"]))


@dataclass(frozen=True, eq=False)
class SeedChange(ControlEvent):
    """The base latent jumps to the latent `seed` names (the walk keeps its own path)."""

    seed: int
    latent: np.ndarray
    kind: ClassVar[str] = "latent"

    def to_json(self, model_rate: int) -> dict[str, Any]:
        return {"latent": self.latent.tolist(), "seed": self.seed}


@dataclass(frozen=True, eq=False)
class MacroChange(ControlEvent):
    """A named control direction, knob units in [-1, 1]."""

    name: str
    value: float
    kind: ClassVar[str] = "macro"


@dataclass(frozen=True, eq=False)
class PresetRecall(ControlEvent):
    """A preset: its latent (None: the base stays) and macros, at once (seconds 0) or eased over `seconds`."""

    name: str
    latent: np.ndarray | None
    macros: Mapping[str, float]
    seconds: float = 0.0
    kind: ClassVar[str] = "recall"

    def samples(self, model_rate: int) -> int:
        """The morph's length in model-rate samples (0: a step)."""
        return round(self.seconds * model_rate)

    def to_json(self, model_rate: int) -> dict[str, Any]:
        return {
            "preset": self.name, "latent": None if self.latent is None else self.latent.tolist(),
            "macros": dict(self.macros), "samples": self.samples(model_rate),
        }

    @classmethod
    def from_json(cls, d: Mapping, model_rate: int) -> ControlEvent:
        # samples / rate * rate rounds back to exactly `samples` (far below 2**52), so a file replays as recorded.
        latent = None if d["latent"] is None else _latent(d["latent"])
        return cls(str(d.get("preset", "")), latent, dict(d["macros"]), int(d["samples"]) / model_rate)


@dataclass(frozen=True, eq=False)
class WalkChange(ControlEvent):
    """The random walk's rate (knots per second; 0 freezes it) and depth (0 stops it)."""

    rate: float
    depth: float
    kind: ClassVar[str] = "walk"


@dataclass(frozen=True, eq=False)
class GainChange(ControlEvent):
    """Master gain, linear 0..2 (the chain glides to it)."""

    gain: float
    kind: ClassVar[str] = "gain"


@dataclass(frozen=True, eq=False)
class NoteOn(ControlEvent):
    """Trigger mode: a one-shot voice for `velocity` (0..1, through the stream's velocity curve), started by
    `note` (None: no note), which transposes it from the stream's root note, asks a conditioned generator
    for its pitch, or picks a kit's pad. A conditioned bundle in the other modes: the held note sets the pitch."""

    velocity: float
    note: int | None = None
    kind: ClassVar[str] = "trigger"


@dataclass(frozen=True, eq=False)
class NoteOff(ControlEvent):
    """Trigger mode: release the voices `note` started (with note-off enabled)."""

    note: int
    kind: ClassVar[str] = "note_off"


@dataclass(frozen=True, eq=False)
class PitchChange(ControlEvent):
    """A conditioned bundle's current pitch (MIDI, fractions allowed), without a note."""

    pitch: float
    kind: ClassVar[str] = "pitch"


@dataclass(frozen=True, eq=False)
class PadChange(ControlEvent):
    """Trigger mode with a kit: `note` plays this sound from here on (its latent (D,) float64, gain and choke group)."""

    note: int
    name: str
    latent: np.ndarray
    gain: float = 1.0
    choke: str | None = None
    kind: ClassVar[str] = "pad"

    def to_json(self, model_rate: int) -> dict[str, Any]:
        return {"note": self.note, "name": self.name, "latent": self.latent.tolist(), "gain": self.gain, "choke": self.choke}

    @classmethod
    def from_json(cls, d: Mapping, model_rate: int) -> ControlEvent:
        return cls(int(d["note"]), str(d["name"]), _latent(d["latent"]), float(d["gain"]), d.get("choke"))


# JSON "kind" -> the class that reads it (SeedChange is read by LatentChange: it shares the kind).
KINDS: dict[str, type[ControlEvent]] = {
    cls.kind: cls
    for cls in (LatentChange, MacroChange, PresetRecall, WalkChange, GainChange, NoteOn, NoteOff, PitchChange, PadChange)
}


@dataclass(frozen=True)
class Stamped:
    """An event and the model-rate sample it takes effect at."""

    sample: int
    event: ControlEvent


def stamped_to_json(s: Stamped, model_rate: int) -> dict[str, Any]:
    return {"sample": int(s.sample), "kind": s.event.kind, **s.event.to_json(model_rate)}


def stamped_from_json(d: Mapping, model_rate: int) -> Stamped:
    """One timeline entry; ValueError names an unknown kind, KeyError a missing field."""
    cls = KINDS.get(d.get("kind"))
    if cls is None:
        raise ValueError(f"unknown timeline event {d.get('kind')!r} (known: {', '.join(KINDS)})")
    return Stamped(int(d["sample"]), cls.from_json(d, model_rate))
