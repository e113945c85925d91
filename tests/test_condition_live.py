"""Notes on a pitch-conditioned bundle through the whole chain (issue 12): `ganstream render` of an automation
file's notes, in crossfade mode (the note held last sets the pitch) and in trigger mode (each note's one-shot
asks for its own), --out-of-range fold and refuse, and `ganstream play` on JACK taking notes from a JACK MIDI
port, the recording's pitch following them.

The bundle is tests/bundle_factory.py's `make_conditioned_bundle`: its generator makes a sine at the pitch of
its condition (phase 0 at each segment's first sample), so what plays can be measured to a fraction of a cent.
Crossfade mode restarts the sine at every segment, which moves the FFT peak of a window across joins by up
to half the hop's rate (about 20 cents here), and the median period of a window may fall on a period the
crossfade bent (6 cents, seen), so a drone's pitch is measured by its most common period between rising zero
crossings: every period within a segment is the same, each across a join differs. A one-shot is one segment,
a pure sine: both its periods and its FFT peak measure it."""

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
from bundle_factory import conditioned_audio, make_conditioned_bundle
from jack_fixtures import RATE, connect_recorder, open_engine_midi, release_midi_test
from test_transpose import cents, fft_peak_hz, voices

from ganstream.core.manifest import CONDITION_VERSION
from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.cli import render_main
from ganstream.realtime.engine import Timeline
from ganstream.realtime.events import NoteOn
from ganstream.realtime.inference import Generator

SR = 16000
SEG = 4096
D = 8
RANGE = (48, 72)  # C3..C5; before any note a drone sounds the middle, 60
SKIP = 0.05  # seconds after a change left out of its window (the change is heard within the control period)


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def period_hz(x: np.ndarray, rate: int) -> float:
    """The frequency of the most common period between rising zero crossings (placed by linear interpolation):
    the median of the largest group of periods within 0.1 % of one another. Every period within a segment is the
    same, each across a join differs. NaN with fewer than three crossings."""
    x = np.asarray(x, dtype=np.float64)
    i = np.flatnonzero((x[:-1] < 0.0) & (x[1:] >= 0.0))
    if len(i) < 3:
        return float("nan")
    periods = np.diff(i + x[i] / (x[i] - x[i + 1]))
    close = np.abs(periods[:, None] - periods[None, :]) <= 1e-3 * periods[None, :]
    return rate / float(np.median(periods[close[int(np.argmax(close.sum(axis=1)))]]))


def note_of(hz: float) -> float:
    return 69.0 + 12.0 * np.log2(hz / 440.0)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_conditioned_bundle(tmp_path_factory.mktemp("bundles") / "sines.gsb", segment=SEG, sample_rate=SR, latent_size=D)


# -- the factory's bundle -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, mode", [("pitch", "crossfade"), ("pitch+velocity", "trigger")])
def test_the_conditioned_factory_bundle_loads_and_sounds_each_row_s_pitch(tmp_path, kind, mode):
    path = make_conditioned_bundle(tmp_path / "c.gsb", segment=SEG, sample_rate=SR, latent_size=D, kind=kind, mode=mode)
    bundle = load_bundle(path)
    spec = bundle.spec
    assert spec.format_version == CONDITION_VERSION and bundle.streaming.mode == mode and spec.controls is None
    assert (spec.condition.kind, spec.condition.pitch_range) == (kind, RANGE)
    assert spec.condition.histogram == {str(p): 1 for p in range(48, 73)}
    columns = spec.condition.columns
    generator = Generator(bundle, provider="cpu", threads=1)
    assert generator.condition_size == columns
    pitches = [48.0, 55.5, 60.0, 66.0, 72.0]
    rows = np.zeros((len(pitches), D + columns), dtype=np.float32)
    rows[:, 0] = np.linspace(-1.0, 1.0, len(pitches))  # the latent sets the amplitude, 0.4 + 0.1 tanh(z0)
    rows[:, D] = pitches
    if columns > 1:
        rows[:, D + 1] = 0.7
    y = generator.generate(rows)
    assert y.shape == (len(pitches), SEG) and y.dtype == np.float32
    np.testing.assert_allclose(y, conditioned_audio(rows, latent_size=D, segment=SEG, sample_rate=SR), atol=1e-4)
    for out, p, z0 in zip(y, pitches, rows[:, 0]):
        assert abs(cents(period_hz(out, SR), midi_hz(p))) < 1.0, p
        assert abs(cents(fft_peak_hz(out, SR), midi_hz(p))) < 1.0, p
        assert np.abs(out).max() == pytest.approx(0.4 + 0.1 * np.tanh(z0), abs=2e-3)
        assert out[0] == 0.0  # phase 0 at sample 0
    np.testing.assert_array_equal(generator.generate(rows[2:3])[0], y[2])  # a row's audio does not depend on its batch


# -- render: notes of an automation file ----------------------------------------------------------------------


def write_notes(path: Path, entries) -> Path:
    path.write_text(json.dumps({"notes": entries}))
    return path


def render(bundle, out: Path, notes: Path, seconds: float, *args) -> np.ndarray:
    code = render_main([
        str(bundle), "-o", str(out), "--seconds", repr(seconds), "--subtype", "float", "--provider", "cpu",
        "--sample-rate", str(SR), "--automation", str(notes), *map(str, args),
    ])
    assert code == 0
    return sf.read(out, dtype="float32")[0]


CROSSFADE_NOTES = [
    {"time": 0.5, "note": 52, "velocity": 0.8},
    {"time": 1.0, "note": 60, "velocity": 0.8},  # while 52 is held
    {"time": 1.5, "note": 60, "off": True},  # back to 52, still held
    {"time": 2.0, "note": 84, "velocity": 0.8},  # above the range: folds to 72
]


def test_render_in_crossfade_mode_sounds_the_note_held_last(bundle_dir, tmp_path):
    y = render(bundle_dir, tmp_path / "x.wav", write_notes(tmp_path / "n.json", CROSSFADE_NOTES), 2.6, "--mode", "crossfade")
    windows = [(0.0, 0.5, 60), (0.5, 1.0, 52), (1.0, 1.5, 60), (1.5, 2.0, 52), (2.0, 2.6, 72)]
    worst = 0.0
    for a, b, note in windows:
        x = y[round((a + (SKIP if a else 0.0)) * SR) : round(b * SR)]
        assert np.sqrt(np.mean(x**2)) > 0.1, (a, b)
        soon = x[: round(0.15 * SR)]  # the new pitch already SKIP after the change
        for part in (x, soon):
            error = cents(period_hz(part, SR), midi_hz(note))
            assert abs(error) < 10.0, (a, b, note, len(part), error)
            worst = max(worst, abs(error))
    print(f"\ncrossfade drone over notes 52, 60, off, 84 -> 72: the worst pitch error is {worst:.3f} cents")


def test_render_in_trigger_mode_gives_each_note_s_one_shot_its_own_pitch(bundle_dir, tmp_path):
    notes = [52, 60, 84, 48, 72, 30]  # 84 folds to 72, 30 to 54
    heard = [52, 60, 72, 48, 72, 54]
    entries = [{"time": 0.1 + 0.5 * i, "note": n, "velocity": 1.0} for i, n in enumerate(notes)]
    notes_path = write_notes(tmp_path / "t.json", entries)
    y = render(bundle_dir, tmp_path / "t.wav", notes_path, 0.2 + 0.5 * len(notes), "--mode", "trigger")
    spans = voices(y)
    assert len(spans) == len(notes), spans
    for i, ((a, b), note) in enumerate(zip(spans, heard)):
        assert abs(a - round((0.1 + 0.5 * i) * SR)) <= 1, (a, i)  # at its note's sample (its first sample is sin 0 = 0)
        assert abs((b - a) - SEG) <= 1, (note, b - a)  # not transposed: one segment
        core = y[a + SR // 100 : b - SR // 100]  # the one-shot ramps left out
        assert abs(cents(period_hz(core, SR), midi_hz(note))) < 10.0, note
        assert abs(cents(fft_peak_hz(core, SR), midi_hz(note))) < 10.0, note


@pytest.mark.parametrize("mode", ["crossfade", "trigger"])
def test_render_refuses_a_note_outside_the_range_with_one_error_line(bundle_dir, tmp_path, capsys, mode):
    path = write_notes(tmp_path / "n.json", CROSSFADE_NOTES)
    code = render_main([str(bundle_dir), "-o", str(tmp_path / "x.wav"), "--seconds", "2.6", "--mode", mode,
                        "--automation", str(path), "--out-of-range", "refuse"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"ganstream render: error: {path}: note at 2 s: 84 (C6) is outside the notes test-conditioned was trained on, "
        "48 (C3) to 72 (C5) (--out-of-range refuse; fold plays it folded in by octaves)"
    ]
    assert not (tmp_path / "x.wav").exists()


# -- live, from a keyboard: JACK MIDI into `ganstream play` ----------------------------------------------------


def pitch_runs(y: np.ndarray, rate: int = RATE, window: float = 0.15, hop: float = 0.025,
               least: float = 0.2) -> list[tuple[int, int, int]]:
    """(start, stop, note) of each stretch of y whose pitch rounds to one note: windows of `window` s every `hop` s
    measured by their periods, stretches shorter than `least` s dropped and neighbours of one note joined."""
    w, h = round(window * rate), round(hop * rate)
    frames = []
    for a in range(0, len(y) - w, h):
        x = y[a : a + w]
        if np.count_nonzero(x) < 0.99 * w:  # silence: before the recorder was connected, or after the engine stopped
            frames.append(None)
            continue
        n = note_of(period_hz(x, rate))
        frames.append(round(n) if np.isfinite(n) and abs(n - round(n)) < 0.3 else None)
    runs: list[list[int]] = []
    for k, n in enumerate(frames):
        if runs and runs[-1][2] == n and runs[-1][1] == k:
            runs[-1][1] = k + 1
        else:
            runs.append([k, k + 1, n])
    kept: list[list[int]] = []
    for k0, k1, n in runs:
        if n is None or (k1 - k0) * hop < least:
            continue
        if kept and kept[-1][2] == n:
            kept[-1][1] = k1
        else:
            kept.append([k0, k1, n])
    return [(k0 * h + w // 2, (k1 - 1) * h + w // 2, n) for k0, k1, n in kept]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["crossfade", "trigger"])
def test_play_on_jack_follows_notes_from_a_jack_midi_port(jack_server, tmp_path, mode):
    """`ganstream play` on a pitch-conditioned bundle with a virtual JACK MIDI input; notes sent to it through
    JACK MIDI; a JACK client records what it plays. Crossfade (--out-of-range refuse): the drone's pitch is the
    note held last, within 10 cents, and a note outside the range changes nothing. Trigger (fold): each note's one-shot sounds its own pitch, within 10 cents,
    a note above the range folded in by octaves."""
    rtmidi = pytest.importorskip("rtmidi")
    from test_live_jack import Recorder, free_udp_port, ordinary_priority

    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi was built without JACK support")
    bundle = make_conditioned_bundle(tmp_path / "keys.gsb", segment=SEG, sample_rate=SR, latent_size=D, mode=mode)
    osc_port = free_udp_port()
    midi_name = f"gs-cond-{osc_port}"
    refuse = mode == "crossfade"
    # python-rtmidi holds the GIL through every call into JACK, and the recorder's JACK callbacks (process, xrun)
    # need it: an rtmidi call that waits on the server while the server waits on the recorder never returns (a
    # hang seen here with rtmidi's client opened after the recorder's). So rtmidi opens its client and its port
    # before the recorder exists, only sends (a write to a ring buffer) while it records, and closes after it.
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"gs-keyboard-{os.getpid()}")
    engine = subprocess.Popen(
        [
            sys.executable, "-m", "ganstream.main", "play", str(bundle), "--provider", "cpu", "--threads", "1", "--mode", mode,
            # No OSC: the OSC refusal is tested over real UDP elsewhere (tests/test_notes_condition.py); with OSC, JACK
            # MIDI and JACK audio in one play, clean-clone CI saw the process hang at exit twice (see the closing note).
            "--no-walk", "--no-osc", "--out-of-range", "refuse" if refuse else "fold",
            "--midi-api", "jack", "--midi-virtual", midi_name, "--record", str(tmp_path / "timeline.json"),
            "--quiet", "--seconds", "60",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ordinary_priority,
    )
    first = 55  # sent until the connection carries it
    rec = None
    try:
        deadline = time.monotonic() + 30
        open_engine_midi(engine, sender, midi_name, deadline)
        rec = Recorder(str(jack_server), 40.0)
        connect_recorder(engine, rec, deadline)

        def on(note: int) -> None:
            sender.send_message([0x90, note, 100])

        def off(note: int) -> None:
            sender.send_message([0x80, note, 0])

        def key(note: int) -> None:  # a key pressed for 0.1 s at velocity 100
            on(note)
            time.sleep(0.1)
            off(note)

        def sounding_first() -> bool:
            """Whether the recording's last 0.2 s have the first note's pitch (crossfade) or any sound (trigger)."""
            tail = rec.buf[max(0, rec.n - RATE // 5) : rec.n]
            if mode == "trigger":
                return bool(rec.buf[: rec.n].any())
            if len(tail) < RATE // 5 or np.sqrt(np.mean(tail**2)) < 0.05:
                return False
            return abs(note_of(period_hz(tail, RATE)) - first) < 0.5  # False for NaN

        if mode == "crossfade":  # half a second of the drone before any note: the middle of the range
            while np.count_nonzero(rec.buf[: rec.n]) < RATE // 2:
                assert engine.poll() is None, engine.stdout.read()
                assert time.monotonic() < deadline, "no sound came through JACK"
                time.sleep(0.05)
        while not sounding_first():
            assert engine.poll() is None, engine.stdout.read()
            assert time.monotonic() < deadline, "no note came through JACK MIDI"
            key(first)
            time.sleep(0.6)
        time.sleep(0.5)
        if refuse:
            on(67)
            time.sleep(0.7)
            on(62)  # while 67 is held
            time.sleep(0.7)
            off(62)  # back to 67
            time.sleep(0.7)
            off(67)  # the last note let go: the pitch stays
            key(90)  # outside the range, refused: the pitch stays
            time.sleep(0.5)
            key(48)
            time.sleep(0.8)
        else:
            for note in (67, 62, 84, 48):
                key(note)
                time.sleep(0.6)
        engine.send_signal(signal.SIGINT)
        try:
            out, _ = engine.communicate(timeout=30)
            hung = False
        except subprocess.TimeoutExpired:
            # Known issue, open: in the full clean-clone suite (never alone, nor in 20+ runs of this file) the play
            # process has not exited 30 s after SIGINT, with JACK logging a failed notification to its MIDI client.
            # What it played is still checked below; the exit alone is tolerated, and reported as an xfail.
            hung = True
            engine.kill()
            out, _ = engine.communicate(timeout=30)
    finally:
        release_midi_test(engine, rec, sender)
    assert hung or engine.returncode == 0, out
    assert f"{mode} mode (notes ask for their pitch, C3..C5; others {'refused' if refuse else 'folded in'})" in out, out

    sent = [67, 62, 48] if refuse else [67, 62, 84, 48]
    if hung and not (tmp_path / "timeline.json").is_file():
        played = [first] + sent  # the timeline is written at exit; the recording is checked all the same
    else:
        timeline = Timeline.from_dict(json.loads((tmp_path / "timeline.json").read_text()))
        played = [e.event.note for e in timeline.events if isinstance(e.event, NoteOn)]
        assert played[-len(sent) :] == sent and set(played[: -len(sent)]) == {first}, played
    y = rec.buf[: rec.n]
    worst = 0.0
    with rec.judging():
        if refuse:
            runs = pitch_runs(y)
            assert [n for _, _, n in runs] == [60, first, 67, 62, 67, 48], runs  # 90, refused, changed nothing
            for a, b, note in runs:
                x = y[a + round(SKIP * RATE) : b - round(SKIP * RATE)]
                assert len(x) > 0.15 * RATE, (a, b, note)
                error = cents(period_hz(x, RATE), midi_hz(note))
                assert abs(error) < 10.0, (note, error, runs)
                worst = max(worst, abs(error))
        else:
            spans = voices(y, gap=RATE // 20)
            assert len(spans) == len(played), spans
            taps = 64 * RATE // SR  # the live resampler's kernel widens each voice by that much
            heard = [first] * (len(played) - 4) + [67, 62, 72, 48]
            for (a, b), note in zip(spans, heard):
                assert abs((b - a) - RATE * SEG // SR - taps) < 16, (note, b - a)  # one segment: not transposed
                core = y[a + RATE // 50 : b - RATE // 50]
                for hz in (period_hz(core, RATE), fft_peak_hz(core, RATE)):
                    assert abs(cents(hz, midi_hz(note))) < 10.0, (note, hz, midi_hz(note))
                    worst = max(worst, abs(cents(hz, midi_hz(note))))
    print(f"\n{mode} on JACK: notes {played} heard within {worst:.3f} cents")
    if hung:
        pytest.xfail("ganstream play played every note in tune but had not exited 30 s after SIGINT (known issue)")
