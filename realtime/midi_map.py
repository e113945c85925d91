"""MIDI maps: which CC moves which control, over which range and curve.

A map is a YAML file:

    channel: all            # all, or 1..16
    controls:
      - cc: 1               # modulation wheel
        target: macro/brightness
        range: [-1, 1]
        curve: linear       # linear | exp | log | scurve
      - cc: 2
        lsb: 34             # a 14-bit pair: MSB on CC 2, LSB on CC 34
        target: latent/3
        range: [-2, 2]
      - cc: 7
        target: gain
        range: [0, 1]
        curve: exp
      - cc: 64
        target: preset/calm # recalled when the value crosses 64 upwards

Targets: latent/<i>, macro/<name>, gain, walk/rate, walk/depth, seed, preset/<name>.
A map with an error is refused whole, with the file, the line and the reason.

Maps are immutable: MIDI learn makes a new one with `with_binding`, and
`save_midi_map` writes any map back as YAML that `load_midi_map` reads again.
`default_midi_map` is what `MidiInput` uses when no map is given.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

CURVES = ("linear", "exp", "log", "scurve")
SIMPLE_TARGETS = ("gain", "walk/rate", "walk/depth", "seed")
DEFAULT_RANGES = {"gain": (0.0, 1.0), "walk/rate": (0.0, 2.0), "walk/depth": (0.0, 1.0), "seed": (0.0, 127.0)}
TARGETS_HELP = "latent/<i>, macro/<name>, gain, walk/rate, walk/depth, seed, preset/<name>"
# The default map (no --midi-map): the first 8 knobs on CC 70-77, the "sound controller"
# numbers that many controllers' knob banks send out of the box (Akai MPK mini, ...).
DEFAULT_KNOB_CCS = tuple(range(70, 78))
DEFAULT_GAIN_CC = 7  # channel volume
DEFAULT_WALK_DEPTH_CC = 1  # modulation wheel


class MidiMapError(ValueError):
    """A map file that cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class CCBinding:
    cc: int
    target: str
    low: float
    high: float
    curve: str = "linear"
    lsb: int | None = None  # the LSB controller of a 14-bit pair
    line: int = 0

    @property
    def ccs(self) -> tuple[int, ...]:
        """The controller numbers this binding listens to: (cc,) or (cc, lsb)."""
        return (self.cc,) if self.lsb is None else (self.cc, self.lsb)

    def value(self, raw: int, bits: int = 7) -> float:
        """A raw controller value (0..127, or 0..16383 for 14-bit) -> the target's value."""
        x = min(max(raw / float((1 << bits) - 1), 0.0), 1.0)
        if self.curve == "exp":
            x = x * x
        elif self.curve == "log":
            x = math.sqrt(x)
        elif self.curve == "scurve":
            x = 0.5 - 0.5 * math.cos(math.pi * x)
        return self.low + (self.high - self.low) * x


PAD_TARGET = "pad/"  # pad/<note>: MIDI learn binds the next note played to a kit pad (a NoteBinding)


@dataclass(frozen=True)
class NoteBinding:
    """A controller's note played as another: `note` (what the controller sends) plays kit pad `pad`
    (the map's `pads:` list; MIDI learn's target pad/<pad>)."""

    note: int
    pad: int
    line: int = 0

    @property
    def target(self) -> str:
        return f"{PAD_TARGET}{self.pad}"


@dataclass(frozen=True)
class MidiMap:
    channel: int | None  # 0..15, or None for all
    bindings: tuple[CCBinding, ...]
    source: str = "<map>"
    notes: tuple[NoteBinding, ...] = ()
    _by_cc: dict[int, CCBinding] = field(init=False, repr=False, compare=False)
    _by_note: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_cc: dict[int, CCBinding] = {}
        for b in self.bindings:
            for cc in b.ccs:
                if cc in by_cc:
                    raise MidiMapError(f"{self.source}: CC {cc} is mapped twice (lines {by_cc[cc].line} and {b.line})")
                by_cc[cc] = b
        object.__setattr__(self, "_by_cc", by_cc)
        by_note: dict[int, int] = {}
        for n in self.notes:
            if n.note in by_note:
                raise MidiMapError(f"{self.source}: note {n.note} is mapped to two pads ({by_note[n.note]} and {n.pad})")
            by_note[n.note] = n.pad
        object.__setattr__(self, "_by_note", by_note)

    def binding_for(self, cc: int) -> CCBinding | None:
        return self._by_cc.get(cc)

    def note_for(self, note: int) -> int:
        """The note a controller's `note` plays: its pad's, or itself when the map does not move it."""
        return self._by_note.get(note, note)

    def with_note(self, binding: NoteBinding) -> "MidiMap":
        """A new map with `binding` added; bindings of its note or to its pad are dropped."""
        kept = tuple(n for n in self.notes if n.note != binding.note and n.pad != binding.pad)
        return replace(self, notes=(*kept, binding))

    def accepts(self, channel: int) -> bool:
        """Whether a message on `channel` (0..15) is for this map."""
        return self.channel is None or self.channel == channel

    def with_binding(self, binding: CCBinding) -> "MidiMap":
        """A new map with `binding` added; bindings that used its CCs or its target are dropped."""
        taken = set(binding.ccs)
        kept = tuple(b for b in self.bindings if b.target != binding.target and not taken & set(b.ccs))
        return replace(self, bindings=(*kept, binding))

    def check_targets(self, latent_size: int, macros: Iterable[str], presets: Iterable[str] | None = None) -> None:
        """Refuses targets the loaded bundle does not have, naming the map line."""
        macros = tuple(macros)
        presets = None if presets is None else tuple(presets)
        for b in self.bindings:
            problem = target_problem(b.target, latent_size, macros, presets)
            if problem:
                raise MidiMapError(f"{self.source}, line {b.line}: target {b.target}: {problem}")


def target_problem(
    target: Any, latent_size: int | None = None, macros: Iterable[str] | None = None, presets: Iterable[str] | None = None
) -> str | None:
    """Why `target` cannot be used (None if it can); latent_size, macros and presets are checked when given."""
    macros = None if macros is None else tuple(macros)
    presets = None if presets is None else tuple(presets)
    if not _target_ok(target):
        return f"unknown target {target!r} (targets: {TARGETS_HELP})"
    kind, _, arg = target.partition("/")
    if kind == "latent" and latent_size is not None and int(arg) >= latent_size:
        return f"the bundle's latent has {latent_size} dimensions (0..{latent_size - 1})"
    if kind == "macro" and macros is not None and arg not in macros:
        return f"the bundle has no control {arg!r} (it has: {', '.join(sorted(macros)) or 'none'})"
    if kind == "preset" and presets is not None and arg not in presets:
        return f"no preset {arg!r} (saved: {', '.join(sorted(presets)) or 'none'})"
    return None


def default_binding(cc: int, target: str, lsb: int | None = None) -> CCBinding:
    """A linear binding over the target's default range (what MIDI learn makes)."""
    low, high = DEFAULT_RANGES.get(target, (-1.0, 1.0))
    return CCBinding(cc, target, low, high, "linear", lsb)


def default_midi_map(latent_size: int, macros: Sequence[str]) -> MidiMap:
    """The map used without --midi-map, on every channel.

    CC 70..77: the bundle's first 8 controls (macros), then latent dimensions 0, 1, ...
    if it has fewer than 8; CC 7 (volume): gain; CC 1 (modulation wheel): walk depth.
    """
    targets = [f"macro/{m}" for m in macros[: len(DEFAULT_KNOB_CCS)]]
    targets += [f"latent/{i}" for i in range(min(latent_size, len(DEFAULT_KNOB_CCS) - len(targets)))]
    bindings = [default_binding(cc, t) for cc, t in zip(DEFAULT_KNOB_CCS, targets)]
    bindings += [default_binding(DEFAULT_GAIN_CC, "gain"), default_binding(DEFAULT_WALK_DEPTH_CC, "walk/depth")]
    return MidiMap(None, tuple(bindings), "<default MIDI map>")


def format_midi_map(midi_map: MidiMap) -> str:
    """The map as YAML text that `parse_midi_map` reads back to the same bindings."""
    controls = []
    for b in midi_map.bindings:
        entry: dict[str, Any] = {"cc": b.cc}
        if b.lsb is not None:
            entry["lsb"] = b.lsb
        entry["target"] = b.target
        entry["range"] = [b.low, b.high]
        entry["curve"] = b.curve
        controls.append(entry)
    doc: dict[str, Any] = {"channel": "all" if midi_map.channel is None else midi_map.channel + 1, "controls": controls}
    if midi_map.notes:
        doc["pads"] = [{"note": n.note, "pad": n.pad} for n in midi_map.notes]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, allow_unicode=True)
    return "# ganstream MIDI map (see examples/midi-map.yaml and docs/daw.md)\n" + body


def save_midi_map(midi_map: MidiMap, path: str | Path) -> Path:
    """Write the map to `path` atomically (a temporary file renamed into place)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(format_midi_map(midi_map))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _no_duplicate_keys(node: yaml.MappingNode, source: str) -> None:
    seen: set[Any] = set()
    for key, _ in node.value:
        if key.value in seen:
            raise MidiMapError(f"{source}, line {_line(key)}: key {key.value!r} appears twice")
        seen.add(key.value)


def _target_ok(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    if target in SIMPLE_TARGETS:
        return True
    kind, _, arg = target.partition("/")
    if kind == "latent":
        return arg.isascii() and arg.isdigit()
    return kind in ("macro", "preset") and bool(arg)


def parse_midi_map(text: str, source: str = "<map>") -> MidiMap:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise MidiMapError(f"{source}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise MidiMapError(f"{source}: a MIDI map is a mapping with a 'controls' list")
    _no_duplicate_keys(root, source)
    top = {k.value: v for k, v in root.value}
    for key in top:
        if key not in ("channel", "controls", "pads"):
            node = next(k for k, _ in root.value if k.value == key)
            raise MidiMapError(f"{source}, line {_line(node)}: unknown key {key!r} (known: channel, controls, pads)")
    channel: int | None = None
    if "channel" in top:
        raw = yaml.safe_load(yaml.serialize(top["channel"]))
        if raw != "all":
            if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= 16:
                raise MidiMapError(f"{source}, line {_line(top['channel'])}: channel must be 'all' or 1..16, not {raw!r}")
            channel = raw - 1
    controls = top.get("controls")
    if not isinstance(controls, yaml.SequenceNode):
        line = f", line {_line(controls)}" if controls is not None else ""
        raise MidiMapError(f"{source}{line}: 'controls' must be a list of CC bindings")
    bindings: list[CCBinding] = []
    used: dict[int, int] = {}
    for node in controls.value:
        line = _line(node)
        if isinstance(node, yaml.MappingNode):
            _no_duplicate_keys(node, source)
        entry = yaml.safe_load(yaml.serialize(node))
        if not isinstance(entry, dict):
            raise MidiMapError(f"{source}, line {line}: each control is a mapping with cc and target")
        unknown = set(entry) - {"cc", "lsb", "target", "range", "curve"}
        if unknown:
            raise MidiMapError(f"{source}, line {line}: unknown key {sorted(unknown)[0]!r} (known: cc, curve, lsb, range, target)")
        for key in ("cc", "lsb"):
            if key in entry and (not isinstance(entry[key], int) or isinstance(entry[key], bool) or not 0 <= entry[key] <= 127):
                raise MidiMapError(f"{source}, line {line}: {key} must be a controller number 0..127, not {entry[key]!r}")
        if "cc" not in entry or "target" not in entry:
            raise MidiMapError(f"{source}, line {line}: a control needs both cc and target")
        target = entry["target"]
        if not _target_ok(target):
            raise MidiMapError(f"{source}, line {line}: unknown target {target!r} (targets: {TARGETS_HELP})")
        low, high = DEFAULT_RANGES.get(target, (-1.0, 1.0))
        if "range" in entry:
            rng = entry["range"]
            if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rng)):
                raise MidiMapError(f"{source}, line {line}: range must be two finite numbers [low, high], not {rng!r}")
            low, high = float(rng[0]), float(rng[1])
        curve = entry.get("curve", "linear")
        if curve not in CURVES:
            raise MidiMapError(f"{source}, line {line}: unknown curve {curve!r} (known: {', '.join(CURVES)})")
        lsb = entry.get("lsb")
        if lsb is not None and lsb == entry["cc"]:
            raise MidiMapError(f"{source}, line {line}: lsb must be another controller than cc ({lsb})")
        for cc in (entry["cc"], lsb):
            if cc is None:
                continue
            if cc in used:
                raise MidiMapError(f"{source}, line {line}: CC {cc} is already mapped on line {used[cc]}")
            used[cc] = line
        bindings.append(CCBinding(entry["cc"], target, low, high, curve, lsb, line))
    return MidiMap(channel, tuple(bindings), source, _pads(top.get("pads"), source))


def _pads(node: Any, source: str) -> tuple[NoteBinding, ...]:
    """The `pads:` list: {note: N, pad: P} entries, a controller's note N playing kit pad P."""
    if node is None:
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise MidiMapError(f"{source}, line {_line(node)}: 'pads' must be a list of {{note, pad}} entries")
    out: list[NoteBinding] = []
    for item in node.value:
        line = _line(item)
        entry = yaml.safe_load(yaml.serialize(item))
        if not isinstance(entry, dict) or set(entry) != {"note", "pad"}:
            raise MidiMapError(f"{source}, line {line}: each pad entry is a mapping of exactly note and pad, not {entry!r}")
        for key in ("note", "pad"):
            v = entry[key]
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 127:
                raise MidiMapError(f"{source}, line {line}: {key} must be a MIDI note 0..127, not {v!r}")
        out.append(NoteBinding(entry["note"], entry["pad"], line))
    return tuple(out)


def load_midi_map(path: str | Path) -> MidiMap:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise MidiMapError(f"{p}: cannot read the MIDI map ({e.strerror})") from None
    return parse_midi_map(text, str(p))
