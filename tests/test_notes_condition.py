"""Pitch-conditioned generators and kits, end to end without a bundle: the streaming core
(realtime/stream.py), the controls (control.py), OSC (osc.py), events and timelines (events.py, engine.py),
automation files (automation.py), the CLI's note settings (cli.py), core/pitch.py `fold_note` and the
manifest's `condition` (core/manifest.py).

The generator is a numpy fake, `ToneFake`, whose every row becomes a tone, so what a voice asked for can be
heard: conditioned (condition_size 1 or 2), a sine at the pitch column's frequency with the velocity column's
amplitude (0.5 for pitch only); unconditioned, a sine whose frequency the latent's first value sets. The
latent also sets the phase and the weight of an octave partial. Each row is computed on its own (elementwise),
so a row's audio never depends on the batch it came in, and `tone(rows)` is what the stream was given."""

from __future__ import annotations

import argparse
import json
import math
import queue
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import ThreadingOSCUDPServer
from test_engine import play as run_engine

from ganstream.core.manifest import CONDITION_VERSION, BundleError, Condition, lowest_version
from ganstream.core.pitch import fold_note
from ganstream.realtime import cli
from ganstream.realtime import events as ev
from ganstream.realtime.automation import AutomationError, load_automation
from ganstream.realtime.control import ControlError, Controls
from ganstream.realtime.engine import (
    Engine,
    EngineSettings,
    Timeline,
    automation_from_timeline,
    render_timeline,
    stream_from_json,
    stream_json,
)
from ganstream.realtime.kit import Kit, Pad
from ganstream.realtime.latents import ControlPath, LatentSpace
from ganstream.realtime.osc import OscServer
from ganstream.realtime.stream import SegmentStream, StreamSettings, Trigger

SR = 16000
N = 4096
D = 4
RANGE = (48, 72)  # the trained notes, C3..C5
SPACE = LatentSpace(D)
LATENT = np.array([0.1, 0.3, -0.2, 0.5])
X = round(0.005 * SR)  # control_crossfade_s in samples: the one-shot ramps and the control crossfade
R = round(0.02 * SR)  # control_period_s in samples


def midi_hz(p):
    return 440.0 * 2.0 ** ((np.asarray(p, dtype=np.float64) - 69.0) / 12.0)


def tone(rows, condition_size: int) -> np.ndarray:
    """(B, N) float32: what ToneFake makes of (B, D + C) rows."""
    z = np.atleast_2d(np.asarray(rows, dtype=np.float32)).astype(np.float64)
    lat = z[:, :D]
    if condition_size:
        hz = midi_hz(z[:, D])
        amp = z[:, D + 1] if condition_size > 1 else np.full(len(z), 0.5)
    else:
        hz = 100.0 * 2.0 ** (3.0 * (lat[:, 0] + 1.0))  # 100 Hz at -1 .. 6.4 kHz at 1
        amp = np.full(len(z), 0.5)
    phase = np.pi * lat[:, 1]
    octave = 0.25 * (1.0 + np.tanh(lat[:, 2]))  # below 0.5: the fundamental is the strongest partial
    w = 2.0 * np.pi * hz[:, None] * np.arange(N)[None, :] / SR
    return (amp[:, None] * (np.sin(w + phase[:, None]) + octave[:, None] * np.sin(2.0 * w)) / 1.5).astype(np.float32)


class ToneFake:
    """A generator of tones (see the module docstring); `rows` keeps every row it was given.

    bare_rows_ok: also take (B, D) rows without their condition (as a pitch-60 note at velocity 0.75).
    The real `Generator` refuses them; the engine's timing call sends them (see
    test_an_engine_builds_for_a_generator_that_refuses_rows_without_their_condition)."""

    sample_rate, segment, latent_size = SR, N, D

    def __init__(self, condition_size: int = 0, bare_rows_ok: bool = False):
        self.condition_size = condition_size
        self.bare_rows_ok = bare_rows_ok
        self.rows: list[np.ndarray] = []

    def generate(self, z):
        z = np.asarray(z)
        c = self.condition_size
        if self.bare_rows_ok and c and z.ndim == 2 and z.shape[1] == D:
            z = np.concatenate([z, np.tile(np.float32([60.0, 0.75][:c]), (len(z), 1))], axis=1)
        if z.ndim != 2 or z.shape[1] != D + c or z.dtype != np.float32:
            raise ValueError(f"z must have shape (B, {D + c}) float32, got {z.shape} {z.dtype}")
        self.rows.extend(z.copy())
        return tone(z, c)


def one_shot_env() -> np.ndarray:
    """Trigger mode's envelope: 1 with X-sample sin^2 ramps in and out."""
    k = np.arange(X, dtype=np.float64)
    ramp = (np.sin(0.5 * np.pi * (k + 0.5) / X) ** 2).astype(np.float32)
    env = np.ones(N, dtype=np.float32)
    env[:X] *= ramp
    env[N - X :] *= ramp[::-1]
    return env


def voice(row, condition_size: int, gain: float = 1.0) -> np.ndarray:
    """A one-shot voice as the stream plays it: the row's audio, its ramps, its gain."""
    out = tone(row, condition_size)[0] * one_shot_env()
    if gain != 1.0:
        out *= np.float32(gain)
    return out


def row(latent, *condition) -> np.ndarray:
    return np.concatenate([np.asarray(latent, np.float64), np.asarray(condition, np.float64)]).astype(np.float32)


def fft_peak_hz(x: np.ndarray, sr: int = SR) -> float:
    """The strongest component's frequency: Hann window, 8x zero padding, a parabola through the log peak."""
    pad = 8 * len(x)
    s = np.log(np.abs(np.fft.rfft(x * np.hanning(len(x)), pad)) + 1e-30)
    k = int(np.argmax(s[1:-1])) + 1
    a, b, c = s[k - 1], s[k], s[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / pad


def cents(a: float, b: float) -> float:
    return 1200.0 * math.log2(a / b)


def make_stream(gen, mode="trigger", triggers=(), latent=LATENT, **settings):
    s = StreamSettings(mode=mode, pitch_range=settings.pop("pitch_range", RANGE), **settings)
    path = ControlPath(SPACE, latent, sample_rate=SR)
    return SegmentStream(gen, path, s, triggers=triggers), path


def pad(note: int, x0: float, gain: float = 1.0, choke: str | None = None, name: str | None = None) -> Pad:
    """A pad whose latent's first value x0 sets the unconditioned tone's frequency."""
    z = np.array([x0, 0.2 + 0.1 * x0, -0.3, 0.0], dtype=np.float32)
    z.setflags(write=False)
    return Pad(note, name or f"pad {note}", z, gain, choke)


KIT = Kit("test kit", {
    36: pad(36, -0.5, name="kick"),  # 283 Hz
    38: pad(38, -0.15, gain=0.7, choke="snares", name="snare"),  # 546 Hz
    42: pad(42, 0.0, gain=0.5, choke="hats", name="closed hat"),  # 800 Hz
    46: pad(46, 0.3, choke="hats", name="open hat"),  # 1493 Hz
})


# -- fold_note --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "note, folded",
    [(60, 60), (48, 48), (72, 72), (90, 66), (30, 54), (47, 59), (73, 61), (0, 48), (127, 67), (84.25, 60.25), (47.5, 59.5)],
)
def test_fold_note_moves_a_note_by_octaves_into_the_range(note, folded):
    assert fold_note(note, *RANGE) == folded


def test_fold_note_clamps_what_no_octave_of_a_narrow_range_reaches():
    # (60, 67): the range test_condition's conditioned bundle is trained on. B and G# have no octave in it.
    assert fold_note(59, 60, 67) == 60 and fold_note(68, 60, 67) == 67


def test_fold_note_folds_by_octaves_into_a_narrow_range_where_an_octave_reaches():
    # The docstring: "what no octave reaches is clamped". D3 (50) has D4 (62) inside 60..67; E6 (88) has E4 (64).
    assert fold_note(50, 60, 67) == 62
    assert fold_note(88, 60, 67) == 64


# -- the stream: trigger mode ----------------------------------------------------------------------------


def test_trigger_mode_asks_each_note_for_its_own_folded_pitch_at_its_velocity():
    gen = ToneFake(2)
    triggers = [
        Trigger(1000, 0.8, 60),
        Trigger(6000, 0.5, 64),
        Trigger(11000, 1.0, 90),  # folds to 66
        Trigger(16000, 0.6, None),  # no note: the current pitch (the last held note, 90 -> 66), its own velocity
        Trigger(21000, 0.0, None, pitch=50.0),  # a pitch event: no sound
        Trigger(21500, 0.9, None),  # ... which a note-less trigger then asks for
        Trigger(26500, 0.7, 30),  # folds to 54
    ]
    stream, _ = make_stream(gen, triggers=triggers, fade_in_s=0.0)
    y = stream.read(32000)
    want = [(1000, 60, 0.8), (6000, 64, 0.5), (11000, 66, 1.0), (16000, 66, 0.6), (21500, 50, 0.9), (26500, 54, 0.7)]
    assert [(float(r[D]), round(float(r[D + 1]), 6)) for r in gen.rows] == [(p, v) for _, p, v in want]
    for r in gen.rows:
        np.testing.assert_array_equal(r[:D], LATENT.astype(np.float32))
    assert stream.segments_generated == 6
    for (t, p, v), r in zip(want, gen.rows):
        np.testing.assert_allclose(y[t : t + N], voice(r, 2, v), rtol=0, atol=2e-7)  # gain = velocity ** 1
        assert abs(cents(fft_peak_hz(y[t + X : t + N - X]), midi_hz(p))) < 3.0, (t, p)
    assert not y[21000:21500].any()  # the pitch event made no sound


def test_a_conditioned_generator_with_a_root_note_is_refused():
    for mode in ("trigger", "crossfade"):
        with pytest.raises(ValueError) as e:
            make_stream(ToneFake(1), mode=mode, root_note=60.0)
        assert str(e.value) == "a conditioned generator asks for each note's pitch: it does not transpose (root_note must be None)"
    make_stream(ToneFake(0), root_note=60.0)  # an unconditioned one transposes as before


def test_bad_pitch_events_are_refused():
    stream, _ = make_stream(ToneFake(1), mode="crossfade")
    with pytest.raises(ValueError, match=r"^pitch must be a MIDI note within \[0, 127\], got 130.0$"):
        stream.set_pitch(10, 130)
    with pytest.raises(ValueError, match=r"^pitch must be a MIDI note within \[0, 127\], got nan$"):
        stream.set_pitch(10, float("nan"))


# -- the stream: crossfade and texture follow the held notes --------------------------------------------


def constant_pitch(mode: str, pitch: float, samples: int) -> np.ndarray:
    return make_stream(ToneFake(1), mode=mode, pitch=pitch)[0].read(samples)


@pytest.mark.parametrize("mode", ["crossfade", "texture"])
def test_the_last_held_note_sets_the_drone_s_pitch_heard_within_the_control_period(mode):
    """Each change regenerates the segments in flight: from the change (or the control period after the
    last regeneration) plus the control crossfade on, the stream is the one that had the new pitch all along."""
    gen = ToneFake(1)
    triggers = [
        Trigger(5000, 1.0, 64),
        Trigger(9000, 1.0, 67),
        Trigger(13000, 0.0, 67, off=True),  # back to the note still held, 64
        Trigger(17000, 0.0, 64, off=True),  # the last note let go: the pitch stays
        Trigger(21000, 0.0, None, pitch=55.0),  # a pitch without a note
        Trigger(25000, 1.0, 90),  # folds to 66
        Trigger(25100, 1.0, 30),  # folds to 54, closer than the control period: heard at 25000 + R
        Trigger(30000, 1.0, 54),  # the same pitch again: nothing changes
    ]
    stream, _ = make_stream(gen, mode=mode, triggers=triggers)
    total = 36000
    y = stream.read(total)
    assert float(gen.rows[0][D]) == 60.0  # before any note: the middle of the range
    spans = [(0, 5000, 60), (5000 + X, 9000, 64), (9000 + X, 13000, 67), (13000 + X, 21000, 64),
             (21000 + X, 25000, 55), (25000 + X, 25000 + R, 66), (25000 + R + X, total, 54)]
    for a, b, p in spans:
        ref = constant_pitch(mode, p, total)
        np.testing.assert_array_equal(y[a:b], ref[a:b], err_msg=f"pitch {p} over [{a}, {b})")
        if b - a > 2000 and mode == "crossfade":
            # Joins restart the tone's phase, which smears the peak a little; a semitone is 100 cents. (Texture's
            # overlap-add of tones restarted every hop can cancel a fundamental: the equality above is its check.)
            assert abs(cents(fft_peak_hz(y[a + 200 : b]), midi_hz(p))) < 40.0, (a, b, p)
    # The change itself is a crossfade, not a switch: no click anywhere.
    assert np.abs(np.diff(y)).max() < 2.5 * np.abs(np.diff(constant_pitch(mode, 67, total))).max()
    assert stream.regenerations > 0


def test_texture_mode_s_first_segments_ask_for_the_first_pitch():
    gen = ToneFake(1)
    stream, _ = make_stream(gen, mode="texture", texture_overlap=4, triggers=[Trigger(20000, 1.0, 67)])
    stream.read(100)
    # Segments -3, -2, -1 and 0 (starting at -3072, -2048, -1024 and 0) sound from sample 0: all at pitch 60.
    assert [float(r[D]) for r in gen.rows] == [60.0] * 4


def test_the_velocity_condition_follows_the_held_note_and_a_pitch_event_keeps_it():
    gen = ToneFake(2)
    triggers = [Trigger(5000, 0.3, 64), Trigger(9000, 0.0, None, pitch=55.0), Trigger(13000, 0.9, 62), Trigger(17000, 0.0, 62, off=True)]
    stream, _ = make_stream(gen, mode="crossfade", triggers=triggers)
    stream.read(24000)
    conds = []
    for r in gen.rows:
        c = (float(r[D]), round(float(r[D + 1]), 6))
        if not conds or conds[-1] != c:
            conds.append(c)
    assert conds == [(60.0, 0.75), (64.0, 0.3), (55.0, 0.3), (62.0, 0.9), (64.0, 0.3)]  # 62 off: back to 64, still held


def test_the_first_pitch_can_be_set():
    gen = ToneFake(1)
    make_stream(gen, mode="crossfade", pitch=52.0)[0].read(100)
    assert float(gen.rows[0][D]) == 52.0
    gen = ToneFake(1)
    make_stream(gen, mode="crossfade", pitch_range=None)[0].read(100)
    assert float(gen.rows[0][D]) == 63.0  # no range: the middle of 0..127


@pytest.mark.parametrize("mode", ["crossfade", "texture"])
def test_notes_change_nothing_for_an_unconditioned_generator_outside_trigger_mode(mode):
    triggers = [Trigger(3000, 1.0, 64), Trigger(6000, 0.5, 30), Trigger(9000, 0.0, 64, off=True),
                Trigger(12000, 0.0, None, pitch=40.0), Trigger(15000, 0.2, None)]
    gen = ToneFake(0)
    with_notes, _ = make_stream(gen, mode=mode, triggers=triggers)
    plain, _ = make_stream(ToneFake(0), mode=mode)
    np.testing.assert_array_equal(with_notes.read(20000), plain.read(20000))
    assert with_notes.regenerations == 0 and all(r.shape == (D,) for r in gen.rows)


# -- render equals live --------------------------------------------------------------------------------------


def timeline_of_notes(mode: str, kit: bool) -> list[tuple[int, str, object]]:
    """A seeded mix of note-ons, note-offs, pitch events, latent steps and (kit) pad changes."""
    rng = np.random.default_rng(11)
    out: list[tuple[int, str, object]] = []
    held: list[int] = []
    t = 500
    notes = [36, 38, 42, 46, 50] if kit else list(range(20, 101))
    for i in range(60):
        t += int(rng.integers(40, 1400))
        r = rng.random()
        if r < 0.4:
            n = int(rng.choice(notes))
            out.append((t, "on", (float(rng.uniform(0.1, 1.0)), n)))
            held.append(n)
        elif r < 0.55 and held:
            n = held.pop(int(rng.integers(len(held))))
            out.append((t, "off", n))
        elif r < 0.7:
            out.append((t, "pitch", float(rng.uniform(30.0, 90.0))))
        elif r < 0.8:
            out.append((t, "on", (float(rng.uniform(0.1, 1.0)), None)))
        elif kit and r < 0.88:
            n = int(rng.choice([36, 42, 50]))
            old = KIT.pads.get(n)
            out.append((t, "pad", Pad(n, "new", SPACE.seed_latent(100 + i).astype(np.float32), old.gain if old else 1.0,
                                      old.choke if old else None)))
        else:
            out.append((t, "latent", SPACE.seed_latent(i)))
    return out


def apply(stream: SegmentStream, path: ControlPath, t: int, kind: str, payload) -> None:
    if kind == "on":
        stream.trigger(t, *payload)
    elif kind == "off":
        stream.note_off(t, payload)
    elif kind == "pitch":
        stream.set_pitch(t, payload)
    elif kind == "pad":
        stream.set_pad(t, payload)
    else:
        path.set_latent(t, payload)


@pytest.mark.parametrize(
    "mode, kit, condition_size",
    [("trigger", False, 2), ("crossfade", False, 2), ("texture", False, 1),
     ("trigger", True, 1), ("trigger", True, 0)],
)
def test_notes_known_up_front_and_played_live_give_the_same_samples(mode, kit, condition_size):
    events = timeline_of_notes(mode, kit)
    total = events[-1][0] + 2 * N
    settings = dict(mode=mode, note_off=True, polyphony=3, velocity_exponent=2.0, kit=KIT if kit else None)

    ahead, path = make_stream(ToneFake(condition_size), batch=4, **settings)
    for t, kind, payload in events:  # render: everything known before the first read
        apply(ahead, path, t, kind, payload)
    expected = ahead.read(total)

    live, path = make_stream(ToneFake(condition_size), batch=1, **settings)
    rng = np.random.default_rng(5)
    got = []
    for t, kind, payload in events:  # live: each event arrives when the stream has reached its sample
        while live.position < t:
            got.append(live.read(min(int(rng.integers(1, 700)), t - live.position)))
        apply(live, path, t, kind, payload)
    got.append(live.read(total - live.position))
    np.testing.assert_array_equal(np.concatenate(got), expected)
    assert np.abs(expected).max() > 0.05
    assert live.regenerations > 0 if not kit else live.segments_generated > 5


# -- kits -------------------------------------------------------------------------------------------------


def test_a_pad_plays_its_latent_at_velocity_times_its_gain_and_a_note_without_one_is_silent():
    gen = ToneFake(0)
    triggers = [Trigger(1000, 0.8, 36), Trigger(6000, 0.5, 42), Trigger(11000, 1.0, 46), Trigger(16000, 1.0, 50),
                Trigger(21000, 0.9, None), Trigger(26000, 0.6, 38)]
    stream, _ = make_stream(gen, triggers=triggers, kit=KIT, velocity_exponent=2.0, fade_in_s=0.0)
    y = stream.read(32000)
    played = [(1000, 36, 0.8), (6000, 42, 0.5), (11000, 46, 1.0), (26000, 38, 0.6)]
    assert len(gen.rows) == 5
    rows = gen.rows[:3] + gen.rows[4:]  # the fourth call is the trigger without a note
    for (t, note, v), r in zip(played, rows):
        p = KIT.pads[note]
        np.testing.assert_array_equal(r, p.latent)  # the pad's latent, not the stream's
        np.testing.assert_allclose(y[t : t + N], voice(p.latent, 0, v**2 * p.gain), rtol=0, atol=2e-7)
        assert abs(cents(fft_peak_hz(y[t + X : t + N - X]), 100.0 * 2.0 ** (3.0 * (float(p.latent[0]) + 1.0)))) < 3.0
    assert not y[16000:21000].any()  # note 50 has no pad: silent
    # A trigger without a note (an OSC /ganstream/trigger, a patch's button) plays the stream's latent, as without a kit.
    assert not any(np.array_equal(gen.rows[3], p.latent) for p in KIT.pads.values())
    np.testing.assert_allclose(y[21000 : 21000 + N], voice(gen.rows[3], 0, 0.9**2), rtol=0, atol=2e-7)


def test_a_choke_group_fades_out_its_other_pads_only():
    gen = ToneFake(0)
    triggers = [
        Trigger(1000, 1.0, 46), Trigger(2000, 1.0, 42),  # the closed hat cuts the open one
        Trigger(10000, 1.0, 46), Trigger(11000, 1.0, 46),  # a pad's own earlier voice plays on
        Trigger(20000, 1.0, 36), Trigger(21000, 1.0, 42),  # a pad outside the group plays on
        Trigger(30000, 1.0, 38), Trigger(31000, 1.0, 46),  # ... and one of another group
    ]
    stream, _ = make_stream(gen, triggers=triggers, kit=KIT, fade_in_s=0.0)
    y = stream.read(40000)
    v = {n: voice(p.latent, 0, p.gain) for n, p in KIT.pads.items()}
    open_hat, closed = v[46], v[42]
    np.testing.assert_allclose(y[1000:2000], open_hat[:1000], atol=2e-7)
    assert np.abs(y[2000 : 2000 + X] - closed[:X]).max() > 0.01  # fading out ...
    np.testing.assert_allclose(y[2000 + X : 2000 + N], closed[X:], atol=2e-7)  # ... and gone after the crossfade
    np.testing.assert_allclose(y[11000 : 10000 + N], open_hat[1000:] + open_hat[: N - 1000], atol=4e-7)
    np.testing.assert_allclose(y[21000 : 20000 + N], v[36][1000:] + closed[: N - 1000], atol=4e-7)
    np.testing.assert_allclose(y[31000 : 30000 + N], v[38][1000:] + open_hat[: N - 1000], atol=4e-7)
    assert stream.stolen == 0


def test_a_latent_step_does_not_regenerate_a_pad_s_voice():
    def run(kit):
        gen = ToneFake(0)
        stream, path = make_stream(gen, triggers=[Trigger(1000, 1.0, 36)], kit=kit, fade_in_s=0.0)
        y = stream.read(2000)
        path.set_latent(2000, SPACE.seed_latent(3))
        y = np.concatenate([y, stream.read(6000)])
        return y, stream

    y, stream = run(KIT)
    np.testing.assert_allclose(y[1000 : 1000 + N], voice(KIT.pads[36].latent, 0), atol=2e-7)
    assert stream.regenerations == 0
    y, stream = run(None)  # without a kit the same step regenerates the voice
    assert stream.regenerations >= 1 and np.abs(y[2000 + X : 1000 + N] - voice(LATENT, 0)[1000 + X : N]).max() > 0.05


def test_set_pad_changes_a_pad_from_its_sample_on():
    gen = ToneFake(0)
    new = pad(36, 0.6, name="new kick")
    extra = pad(50, -0.8, name="new tom")
    stream, _ = make_stream(gen, triggers=[Trigger(1000, 1.0, 36), Trigger(3000, 1.0, 50)], kit=KIT, fade_in_s=0.0)
    y = [stream.read(4000)]
    stream.set_pad(4000, new)
    stream.set_pad(4000, extra)  # a note without a pad gets one
    stream.trigger(6000, 1.0, 36)
    stream.trigger(12000, 1.0, 50)
    y = np.concatenate(y + [stream.read(20000 - 4000)])
    np.testing.assert_allclose(y[1000 : 1000 + N], voice(KIT.pads[36].latent, 0), atol=2e-7)  # played on, unchanged
    assert not y[1000 + N : 6000].any()  # note 50 had no pad at 3000
    np.testing.assert_allclose(y[6000 : 6000 + N], voice(new.latent, 0), atol=2e-7)
    np.testing.assert_allclose(y[12000 : 12000 + N], voice(extra.latent, 0), atol=2e-7)
    with pytest.raises(ValueError) as e:
        stream.add_trigger(Trigger(20000, 0.0, 37, pad=new))
    assert str(e.value) == "a pad change names note 37 but the pad is note 36"


def test_a_kit_on_a_conditioned_generator_asks_for_the_pad_s_note():
    gen = ToneFake(1)
    stream, _ = make_stream(gen, triggers=[Trigger(1000, 1.0, 36), Trigger(6000, 1.0, 46)], kit=KIT)
    stream.read(12000)
    assert [float(r[D]) for r in gen.rows] == [fold_note(36, *RANGE), 58.0]  # 36 -> 48, 46 -> 58
    np.testing.assert_array_equal(gen.rows[1][:D], KIT.pads[46].latent)


# -- the controls -------------------------------------------------------------------------------------------


def pushed(c: Controls) -> list:
    out = []
    while (cmd := c.pop()) is not None:
        out.append(cmd.event)
    return out


def trained_controls(refuse: bool, kit: Kit | None = None) -> Controls:
    c = Controls(SPACE, seed=4)
    c.pitch_range, c.refuse_out_of_range, c.kit = RANGE, refuse, kit
    return c


OUTSIDE = [
    (lambda c: c.trigger(1.0, 90), "note 90 (F#6): outside the notes this bundle was trained on, 48 (C3) to 72 (C5); "
                                   "--out-of-range fold folds it in by octaves"),
    (lambda c: c.note(47, 0.5), "note 47 (B2): outside the notes this bundle was trained on, 48 (C3) to 72 (C5); "
                                "--out-of-range fold folds it in by octaves"),
    (lambda c: c.set_pitch(30), "pitch 30 (F#1): outside the notes this bundle was trained on, 48 (C3) to 72 (C5); "
                                "--out-of-range fold folds it in by octaves"),
    (lambda c: c.set_pitch(72.5), "pitch 72.5 (C5 +50 cents): outside the notes this bundle was trained on, 48 (C3) to 72 (C5); "
                                  "--out-of-range fold folds it in by octaves"),
]


@pytest.mark.parametrize("call, message", OUTSIDE)
def test_out_of_range_notes_are_refused_naming_the_note_and_the_range(call, message):
    c = trained_controls(refuse=True)
    with pytest.raises(ControlError) as e:
        call(c)
    assert str(e.value) == message
    assert pushed(c) == [] and c.rejected == 1


def test_out_of_range_notes_are_pushed_when_folding():
    c = trained_controls(refuse=False)
    c.trigger(1.0, 90)
    c.note(47, 0.5)
    c.set_pitch(30)
    assert pushed(c) == [ev.NoteOn(1.0, 90), ev.NoteOn(0.5, 47), ev.PitchChange(30.0)]
    c = trained_controls(refuse=True)  # inside the range, and the edges, pass
    c.trigger(1.0, 48)
    c.set_pitch(72)
    c.trigger(0.5)  # a note-less trigger has nothing to check
    c.note_off(90)  # nor has a note-off
    assert pushed(c) == [ev.NoteOn(1.0, 48), ev.PitchChange(72.0), ev.NoteOn(0.5, None), ev.NoteOff(90)]
    c = Controls(SPACE)  # no trained range (an unconditioned bundle): nothing is refused
    c.refuse_out_of_range = True
    c.trigger(1.0, 90)
    assert pushed(c) == [ev.NoteOn(1.0, 90)]


def test_note_is_a_keyboard_s_note_on_and_velocity_0_its_note_off():
    c = Controls(SPACE)
    c.note(60, 0.5)
    c.note(60, 0)
    c.note(61)
    assert pushed(c) == [ev.NoteOn(0.5, 60), ev.NoteOff(60), ev.NoteOn(1.0, 61)]
    with pytest.raises(ControlError, match=r"^velocity: 1.5 is out of range \[0, 1\]$"):
        c.note(60, 1.5)
    with pytest.raises(ControlError, match=r"^pitch: this bundle is not pitch-conditioned \(notes transpose it, in trigger mode\)$"):
        c.set_pitch(60)  # nothing would hear it
    assert pushed(c) == []
    c.pitch_range = (36, 96)
    with pytest.raises(ControlError, match=r"^pitch: 130 is out of range \[0, 127\]$"):
        c.set_pitch(130)
    c.set_pitch(61.5)
    assert pushed(c) == [ev.PitchChange(61.5)]


def test_set_pad_without_a_kit_is_refused():
    c = Controls(SPACE)
    with pytest.raises(ControlError) as e:
        c.set_pad(36, 7)
    assert str(e.value) == "pad: this session has no kit (play a kit with --kit FILE, or a bundle that ships one, in trigger mode)"
    assert pushed(c) == [] and c.rejected == 1


def test_set_pad_keeps_the_old_pad_s_name_gain_and_choke():
    c = trained_controls(refuse=False, kit=KIT)
    c.set_pad(42, 7)
    c.set_pad(50)  # a note without a pad: the current latent, the General MIDI name, gain 1, no group
    assert pushed(c) == [
        ev.PadChange(42, "closed hat", SPACE.seed_latent(7), 0.5, "hats"),
        ev.PadChange(50, "high tom", SPACE.seed_latent(4), 1.0, None),
    ]
    with pytest.raises(ControlError, match=r"^note: 128 is out of range \[0, 127\]$"):
        c.set_pad(128, 1)
    with pytest.raises(ControlError, match=r"^seed: -1 is out of range"):
        c.set_pad(36, -1)


# -- the engine: out_of_range, and who hears notes ------------------------------------------------------------


def test_engine_out_of_range_sets_up_the_controls():
    with pytest.raises(ValueError) as e:
        Engine(ToneFake(0), SPACE, StreamSettings(), out_of_range="clamp")
    assert str(e.value) == "out_of_range: one of fold, refuse, not 'clamp'"
    stream = StreamSettings(mode="crossfade", pitch_range=RANGE)
    engine = Engine(ToneFake(1, bare_rows_ok=True), SPACE, stream, out_of_range="refuse", record=False)
    assert engine.controls.pitch_range == RANGE and engine.controls.refuse_out_of_range and engine.controls.kit is None
    assert engine._plays(ev.NoteOn(1.0, 60)) and engine._plays(ev.NoteOff(60))  # a conditioned drone hears notes
    engine = Engine(ToneFake(0), SPACE, stream, record=False)  # unconditioned: no range to refuse by
    assert engine.controls.pitch_range is None and not engine.controls.refuse_out_of_range
    assert not engine._plays(ev.NoteOn(1.0, 60)) and engine._plays(ev.PitchChange(60.0))
    engine = Engine(ToneFake(0), SPACE, StreamSettings(mode="trigger", kit=KIT), record=False)
    assert engine.controls.kit is KIT


def test_an_engine_builds_for_a_generator_that_refuses_rows_without_their_condition():
    Engine(ToneFake(2), SPACE, StreamSettings(mode="crossfade", pitch_range=RANGE), record=False)


def play(engine: Engine, seconds: float, actions) -> np.ndarray:
    """Run the engine on a NullOutput (test_engine.play), calling each (time, fn) on the way; what the output took."""
    out = run_engine(engine, seconds, capture_s=seconds + 1.0, actions=actions)
    return out.captured[: min(engine.ring.read_position, len(out.captured))]


@pytest.mark.parametrize("mode", ["crossfade", "trigger"])
def test_a_conditioned_live_session_equals_the_render_of_its_timeline(mode):
    """Notes (folded), note-offs, pitch events and seed changes into the engine; the timeline, through JSON,
    renders to the same samples; its automation file holds the pitch events."""
    stream = StreamSettings(mode=mode, pitch_range=RANGE, polyphony=4)
    gen = ToneFake(2, bare_rows_ok=True)
    engine = Engine(gen, SPACE, stream, EngineSettings(realtime_priority=False), seed=3)
    c = engine.controls
    actions = [(0.05 + 0.08 * i, lambda n=n: c.note(n, 0.4 + 0.05 * (n % 10))) for i, n in enumerate([60, 64, 90, 30, 67])]
    actions += [(0.5, lambda: c.note(64, 0)), (0.55, lambda: c.set_pitch(57.5)), (0.6, lambda: c.set_seed(9)),
                (0.65, lambda: c.trigger(0.9)), (0.7, lambda: c.note(67, 0)), (0.75, lambda: c.note(71, 1.0))]
    y = play(engine, 1.0, actions)
    assert len(y) > 0.8 * engine.settings.sample_rate
    timeline = engine.timeline()
    kinds = [e.event.kind for e in timeline.events]
    assert kinds.count("trigger") == 7 and kinds.count("note_off") == 2 and kinds.count("pitch") == 1
    assert timeline.stream["pitch_range"] == [48, 72] and timeline.stream["kit"] is None
    asked = {float(r[D]) for r in gen.rows}
    assert {60.0, 64.0, 66.0, 54.0, 67.0, 57.5, 71.0} <= asked and not asked - set(np.arange(48.0, 72.5, 0.5))
    again = Timeline.from_dict(json.loads(json.dumps(timeline.to_dict())))
    offline = render_timeline(ToneFake(2), SPACE, again, len(y))
    np.testing.assert_array_equal(y, offline)
    assert np.abs(offline).max() > 0.05
    notes = automation_from_timeline(timeline)["notes"]
    assert {"time": timeline.events[kinds.index("pitch")].sample / SR, "pitch": 57.5} in notes


# -- OSC ----------------------------------------------------------------------------------------------------


class Peer:
    """The test's side of OSC: a python-osc UDP server that also sends from its own socket, so replies come back."""

    def __init__(self, target: tuple[str, int]):
        self.replies: queue.Queue = queue.Queue()
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.replies.put((address, list(args))))
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), d)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.target = target

    def send(self, address: str, *args) -> None:
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        self.server.socket.sendto(b.build().dgram, self.target)

    def reply(self, address: str, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got[0] == address:
                return got[1]
        raise AssertionError(f"no reply on {address} within {timeout} s")

    def sync(self) -> None:
        """Every message sent before has been handled once the status reply is here."""
        self.send("/ganstream/status")
        self.reply("/ganstream/status")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def osc():
    controls = trained_controls(refuse=True, kit=KIT)
    server = OscServer(controls, port=0).start()
    peer = Peer(("127.0.0.1", server.port))
    yield controls, peer
    peer.close()
    server.stop()


def test_osc_note_pitch_and_pad(osc):
    controls, peer = osc
    peer.send("/ganstream/note", 60, 0.5)
    peer.send("/ganstream/note", 60, 0)
    peer.send("/ganstream/note", 62.0)  # Pure Data's floats; velocity 1
    peer.send("/ganstream/pitch", 61.5)
    peer.send("/ganstream/pad", 36, 7)
    peer.send("/ganstream/pad", 46)  # the current latent
    peer.sync()
    assert pushed(controls) == [
        ev.NoteOn(0.5, 60), ev.NoteOff(60), ev.NoteOn(1.0, 62), ev.PitchChange(61.5),
        ev.PadChange(36, "kick", SPACE.seed_latent(7), 1.0, None),
        ev.PadChange(46, "open hat", SPACE.seed_latent(4), 1.0, "hats"),
    ]


@pytest.mark.parametrize(
    "address, args, reason",
    [
        ("/ganstream/pitch", (30,), "pitch 30 (F#1): outside the notes this bundle was trained on, 48 (C3) to 72 (C5); "
                                   "--out-of-range fold folds it in by octaves"),
        ("/ganstream/note", (90, 0.5), "note 90 (F#6): outside the notes this bundle was trained on, 48 (C3) to 72 (C5); "
                                      "--out-of-range fold folds it in by octaves"),
        ("/ganstream/note", (60.5, 0.5), "the note must be a whole number, not 60.5"),
        ("/ganstream/note", (), "/ganstream/note takes a note, or a note and a velocity (0..1; 0 releases it), got 0 arguments"),
        ("/ganstream/pitch", (60, 1), "/ganstream/pitch takes 1 number (the pitch, a MIDI note; fractions allowed), got 2 arguments"),
        ("/ganstream/pad", (36, 1.5), "the seed must be a whole number, not 1.5"),
    ],
)
def test_osc_refusals_are_one_error_reply_and_push_nothing(osc, address, args, reason):
    controls, peer = osc
    peer.send(address, *args)
    assert peer.reply("/ganstream/error") == [address, reason]
    peer.sync()
    assert pushed(controls) == []


def test_osc_pad_without_a_kit_is_refused():
    controls = Controls(SPACE)
    server = OscServer(controls, port=0).start()
    peer = Peer(("127.0.0.1", server.port))
    try:
        peer.send("/ganstream/pad", 36, 7)
        assert peer.reply("/ganstream/error") == [
            "/ganstream/pad", "pad: this session has no kit (play a kit with --kit FILE, or a bundle that ships one, in trigger mode)"]
    finally:
        peer.close()
        server.stop()


# -- events, timelines and automation files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "event, fields",
    [
        (ev.PitchChange(61.5), {"kind": "pitch", "pitch": 61.5}),
        (ev.PadChange(36, "kick", np.array([0.5, -0.25, 1e-3, 7.0]), 0.8, None),
         {"kind": "pad", "note": 36, "name": "kick", "latent": [0.5, -0.25, 1e-3, 7.0], "gain": 0.8, "choke": None}),
        (ev.PadChange(42, "hat", SPACE.seed_latent(3), 1.0, "hats"),
         {"kind": "pad", "note": 42, "name": "hat", "latent": SPACE.seed_latent(3).tolist(), "gain": 1.0, "choke": "hats"}),
    ],
)
def test_pitch_and_pad_events_round_trip_through_json(event, fields):
    d = ev.stamped_to_json(ev.Stamped(1234, event), SR)
    assert d == {"sample": 1234, **fields}
    back = ev.stamped_from_json(json.loads(json.dumps(d)), SR)
    assert back == ev.Stamped(1234, event)
    assert back.event != ev.PadChange(36, "kick", np.zeros(4)) and ev.PitchChange(61.0) != event


def test_automation_notes_take_pitch_changes(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"notes": [{"time": 0.1, "pitch": 61.5}, {"time": 0.2, "note": 60}, {"time": 0.3, "pitch": 0}]}))
    a = load_automation(path, SPACE, SR)
    assert a.notes == [Trigger(1600, 0.0, None, pitch=61.5), Trigger(3200, 1.0, 60), Trigger(4800, 0.0, None, pitch=0.0)]
    assert not a.notes[0].sounds and a.notes[1].sounds


@pytest.mark.parametrize(
    "note, problem",
    [
        ({"time": 1, "pitch": 130}, "pitch must be a MIDI note number in [0, 127] (fractions allowed), got 130"),
        ({"time": 1, "pitch": -0.5}, "pitch must be a MIDI note number in [0, 127] (fractions allowed), got -0.5"),
        ({"time": 1, "pitch": True}, "pitch must be a MIDI note number in [0, 127] (fractions allowed), got True"),
        ({"time": 1, "pitch": "C4"}, "pitch must be a MIDI note number in [0, 127] (fractions allowed), got 'C4'"),
        ({"time": 1, "pitch": None}, "pitch must be a MIDI note number in [0, 127] (fractions allowed), got None"),
        ({"time": 1, "pitch": 60, "velocity": 1}, 'a pitch change holds "time" and "pitch" only'),
        ({"time": 1, "pitch": 60, "note": 60}, 'a pitch change holds "time" and "pitch" only'),
        ({"pitch": 60}, 'needs a "time" in seconds'),
        ({"time": 1, "tone": 60}, "unknown key 'tone' (known: time, note, velocity, off, pitch)"),
    ],
)
def test_a_bad_pitch_change_is_one_automation_error(tmp_path, note, problem):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"notes": [{"time": 0.5, "note": 60}, note]}))
    with pytest.raises(AutomationError) as e:
        load_automation(path, SPACE, SR)
    assert str(e.value) == f"{path}: note 1: {problem}"


def test_stream_settings_with_a_kit_round_trip_through_a_timeline_s_json():
    s = StreamSettings(mode="trigger", kit=KIT, pitch_range=RANGE, pitch=50.0, velocity_exponent=2.0, polyphony=3)
    d = json.loads(json.dumps(stream_json(s)))
    assert d["pitch_range"] == [48, 72] and sorted(d["kit"]["pads"]) == ["36", "38", "42", "46"]
    assert d["kit"]["pads"]["42"] == {"name": "closed hat", "latent": [float(v) for v in KIT.pads[42].latent], "gain": 0.5, "choke": "hats"}
    back = stream_from_json(d, SPACE)
    assert {f: getattr(back, f) for f in ("mode", "pitch_range", "pitch", "velocity_exponent", "polyphony")} == {
        "mode": "trigger", "pitch_range": RANGE, "pitch": 50.0, "velocity_exponent": 2.0, "polyphony": 3}
    assert back.kit.name == "test kit" and sorted(back.kit.pads) == sorted(KIT.pads)
    for n, p in KIT.pads.items():
        q = back.kit.pads[n]
        assert (q.note, q.name, q.gain, q.choke) == (p.note, p.name, p.gain, p.choke)
        np.testing.assert_array_equal(q.latent, p.latent)
        assert q.latent.dtype == np.float32
    plain = stream_from_json(json.loads(json.dumps(stream_json(StreamSettings()))), SPACE)
    assert plain == StreamSettings()
    old = {k: v for k, v in stream_json(StreamSettings(mode="texture")).items() if k not in ("kit", "pitch_range", "pitch")}
    assert stream_from_json(old, SPACE) == StreamSettings(mode="texture")  # a timeline from before kits


# -- the CLI's note settings -----------------------------------------------------------------------------------


def note_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ganstream play", exit_on_error=False)
    cli._note_options(p)
    return p.parse_args(list(argv))


def fake_bundle(tmp_path, condition: Condition | None = None, kit: str | None = None, root: float | None = None):
    return SimpleNamespace(name="fake", path=tmp_path, spec=SimpleNamespace(condition=condition),
                           streaming=SimpleNamespace(kit=kit, root_note=root))


KIT_YAML = "name: two pads\npads:\n  36: {seed: 1}\n  D2: {latent: [0.1, 0.2, 0.3, 0.4], gain: 0.5, choke: snares}\n"


def test_note_settings_of_a_conditioned_bundle(tmp_path):
    cond = Condition("pitch+velocity", (60, 67), {"60": 5, "67": 3})
    got = cli.note_settings(note_args(), fake_bundle(tmp_path, cond), "crossfade", "play", SPACE)
    assert got == {"polyphony": 8, "note_off": False, "root_note": None, "velocity_exponent": 1.0,
                   "pitch_range": (60, 67), "kit": None}
    with pytest.raises(cli.CommandError) as e:
        cli.note_settings(note_args("--root-note", "C4"), fake_bundle(tmp_path, cond), "trigger", "play", SPACE)
    assert str(e.value) == "--root-note: fake is pitch-conditioned (pitch+velocity, notes 60..67): it plays each note's pitch without transposing"
    assert note_args().out_of_range == "fold" and note_args("--out-of-range", "refuse").out_of_range == "refuse"
    with pytest.raises(argparse.ArgumentError):
        note_args("--out-of-range", "clamp")


def test_note_settings_pick_the_kit(tmp_path, capsys):
    (tmp_path / "kit.yaml").write_text(KIT_YAML)
    (tmp_path / "own.yaml").write_text("pads:\n  40: {seed: 2}\n")
    args = note_args("--kit", str(tmp_path / "kit.yaml"))
    got = cli.note_settings(args, fake_bundle(tmp_path, root=45.0), "trigger", "play", SPACE)
    assert got["root_note"] is None  # pads play as made, never transposed
    assert sorted(got["kit"].pads) == [36, 38] and got["kit"].pads[38].choke == "snares"
    np.testing.assert_array_equal(got["kit"].pads[36].latent, SPACE.seed_latent(1).astype(np.float32))
    own = fake_bundle(tmp_path, kit="own.yaml", root=45.0)
    assert sorted(cli.note_settings(note_args(), own, "trigger", "play", SPACE)["kit"].pads) == [40]  # the bundle's own
    assert sorted(cli.note_settings(args, own, "trigger", "play", SPACE)["kit"].pads) == [36, 38]  # --kit wins
    plain = cli.note_settings(note_args("--no-kit"), own, "trigger", "play", SPACE)
    assert plain["kit"] is None and plain["root_note"] == 45.0
    capsys.readouterr()
    assert cli.note_settings(args, own, "crossfade", "render", SPACE)["kit"] is None
    warning = "ganstream render: warning: --kit plays in trigger mode only (--mode trigger); crossfade mode ignores it\n"
    assert capsys.readouterr().err == warning
    assert cli.note_settings(note_args(), own, "texture", "play", SPACE)["kit"] is None  # the bundle's, quietly
    assert capsys.readouterr().err == ""
    with pytest.raises(argparse.ArgumentError):
        note_args("--kit", "k.yaml", "--no-kit")


def test_a_bad_kit_is_one_command_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("pads:\n  36: {seed: 1, gain: 9}\n")
    with pytest.raises(cli.CommandError) as e:
        cli.note_settings(note_args("--kit", str(tmp_path / "bad.yaml")), fake_bundle(tmp_path), "trigger", "play", SPACE)
    assert str(e.value) == f"{tmp_path / 'bad.yaml'}: pads.36.gain: must be in (0, 4], got 9"
    with pytest.raises(cli.CommandError) as e:
        cli.note_settings(note_args("--kit", str(tmp_path / "none.yaml")), fake_bundle(tmp_path), "trigger", "play", SPACE)
    assert str(e.value).startswith(f"{tmp_path / 'none.yaml'}: cannot read: ")


# -- the manifest's condition ------------------------------------------------------------------------------------


def test_condition_section_reads_writes_and_says_its_version():
    data = {"kind": "pitch", "pitch_range": [60, 67], "histogram": {"60": 5, "67": 3}, "labels": "folder names"}
    c = Condition.from_json(data)
    assert c == Condition("pitch", (60, 67), {"60": 5, "67": 3}, "folder names") and c.columns == 1
    assert c.to_json() == data
    assert Condition("pitch+velocity", (0, 127), {}).columns == 2
    assert lowest_version("waveform", "crossfade", conditioned=True) == CONDITION_VERSION == 5
    assert lowest_version("waveform", "trigger") == 3


@pytest.mark.parametrize(
    "change, field",
    [
        ({"kind": "timbre"}, "condition.kind"),
        ({"pitch_range": [67, 60]}, "condition.pitch_range"),
        ({"pitch_range": [60, 128]}, "condition.pitch_range"),
        ({"pitch_range": [60.5, 67]}, "condition.pitch_range"),
        ({"histogram": {"59": 1}}, "condition.histogram"),
        ({"histogram": {"60": -1}}, "condition.histogram"),
        ({"labels": 3}, "condition.labels"),
    ],
)
def test_a_bad_condition_section_names_its_field(change, field):
    data = {"kind": "pitch", "pitch_range": [60, 67], "histogram": {"60": 5}, **change}
    with pytest.raises(BundleError) as e:
        Condition.from_json(data)
    assert e.value.field == field, str(e.value)
