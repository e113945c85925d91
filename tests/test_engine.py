"""The live engine without a sound card: controls, the producer, the ring, gain, presets, triggers, and
live output equal to an offline render of the recorded timeline. A `NullOutput` pulls the ring at the
real-time pace from a thread, as a device callback would."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from bundle_factory import make_bundle

from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.cli import bench_main, devices_main, play_main, render_main
from ganstream.realtime.control import ControlError, Controls
from ganstream.realtime.engine import (
    LOG_BLOCKS,
    Engine,
    EngineSettings,
    GainStage,
    NullOutput,
    Timeline,
    automation_from_timeline,
    render_options,
    render_timeline,
)
from ganstream.realtime.inference import Generator
from ganstream.realtime.events import GainChange, LatentChange, MacroChange, NoteOff, NoteOn, PresetRecall, SeedChange, Stamped, WalkChange
from ganstream.realtime.latents import ControlPath, Keyframe, LatentSpace
from ganstream.core.resample import PolyphaseResampler, ResampledStream
from ganstream.realtime.ring import Ring
from ganstream.realtime.stream import SegmentStream, StreamSettings, Trigger

SR = 16000
OUT = 48000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundles") / "e.gsb", segment=4096, sample_rate=SR))


@pytest.fixture(scope="module")
def generator(bundle):
    return Generator(bundle, provider="cpu", threads=1, warmup_batch_sizes=(1, 2))


@pytest.fixture(scope="module")
def space(bundle):
    return LatentSpace.from_bundle(bundle)


def make_engine(bundle, generator, mode="crossfade", **kwargs) -> Engine:
    settings = kwargs.pop("settings", EngineSettings())
    stream = StreamSettings.from_bundle(bundle, mode=mode, polyphony=kwargs.pop("polyphony", 4))
    return Engine(generator, LatentSpace.from_bundle(bundle), stream, settings, **kwargs)


def play(engine: Engine, seconds: float, capture_s: float = 0.0, actions=()) -> NullOutput:
    """Run the engine on a NullOutput for `seconds`, calling each (time, fn) in `actions` on the way."""
    out = NullOutput(engine.ring, engine.settings.sample_rate, engine.settings.blocksize, capture_s=capture_s)
    engine.start(out)
    t0 = time.monotonic()
    try:
        for at, fn in sorted(actions, key=lambda a: a[0]):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            fn()
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    finally:
        engine.stop()
    assert engine.error is None, engine.error
    return out


def starved(out: NullOutput, n: int) -> np.ndarray:
    """(n,) bool: the samples an underrun faded, where the capture is not the stream by design.

    A block that came up short ends at ring position q: the ring faded [q - fade, q) to
    silence and fades [q, q + fade) in from the next block on (realtime/ring.py). Short
    blocks show in the output's block log as a step below the block size.
    """
    assert out.blocks <= LOG_BLOCKS, "the block log wrapped: play a shorter run"
    pos = out.block_pos[: out.blocks]
    fade = out.ring.fade
    mask = np.zeros(n, dtype=bool)
    short = np.flatnonzero(np.diff(pos) < out.blocksize)
    for q in pos[short + 1]:
        mask[max(0, q - fade) : q + fade] = True
    return mask


def assert_live_equals_render(out: NullOutput, offline: np.ndarray, most_starved: float = 0.1) -> None:
    """The capture is the render of its timeline, bit for bit, wherever the output was not starved.

    An underrun says the machine was busy, not that the live stream differs (the engine's
    real-time margin is measured in benchmarks/live.py); a run starved over `most_starved`
    of its samples leaves too little to judge, and fails saying so.
    """
    n = len(offline)
    skip = starved(out, n)
    assert skip.mean() <= most_starved, f"the output was starved in {skip.mean():.0%} of the samples ({out.ring.underruns} underruns)"
    np.testing.assert_array_equal(out.captured[:n][~skip], offline[~skip])


# -- Controls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.set_latent([0.1] * 7), "latent: expected 8 values, got 7"),
        (lambda c: c.set_latent([0.1] * 7 + [float("nan")]), "latent[7]: nan is not finite"),
        (lambda c: c.set_latent("abcdefgh"), "latent: expected 8 numbers, got str"),
        (lambda c: c.set_latent_dim(8, 0.1), "latent index: 8 is out of range"),
        (lambda c: c.set_latent_dim(2, 9.0), "latent[2]: 9 is out of range [-8, 8]"),
        (lambda c: c.set_macro("nope", 0.1), "macro 'nope': unknown (known: pc1, pc2, pc3, brightness, loudness)"),
        (lambda c: c.set_macro("pc1", 1.5), "macro 'pc1': 1.5 is out of range [-1, 1]"),
        (lambda c: c.set_macro("pc1", float("inf")), "macro 'pc1': inf is not finite"),
        (lambda c: c.set_macro("pc1", "0.5"), "macro 'pc1': expected a number, got str"),
        (lambda c: c.set_gain(-0.1), "gain: -0.1 is out of range [0, 2]"),
        (lambda c: c.set_walk(), "walk: give a rate, a depth or both"),
        (lambda c: c.set_walk(depth=9), "walk depth: 9 is out of range [0, 4]"),
        (lambda c: c.set_seed(1.5), "seed: expected an integer, got 1.5"),
        (lambda c: c.set_seed(True), "seed: expected an integer, got bool"),
        (lambda c: c.load_preset("missing"), "preset 'missing': unknown (known: none saved)"),
        (lambda c: c.morph_preset("missing", -1), "morph time: -1 is out of range [0, 600]"),
        (lambda c: c.save_preset("a/b"), "preset name 'a/b': use 1..64 printable characters without '/'"),
        (lambda c: c.trigger(1.2), "velocity: 1.2 is out of range [0, 1]"),
        (lambda c: c.note_off(200), "note: 200 is out of range [0, 127]"),
    ],
)
def test_bad_control_values_are_refused_and_change_nothing(space, call, message):
    c = Controls(space, seed=3)
    before = (c.latent, c.macros, c.gain, c.walk, c.seed)
    with pytest.raises(ControlError) as e:
        call(c)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)
    after = (c.latent, c.macros, c.gain, c.walk, c.seed)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1:] == after[1:]
    assert c.pending() == 0 and c.rejected == 1


def test_setters_hand_over_without_the_producer_ever_waiting(space):
    c = Controls(space)
    with c._lock:  # a control thread in the middle of a setter
        t0 = time.perf_counter()
        assert c.pop() is None  # the producer's side takes no lock
        assert time.perf_counter() - t0 < 0.01
    threads = [threading.Thread(target=lambda i=i: [c.set_macro("pc1", (i * 100 + k) / 1000) for k in range(100)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = []
    while (cmd := c.pop()) is not None:
        got.append(cmd.event.value)
    assert len(got) == 400
    assert c.macros["pc1"] in got  # the mirror holds one of the values sent, never a mixture
    set_latent_dims = [threading.Thread(target=lambda i=i: c.set_latent_dim(i, 0.5)) for i in range(8)]
    for t in set_latent_dims:
        t.start()
    for t in set_latent_dims:
        t.join()
    np.testing.assert_array_equal(c.latent, np.full(8, 0.5))  # no dimension lost to a race


def test_presets_save_recall_and_morph_through_a_json_file(space, tmp_path):
    path = tmp_path / "presets.json"
    c = Controls(space, seed=1, presets_path=path)
    c.set_macro("pc2", 0.75)
    c.set_latent_dim(0, -0.5)
    c.save_preset("calm")
    saved = c.latent
    doc = json.loads(path.read_text())
    assert doc["presets"]["calm"]["macros"]["pc2"] == 0.75
    assert doc["presets"]["calm"]["latent"] == saved.tolist()

    again = Controls(space, seed=9, presets_path=path)  # read back at start
    assert again.presets == ("calm",)
    again.load_preset("calm")
    np.testing.assert_array_equal(again.latent, saved)
    assert again.macros["pc2"] == 0.75
    again.morph_preset("calm", 2.0)
    events = []
    while (cmd := again.pop()) is not None:
        events.append(cmd.event)
    assert [type(e) for e in events] == [PresetRecall, PresetRecall]
    assert [(e.name, e.seconds) for e in events] == [("calm", 0.0), ("calm", 2.0)]
    # The presets file is the automation format: `ganstream render --presets` reads it.
    from ganstream.realtime.automation import load_presets

    assert set(load_presets(path, space)) == {"calm"}


def test_a_morph_glides_from_where_it_is_and_a_later_change_takes_over(space):
    a, b = np.zeros(8), np.ones(8) * 0.5
    path = ControlPath(space, a, sample_rate=SR)
    path.ramp(1000, 2000, latent=b, macros={"pc1": 1.0})
    np.testing.assert_array_equal(path.target(999, 999), a)
    mid = path.target(2000, 2000) - space.macro_offset({"pc1": 0.5})
    np.testing.assert_allclose(mid, 0.5 * b, atol=1e-12)  # cosine ease: half way at half time
    np.testing.assert_array_equal(path.target(2000, 999), a)  # not known before its stamp
    path.set_macro(2500, "pc1", -1.0)  # interrupts the macro's glide, the latent's goes on
    np.testing.assert_allclose(path.target(3500, 3500) - space.macro_offset({"pc1": -1.0}), b, atol=1e-12)


def test_a_step_only_live_path_equals_keyframes_bit_for_bit(space):
    base = space.seed_latent(4)
    live = ControlPath(space, base, seed=4, walk_rate=2.0, walk_depth=0.3, sample_rate=SR)
    frames = []
    rng = np.random.default_rng(0)
    for t in range(500, 20000, 700):
        z = rng.uniform(-1, 1, 8)
        live.set_latent(t, z)
        live.set_macro(t, "pc2", float(rng.uniform(-1, 1)))
        frames.append(Keyframe(t, z, {"pc2": live._macros["pc2"].goals[-1]}, "step"))
    kf = ControlPath.from_keyframes(space, frames, base=base, seed=4, walk_rate=2.0, walk_depth=0.3, sample_rate=SR)
    for t in range(0, 21000, 97):
        for upto in (t, t - 50):
            np.testing.assert_array_equal(live.target(t, upto), kf.target(t, upto))
    assert list(live.step_times()) == list(kf.step_times())


def test_fold_keeps_uniform_latents_in_range_without_changing_them():
    space = LatentSpace(4)
    z = np.array([-0.9, -0.2, 0.3, 0.99])
    np.testing.assert_allclose(space.fold(z), z, atol=1e-15)
    np.testing.assert_allclose(space.fold(np.array([1.5, -1.25, 3.0])), [0.5, -0.75, -1.0], atol=1e-12)


# -- gain, ring, resampler --------------------------------------------------------------------------


class Ones:
    def read(self, n):
        return np.ones(n, dtype=np.float32)


def test_gain_glides_with_one_pole_and_does_not_depend_on_read_sizes():
    tau_s = 0.01

    def run(sizes):
        g = GainStage(Ones(), SR, tau_s, gain=1.0)
        g.set(1000, 0.0)
        g.set(5000, 2.0)
        return np.concatenate([g.read(n) for n in sizes])

    a = run([8000])
    b = run([1, 64, 65, 128, 999, 6743])
    np.testing.assert_array_equal(a, b)
    assert np.all(a[:1000] == 1.0)
    t = np.arange(1000, 5000) - 1000
    np.testing.assert_allclose(a[1000:5000], np.exp(-t / (tau_s * SR)), atol=1e-6)
    assert a[4999] == 0.0  # settled to exactly the target
    assert np.all(np.diff(a[5000:]) >= 0) and a[-1] == 2.0
    assert np.max(np.abs(np.diff(a))) < 2.01 / (tau_s * SR)  # no step anywhere: at most jump / tau per sample


def test_ring_counts_an_underrun_and_fades_instead_of_clicking():
    ring = Ring(1024, fade=32)
    ring.write(np.ones(100, dtype=np.float32))
    out = np.empty(256, dtype=np.float32)
    assert ring.read_into(out) == 100
    assert ring.underruns == 1
    assert np.all(out[:68] == 1.0) and np.all(np.diff(out[68:100]) < 0) and out[99] < 0.05
    assert np.all(out[100:] == 0.0)
    ring.write(np.ones(300, dtype=np.float32))
    assert ring.read_into(out) == 256 and ring.underruns == 1
    assert out[0] < 0.05 and np.all(np.diff(out[:32]) > 0) and np.all(out[32:] == 1.0)  # fades back in


def test_the_live_equals_render_check_skips_only_the_underrun_fades():
    """`assert_live_equals_render` judges every sample but the fades an underrun made, and no others."""
    stream = np.linspace(-0.5, 0.5, 2000, dtype=np.float32)
    ring = Ring(1024, fade=16)
    out = NullOutput(ring, OUT, blocksize=64, capture_s=1.0)
    ring.write(stream[:100])
    out.pull(0.0)
    out.pull(0.0)  # 36 of 64: an underrun at stream position 100
    ring.write(stream[100:1000])
    for _ in range(12):
        out.pull(0.0)
    n = ring.read_position
    assert (ring.underruns, n) == (1, 100 + 12 * 64)
    skip = starved(out, n)
    assert np.array_equal(np.flatnonzero(skip), np.arange(84, 116))
    assert not np.array_equal(out.captured[:n], stream[:n])  # the fades changed the capture...
    assert_live_equals_render(out, stream[:n])  # ...and only there
    other = stream[:n].copy()
    other[120] += 1e-3  # just past the fade-in
    with pytest.raises(AssertionError, match="Mismatched elements: 1 "):
        assert_live_equals_render(out, other)
    with pytest.raises(AssertionError, match=r"starved in 4% of the samples \(1 underruns\)"):
        assert_live_equals_render(out, stream[:n], most_starved=0.03)


@pytest.mark.parametrize("out_rate", [48000, 44100, 22050])
def test_live_resampler_is_exact_block_independent_and_quick(out_rate):
    class Sine:
        n = 0

        def read(self, n):
            t = np.arange(self.n, self.n + n)
            self.n += n
            return (0.5 * np.sin(2 * np.pi * 1000 * t / SR)).astype(np.float32)

    whole = ResampledStream(Sine(), SR, out_rate, quality="live").read(out_rate)
    r = ResampledStream(Sine(), SR, out_rate, quality="live", block=17)
    parts = np.concatenate([r.read(n) for n in (1, 64, 65, 128, 8192, out_rate - 8450)])
    np.testing.assert_array_equal(whole, parts)
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(out_rate) / out_rate)
    np.testing.assert_allclose(whole[200:], ref[200:], atol=1e-4)  # in time: output j is time j / out_rate
    assert PolyphaseResampler(SR, out_rate).delay <= 32  # 2 ms at 16 kHz


# -- triggers ---------------------------------------------------------------------------------------


class Constant:
    """Every segment is all ones, so envelopes, gains and fades show directly."""

    sample_rate, segment, latent_size = SR, 1024, 8

    def generate(self, z):
        return np.ones((len(z), self.segment), dtype=np.float32)


def test_trigger_voices_velocity_polyphony_and_stealing(space):
    s = StreamSettings(mode="trigger", polyphony=2, control_crossfade_s=0.002, fade_in_s=0.0)
    x = 32  # fade samples
    triggers = [Trigger(1000, 0.5, 60), Trigger(1200, 1.0, 62), Trigger(1400, 0.25, 64)]
    stream = SegmentStream(Constant(), ControlPath(space, np.zeros(8), sample_rate=SR), s, triggers=triggers)
    y = stream.read(4000)
    assert np.all(y[:1000] == 0.0)  # silence before the first note
    assert y[1000] < 0.05 and np.all(np.diff(y[1000 : 1000 + x]) > 0)  # a ramp in, no click
    assert y[1100] == pytest.approx(0.5)  # velocity is gain
    assert y[1300] == pytest.approx(1.5)
    # The third note steals the oldest (0.5), which fades out over x samples while the new one fades in.
    np.testing.assert_allclose(y[1400 + x : 1400 + x + 50], 1.25, atol=1e-6)
    assert stream.stolen == 1
    assert np.max(np.abs(np.diff(y))) < 0.1  # nothing anywhere jumps
    # One-shots end with a ramp, then silence.
    assert np.all(y[1400 + 1024 :] == 0.0)


def test_note_off_releases_only_when_asked(space):
    def run(note_off):
        s = StreamSettings(mode="trigger", polyphony=4, note_off=note_off, fade_in_s=0.0)
        tr = [Trigger(100, 1.0, 60), Trigger(300, 0.0, 60, off=True)]
        return SegmentStream(Constant(), ControlPath(space, np.zeros(8), sample_rate=SR), s, triggers=tr).read(1200)

    assert run(False)[600] == pytest.approx(1.0)  # one-shot: plays on
    released = run(True)
    assert released[600] == 0.0 and released[250] == pytest.approx(1.0)


# -- the engine -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["crossfade", "texture", "trigger"])
def test_live_output_equals_the_render_of_its_timeline(bundle, generator, space, mode, tmp_path):
    engine = make_engine(bundle, generator, mode, seed=2, walk_depth=0.3, presets_path=tmp_path / "p.json")
    c = engine.controls
    rng = np.random.default_rng(1)
    actions = [(0.02 * i, lambda: c.set_macro("pc1", float(rng.uniform(-1, 1)))) for i in range(60)]
    actions += [(0.1 * i + 0.05, lambda: c.trigger(float(rng.uniform(0.2, 1)), int(rng.integers(40, 80)))) for i in range(12)]
    actions += [
        (0.2, lambda: c.save_preset("here")),
        (0.3, lambda: c.set_latent_dim(3, 0.9)),
        (0.5, lambda: c.set_gain(0.5)),
        (0.6, lambda: c.set_walk(rate=1.5, depth=0.2)),
        (0.7, lambda: c.morph_preset("here", 0.3)),
        (1.0, lambda: c.set_seed(11)),
    ]
    out = play(engine, 1.6, capture_s=3.0, actions=actions)
    n = min(engine.ring.read_position, len(out.captured))
    assert n > OUT
    timeline = engine.timeline()
    kinds = {e.event.kind for e in timeline.events}
    assert {"macro", "latent", "gain", "walk", "recall"} <= kinds
    assert ("trigger" in kinds) == (mode == "trigger")
    offline = render_timeline(generator, space, timeline, n)
    assert_live_equals_render(out, offline)
    assert np.abs(offline).max() > 0.05


def test_the_cli_render_of_an_exported_timeline_matches_the_live_output(bundle, generator, space, tmp_path):
    engine = make_engine(bundle, generator, seed=5, walk_depth=0.25)
    c = engine.controls
    actions = [(0.03 * i, lambda i=i: c.set_macro("pc2", float(np.sin(i / 5)))) for i in range(30)]
    actions += [(0.5, lambda: c.set_latent([0.5] * 8)), (0.7, lambda: c.set_seed(3))]
    out = play(engine, 1.4, capture_s=2.0, actions=actions)
    timeline = engine.timeline()
    auto = tmp_path / "auto.json"
    auto.write_text(json.dumps(automation_from_timeline(timeline)))
    n = min(engine.ring.read_position, len(out.captured))
    wav = tmp_path / "r.wav"
    args = [str(bundle.source), "-o", str(wav), "--seconds", repr(n / OUT), "--subtype", "float", "--provider", "cpu"]
    assert render_main([*args, "--resample-quality", "live", "--automation", str(auto), *render_options(timeline)]) == 0
    rendered, _ = sf.read(wav, dtype="float32")
    assert_live_equals_render(out, rendered)


class Slow:
    """The generator, slower by `delay` seconds a call (no generate_into, so every call sleeps)."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay
        self.sample_rate, self.segment, self.latent_size = inner.sample_rate, inner.segment, inner.latent_size

    def generate(self, z):
        time.sleep(self.delay)
        return self.inner.generate(z)


class Stall(Slow):
    """The generator, stalling `delay` seconds on every `every`-th call (as a busy machine would)."""

    def __init__(self, inner, delay, every):
        super().__init__(inner, delay)
        self.every, self.calls = every, 0

    def generate(self, z):
        self.calls += 1
        if self.calls % self.every == 0:
            time.sleep(self.delay)
        return self.inner.generate(z)


def test_after_an_underrun_the_stream_goes_on_where_it_stopped(bundle, generator, space):
    """A stalled producer starves the output; the ring fades out and back in, and every other sample
    is still the render's: nothing is skipped or played twice."""
    stall = Stall(generator, 0.15, every=20)
    engine = make_engine(bundle, stall, "texture", seed=2, walk_depth=0.3, settings=EngineSettings(startup_margin_s=0.0))
    c = engine.controls
    actions = [(0.05 * i, lambda i=i: c.set_macro("pc1", float(np.sin(i)))) for i in range(20)]
    out = play(engine, 1.6, capture_s=3.0, actions=actions)
    n = min(engine.ring.read_position, len(out.captured))
    assert engine.ring.underruns >= 1
    stall.every = 1 << 30  # the render need not wait
    offline = render_timeline(stall, space, engine.timeline(), n)
    assert not np.array_equal(out.captured[:n], offline)  # the fades are heard...
    assert_live_equals_render(out, offline, most_starved=0.5)  # ...and nothing else differs


def test_lookahead_adapts_to_the_generator_and_stays_short(bundle, generator):
    settings = EngineSettings(startup_margin_s=0.0)
    fast = make_engine(bundle, generator, settings=settings)
    play(fast, 1.0)
    slow = make_engine(bundle, Slow(generator, 0.03), settings=settings)
    play(slow, 1.0)
    f, s = fast.status(), slow.status()
    print(f["lookahead_ms"], s["lookahead_ms"])
    assert s["lookahead_ms"] > 1.5 * 30  # covers a 30 ms generator call with the safety factor
    assert f["lookahead_ms"] < s["lookahead_ms"] - 15  # and is shorter when calls are quick
    assert s["underruns"] == 0 and f["underruns"] == 0


def test_a_control_is_heard_after_the_ring_and_the_device_only(bundle, generator):
    engine = make_engine(bundle, generator, settings=EngineSettings(startup_margin_s=0.0))
    c = engine.controls
    actions = [(0.3 + 0.013 * i, lambda i=i: c.set_macro("pc1", (-1) ** i * 0.5)) for i in range(60)]
    play(engine, 1.4, actions=actions)
    lat = engine.latency_stats()
    assert lat["count"] >= 55
    st = engine.status()
    # Null output: no device latency; what is left is the ring's fill, the resampler and a step.
    block_ms = 1000 * engine.settings.blocksize / OUT
    assert lat["p50"] < st["lookahead_ms"] + 1000 * engine.resampler_delay / OUT + block_ms + 10
    assert 0 < lat["p50"]


def test_status_has_what_the_status_line_and_osc_show(bundle, generator):
    engine = make_engine(bundle, generator, seed=1)
    play(engine, 0.4, actions=[(0.1, lambda: engine.controls.set_gain(0.7))])
    st = engine.controls.status()
    for key in ("provider", "rtf", "load", "cpu", "buffer_fill", "buffer_ms", "lookahead_ms", "underruns", "xruns",
                "latency_ms", "control_latency_ms", "position", "position_s", "voices", "gain", "first_sound_s"):
        assert key in st, key
    assert st["provider"] == "CPUExecutionProvider" and st["gain"] == 0.7
    assert st["position"] > 0.3 * SR and st["rtf"] > 1 and st["first_sound_s"] < 1.0


def test_a_failing_generator_stops_the_producer_and_says_why(bundle, generator):
    class Broken(Slow):
        def generate(self, z):
            raise RuntimeError("out of memory")

    engine = make_engine(bundle, Slow(generator, 0.0))
    engine.generator = engine.chain.stream.generator = Broken(generator, 0.0)
    out = NullOutput(engine.ring, OUT, 256)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.start(out)
    engine.stop()
    assert "out of memory" in engine.status()["error"]


# -- commands -----------------------------------------------------------------------------------------


def test_play_without_a_device_is_one_clear_error(bundle, capsys, monkeypatch):
    from ganstream.realtime import audio

    monkeypatch.setattr(audio, "output_devices", lambda: [])
    assert play_main([str(bundle.source), "--provider", "cpu", "--no-osc", "--no-realtime", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ganstream play: error: no audio output device") and "JACK" in err[-1]
    assert devices_main([]) == 0
    assert "no audio output devices" in capsys.readouterr().out


def test_play_refuses_a_bad_option_in_one_line(bundle, capsys):
    assert play_main([str(bundle.source), "--gain", "3"]) == 2
    assert capsys.readouterr().err.strip() == "ganstream play: error: --gain must be within 0..2, got 3.0"


def test_bench_measures_every_mode(bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_main([str(bundle.source), "--provider", "cpu", "--null", "--seconds", "0.5", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["rtf"]) == {"crossfade", "texture", "trigger"}
    assert all(r["rtf"] > 1 for r in doc["rtf"].values())
    assert doc["latency"]["count"] > 10
    assert "real-time factor" in capsys.readouterr().err


# -- the play session ---------------------------------------------------------------------------------


@pytest.fixture
def null_device(monkeypatch):
    """`play` on NullOutput instead of a sound card: the whole command runs, at real-time pace."""
    from ganstream.realtime import audio

    monkeypatch.setattr(audio, "AudioOutput", lambda ring, sr, device=None, blocksize=256, latency="low": NullOutput(ring, sr, blocksize))


def test_play_runs_a_session_and_writes_its_record_and_stats(bundle, generator, space, null_device, tmp_path, capsys):
    record, stats = tmp_path / "timeline.json", tmp_path / "stats.json"
    argv = [str(bundle.source), "--provider", "cpu", "--threads", "1", "--no-realtime", "--osc-port", "0", "--seconds",
            "0.6", "--quiet", "--record", str(record), "--stats", str(stats)]
    assert play_main(argv) == 0
    err = capsys.readouterr().err
    assert "; OSC on 127.0.0.1:" in err and "ganstream play: done after" in err
    st = json.loads(stats.read_text())
    assert st["error"] is None and st["stuck"] == [] and st["position_s"] > 0.3
    assert st["osc"] == {"received": 0, "messages": 0, "applied": 0, "refused": 0, "malformed": 0} and st["midi"] is None
    timeline = Timeline.from_dict(json.loads(record.read_text()))
    assert timeline.seed == 0 and timeline.events == []


@pytest.mark.parametrize("fail_after", [0, 6])  # while the ring fills, and while it plays
def test_a_producer_failure_during_play_is_an_internal_error(bundle, null_device, monkeypatch, tmp_path, capsys, fail_after):
    from ganstream.realtime import inference

    class Failing(inference.Generator):
        calls = 0

        def generate_into(self, z, out):
            Failing.calls += 1
            if Failing.calls > fail_after:
                raise RuntimeError("device lost")
            return super().generate_into(z, out)

    monkeypatch.setattr(inference, "Generator", Failing)
    stats = tmp_path / "stats.json"
    argv = [str(bundle.source), "--provider", "cpu", "--no-osc", "--no-realtime", "--seconds", "5", "--stats", str(stats)]
    t0 = time.monotonic()
    assert play_main(argv) == 1  # not the user's to fix: 1, not 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "ganstream play: error: the audio producer stopped: device lost"
    assert "device lost" in json.loads(stats.read_text())["error"]


class Part:
    """An OSC server or MIDI input stand-in that notes when it is stopped, or never returns from stop()."""

    def __init__(self, name, log, hang=False):
        self.name, self.log, self.hang = name, log, hang
        self.release = threading.Event()

    def stop(self):
        self.log.append(self.name)
        if self.hang:
            self.release.wait()


def test_a_session_stops_the_audio_before_midi_and_never_hangs_on_a_part(bundle, generator, tmp_path):
    from ganstream.realtime.session import Session

    engine = make_engine(bundle, generator)
    log: list[str] = []
    session = Session(engine, output=NullOutput(engine.ring, OUT, 256), out=open(tmp_path / "log", "w"), stop_timeout_s=0.5)
    session.open()
    stop_engine = engine.stop
    engine.stop = lambda: (log.append("engine"), stop_engine())
    session.osc = Part("OSC", log, hang=True)  # e.g. a server whose thread never ends
    session.midi = Part("MIDI", log)
    time.sleep(0.2)
    t0 = time.monotonic()
    session.close()
    took = time.monotonic() - t0
    session.osc.release.set()
    # MIDI last: closing a JACK MIDI client keeps the GIL until JACK's next cycle, which waits for the
    # audio callback, which waits for the GIL (realtime/session.py).
    assert log == ["OSC", "engine", "MIDI"]
    assert session.stuck == ["OSC"] and 0.5 <= took < 2.0
    assert not engine.running and session.final_status["running"]
    session.close()  # a second close does nothing
    assert log == ["OSC", "engine", "MIDI"]


def test_low_latency_help_says_what_the_option_does():
    from ganstream.realtime.cli import _play_parser, engine_settings
    from ganstream.realtime.engine import LOW_LATENCY

    parser = _play_parser()
    plain = engine_settings(parser.parse_args([]))
    low = engine_settings(parser.parse_args(["--low-latency"]))
    assert plain == EngineSettings(realtime_priority=True)
    for key, value in LOW_LATENCY.items():
        assert getattr(low, key) == value != getattr(plain, key)
    assert low.chunk_s == plain.chunk_s == 0.002  # the producer keeps its 2 ms steps
    text = next(a.help for a in parser._actions if "--low-latency" in a.option_strings)
    assert "producer steps stay 2 ms" in text and "1 ms" not in text
    assert "a 2 ms margin (default 5)" in text and "safety factor 1.25 (1.5)" in text and "start-up margin 10 ms (20)" in text


def test_timeline_files_written_before_typed_events_still_load_and_round_trip():
    from ganstream.realtime.events import stamped_from_json

    old = {  # as `play --record` wrote it when events were dicts
        "model_rate": SR, "output_rate": OUT, "seed": 3, "latent": [0.0] * 8, "walk_rate": 0.2, "walk_depth": 0.0,
        "gain": 1.0, "stream": {"mode": "trigger"}, "engine": {"blocksize": 256},
        "events": [
            {"sample": 10, "kind": "latent", "latent": [0.5] * 8},
            {"sample": 10, "kind": "latent", "latent": [0.25] * 8, "seed": 7},
            {"sample": 20, "kind": "macro", "name": "pc1", "value": -0.5},
            {"sample": 30, "kind": "recall", "preset": "calm", "latent": None, "macros": {"pc2": 0.5}, "samples": 4800},
            {"sample": 40, "kind": "walk", "rate": 1.5, "depth": 0.2},
            {"sample": 50, "kind": "gain", "gain": 0.7},
            {"sample": 60, "kind": "trigger", "velocity": 0.5, "note": None},
            {"sample": 70, "kind": "note_off", "note": 61},
        ],
    }
    timeline = Timeline.from_dict(json.loads(json.dumps(old)))
    assert [e.event for e in timeline.events] == [
        LatentChange(np.full(8, 0.5)), SeedChange(7, np.full(8, 0.25)), MacroChange("pc1", -0.5),
        PresetRecall("calm", None, {"pc2": 0.5}, 0.3), WalkChange(1.5, 0.2), GainChange(0.7), NoteOn(0.5, None),
        NoteOff(61),
    ]
    assert timeline.events[3] == Stamped(30, PresetRecall("calm", None, {"pc2": 0.5}, 4800 / SR))
    assert timeline.events[0] != Stamped(10, LatentChange(np.full(8, 0.25)))  # equality looks at the latent
    assert timeline.to_dict() == old  # written back exactly as read
    with pytest.raises(ValueError, match="unknown timeline event 'tempo'"):
        stamped_from_json({"sample": 0, "kind": "tempo"}, SR)


def test_an_internal_failure_exits_1_and_a_user_error_2(bundle, monkeypatch, tmp_path, capsys):
    from ganstream.realtime import cli

    args = [str(bundle.source), "-o", str(tmp_path / "x.wav"), "--seconds", "0.1", "--provider", "cpu"]
    assert render_main([*args[:2], str(tmp_path / "no" / "x.wav"), *args[3:]]) == 2
    monkeypatch.setattr(cli, "write_audio", lambda *a, **k: 1 / 0)
    assert render_main(args) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and err.strip().endswith("ganstream render: internal error (the traceback is above)")
