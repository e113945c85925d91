"""Notes through the whole chain: `ganstream render` playing the notes of an automation file, the velocity
curve, the root note's defaults and errors, the live engine equal to the render of its timeline with
transposed notes, export's root note, and `ganstream play` on JACK taking notes from a JACK MIDI port.

The bundle is tests/bundle_factory.py's harmonic synthesiser, whose segments have a pitch (about 110 Hz:
28 cycles of a 4096-sample segment at 16 kHz): a GAN trained for a step, as tiny_run is, makes a near-DC
drone with no pitch at all (a spectral centroid of 9 Hz), so export's root note is checked on it and the
pitch of what plays on the harmonic bundle. Pitches are compared as ratios to the voice at the root, by
the pitch estimator export uses (core/pitch.py) and by the FFT peak."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bundle_factory import make_bundle, read_manifest, rehash, write_manifest
from jack_fixtures import RATE, connect_recorder, open_engine_midi, release_midi_test
from test_engine import assert_live_equals_render, play
from test_transpose import cents, fft_peak_hz, voices

from ganstream.core.pitch import estimate_pitch
from ganstream.core.transpose import Transposer
from ganstream.main import main as ganstream
from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.cli import play_main, render_main
from ganstream.realtime.control import Controls
from ganstream.realtime.engine import Chain, Engine, EngineSettings, Timeline, automation_from_timeline, render_options, render_timeline
from ganstream.realtime.events import NoteOn
from ganstream.realtime.inference import Generator
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.osc import OscServer
from ganstream.realtime.stream import StreamSettings

SR = 16000
SEG = 4096
ROOT = 45  # A2: the harmonic bundle's segments sound at 109.4 Hz
GAP = 0.6  # seconds between notes: more than the longest voice (an octave down: 0.512 s)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundles") / "notes.gsb", segment=SEG, sample_rate=SR)


def notes_file(path: Path, notes, velocities=None, gap: float = GAP) -> Path:
    velocities = velocities or [1.0] * len(notes)
    entries = [{"time": 0.1 + i * gap, **({} if n is None else {"note": n}), "velocity": v} for i, (n, v) in enumerate(zip(notes, velocities))]
    path.write_text(json.dumps({"notes": entries}))
    return path


def render(bundle, out: Path, notes_path: Path, count: int, *args, gap: float = GAP) -> np.ndarray:
    """Render `count` notes of an automation file in trigger mode at the model rate (no resampling)."""
    code = render_main([
        str(bundle), "-o", str(out), "--seconds", repr(0.2 + count * gap), "--subtype", "float", "--provider", "cpu",
        "--sample-rate", str(SR), "--mode", "trigger", "--automation", str(notes_path), *map(str, args),
    ])
    assert code == 0
    return sf.read(out, dtype="float32")[0]


def spans_at_notes(y: np.ndarray, count: int, rate: int = SR) -> list[tuple[int, int]]:
    found = voices(y)
    assert len(found) == count, found
    starts = [round((0.1 + i * GAP) * rate) for i in range(count)]
    assert [a for a, _ in found] == starts  # every voice starts at its note's sample
    return found


def pitch(y: np.ndarray, a: int, b: int, rate: int = SR, lowest: float = 50.0) -> tuple[float, float]:
    """(estimated pitch, FFT peak) of the voice y[a:b], its ramps left out."""
    core = y[a + rate // 100 : b - rate // 100]
    e = estimate_pitch(core, rate, fmin=lowest)
    assert e.confident, e
    return e.hz, fft_peak_hz(core, rate)


def assert_follows(y: np.ndarray, spans, notes, root: float, rate: int = SR) -> None:
    """Each voice's pitch is the root voice's times 2^((note - root) / 12), within 10 cents, both ways measured."""
    ref_hz, ref_peak = pitch(y, *spans[notes.index(root)], rate)
    worst = 0.0
    for (a, b), n in zip(spans, notes):
        ratio = 2.0 ** ((n - root) / 12)
        hz, peak = pitch(y, a, b, rate, lowest=ref_hz * ratio / 1.6)
        assert abs(cents(hz / ref_hz, ratio)) < 10.0, (n, hz, ref_hz)
        assert abs(cents(peak / ref_peak, ratio)) < 10.0, (n, peak, ref_peak)
        worst = max(worst, abs(cents(hz / ref_hz, ratio)), abs(cents(peak / ref_peak, ratio)))
    print(f"\nnotes {notes} against the root {root}: the worst pitch error is {worst:.2f} cents")


def test_rendered_voices_follow_the_notes_of_an_automation_file(bundle_dir, tmp_path):
    notes = [45, 57, 33, 52, 69, 40]
    y = render(bundle_dir, tmp_path / "n.wav", notes_file(tmp_path / "n.json", notes), len(notes), "--root-note", "A2")
    spans = spans_at_notes(y, len(notes))
    for (a, b), n in zip(spans, notes):
        assert abs((b - a) - SEG / 2 ** ((n - ROOT) / 12)) <= 2  # a higher note is shorter
    assert_follows(y, spans, notes, ROOT)
    assert abs(cents(pitch(y, *spans[0])[0], 109.375)) < 10.0  # the root voice is as generated


def test_no_transpose_plays_every_note_as_generated(bundle_dir, tmp_path):
    y = render(bundle_dir, tmp_path / "a.wav", notes_file(tmp_path / "a.json", [30, 45, 90]), 3, "--no-transpose")
    assert [b - a for a, b in spans_at_notes(y, 3)] == [SEG] * 3
    at_root = render(bundle_dir, tmp_path / "b.wav", notes_file(tmp_path / "b.json", [45, 45, None]), 3, "--root-note", ROOT)
    np.testing.assert_array_equal(y, at_root)  # what every note played before there were notes


def test_without_a_root_notes_play_as_generated_and_say_so(bundle_dir, tmp_path, capsys):
    y = render(bundle_dir, tmp_path / "c.wav", notes_file(tmp_path / "c.json", [60, 72]), 2)
    err = capsys.readouterr().err
    assert "ganstream render: test has no root note (export found no clear pitch): notes play their voices as generated" in err
    assert [b - a for a, b in spans_at_notes(y, 2)] == [SEG, SEG]
    assert "transpose" in err and "--root-note N" in err
    # A bundle with a root: notes transpose from it, without a warning.
    rooted = tmp_path / "rooted.gsb"
    make_bundle(rooted, segment=SEG, sample_rate=SR)
    m = read_manifest(rooted)
    m["streaming"]["root_note"] = 72.0
    write_manifest(rooted, m)
    rehash(rooted)
    y = render(rooted, tmp_path / "d.wav", notes_file(tmp_path / "d.json", [60, 72]), 2)
    assert "warning" not in capsys.readouterr().err
    assert [b - a for a, b in spans_at_notes(y, 2)] == [2 * SEG, SEG]


@pytest.mark.parametrize("curve, exponent", [("linear", 1.0), ("exp:2", 2.0), ("exp:0.5", 0.5)])
def test_the_velocity_curve_sets_each_voice_gain(bundle_dir, tmp_path, curve, exponent):
    velocities = [1.0, 0.5, 0.25]
    path = notes_file(tmp_path / "v.json", [ROOT] * 3, velocities)
    y = render(bundle_dir, tmp_path / "v.wav", path, 3, "--root-note", ROOT, "--velocity-curve", curve)
    spans = spans_at_notes(y, 3)
    full = y[slice(*spans[0])]
    for (a, b), v in zip(spans, velocities):
        np.testing.assert_allclose(y[a:b], v**exponent * full, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--velocity-curve", "exp:0"], "argument --velocity-curve: 'exp:0': use linear, or exp:G for gain = velocity ** G with G in (0, 10]"),
        (["--velocity-curve", "log"], "argument --velocity-curve: 'log': use linear, or exp:G"),
        (["--root-note", "H2"], "argument --root-note: 'H2' is not a note: give a MIDI number (60) or a name (C4, A#3, Bb2)"),
        (["--root-note", "200"], "argument --root-note: 200 is MIDI note 200, outside 0..127 (C-1..G9)"),
        (["--root-note", "C4", "--no-transpose"], "argument --no-transpose: not allowed with argument --root-note"),
        (["--polyphony", "0"], "--polyphony must be >= 1, got 0"),
    ],
)
@pytest.mark.parametrize("command", ["render", "play"])
def test_a_bad_note_option_is_one_line_naming_it(bundle_dir, tmp_path, capsys, args, message, command):
    if command == "render":
        code = render_main([str(bundle_dir), "-o", str(tmp_path / "x.wav"), "--seconds", "0.1", "--mode", "trigger", *args])
    else:
        code = play_main([str(bundle_dir), "--mode", "trigger", "--no-osc", "--no-realtime", "--seconds", "0.1", *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ganstream {command}: error: {message}"), err


@pytest.mark.parametrize(
    "notes, message",
    [
        (3, '"notes" must be a list of {"time", "note", "velocity"} objects'),
        ([{"time": 1, "note": 200}], "note 0: note must be a MIDI note number, a whole number in 0..127, got 200"),
        ([{"time": 1, "note": 60.5}], "note 0: note must be a MIDI note number, a whole number in 0..127, got 60.5"),
        ([{"time": 1}, {"time": 0.5}], "note 1: time 0.5 s is before the previous note's 1 s (times must not go back)"),
        ([{"time": 1, "off": True}], 'note 0: a note-off needs the "note" it releases'),
        ([{"time": 1, "note": 60, "off": True, "velocity": 1}], "note 0: a note-off has no velocity"),
        ([{"time": 1, "velocity": 2}], "note 0: velocity must be a number in [0, 1], got 2"),
        ([{"time": 1, "pitch": 3, "note": 60}], 'note 0: a pitch change holds "time" and "pitch" only'),
        ([{"time": 1, "bend": 3}], "note 0: unknown key 'bend' (known: time, note, velocity, off, pitch)"),
        ([{"note": 60}], 'note 0: needs a "time" in seconds'),
    ],
)
def test_bad_notes_are_one_clear_error(bundle_dir, tmp_path, capsys, notes, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"notes": notes}))
    assert render_main([str(bundle_dir), "-o", str(tmp_path / "x.wav"), "--seconds", "0.1", "--automation", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"ganstream render: error: {path}: {message}"


def test_notes_in_another_mode_are_ignored_with_a_warning(bundle_dir, tmp_path, capsys):
    path = notes_file(tmp_path / "n.json", [60])
    assert render_main([str(bundle_dir), "-o", str(tmp_path / "x.wav"), "--seconds", "0.2", "--mode", "crossfade",
                        "--automation", str(path), "--provider", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"ganstream render: warning: the notes of {path} play in trigger mode only (--mode trigger); crossfade mode ignores them" in err


# -- live: OSC notes, and live equals render ---------------------------------------------------------------


def test_osc_notes_play_transposed_and_a_bad_note_is_one_error_reply(bundle_dir):
    """`/ganstream/trigger velocity note` transposes its voice; old messages (no note) still play as generated;
    a note that is not a whole number is refused with one /ganstream/error reply, and nothing plays for it."""
    from test_osc import Peer

    bundle = load_bundle(bundle_dir)
    space = LatentSpace.from_bundle(bundle)
    controls = Controls(space)
    server = OscServer(controls, port=0).start()
    peer = Peer()
    peer.target = ("127.0.0.1", server.port)
    try:
        peer.send("/ganstream/trigger", 1.0, 57)
        peer.send("/ganstream/trigger", 1.0, 60.5)
        peer.send("/ganstream/trigger")
        peer.status()
        errors = [r for r in peer.drain() if r[0] == "/ganstream/error"]
    finally:
        server.stop()
        peer.close()
    assert errors == [("/ganstream/error", ["/ganstream/trigger", "the note must be a whole number, not 60.5"])]
    events = []
    while (c := controls.pop()) is not None:
        events.append(c.event)
    assert events == [NoteOn(1.0, 57), NoteOn(1.0, None)]
    chain = Chain(
        Generator(bundle, provider="cpu", threads=1), space, StreamSettings.from_bundle(bundle, mode="trigger", root_note=45.0),
        EngineSettings(sample_rate=SR), seed=0, latent=None, walk_rate=0.2, walk_depth=0.0, gain=1.0,
    )
    for i, event in enumerate(events):
        chain.apply(event, 100 + i * 10000)
    y = chain.read(20000)
    assert [b - a for a, b in voices(y)] == [SEG // 2, SEG]  # an octave up, then as generated



def test_live_output_with_transposed_notes_equals_the_render_of_its_timeline(bundle_dir, tmp_path):
    """Notes across and beyond +-24 semitones, velocities through exp:2, and knob moves that regenerate the
    sounding transposed voices: the live output is, sample for sample, the render of its timeline, both
    through render_timeline and through `ganstream render` of the automation file it converts to."""
    bundle = load_bundle(bundle_dir)
    generator = Generator(bundle, provider="cpu", threads=1, warmup_batch_sizes=(1, 2))
    space = LatentSpace.from_bundle(bundle)
    stream = StreamSettings.from_bundle(bundle, mode="trigger", polyphony=4, root_note=float(ROOT), velocity_exponent=2.0)
    engine = Engine(generator, space, stream, EngineSettings(), seed=2, walk_depth=0.3)
    c = engine.controls
    rng = np.random.default_rng(4)
    actions = [(0.02 * i, lambda: c.set_macro("pc1", float(rng.uniform(-1, 1)))) for i in range(60)]
    notes = [45, 57, 10, 100, 33, None, 69, 52, 40, 81, 58, 21]
    actions += [(0.1 * i + 0.05, lambda n=n: c.trigger(float(rng.uniform(0.2, 1)), n)) for i, n in enumerate(notes)]
    out = play(engine, 1.6, capture_s=3.0, actions=actions)
    n = min(engine.ring.read_position, len(out.captured))
    timeline = engine.timeline()
    assert (timeline.stream["root_note"], timeline.stream["velocity_exponent"]) == (45.0, 2.0)
    played = [e.event.note for e in timeline.events if isinstance(e.event, NoteOn)]
    assert played == notes
    offline = render_timeline(generator, space, Timeline.from_dict(json.loads(json.dumps(timeline.to_dict()))), n)
    assert_live_equals_render(out, offline)
    assert np.abs(offline).max() > 0.05
    assert engine.chain.stream.regenerations > 0  # the knob moves reached transposed voices

    auto = tmp_path / "auto.json"
    auto.write_text(json.dumps(automation_from_timeline(timeline)))
    assert len(json.loads(auto.read_text())["notes"]) == len(notes)
    wav = tmp_path / "r.wav"
    options = render_options(timeline)
    assert options[options.index("--root-note") + 1] == "45.0" and "exp:2.0" in options
    args = [str(bundle_dir), "-o", str(wav), "--seconds", repr(n / engine.settings.sample_rate), "--subtype", "float", "--provider", "cpu"]
    assert render_main([*args, "--resample-quality", "live", "--automation", str(auto), *options]) == 0
    np.testing.assert_array_equal(sf.read(wav, dtype="float32")[0], offline)


# -- export's root note ------------------------------------------------------------------------------------


def test_export_writes_the_root_note_it_is_given_or_finds(tiny_run, tmp_path, capsys):
    found = tmp_path / "found.gsb"
    assert ganstream(["export", str(tiny_run), "-o", str(found), "--controls", "0", "--mode", "trigger"]) == 0
    assert "root note: none (0 of 32 clips have a clear pitch); hosts play notes untransposed unless given --root-note" in capsys.readouterr().out
    assert "root_note" not in read_manifest(found)["streaming"]  # a drone of a one-step GAN has no pitch

    given = tmp_path / "given.gsb"
    assert ganstream(["export", str(tiny_run), "-o", str(given), "--controls", "0", "--mode", "trigger", "--root-note", "A3"]) == 0
    assert "root note: 57 (A3), given" in capsys.readouterr().out
    bundle = load_bundle(given)
    assert bundle.streaming.root_note == 57.0 and bundle.spec.format_version == 3

    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "x.gsb"), "--root-note", "H9"]) == 2
    assert capsys.readouterr().err.strip() == "ganstream export: error: --root-note: 'H9' is not a note: give a MIDI number (60) or a name (C4, A#3, Bb2)"

    # It plays transposed from its root: the voice an octave up is the generated segment resampled by 2.
    notes, gap = [57, 69, 45], 2.2  # segments of 16384 samples: the note an octave down lasts 2.05 s
    y = render(given, tmp_path / "g.wav", notes_file(tmp_path / "g.json", notes, gap=gap), 3, "--seed", 3, gap=gap)
    n = bundle.segment
    starts = [round((0.1 + i * gap) * SR) for i in range(3)]
    raw = Generator(bundle, provider="cpu", threads=1).generate(LatentSpace.from_bundle(bundle).seed_latent(3)[None].astype(np.float32))[0]
    up = Transposer(n).transpose(raw, 12)
    mid = slice(200, n // 2 - 200)  # away from the one-shot ramps
    np.testing.assert_allclose(y[starts[1] :][mid], up[mid], atol=1e-5)
    np.testing.assert_allclose(y[starts[0] :][200 : n - 200], raw[200 : n - 200], atol=1e-6)
    assert not y[starts[1] + n // 2 : starts[2]].any() and y[starts[2] + 2 * n - 100 : starts[2] + 2 * n].any()


# -- live, from a keyboard: JACK MIDI into `ganstream play` ----------------------------------------------------


@pytest.mark.timeout(120)
def test_play_on_jack_follows_notes_from_a_jack_midi_port(jack_server, tmp_path):
    """`ganstream play` in trigger mode with a virtual JACK MIDI input; note-ons sent to it through JACK MIDI;
    a JACK client records what it plays. Each note's voice in the recording has the pitch of the root's
    voice times 2^((note - root) / 12), within 10 cents, and lasts as long as its note says."""
    rtmidi = pytest.importorskip("rtmidi")
    from test_live_jack import Recorder, free_udp_port, ordinary_priority

    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi was built without JACK support")
    bundle = make_bundle(tmp_path / "keys.gsb", segment=SEG, sample_rate=SR)
    midi_name = f"gs-keys-{free_udp_port()}"
    # python-rtmidi holds the GIL through every call into JACK, and the recorder's JACK callbacks need it: an
    # rtmidi call waiting on the server while the server waits on the recorder never returns (a hang seen once in
    # ten runs). So rtmidi opens its client and port before the recorder exists, only sends while it records, and
    # closes after it (as tests/test_condition_live.py does).
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"gs-keyboard-{os.getpid()}")
    engine = subprocess.Popen(
        [
            sys.executable, "-m", "ganstream.main", "play", str(bundle), "--provider", "cpu", "--threads", "1", "--mode", "trigger",
            "--root-note", "A2", "--no-walk", "--no-osc", "--midi-api", "jack", "--midi-virtual", midi_name,
            "--record", str(tmp_path / "timeline.json"), "--quiet", "--seconds", "60",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ordinary_priority,
    )
    notes = [57, 33, 52, 69, 40]
    rec = None
    try:
        deadline = time.monotonic() + 30
        open_engine_midi(engine, sender, midi_name, deadline)
        rec = Recorder(str(jack_server), 40.0)
        connect_recorder(engine, rec, deadline)

        def key(out, note: int) -> None:  # a key pressed for 0.1 s at velocity 100
            out.send_message([0x90, note, 100])
            time.sleep(0.1)
            out.send_message([0x80, note, 0])

        # The root, until the connection carries it (what is sent before it joins the graph is lost).
        while not rec.buf[: rec.n].any():
            assert time.monotonic() < deadline, "no note came through JACK MIDI"
            key(sender, ROOT)
            time.sleep(0.9)
        time.sleep(0.5)
        for note in notes:
            key(sender, note)
            time.sleep(0.8)
        engine.send_signal(signal.SIGINT)
        out, _ = engine.communicate(timeout=30)
    finally:
        release_midi_test(engine, rec, sender)
    assert engine.returncode == 0, out
    assert "trigger mode (notes transpose from 45, A2)" in out

    timeline = Timeline.from_dict(json.loads((tmp_path / "timeline.json").read_text()))
    played = [e.event.note for e in timeline.events if isinstance(e.event, NoteOn)]
    assert played[-len(notes) :] == notes and set(played[: -len(notes)]) == {ROOT}
    y = rec.buf[: rec.n]
    with rec.judging():
        spans = voices(y, gap=RATE // 20)
        assert len(spans) == len(played), spans
        taps = 64 * RATE // SR  # the live resampler's kernel (64 taps at the model rate) widens each voice by that much
        for (a, b), n in zip(spans, played):
            assert abs((b - a) - RATE * SEG / SR / 2 ** ((n - ROOT) / 12) - taps) < 16, (n, b - a)
        assert_follows(y, spans[-len(notes) - 1 :], [ROOT, *notes], ROOT, RATE)
