"""MIDI maps: parsing, errors with the file, the line and the reason, curves, learn's edits and
saving, the default map, and the example map in examples/."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_factory import make_bundle

from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.midi_map import (
    CCBinding,
    MidiMap,
    MidiMapError,
    default_midi_map,
    format_midi_map,
    load_midi_map,
    parse_midi_map,
    save_midi_map,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

GOOD = """\
channel: 3
controls:
  - cc: 1
    target: macro/pc1
  - cc: 2
    lsb: 34
    target: latent/3
    range: [-2, 2]
    curve: scurve
  - {cc: 7, target: gain, curve: exp}
  - cc: 20
    target: walk/rate
  - cc: 21
    target: walk/depth
    range: [0.5, 0]       # reversed: the knob turns the depth down
  - cc: 22
    target: seed
  - cc: 64
    target: preset/calm
"""


def test_a_good_map():
    m = parse_midi_map(GOOD, "good.yaml")
    assert m.channel == 2 and m.accepts(2) and not m.accepts(0)
    assert [(b.cc, b.target, b.line) for b in m.bindings] == [
        (1, "macro/pc1", 3),
        (2, "latent/3", 5),
        (7, "gain", 10),
        (20, "walk/rate", 11),
        (21, "walk/depth", 13),
        (22, "seed", 16),
        (64, "preset/calm", 18),
    ]
    assert m.binding_for(34) is m.binding_for(2) and m.binding_for(2).lsb == 34
    assert m.binding_for(99) is None
    assert (m.binding_for(1).low, m.binding_for(1).high) == (-1.0, 1.0)  # default ranges
    assert (m.binding_for(7).low, m.binding_for(7).high) == (0.0, 1.0)
    assert (m.binding_for(20).low, m.binding_for(20).high) == (0.0, 2.0)
    assert (m.binding_for(22).low, m.binding_for(22).high) == (0.0, 127.0)
    assert parse_midi_map("controls: []\n").bindings == ()
    assert parse_midi_map("channel: all\ncontrols: []\n").channel is None


def test_curves():
    def b(curve):
        return CCBinding(1, "gain", 0.0, 1.0, curve)

    assert b("linear").value(0) == 0.0 and b("linear").value(127) == 1.0
    assert b("linear").value(64) == pytest.approx(64 / 127)
    assert b("exp").value(64) == pytest.approx((64 / 127) ** 2)
    assert b("log").value(64) == pytest.approx((64 / 127) ** 0.5)
    assert b("scurve").value(64) == pytest.approx(0.5 - 0.5 * __import__("math").cos(__import__("math").pi * 64 / 127))
    assert b("linear").value(16383, bits=14) == 1.0 and b("linear").value(8192, bits=14) == pytest.approx(8192 / 16383)
    assert CCBinding(1, "latent/0", 2.0, -2.0).value(127) == -2.0  # reversed ranges work
    assert b("linear").value(500) == 1.0  # out-of-range raw values are clamped, never extrapolated


ERRORS = [
    ("controls:\n  - cc: 1\n    target: macro/a\n  - cc: 1\n    target: gain\n", 4, "CC 1 is already mapped on line 2"),
    ("controls:\n  - cc: 1\n    lsb: 33\n    target: macro/a\n  - cc: 33\n    target: gain\n", 5, "CC 33 is already mapped on line 2"),
    ("controls:\n  - cc: 1\n    lsb: 1\n    target: gain\n", 2, "lsb must be another controller"),
    ("controls:\n  - cc: 128\n    target: gain\n", 2, "cc must be a controller number 0..127, not 128"),
    ("controls:\n  - cc: -1\n    target: gain\n", 2, "cc must be a controller number"),
    ("controls:\n  - cc: true\n    target: gain\n", 2, "cc must be a controller number"),
    ("controls:\n  - cc: 1.5\n    target: gain\n", 2, "cc must be a controller number"),
    ("controls:\n  - cc: 1\n    lsb: 200\n    target: gain\n", 2, "lsb must be a controller number"),
    ("controls:\n  - cc: 1\n", 2, "needs both cc and target"),
    ("controls:\n  - target: gain\n", 2, "needs both cc and target"),
    ("controls:\n  - cc: 1\n    target: volume\n", 2, "unknown target 'volume'"),
    ("controls:\n  - cc: 1\n    target: latent/x\n", 2, "unknown target 'latent/x'"),
    ("controls:\n  - cc: 1\n    target: macro/\n", 2, "unknown target 'macro/'"),
    ("controls:\n  - cc: 1\n    target: 5\n", 2, "unknown target 5"),
    ("controls:\n  - cc: 1\n    target: gain\n    range: [0]\n", 2, "range must be two finite numbers"),
    ("controls:\n  - cc: 1\n    target: gain\n    range: [0, .nan]\n", 2, "range must be two finite numbers"),
    ("controls:\n  - cc: 1\n    target: gain\n    range: [0, x]\n", 2, "range must be two finite numbers"),
    ("controls:\n  - cc: 1\n    target: gain\n    curve: cubic\n", 2, "unknown curve 'cubic'"),
    ("controls:\n  - cc: 1\n    target: gain\n    velocity: 3\n", 2, "unknown key 'velocity'"),
    ("controls:\n  - cc: 1\n    target: gain\n    cc: 2\n", 4, "key 'cc' appears twice"),
    ("controls:\n  - 7\n", 2, "each control is a mapping"),
    ("channel: 17\ncontrols: []\n", 1, "channel must be 'all' or 1..16, not 17"),
    ("channel: true\ncontrols: []\n", 1, "channel must be 'all' or 1..16"),
    ("channel: 0\ncontrols: []\n", 1, "channel must be 'all' or 1..16"),
    ("chanel: 1\ncontrols: []\n", 1, "unknown key 'chanel'"),
    ("controls: []\ncontrols: []\n", 2, "key 'controls' appears twice"),
    ("channel: all\ncontrols: 5\n", 2, "'controls' must be a list"),
    ("controls:\n  - cc: 1\n   target: gain\n", 3, "not valid YAML"),
    ("controls:\n  - {cc: 1, target: gain\n", 3, "not valid YAML"),
]


@pytest.mark.parametrize("text,line,reason", ERRORS, ids=[r for _, _, r in ERRORS])
def test_errors_name_the_file_the_line_and_the_reason(text, line, reason):
    with pytest.raises(MidiMapError) as e:
        parse_midi_map(text, "map.yaml")
    assert str(e.value).startswith(f"map.yaml, line {line}: "), str(e.value)
    assert reason in str(e.value)


@pytest.mark.parametrize("text", ["", "- 1\n", "just a string\n", "channel: all\n"])
def test_a_map_that_is_not_a_map(text):
    with pytest.raises(MidiMapError, match=r"^map.yaml(, line \d+)?: "):
        parse_midi_map(text, "map.yaml")


def test_load_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("controls:\n  - cc: 1\n    target: nothing\n")
    with pytest.raises(MidiMapError, match=rf"^{bad}, line 2: unknown target 'nothing'"):
        load_midi_map(bad)
    with pytest.raises(MidiMapError, match="cannot read the MIDI map"):
        load_midi_map(tmp_path / "missing.yaml")


def test_check_targets_against_the_bundle():
    m = parse_midi_map(GOOD, "good.yaml")
    m.check_targets(8, {"pc1"})  # presets are not checked unless given
    with pytest.raises(MidiMapError, match=r"good.yaml, line 5: target latent/3: the bundle's latent has 3 dimensions \(0..2\)"):
        m.check_targets(3, {"pc1"})
    with pytest.raises(MidiMapError, match=r"good.yaml, line 3: target macro/pc1: the bundle has no control 'pc1' \(it has: pc2\)"):
        m.check_targets(8, ["pc2"])
    with pytest.raises(MidiMapError, match=r"line 18: target preset/calm: no preset 'calm' \(saved: none\)"):
        m.check_targets(8, {"pc1"}, presets=())
    m.check_targets(8, (n for n in ["pc1"]), presets=iter(["calm"]))  # any iterables


def test_format_and_save_round_trip(tmp_path):
    m = parse_midi_map(GOOD, "good.yaml")
    again = parse_midi_map(format_midi_map(m), "again.yaml")
    fields = lambda mm: [(b.cc, b.lsb, b.target, b.low, b.high, b.curve) for b in mm.bindings]  # noqa: E731
    assert again.channel == m.channel and fields(again) == fields(m)
    path = save_midi_map(m, tmp_path / "saved.yaml")
    assert fields(load_midi_map(path)) == fields(m)
    assert [p.name for p in tmp_path.iterdir()] == ["saved.yaml"]  # no temporary file left behind
    odd = MidiMap(None, (CCBinding(5, "macro/a: b #c", -1.0, 1.0),))  # names YAML would misread unquoted
    assert parse_midi_map(format_midi_map(odd)).bindings[0].target == "macro/a: b #c"


def test_with_binding_replaces_the_cc_and_the_target():
    m = parse_midi_map(GOOD, "good.yaml")
    learned = m.with_binding(CCBinding(34, "macro/pc2", -1.0, 1.0))  # CC 34 was latent/3's LSB
    assert learned.binding_for(2) is None and learned.binding_for(34).target == "macro/pc2"
    again = learned.with_binding(CCBinding(90, "macro/pc2", -1.0, 1.0))  # the same target elsewhere
    assert again.binding_for(34) is None and again.binding_for(90).target == "macro/pc2"
    assert m.binding_for(2).target == "latent/3"  # maps are immutable
    with pytest.raises(MidiMapError, match="CC 3 is mapped twice"):
        MidiMap(None, (CCBinding(3, "gain", 0, 1), CCBinding(3, "seed", 0, 1)))


def test_default_map():
    m = default_midi_map(16, ["pc1", "pc2", "pc3", "pc4", "pc5", "pc6", "pc7", "pc8", "pc9"])
    assert [m.binding_for(cc).target for cc in range(70, 78)] == [f"macro/pc{i}" for i in range(1, 9)]
    assert m.binding_for(7).target == "gain" and m.binding_for(1).target == "walk/depth"
    assert m.channel is None
    few = default_midi_map(4, ["brightness"])
    assert [b.target for b in few.bindings if b.cc >= 70] == ["macro/brightness", "latent/0", "latent/1", "latent/2", "latent/3"]
    default_midi_map(2, []).check_targets(2, [])


def test_the_example_map_loads_and_fits_a_typical_bundle(tmp_path):
    m = load_midi_map(EXAMPLES / "midi-map.yaml")
    bundle = load_bundle(make_bundle(tmp_path / "b.gsb", latent_size=100))  # pc1..pc3, brightness, loudness
    m.check_targets(bundle.latent_size, [c.name for c in bundle.control_items])
    # what `ganstream export` writes by default: pc1..pc8 and the three descriptors
    m.check_targets(100, [f"pc{i}" for i in range(1, 9)] + ["loudness", "brightness", "noisiness"])
    targets = {b.target for b in m.bindings}
    assert {"gain", "walk/rate", "walk/depth"} <= targets
    assert any(b.lsb is not None for b in m.bindings)  # shows a 14-bit pair
    assert any(t.startswith("preset/") for t in targets)
