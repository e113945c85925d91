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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CURVES = ("linear", "exp", "log", "scurve")
SIMPLE_TARGETS = ("gain", "walk/rate", "walk/depth", "seed")
DEFAULT_RANGES = {"gain": (0.0, 1.0), "walk/rate": (0.0, 2.0), "walk/depth": (0.0, 1.0), "seed": (0.0, 127.0)}


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

    def value(self, raw: int, bits: int = 7) -> float:
        """A raw controller value (0..127, or 0..16383 for 14-bit) -> the target's value."""
        x = raw / float((1 << bits) - 1)
        if self.curve == "exp":
            x = x * x
        elif self.curve == "log":
            x = math.sqrt(x)
        elif self.curve == "scurve":
            x = 0.5 - 0.5 * math.cos(math.pi * x)
        return self.low + (self.high - self.low) * x


@dataclass(frozen=True)
class MidiMap:
    channel: int | None  # 0..15, or None for all
    bindings: tuple[CCBinding, ...]
    source: str = "<map>"

    def binding_for(self, cc: int) -> CCBinding | None:
        for b in self.bindings:
            if b.cc == cc or b.lsb == cc:
                return b
        return None

    def check_targets(self, latent_size: int, macros: set[str], presets: set[str] | None = None) -> None:
        """Refuses targets the loaded bundle does not have, naming the map line."""
        for b in self.bindings:
            kind, _, arg = b.target.partition("/")
            if kind == "latent" and int(arg) >= latent_size:
                raise MidiMapError(f"{self.source}, line {b.line}: target {b.target}: the bundle's latent has {latent_size} dimensions (0..{latent_size - 1})")
            if kind == "macro" and arg not in macros:
                raise MidiMapError(f"{self.source}, line {b.line}: target {b.target}: the bundle has no control {arg!r} (it has: {', '.join(sorted(macros))})")
            if kind == "preset" and presets is not None and arg not in presets:
                raise MidiMapError(f"{self.source}, line {b.line}: target {b.target}: no preset {arg!r} (saved: {', '.join(sorted(presets)) or 'none'})")


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _target_ok(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    if target in SIMPLE_TARGETS:
        return True
    kind, _, arg = target.partition("/")
    if kind == "latent":
        return arg.isdigit()
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
    top = {k.value: v for k, v in root.value}
    for key in top:
        if key not in ("channel", "controls"):
            node = next(k for k, _ in root.value if k.value == key)
            raise MidiMapError(f"{source}, line {_line(node)}: unknown key {key!r} (known: channel, controls)")
    channel: int | None = None
    if "channel" in top:
        raw = yaml.safe_load(yaml.serialize(top["channel"]))
        if raw != "all":
            if not isinstance(raw, int) or not 1 <= raw <= 16:
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
            raise MidiMapError(
                f"{source}, line {line}: unknown target {target!r} "
                "(targets: latent/<i>, macro/<name>, gain, walk/rate, walk/depth, seed, preset/<name>)"
            )
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
        for cc in (entry["cc"], lsb):
            if cc is None:
                continue
            if cc in used:
                raise MidiMapError(f"{source}, line {line}: CC {cc} is already mapped on line {used[cc]}")
            used[cc] = line
        bindings.append(CCBinding(entry["cc"], target, low, high, curve, lsb, line))
    return MidiMap(channel, tuple(bindings), source)


def load_midi_map(path: str | Path) -> MidiMap:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise MidiMapError(f"{p}: cannot read the MIDI map ({e.strerror})") from None
    return parse_midi_map(text, str(p))
