"""Kits played live: the engine in trigger mode with a kit, its pads played through the controls and heard in
what the output took, and `ganstream play` with --kit taking notes from a JACK MIDI port.

The engine test's generator is a numpy fake whose tone's frequency, phase and octave partial the latent sets,
at the output rate (48 kHz, so nothing is resampled and what the output took is sample for sample the
voices): each pad's latent makes its own tone, and a pad's voice in the output is the fake's segment for the
pad's latent, with the one-shot ramps, at gain velocity ** exponent * the pad's gain. The JACK test plays
tests/bundle_factory.py's harmonic synthesiser, seeds chosen so that no pad resembles another (their
segments correlate below 0.6 at any lag within 4 ms), and compares each voice recorded from JACK with its pad's
segment, resampled to 48 kHz."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from bundle_factory import make_bundle
from jack_fixtures import RATE, connect_recorder, open_engine_midi, release_midi_test
from test_engine import play as run_engine

from ganstream.realtime import events as ev
from ganstream.realtime.engine import Engine, EngineSettings, Timeline, render_timeline
from ganstream.realtime.kit import Kit, Pad
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.stream import StreamSettings

SR = 48000  # the fake's rate is the output's: no resampling
N = 4096
D = 4
X = round(0.005 * SR)  # the one-shot ramps
SPACE = LatentSpace(D)


def tone(latent) -> np.ndarray:
    """(N,) float32: the fake's segment for one latent: a tone of 100 * 8^(z0 + 1) Hz, phase pi * z1, an octave
    partial weighted by z2. Each row is computed on its own, so a batch changes nothing."""
    z = np.asarray(latent, dtype=np.float32).astype(np.float64)
    hz = 100.0 * 2.0 ** (3.0 * (z[0] + 1.0))
    w = 2.0 * np.pi * hz * np.arange(N) / SR
    return (0.5 * (np.sin(w + np.pi * z[1]) + 0.25 * (1.0 + np.tanh(z[2])) * np.sin(2.0 * w)) / 1.5).astype(np.float32)


class ToneFake:
    sample_rate, segment, latent_size = SR, N, D

    def __init__(self):
        self.rows: list[np.ndarray] = []

    def generate(self, z):
        z = np.asarray(z)
        assert z.dtype == np.float32 and z.ndim == 2 and z.shape[1] == D, z.shape
        self.rows.extend(z.copy())
        return np.stack([tone(r) for r in z])


def one_shot(latent, gain: float) -> np.ndarray:
    k = np.arange(X, dtype=np.float64)
    ramp = (np.sin(0.5 * np.pi * (k + 0.5) / X) ** 2).astype(np.float32)
    out = tone(latent)
    out[:X] *= ramp
    out[N - X :] *= ramp[::-1]
    if gain != 1.0:
        out *= np.float32(gain)
    return out


def pad(note: int, x0: float, name: str, gain: float = 1.0, choke: str | None = None) -> Pad:
    z = np.array([x0, 0.3 - 0.5 * x0, 0.2, 0.0], dtype=np.float32)
    z.setflags(write=False)
    return Pad(note, name, z, gain, choke)


KIT = Kit("three pads", {
    36: pad(36, -0.6, "kick"),  # 230 Hz
    42: pad(42, 0.0, "closed hat", gain=0.5, choke="hats"),  # 800 Hz
    46: pad(46, 0.35, "open hat", gain=0.8, choke="hats"),  # 1660 Hz
})


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def play(engine: Engine, seconds: float, actions) -> np.ndarray:
    """Run the engine on a NullOutput (test_engine.play), calling each (time, fn) on the way; what the output took."""
    out = run_engine(engine, seconds, capture_s=seconds + 1.0, actions=actions)
    assert engine.ring.underruns == 0
    return out.captured[: min(engine.ring.read_position, len(out.captured))]


def test_an_engine_with_a_kit_plays_each_pad_s_sound_chokes_and_leaves_unmapped_notes_silent():
    engine = Engine(ToneFake(), SPACE, StreamSettings(mode="trigger", kit=KIT, polyphony=4, velocity_exponent=2.0),
                    EngineSettings(sample_rate=SR), seed=2)
    c = engine.controls
    # Alone (250 ms apart, a voice lasts 85 ms), then pairs 25 ms apart.
    actions = [
        (0.10, lambda: c.trigger(1.0, 36)), (0.35, lambda: c.trigger(0.5, 42)), (0.60, lambda: c.trigger(0.8, 46)),
        (0.85, lambda: c.trigger(1.0, 50)),  # no pad
        (1.10, lambda: c.trigger(1.0, 46)), (1.125, lambda: c.trigger(1.0, 42)),  # the closed hat cuts the open one
        (1.35, lambda: c.trigger(1.0, 36)), (1.375, lambda: c.trigger(0.7, 46)),  # the kick is in no group: it plays on
        (1.60, lambda: c.trigger(1.0, 46)), (1.625, lambda: c.trigger(0.6, 46)),  # nor does a pad cut its own voice
        (1.85, lambda: c.trigger(1.0, 42)), (1.875, lambda: c.set_seed(5)),  # a latent step: pads are not regenerated
        (2.10, lambda: c.set_pad(36, 9)), (2.20, lambda: c.trigger(1.0, 36)),  # the kick is now seed 9's sound
    ]
    y = play(engine, 2.5, actions)
    timeline = engine.timeline()
    ons = [(e.sample, e.event) for e in timeline.events if isinstance(e.event, ev.NoteOn)]
    assert [e.note for _, e in ons] == [36, 42, 46, 50, 46, 42, 36, 46, 46, 46, 42, 36]
    t = [s for s, _ in ons]
    assert t[-1] + N <= len(y), (t, len(y))
    pads = dict(KIT.pads)
    sound = {n: tone(p.latent) for n, p in pads.items()}

    def alone(i: int, note: int, velocity: float, latent=None) -> np.ndarray:
        """The i-th note-on's voice, with nothing else sounding: the pad's segment, its ramps, its gain."""
        p = pads[note]
        got = y[t[i] : t[i] + N]
        want = one_shot(p.latent if latent is None else latent, velocity**2 * p.gain)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"note-on {i} (note {note})")
        assert corr(got, want) > 0.99
        return got

    for i, (note, v) in enumerate([(36, 1.0), (42, 0.5), (46, 0.8)]):
        got = alone(i, note, v)
        others = [corr(got[X:-X], sound[m][X:-X]) for m in pads if m != note]
        assert max(map(abs, others)) < 0.2, (note, others)  # tell the pads apart
    assert not y[t[3] - 100 : t[3] + N + 100].any()  # note 50 has no pad: silence

    # Choke: from the closed hat's note-on plus the fade, only the closed hat sounds.
    d = t[5] - t[4]
    assert 0 <= d < N - 2 * X, "the pair landed too far apart to overlap"
    open_hat, closed = one_shot(pads[46].latent, 0.8), one_shot(pads[42].latent, 0.5)
    np.testing.assert_allclose(y[t[4] : t[5]], open_hat[:d], atol=1e-6)
    np.testing.assert_allclose(y[t[5] + X : t[5] + N], closed[X:], atol=1e-6)
    assert not y[t[5] + N : t[6] - 100].any()
    # Another group (none), and a pad's own earlier voice: both play on under the new voice.
    for first, second, a, b in [(6, 7, one_shot(pads[36].latent, 1.0), one_shot(pads[46].latent, 0.49 * 0.8)),
                                (8, 9, open_hat, one_shot(pads[46].latent, 0.36 * 0.8))]:
        d = t[second] - t[first]
        assert 0 <= d < N, "the pair landed too far apart to overlap"
        np.testing.assert_allclose(y[t[first] : t[second]], a[:d], atol=1e-6)
        np.testing.assert_allclose(y[t[second] : t[first] + N], a[d:] + b[: N - d], atol=2e-6)
        np.testing.assert_allclose(y[t[first] + N : t[second] + N], b[N - d :], atol=1e-6)
    # A seed change while a pad sounds: the voice plays on as it was, nothing is regenerated.
    alone(10, 42, 1.0)
    assert engine.chain.stream.regenerations == 0
    assert any(isinstance(e.event, ev.SeedChange) and t[10] <= e.sample < t[10] + N for e in timeline.events)
    # set_pad: the kick plays seed 9's latent, with the kick's gain (1).
    changes = [e.event for e in timeline.events if isinstance(e.event, ev.PadChange)]
    assert changes == [ev.PadChange(36, "kick", SPACE.seed_latent(9), 1.0, None)]
    alone(11, 36, 1.0, latent=SPACE.seed_latent(9).astype(np.float32))

    # The recorded timeline, through JSON, renders to the same samples.
    again = Timeline.from_dict(json.loads(json.dumps(timeline.to_dict())))
    assert sorted(again.stream["kit"]["pads"]) == ["36", "42", "46"]
    np.testing.assert_array_equal(render_timeline(ToneFake(), SPACE, again, len(y)), y)


# -- JACK: `ganstream play --kit` taking notes from a JACK MIDI port ---------------------------------------------

MODEL_RATE = 16000
SEG = 4096
SEEDS = {36: 3, 42: 8, 46: 20}  # the bundle's seeds whose sounds differ most (see the module docstring)
GAINS = {36: 1.0, 42: 0.6, 46: 0.8}
KIT_YAML = """\
name: jack test kit
pads:
  36: {name: kick, seed: 3}
  42: {name: closed hat, seed: 8, gain: 0.6, choke: hats}
  46: {name: open hat, seed: 20, gain: 0.8, choke: hats}
"""


def spans(y: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[start, end) of each stretch of sound, stretches closer than `gap` samples joined."""
    loud = np.flatnonzero(np.abs(y) > 1e-4)
    if not len(loud):
        return []
    cuts = np.flatnonzero(np.diff(loud) > gap)
    starts = np.concatenate([[loud[0]], loud[cuts + 1]])
    ends = np.concatenate([loud[cuts], [loud[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def match(y: np.ndarray, at: int, ref: np.ndarray, margin: int = 600, search: int = 240) -> tuple[float, float]:
    """(best correlation, least-squares gain) of ref's middle against y around `at`, over lags within `search`."""
    mid = ref[margin : len(ref) - margin]
    best = (-2.0, 0.0)
    for lag in range(-search, search + 1):
        a = at + margin + lag
        if a < 0 or a + len(mid) > len(y):
            continue
        seg = y[a : a + len(mid)]
        c = corr(seg, mid)
        if c > best[0]:
            best = (c, float(np.dot(seg, mid) / np.dot(mid, mid)))
    return best


@pytest.mark.timeout(120)
def test_play_on_jack_plays_a_kit_from_a_jack_midi_port(jack_server, tmp_path):
    """`ganstream play --kit` in trigger mode with a virtual JACK MIDI input; note-ons sent to it through JACK
    MIDI; a JACK client records what it plays. Each pad's voice is its seed's sound at velocity times its gain,
    the unmapped note is silent, and the closed hat cuts the open one."""
    rtmidi = pytest.importorskip("rtmidi")
    from test_live_jack import Recorder, free_udp_port, ordinary_priority

    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi was built without JACK support")
    soxr = pytest.importorskip("soxr")
    from ganstream.realtime.bundle import load_bundle
    from ganstream.realtime.inference import Generator

    bundle = make_bundle(tmp_path / "kit.gsb", segment=SEG, sample_rate=MODEL_RATE)
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(KIT_YAML)
    midi_name = f"gs-kit-{free_udp_port()}"
    # python-rtmidi holds the GIL through every call into JACK, and the recorder's JACK callbacks need it: an
    # rtmidi call waiting on the server while the server waits on the recorder never returns (a hang seen once in
    # ten runs). So rtmidi opens its client and port before the recorder exists, only sends while it records, and
    # closes after it (as tests/test_condition_live.py does).
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"gs-pads-{os.getpid()}")
    engine = subprocess.Popen(
        [
            sys.executable, "-m", "ganstream.main", "play", str(bundle), "--provider", "cpu", "--threads", "1", "--mode", "trigger",
            "--kit", str(kit_file), "--no-walk", "--no-osc", "--midi-api", "jack", "--midi-virtual", midi_name,
            "--record", str(tmp_path / "timeline.json"), "--quiet", "--seconds", "60",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ordinary_priority,
    )
    notes = [42, 46, 50, 36, 46, 42]  # the last two a choke pair, 40 ms apart
    rec = None
    try:
        deadline = time.monotonic() + 30
        open_engine_midi(engine, sender, midi_name, deadline)
        rec = Recorder(str(jack_server), 40.0)
        connect_recorder(engine, rec, deadline)

        def key(out, note: int, hold: float = 0.1) -> None:  # a pad hit at velocity 100
            out.send_message([0x99, note, 100])  # channel 10, the drums' (any channel plays)
            time.sleep(hold)
            out.send_message([0x89, note, 0])

        # The kick, until the connection carries it (what is sent before it joins the graph is lost).
        while not rec.buf[: rec.n].any():
            assert time.monotonic() < deadline, "no note came through JACK MIDI"
            key(sender, 36)
            time.sleep(0.9)
        time.sleep(0.5)
        for note in notes[:4]:
            key(sender, note)
            time.sleep(0.8)
        sender.send_message([0x99, 46, 100])
        time.sleep(0.04)
        sender.send_message([0x99, 42, 100])
        time.sleep(0.1)
        sender.send_message([0x89, 46, 0])
        sender.send_message([0x89, 42, 0])
        time.sleep(0.8)
        engine.send_signal(signal.SIGINT)
        out, _ = engine.communicate(timeout=30)
    finally:
        release_midi_test(engine, rec, sender)
    assert engine.returncode == 0, out
    assert "trigger mode (kit of 3 pads: jack test kit)" in out  # the start line names the kit

    timeline = Timeline.from_dict(json.loads((tmp_path / "timeline.json").read_text()))
    assert sorted(timeline.stream["kit"]["pads"]) == ["36", "42", "46"]
    ons = [e for e in timeline.events if isinstance(e.event, ev.NoteOn)]
    played = [e.event.note for e in ons]
    assert played[-len(notes) :] == notes and set(played[: -len(notes)]) == {36}
    assert all(e.event.velocity == pytest.approx(100 / 127) for e in ons)

    generator = Generator(load_bundle(bundle), provider="cpu", threads=1)
    space = LatentSpace.from_bundle(load_bundle(bundle))
    segs = generator.generate(np.stack([space.seed_latent(SEEDS[n]) for n in (36, 42, 46)]).astype(np.float32))
    ref = {n: soxr.resample(s, MODEL_RATE, RATE).astype(np.float32) for n, s in zip((36, 42, 46), segs)}

    y = rec.buf[: rec.n]
    with rec.judging():
        found = spans(y, gap=RATE // 20)
        sounding = [n for n in played if n != 50]
        assert len(found) == len(sounding) - 1, (found, played)  # the choke pair overlaps: one stretch
        singles = list(zip(found[:-1], sounding[:-2]))
        worst = 1.0
        for (a, b), note in singles:
            assert abs((b - a) - RATE * SEG // MODEL_RATE) < 400, (note, b - a)
            c, gain = match(y, a, ref[note])
            worst = min(worst, c)
            assert c > 0.99, (note, c)
            assert gain == pytest.approx(100 / 127 * GAINS[note], rel=0.03), (note, gain)
            for other in ref:
                if other != note:
                    assert match(y, a, ref[other])[0] < 0.8, (note, other)  # another pad's sound does not fit
        # The choke pair: the open hat, then from the closed hat on (the stamps say when), the closed hat alone.
        (a, b), (open_on, closed_on) = found[-1], ons[-2:]
        d = (closed_on.sample - open_on.sample) * RATE // MODEL_RATE
        assert 0 < d < RATE * SEG // MODEL_RATE // 2, d
        assert abs((b - a) - (d + RATE * SEG // MODEL_RATE)) < 400, (b - a, d)
        c, gain = match(y, a + d, ref[42])
        assert c > 0.99 and gain == pytest.approx(100 / 127 * GAINS[42], rel=0.03), (c, gain)
        c, gain = match(y, a, ref[46][:d], margin=300)  # before it, the open hat
        assert c > 0.99 and gain == pytest.approx(100 / 127 * GAINS[46], rel=0.03), (c, gain)
        both = ref[42] * GAINS[42] + np.concatenate([ref[46][d:], np.zeros(d, np.float32)]) * GAINS[46]
        assert match(y, a + d, both)[0] < 0.95  # the open hat does not play on under the closed one
    print(f"\n{len(singles)} pad voices from JACK match their pads' sounds, the worst at correlation {worst:.4f}")
