"""The user examples in examples/: the Pure Data and Max patches are well-formed and send only
addresses of the OSC namespace; the Pd patch, run headless in a real Pd when one is installed,
drives the real Controls through the real OSC server. (The MIDI map is in test_midi_map.py.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_osc import Peer

from ganstream.realtime import events as ev
from ganstream.realtime.control import Controls
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.osc import OscServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PD = EXAMPLES / "ganstream.pd"
MAX = EXAMPLES / "ganstream.maxpat"
MACROS = ("pc1", "pc2", "pc3", "brightness", "loudness")  # the test bundle's (tests/bundle_factory.py)

# Pd record types, and how many fields each widget takes (Pd 0.51+ save format).
PD_RECORDS = {"#N canvas", "#X obj", "#X msg", "#X text", "#X floatatom", "#X symbolatom", "#X connect", "#X restore", "#X coords", "#X declare", "#X f"}
PD_BOXES = {"#X obj", "#X msg", "#X text", "#X floatatom", "#X symbolatom"}  # each one takes an index
PD_CLASSES = {"hsl": 18, "bng": 14, "oscformat": None, "oscparse": None, "list": None, "netsend": None, "print": None, "route": None}


def controls() -> Controls:
    rng = np.random.default_rng(5)
    return Controls(LatentSpace(8, controls={m: (rng.standard_normal(8), 0.5) for m in MACROS}))


# -- Pure Data ------------------------------------------------------------------------------


def pd_records(text: str) -> list[str]:
    """A Pd file's records: split at the ';' that ends each (an escaped '\\;' does not)."""
    records = re.split(r"(?<!\\);\s*\n", text.strip())
    assert records[-1].endswith(";"), "the last record must end with ';'"
    records[-1] = records[-1][:-1]
    return [" ".join(r.split()) for r in records]


def pd_patch(text: str):
    """(boxes: [(index, kind, fields)], connections: [(src, outlet, dst, inlet)]) of the top canvas."""
    boxes, connections = [], []
    depth = 0
    for rec in pd_records(text):
        kind = " ".join(rec.split()[:2])
        assert kind in PD_RECORDS, f"unknown Pd record {rec[:40]!r}"
        fields = rec.split()[2:]
        if kind == "#N canvas":
            depth += 1
            continue
        if kind == "#X restore":
            depth -= 1
            if depth == 1:  # the subpatch itself is one box of the canvas it sits in
                boxes.append((len(boxes), "#X obj", ["pd", *fields[3:]]))
            continue
        if depth != 1:
            continue  # subpatches keep their own numbering
        if kind in PD_BOXES:
            assert len(fields) >= 2 and all(re.fullmatch(r"-?\d+", f) for f in fields[:2]), rec
            boxes.append((len(boxes), kind, fields[2:]))
        elif kind == "#X connect":
            assert len(fields) == 4 and all(f.isdigit() for f in fields), rec
            connections.append(tuple(int(f) for f in fields))
    assert depth == 1, "every subpatch canvas must be closed with #X restore"
    return boxes, connections


def test_pd_patch_is_well_formed():
    text = PD.read_text()
    assert text.startswith("#N canvas ")
    boxes, connections = pd_patch(text)
    for src, outlet, dst, inlet in connections:
        assert src < len(boxes) and dst < len(boxes), f"connect {src} {outlet} {dst} {inlet}: no such box"
        assert boxes[src][1] != "#X text" and boxes[dst][1] != "#X text", "a comment cannot be connected"
        assert src != dst
    for _, kind, fields in boxes:
        if kind == "#X obj":
            assert fields[0] in PD_CLASSES, f"unexpected object {fields[0]!r}"
            want = PD_CLASSES[fields[0]]
            assert want is None or len(fields) - 1 == want, f"{fields[0]} takes {want} fields: {fields}"
    objects = [" ".join(f) for _, k, f in boxes if k == "#X obj"]
    assert "netsend -u -b" in objects
    messages = [" ".join(f) for _, k, f in boxes if k == "#X msg"]
    assert "connect 127.0.0.1 9000" in messages
    # every OSC sender ends at the one netsend, through [list prepend send] and [list trim]
    senders = [i for i, k, f in boxes if k == "#X obj" and f[0] == "oscformat"]
    chain = {src: dst for src, _, dst, _ in connections if boxes[src][2][:1] == ["oscformat"]}
    prepend = {chain[i] for i in senders}
    assert len(prepend) == 1 and boxes[prepend.pop()][2] == ["list", "prepend", "send"]


KEYBOARD = EXAMPLES / "keyboard.pd"


def test_the_keyboard_patch_is_well_formed_and_plays_notes():
    boxes, connections = pd_patch(KEYBOARD.read_text())
    for src, outlet, dst, inlet in connections:
        assert src < len(boxes) and dst < len(boxes), f"connect {src} {outlet} {dst} {inlet}: no such box"
        assert boxes[src][1] != "#X text" and boxes[dst][1] != "#X text", "a comment cannot be connected"
    objects = [" ".join(f) for _, k, f in boxes if k == "#X obj"]
    assert "netsend -u -b" in objects and "notein" in objects  # clicks and a MIDI keyboard alike
    addresses = {"/" + "/".join(f[1:]) for _, k, f in boxes if k == "#X obj" and f[0] == "oscformat"}
    assert addresses == {"/ganstream/note", "/ganstream/pitch", "/ganstream/pad"}
    # Every one of them is an address the server knows (an unknown one would be refused as such).
    c, peer = controls(), Peer()
    c.pitch_range = (36, 96)
    server = OscServer(c, port=0).start()
    peer.target = ("127.0.0.1", server.port)
    try:
        for address in sorted(addresses):
            peer.send(address)
        peer.status()
        errors = [args for a, args in peer.drain() if a == "/ganstream/error"]
        assert errors and not [e for e in errors if "unknown address" in e[1]]
    finally:
        server.stop()
        peer.close()


def pd_addresses() -> list[str]:
    boxes, _ = pd_patch(PD.read_text())
    return ["/" + "/".join(f[1:]) for _, k, f in boxes if k == "#X obj" and f[0] == "oscformat"]


def max_addresses() -> list[str]:
    out = []
    for b in json.loads(MAX.read_text())["patcher"]["boxes"]:
        text = b["box"].get("text", "")
        if b["box"]["maxclass"] == "newobj" and text.startswith("prepend /"):
            out.append(text.split()[1])
        elif b["box"]["maxclass"] == "message" and text.startswith("/"):
            out.append(text.split()[0])
    return out


def test_maxpat_is_well_formed():
    patch = json.loads(MAX.read_text())["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patch["boxes"]}
    assert len(boxes) == len(patch["boxes"]), "box ids must be unique"
    for b in boxes.values():
        assert {"id", "maxclass", "numinlets", "numoutlets", "patching_rect"} <= set(b)
        assert len(b["patching_rect"]) == 4
    assert patch["lines"]
    for line in patch["lines"]:
        (src, outlet), (dst, inlet) = line["patchline"]["source"], line["patchline"]["destination"]
        assert src in boxes and dst in boxes, line
        assert 0 <= outlet < boxes[src]["numoutlets"] and 0 <= inlet < boxes[dst]["numinlets"], line
    udpsend = [i for i, b in boxes.items() if b.get("text") == "udpsend 127.0.0.1 9000"]
    assert len(udpsend) == 1
    sliders = [i for i, b in boxes.items() if b["maxclass"] == "slider"]
    assert len(sliders) == len(MACROS) + 3
    # each slider -> scale -> prepend /ganstream/... -> udpsend
    after = {line["patchline"]["source"][0]: line["patchline"]["destination"][0] for line in patch["lines"]}
    for s in sliders:
        scale, prepend = after[s], after[after[s]]
        assert boxes[scale]["text"].startswith("scale 0 127 ") and boxes[prepend]["text"].startswith("prepend /ganstream/")
        assert after[prepend] == udpsend[0]


def test_the_patches_send_only_addresses_of_the_namespace():
    """Each address, sent with no arguments, is answered as known: applied, or refused for its arguments."""
    addresses = sorted(set(pd_addresses()) | set(max_addresses()))
    assert {f"/ganstream/macro/{m}" for m in MACROS} <= set(addresses)
    assert {"/ganstream/gain", "/ganstream/walk/rate", "/ganstream/walk/depth", "/ganstream/seed", "/ganstream/trigger",
            "/ganstream/preset/save", "/ganstream/preset/load", "/ganstream/preset/morph", "/ganstream/status"} <= set(addresses)
    c, peer = controls(), Peer()
    server = OscServer(c, port=0).start()
    peer.target = ("127.0.0.1", server.port)
    try:
        for address in addresses:
            peer.send(address)
        peer.status()
        errors = [args for a, args in peer.drain() if a == "/ganstream/error"]
        assert not [e for e in errors if "unknown address" in e[1]]
    finally:
        server.stop()
        peer.close()


# -- the Pd patch in a real Pd ------------------------------------------------------------------


class InstantLearner:
    """Binds at once (as if a knob had moved), so the learned reply comes back to Pd."""

    def __init__(self):
        self.saved = 0

    def learn(self, target, on_learned=None):
        class B:
            cc, lsb = 21, None

        B.target = target
        on_learned(B)

    def cancel_learn(self):
        pass

    def save_map(self, path=None):
        self.saved += 1
        return "map.yaml"


@pytest.mark.skipif(shutil.which("pd") is None, reason="Pure Data is not installed (apt-get install puredata-core)")
def test_the_pd_patch_drives_the_engine(tmp_path):
    text = PD.read_text()
    boxes, connections = pd_patch(text)
    upstream: dict[int, list[int]] = {}
    for src, _, dst, _ in connections:
        upstream.setdefault(dst, []).append(src)
    by_address = {"/" + "/".join(f[1:]): i for i, k, f in boxes if k == "#X obj" and f[0] == "oscformat"}

    def source(address: str, contains: str = "") -> int:
        """The box feeding the oscformat of `address` (a slider, number box or message)."""
        hits = [s for s in upstream[by_address[address]] if contains in " ".join(boxes[s][2])]
        assert len(hits) == 1, (address, contains, hits)
        return hits[0]

    def feeding(box: int) -> int:
        (s,) = upstream[box]
        return s

    netsend = next(i for i, k, f in boxes if f == ["netsend", "-u", "-b"])
    values = {f"/ganstream/macro/{m}": round(0.1 * (k + 1), 1) * (-1) ** k for k, m in enumerate(MACROS)}
    values.update({"/ganstream/gain": 0.25, "/ganstream/walk/rate": 1.5, "/ganstream/walk/depth": 0.75, "/ganstream/seed": 42})
    # (box to drive, message): in order; preset/save must come before load and morph
    drive = [(source(a), str(v)) for a, v in values.items()]
    drive += [
        (feeding(source("/ganstream/trigger")), "bang"),  # the bang button -> [list 1( -> trigger
        (source("/ganstream/preset/save", "calm"), "bang"),
        (source("/ganstream/preset/load", "calm"), "bang"),
        (source("/ganstream/preset/morph", "calm"), "bang"),
        (source("/ganstream/learn"), "bang"),
        (source("/ganstream/learn/save"), "bang"),
        (source("/ganstream/status"), "bang"),
    ]

    c = controls()
    server = OscServer(c, port=0, learn=InstantLearner()).start()  # replies to netsend's own port
    n = len(boxes)
    canvas = f"pd-{PD.name}"
    sends = [f"{canvas} obj 0 0 r gs-connect", f"{canvas} connect {n} 0 {netsend} 0"]
    for j, (box, _) in enumerate(drive):
        sends += [f"{canvas} obj 0 0 r gs-drive{j}", f"{canvas} connect {n + 1 + j} 0 {box} 0"]
    sends += [f"gs-connect connect 127.0.0.1 {server.port}"]
    sends += [f"gs-drive{j} {message}" for j, (_, message) in enumerate(drive)]
    pd = subprocess.Popen(
        ["pd", "-nogui", "-noaudio", "-nomidi", "-stderr", "-open", str(PD), "-send", "; ".join(sends)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 15
        while server.messages < len(drive) and time.monotonic() < deadline and pd.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # the last replies on their way back to Pd
    finally:
        pd.terminate()
        output = pd.communicate(timeout=10)[0]
        server.stop()
    assert server.messages == len(drive), output
    assert server.refused == 0 and server.malformed == 0, output
    cmds = []
    while (cmd := c.pop()) is not None:
        cmds.append(cmd)
    events = [cmd.event for cmd in cmds]
    kinds = [type(e) for e in events]
    assert kinds == [ev.MacroChange] * len(MACROS) + [
        ev.GainChange, ev.WalkChange, ev.WalkChange, ev.SeedChange, ev.NoteOn, ev.PresetRecall, ev.PresetRecall
    ]
    assert {e.name: e.value for e in events[: len(MACROS)]} == pytest.approx({m: values[f"/ganstream/macro/{m}"] for m in MACROS})
    assert c.gain == pytest.approx(0.25) and c.walk == pytest.approx((1.5, 0.75)) and c.seed == 42
    assert events[len(MACROS) + 4] == ev.NoteOn(1.0, None)
    assert c.presets == ("calm",) and events[-1].seconds == pytest.approx(4.0)
    # the replies came back to netsend's right outlet and were printed by [print ganstream]
    assert "ganstream: learned macro/pc1 21 -1" in output, output
    assert "ganstream: learn saved map.yaml" in output, output
    assert re.search(r"ganstream: status engine none gain 0.25", output), output
