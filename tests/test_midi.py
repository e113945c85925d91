"""MIDI input with real MIDI: our own JACK server (dummy driver), python-rtmidi's JACK API, a
virtual input port made by MidiInput and a mido output (JACK backend) connected to it by
name, all driving the real Controls."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import mido
import numpy as np
import pytest
import rtmidi

from ganstream.realtime import events as ev
from ganstream.realtime.control import Controls
from ganstream.realtime.kit import Kit, Pad
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.midi import MidiError, MidiInput, learn_interactively, list_midi_inputs, match_port, open_midi_api
from ganstream.realtime.midi_map import MidiMapError, load_midi_map, parse_midi_map
from ganstream.realtime.osc import OscServer

D = 8
MACROS = ("pc1", "pc2", "brightness")
TIMEOUT = 5.0
JACK = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture(scope="module")
def jack_server(jack_server):
    """The session's JACK server (conftest.py): one server per process, since libjack and PortAudio
    keep per-process state that clients of two servers at once can crash."""
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi was built without JACK support")
    name = str(jack_server)
    deadline = time.monotonic() + 10.0
    while True:  # the server answers audio clients first; wait until a MIDI client connects too
        try:
            probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "ganstream-probe")
            probe.delete()
            break
        except rtmidi.RtMidiError:
            if time.monotonic() > deadline:
                pytest.skip("the JACK server runs but no MIDI client could connect within 10 s")
            time.sleep(0.05)
    return name


@pytest.fixture
def controls(tmp_path):
    rng = np.random.default_rng(3)
    space = LatentSpace(D, controls={name: (rng.standard_normal(D), 0.5) for name in MACROS})
    return Controls(space, presets_path=tmp_path / "presets.json")


_counter = iter(range(10**6))


@contextmanager
def wired(controls, midi_map=None, **kwargs):
    """A MidiInput on a fresh virtual port, and a mido JACK output connected to it."""
    port = f"ctl{next(_counter)}"
    client = f"gstest{os.getpid()}"
    midi = MidiInput(controls, midi_map, virtual=port, api="jack", client_name=client, **kwargs).start()
    try:
        backend = mido.Backend(JACK)
        name = f"{client}:{port}"
        assert name in backend.get_output_names()
        with backend.open_output(name) as out:  # no client_name: a connection, not a virtual port
            handshake(midi, out)
            yield midi, out
    finally:
        midi.stop()


def handshake(midi: MidiInput, out) -> None:
    """Wait until the new JACK connection carries messages (it joins the graph a cycle or more after
    jack_connect returns; what is sent before is lost), then zero the counters."""
    probe = mido.Message("control_change", control=127, value=0, channel=15)  # mapped by no test
    deadline = time.monotonic() + TIMEOUT
    while midi.received == 0:
        out.send(probe)
        wait = time.monotonic() + 0.5
        while midi.received == 0 and time.monotonic() < wait:
            time.sleep(0.002)
        if time.monotonic() > deadline:
            raise AssertionError("the JACK MIDI connection carried nothing")
    midi.received = midi.applied = midi.ignored = midi.refused = 0


def wait_for(predicate, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for MIDI to arrive")
        time.sleep(0.002)


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, channel=channel)


def drained(controls) -> list:
    out = []
    while (c := controls.pop()) is not None:
        out.append(c)
    return out


def settle(midi: MidiInput, out, count: int) -> None:
    """Wait until `count` messages have been received in all (MIDI is ordered: the last one closes the batch)."""
    wait_for(lambda: midi.received >= count)


MAP = """\
channel: all
controls:
  - cc: 70
    target: macro/pc1
    range: [-1, 1]
    curve: exp
  - cc: 2
    lsb: 34
    target: latent/3
    range: [-2, 2]
  - cc: 7
    target: gain
    range: [0, 4]        # beyond the controls' [0, 2]: the top half is refused
  - cc: 71
    target: walk/rate
    range: [0, 10]
    curve: scurve
  - cc: 72
    target: walk/depth
  - cc: 73
    target: seed
    range: [0, 127]
  - cc: 64
    target: preset/calm
"""


def test_cc_through_the_map(jack_server, controls):
    m = parse_midi_map(MAP, "map.yaml")
    with wired(controls, m) as (midi, out):
        assert midi.api_label == "JACK"
        z0 = controls.latent
        for msg in (cc(70, 100), cc(71, 32), cc(72, 127), cc(99, 5), cc(2, 100), cc(34, 37)):
            out.send(msg)
        settle(midi, out, 6)
        assert controls.macros["pc1"] == pytest.approx(-1 + 2 * (100 / 127) ** 2)
        assert controls.walk[0] == pytest.approx(10 * (0.5 - 0.5 * np.cos(np.pi * 32 / 127)))
        assert controls.walk[1] == pytest.approx(1.0)
        # the 14-bit pair: MSB 100 then LSB 37 -> (100 << 7 | 37) / 16383 over [-2, 2]
        want = z0.copy()
        want[3] = -2 + 4 * ((100 << 7) | 37) / 16383
        np.testing.assert_allclose(controls.latent, want)
        assert midi.ignored == 1 and midi.refused == 0  # CC 99 is not mapped
        kinds = [type(c.event) for c in drained(controls)]
        assert kinds == [ev.MacroChange, ev.WalkChange, ev.WalkChange, ev.LatentChange, ev.LatentChange]  # MSB alone, then MSB+LSB


def test_14_bit_msb_alone_clears_the_lsb(jack_server, controls):
    m = parse_midi_map(MAP, "map.yaml")
    with wired(controls, m) as (midi, out):
        out.send(cc(34, 5))  # an LSB before any MSB: nothing to combine with
        out.send(cc(2, 64))
        settle(midi, out, 2)
        assert controls.latent[3] == pytest.approx(-2 + 4 * (64 << 7) / 16383)
        out.send(cc(34, 127))
        out.send(cc(2, 65))
        settle(midi, out, 4)
        assert controls.latent[3] == pytest.approx(-2 + 4 * (65 << 7) / 16383)
        assert midi.ignored == 1


def test_bad_values_are_refused_and_change_nothing(jack_server, controls):
    m = parse_midi_map(MAP, "map.yaml")
    with wired(controls, m) as (midi, out):
        out.send(cc(7, 127))  # gain 4: refused by the controls
        out.send(cc(7, 16))
        settle(midi, out, 2)
        assert controls.gain == pytest.approx(4 * 16 / 127)
        assert midi.refused == 1
        latent = controls.latent
        out.send(mido.Message("sysex", data=[1, 2, 3]))  # filtered by the port
        out.send(mido.Message("pitchwheel", pitch=100))
        out.send(mido.Message("aftertouch", value=3))
        out.send(cc(70, 64))
        settle(midi, out, 5)
        np.testing.assert_array_equal(controls.latent, latent)
        assert midi.ignored == 2


def test_channel_filter(jack_server, controls):
    m = parse_midi_map("channel: 2\n" + MAP.split("\n", 1)[1], "map.yaml")
    with wired(controls, m) as (midi, out):
        out.send(cc(70, 127, channel=0))
        out.send(mido.Message("note_on", note=60, velocity=100, channel=5))
        out.send(cc(70, 64, channel=1))
        settle(midi, out, 3)
        assert controls.macros["pc1"] == pytest.approx(-1 + 2 * (64 / 127) ** 2)
        assert midi.ignored == 2 and len(drained(controls)) == 1


def test_notes_trigger_and_release(jack_server, controls):
    with wired(controls) as (midi, out):
        out.send(mido.Message("note_on", note=60, velocity=127))
        out.send(mido.Message("note_on", note=62, velocity=64, channel=9))
        out.send(mido.Message("note_off", note=60))
        out.send(mido.Message("note_on", note=62, velocity=0))  # a note off by running status habit
        settle(midi, out, 4)
        cmds = drained(controls)
        assert [c.event for c in cmds] == [
            ev.NoteOn(1.0, 60),
            ev.NoteOn(pytest.approx(64 / 127), 62),
            ev.NoteOff(60),
            ev.NoteOff(62),
        ]


def test_learn_binds_a_controller_s_pad_to_a_kit_pad_and_saves_it(jack_server, controls, tmp_path):
    """`pad/36`: the next note the controller plays becomes kit pad 36 (this hit already plays it), and the map
    keeps it as `pads:`; a pad the kit lacks, or a session without a kit, is refused with the reason."""
    with wired(controls, parse_midi_map(MAP, "map.yaml"), map_path=tmp_path / "pads.yaml") as (midi, out):
        with pytest.raises(MidiMapError, match=r"^MIDI learn: target pad/36: this session has no kit"):
            midi.learn("pad/36")
        controls.kit = Kit("two pads", {n: Pad(n, name, controls.space.seed_latent(n)) for n, name in ((36, "kick"), (38, "snare"))})
        with pytest.raises(MidiMapError, match=r"^MIDI learn: target pad/40: the kit has no pad on note 40 \(pads: 36, 38\)$"):
            midi.learn("pad/40")
        learned = []
        midi.learn("pad/36", learned.append)
        out.send(cc(70, 127))  # a knob moved meanwhile is not what pad learn waits for
        out.send(mido.Message("note_on", note=60, velocity=127, channel=9))
        out.send(mido.Message("note_off", note=60, channel=9))
        out.send(mido.Message("note_on", note=60, velocity=64, channel=9))
        out.send(mido.Message("note_on", note=62, velocity=64, channel=9))  # not learned: itself
        settle(midi, out, 5)
        wait_for(lambda: learned)
        assert (learned[0].note, learned[0].pad, learned[0].target) == (60, 36, "pad/36") and midi.learning is None
        notes = [c.event for c in drained(controls) if isinstance(c.event, (ev.NoteOn, ev.NoteOff))]
        assert notes == [ev.NoteOn(1.0, 36), ev.NoteOff(36), ev.NoteOn(pytest.approx(64 / 127), 36), ev.NoteOn(pytest.approx(64 / 127), 62)]
        saved = midi.save_map()
    assert "pads:\n- {note: 60, pad: 36}\n" in saved.read_text()
    assert load_midi_map(saved).note_for(60) == 36 and load_midi_map(saved).note_for(61) == 61


def test_program_change_recalls_the_nth_preset_and_a_cc_can_recall_one(jack_server, controls):
    controls.save_preset("storm")
    controls.set_seed(5)
    controls.save_preset("calm")
    drained(controls)
    m = parse_midi_map(MAP, "map.yaml")
    with wired(controls, m) as (midi, out):
        out.send(mido.Message("program_change", program=1))  # sorted: calm, storm
        out.send(mido.Message("program_change", program=7))  # no 8th preset: ignored
        out.send(cc(64, 0))
        out.send(cc(64, 100))  # crosses 64 upwards: recall
        out.send(cc(64, 127))  # already above: nothing
        out.send(cc(64, 10))
        out.send(cc(64, 64))  # crosses again
        settle(midi, out, 7)
        recalls = [c.event.name for c in drained(controls) if isinstance(c.event, ev.PresetRecall)]
        assert recalls == ["storm", "calm", "calm"]
        assert midi.ignored == 1


def test_seed_cc_reseeds_only_when_the_seed_changes(jack_server, controls):
    m = parse_midi_map(MAP, "map.yaml")
    with wired(controls, m) as (midi, out):
        for v in (10, 10, 11, 11, 12):
            out.send(cc(73, v))
        settle(midi, out, 5)
        seeds = [c.event.seed for c in drained(controls) if isinstance(c.event, ev.SeedChange)]
        assert seeds == [10, 11, 12] and controls.seed == 12


def test_default_map(jack_server, controls):
    with wired(controls) as (midi, out):
        assert midi.midi_map.binding_for(70).target == "macro/pc1"
        assert midi.midi_map.binding_for(72).target == "macro/brightness"
        assert midi.midi_map.binding_for(73).target == "latent/0"  # fewer than 8 macros: latent dims fill in
        out.send(cc(70, 127))
        out.send(cc(7, 0))
        out.send(cc(1, 127))
        out.send(cc(74, 0))
        settle(midi, out, 4)
        assert controls.macros["pc1"] == 1.0 and controls.gain == 0.0 and controls.walk[1] == 1.0
        assert controls.latent[1] == -1.0


def test_learn_binds_the_next_cc_and_saves_the_map(jack_server, controls, tmp_path):
    path = tmp_path / "learned.yaml"
    learned = []
    with wired(controls, parse_midi_map(MAP, "map.yaml"), map_path=path) as (midi, out):
        with pytest.raises(MidiMapError, match="no control 'nosuch'"):
            midi.learn("macro/nosuch")
        with pytest.raises(MidiMapError, match="no preset 'nosuch'"):
            midi.learn("preset/nosuch")
        midi.learn("macro/pc2", learned.append)
        assert midi.learning == "macro/pc2"
        out.send(cc(70, 127))  # CC 70 was macro/pc1: now it is pc2's
        settle(midi, out, 1)
        wait_for(lambda: learned)
        assert (learned[0].cc, learned[0].target, learned[0].lsb) == (70, "macro/pc2", None)
        assert midi.learning is None
        assert controls.macros["pc2"] == 1.0  # the learning move applies too
        out.send(cc(70, 0))
        settle(midi, out, 2)
        assert controls.macros["pc2"] == -1.0 and controls.macros["pc1"] == 0.0

        midi.learn("latent/5", learned.append)  # a 14-bit controller: MSB on CC 20, then its LSB on 52
        out.send(cc(20, 127))
        out.send(cc(52, 127))
        settle(midi, out, 4)
        wait_for(lambda: len(learned) == 2)
        assert (learned[1].cc, learned[1].lsb, learned[1].target) == (20, 52, "latent/5")
        assert controls.latent[5] == pytest.approx(1.0)

        midi.learn("gain", learned.append)  # CC 21 is 7-bit: the next message is not its LSB
        out.send(cc(21, 64))
        out.send(cc(21, 127))
        out.send(cc(99, 1))
        settle(midi, out, 7)
        wait_for(lambda: len(learned) == 3)
        assert (learned[2].cc, learned[2].lsb) == (21, None)

        saved = midi.save_map()
    assert saved == path
    reloaded = load_midi_map(path)
    assert [_fields(b) for b in reloaded.bindings] == [_fields(b) for b in midi.midi_map.bindings]
    assert reloaded.binding_for(70).target == "macro/pc2" and reloaded.binding_for(7) is None
    assert reloaded.binding_for(52).target == "latent/5"


def _fields(b):
    return (b.cc, b.lsb, b.target, b.low, b.high, b.curve)


def test_learn_over_osc(jack_server, controls, tmp_path):
    from test_osc import Peer

    path = tmp_path / "map.yaml"
    peer = Peer()
    with wired(controls, map_path=path) as (midi, out):
        server = OscServer(controls, port=0, learn=midi).start()
        peer.target = ("127.0.0.1", server.port)
        try:
            peer.send("/ganstream/learn", "macro/brightness")
            peer.status()
            assert midi.learning == "macro/brightness"
            out.send(cc(90, 127))
            assert peer.reply("/ganstream/learned")[1] == ["macro/brightness", 90, -1]
            wait_for(lambda: controls.macros["brightness"] == 1.0)
            peer.send("/ganstream/learn/save")
            assert peer.reply("/ganstream/learn/saved")[1] == [str(path)]
            assert load_midi_map(path).binding_for(90).target == "macro/brightness"
            peer.send("/ganstream/learn", "macro/pc1")
            peer.send("/ganstream/learn/cancel")
            peer.status()
            assert midi.learning is None
        finally:
            server.stop()
            peer.close()


def test_learn_interactively(jack_server, controls, tmp_path):
    path = tmp_path / "map.yaml"
    lines: list[str] = []
    with wired(controls, map_path=path) as (midi, out):
        typed = iter(["nonsense", "walk/rate", ""])
        result = []
        t = threading.Thread(target=lambda: result.append(learn_interactively(midi, typed, lines.append, timeout=TIMEOUT)))
        t.start()
        wait_for(lambda: midi.learning == "walk/rate")
        out.send(cc(80, 64))
        t.join(TIMEOUT)
    assert result == [1]
    assert any("unknown target 'nonsense'" in line for line in lines)
    assert "CC 80 -> walk/rate" in lines
    assert load_midi_map(path).binding_for(80).target == "walk/rate"


def test_open_an_existing_port_by_part_of_its_name(jack_server, controls):
    backend = mido.Backend(JACK)
    with backend.open_output("keys", virtual=True, client_name=f"gs-keyboard{os.getpid()}") as keyboard:
        names = list_midi_inputs("jack")
        full = f"gs-keyboard{os.getpid()}:keys"
        assert full in names
        midi = MidiInput(controls, port="KEYBOARD", api="jack", client_name=f"gsin{os.getpid()}").start()
        try:
            assert midi.port_name == full
            deadline = time.monotonic() + TIMEOUT
            while controls.macros["pc1"] != 1.0:  # resent until the new connection carries it
                assert time.monotonic() < deadline, "nothing arrived from the keyboard port"
                keyboard.send(cc(70, 127))
                time.sleep(0.1)
        finally:
            midi.stop()
        with pytest.raises(MidiError, match="no MIDI input matches 'nosuch'"):
            MidiInput(controls, port="nosuch", api="jack").start()


def test_a_burst_of_ccs_is_not_lost(jack_server, controls):
    m = parse_midi_map(MAP, "map.yaml")
    with wired(controls, m) as (midi, out):
        for i in range(1000):
            out.send(cc(72, i % 128))
            if i % 100 == 99:
                time.sleep(0.01)  # JACK's MIDI buffer holds one period's worth
        out.send(cc(72, 127))
        settle(midi, out, 1001)
        assert controls.walk[1] == 1.0 and midi.received == 1001


def test_auto_api_and_errors(jack_server, controls):
    midi_in, label = open_midi_api("auto", "gs-auto")
    midi_in.delete()
    if not os.path.exists("/dev/snd/seq"):
        assert label == "JACK"  # no ALSA sequencer here: auto falls back to JACK
    with pytest.raises(MidiError, match="unknown MIDI API 'bogus'"):
        open_midi_api("bogus")
    with pytest.raises(MidiError, match="unknown MIDI API"):
        MidiInput(controls, virtual="x", api="bogus")
    with pytest.raises(ValueError, match="either port"):
        MidiInput(controls, port="a", virtual="b")
    with pytest.raises(MidiMapError, match="m.yaml, line 2: target macro/nosuch"):
        MidiInput(controls, parse_midi_map("controls:\n  - cc: 1\n    target: macro/nosuch\n", "m.yaml"), virtual="x")


def test_no_jack_server_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"ganstream-nosuch-{os.getpid()}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(MidiError, match="JACK: no JACK server running"):
        open_midi_api("jack")


def test_match_port():
    ports = ["Midi Through:Port-0 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "Launchkey Mini:MIDI 1 24:0"]
    assert match_port(ports, "Launchkey Mini:MIDI 1 24:0") == 2
    assert match_port(ports, "nanokontrol") == 1
    assert match_port(ports, "0") == 0
    with pytest.raises(MidiError, match="matches 2 ports"):
        match_port(ports, "MIDI 1")
    with pytest.raises(MidiError, match="no MIDI input matches 'x'"):
        match_port(ports, "x")
