"""The streaming core with a numpy fake generator: joins, latents, control changes, resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganstream.realtime.latents import ControlPath, Keyframe, LatentSpace, SmoothedLatent
from ganstream.core.resample import ResampledStream
from ganstream.realtime.stream import SegmentStream, StreamSettings

SR = 16000
N = 1024
D = 6
BLOCKS = [1, 64, 65, 128, 8192, 8193]


class HarmonicFake:
    """A smooth synthesiser like the test bundle's: tanh(z @ W) weights 6 harmonics, whole cycles per segment.

    Rows are computed one at a time, so a row's audio never depends on the batch it came in.
    """

    sample_rate = SR
    segment = N
    latent_size = D

    def __init__(self):
        rng = np.random.default_rng(7)
        self.w = rng.standard_normal((D, 12)) * 1.5 / np.sqrt(D)
        t = np.arange(N)
        rows = []
        for h in range(1, 7):
            cycles = 7 * h  # ~109 Hz fundamental, whole cycles per segment
            rows += [np.sin(2 * np.pi * cycles * t / N) / h, np.cos(2 * np.pi * cycles * t / N) / h]
        self.basis = np.array(rows) * 0.3
        self.calls: list[np.ndarray] = []

    def generate(self, z: np.ndarray) -> np.ndarray:
        assert z.dtype == np.float32 and z.shape[1] == D
        self.calls.append(z.copy())
        return np.stack([np.tanh(row.astype(np.float64) @ self.w) @ self.basis for row in z]).astype(np.float32)


class TableFake:
    """Returns the given segments in order, one per latent, whatever the latents."""

    sample_rate = SR
    segment = N
    latent_size = D

    def __init__(self, segments):
        self.segments = [np.asarray(s, np.float32) for s in segments]
        self.used = 0

    def generate(self, z):
        out = np.stack([self.segments[(self.used + i) % len(self.segments)] for i in range(len(z))])
        self.used += len(z)
        return out


SPACE = LatentSpace(D, "uniform", {"bright": (np.eye(D)[0], 1.0), "dark": (np.eye(D)[1], 0.5)})


def read_blocks(stream, total, blocks):
    out, i = [], 0
    while sum(map(len, out)) < total:
        out.append(stream.read(min(blocks[i % len(blocks)], total - sum(map(len, out)))))
        i += 1
    return np.concatenate(out)


def paths():
    return {
        "fixed": lambda: ControlPath.fixed(SPACE, 3),
        "walk": lambda: ControlPath.random_walk(SPACE, 3, rate_hz=4.0, depth=0.5, sample_rate=SR),
        "keyframes": lambda: ControlPath.from_keyframes(
            SPACE,
            [
                Keyframe(5000, latent=np.full(D, 0.5), curve="step"),
                Keyframe(5100, macros={"bright": 1.0}, curve="step"),
                Keyframe(12000, latent=np.full(D, -0.5), macros={"dark": -1.0}, curve="cosine"),
                Keyframe(15000, macros={"bright": 0.0}, curve="linear"),
            ],
            base=SPACE.seed_latent(3),
            seed=3, walk_rate=3.0, walk_depth=0.3, sample_rate=SR,
        ),
    }


# -- block size independence -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["crossfade", "texture"])
@pytest.mark.parametrize("kind", ["fixed", "walk", "keyframes"])
def test_output_does_not_depend_on_read_sizes(mode, kind):
    settings = StreamSettings(mode=mode, crossfade=128)
    whole = SegmentStream(HarmonicFake(), paths()[kind](), settings).read(24000)
    blocks = read_blocks(SegmentStream(HarmonicFake(), paths()[kind](), settings), 24000, BLOCKS)
    np.testing.assert_array_equal(whole, blocks)
    assert np.all(np.isfinite(whole)) and np.abs(whole).max() > 0.05


@pytest.mark.parametrize("mode", ["crossfade", "texture"])
def test_batching_segments_changes_nothing(mode):
    """Generating several segments per call (render) gives the same latents, so the same audio."""
    one = SegmentStream(HarmonicFake(), paths()["keyframes"](), StreamSettings(mode=mode, crossfade=128)).read(20000)
    batched = SegmentStream(
        HarmonicFake(), paths()["keyframes"](), StreamSettings(mode=mode, crossfade=128, batch=5)
    ).read(20000)
    np.testing.assert_array_equal(one, batched)


# -- joins -------------------------------------------------------------------------------------


def test_crossfade_mode_matches_a_hand_computed_join():
    rng = np.random.default_rng(0)
    s0, s1, s2 = rng.uniform(-1, 1, (3, N)).astype(np.float32)
    c = 200
    h = N - c
    stream = SegmentStream(TableFake([s0, s1, s2]), ControlPath.fixed(SPACE, 0), StreamSettings(crossfade=c, fade_in_s=0))
    out = stream.read(2 * h)
    theta = 0.5 * np.pi * (np.arange(c) + 0.5) / c
    ref = np.concatenate([s0[:h], s0[h:] * np.cos(theta) + s1[:c] * np.sin(theta), s1[c:h]])
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_crossfade_is_equal_power():
    c = 256
    ones, zeros = np.ones(N, np.float32), np.zeros(N, np.float32)
    settings = StreamSettings(crossfade=c, fade_in_s=0)
    h = N - c
    fade_out = SegmentStream(TableFake([ones, zeros]), ControlPath.fixed(SPACE, 0), settings).read(h + c)[h:]
    fade_in = SegmentStream(TableFake([zeros, ones]), ControlPath.fixed(SPACE, 0), settings).read(h + c)[h:]
    np.testing.assert_allclose(fade_in**2 + fade_out**2, 1.0, atol=1e-6)
    assert np.all(np.diff(fade_in) > 0) and np.all(np.diff(fade_out) < 0)
    np.testing.assert_allclose(fade_in, np.sin(0.5 * np.pi * (np.arange(c) + 0.5) / c), atol=1e-6)


@pytest.mark.parametrize("overlap", [2, 4, 8])
def test_texture_windows_sum_to_one(overlap):
    """A constant generator gives a constant stream once the start fade-in is over (COLA)."""
    settings = StreamSettings(mode="texture", texture_overlap=overlap, fade_in_s=0.002)
    out = SegmentStream(TableFake([np.full(N, 0.5)]), ControlPath.fixed(SPACE, 0), settings).read(10 * N)
    np.testing.assert_allclose(out[32:], 0.5, atol=1e-6)
    assert out[0] < 0.01  # the stream fades in rather than starting with a step


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="crossfade"):
        SegmentStream(HarmonicFake(), ControlPath.fixed(SPACE), StreamSettings(crossfade=N // 2 + 1))
    with pytest.raises(ValueError, match="texture_overlap"):
        SegmentStream(HarmonicFake(), ControlPath.fixed(SPACE), StreamSettings(mode="texture", texture_overlap=3))
    with pytest.raises(ValueError, match="mode"):
        SegmentStream(HarmonicFake(), ControlPath.fixed(SPACE), StreamSettings(mode="loop"))


def max_jump_ratio(x: np.ndarray, positions, width: int) -> float:
    """Largest |x[n+1]-x[n]| within `width` after each position, over the largest in the stretches around it.

    A join or control change that clicks makes a jump far larger than the sound
    on either side of it; a good crossfade stays within the two sides' range.
    """
    d = np.abs(np.diff(x.astype(np.float64)))
    ratios = [
        d[p - 2 : p + width].max() / max(d[p - 2 - 3 * width : p - 2].max(), d[p + width : p + 4 * width].max())
        for p in positions
    ]
    return max(ratios)


def test_joins_have_no_clicks_and_hard_joins_would():
    """The join test's detector: crossfaded joins look like the rest, hard cuts stand out."""
    path = lambda: ControlPath.random_walk(SPACE, 1, rate_hz=8.0, depth=1.0, sample_rate=SR)  # noqa: E731
    smooth = SegmentStream(HarmonicFake(), path(), StreamSettings(crossfade=128))
    hard = SegmentStream(HarmonicFake(), path(), StreamSettings(crossfade=0))
    x, y = smooth.read(40 * N), hard.read(40 * N)
    assert max_jump_ratio(x, smooth.join_positions(len(x))[1:], 128) < 2.0
    assert max_jump_ratio(y, hard.join_positions(len(y))[1:], 16) > 4.0


# -- latents -----------------------------------------------------------------------------------


def test_random_walk_is_deterministic_bounded_and_smooth():
    a = ControlPath.random_walk(SPACE, 5, rate_hz=2.0, depth=0.3, sample_rate=SR)
    b = ControlPath.random_walk(SPACE, 5, rate_hz=2.0, depth=0.3, sample_rate=SR)
    c = ControlPath.random_walk(SPACE, 6, rate_hz=2.0, depth=0.3, sample_rate=SR)
    ts = np.arange(0, 20 * SR, 997)
    za = np.array([a.target(t, t) for t in ts])
    np.testing.assert_array_equal(za, [b.target(t, t) for t in reversed(ts)][::-1])  # any order
    assert not np.allclose(za, [c.target(t, t) for t in ts])
    offsets = np.array([a.walk.offset(t) for t in ts])
    assert np.abs(offsets).max() <= 0.3 and np.abs(offsets).max() > 0.1
    assert np.abs(za).max() <= 1.0  # folded into the uniform range
    fine = np.array([a.walk.offset(t) for t in range(0, SR, 16)])
    assert np.abs(np.diff(fine, axis=0)).max() < 0.3 * 2 * math.pi * 2.0 * 16 / SR  # no faster than the rate allows


def test_keyframes_interpolate_per_track():
    base = np.zeros(D)
    kf = ControlPath.from_keyframes(
        SPACE,
        [
            Keyframe(1000, latent=np.ones(D)),  # linear from the default at 0
            Keyframe(2000, macros={"bright": 1.0}, curve="cosine"),
            Keyframe(3000, latent=-np.ones(D), curve="step"),
        ],
        base=base,
    )
    t = lambda s: kf.target(s, s)  # noqa: E731
    np.testing.assert_allclose(t(500)[1:], 0.5)  # the base ramps linearly from its default at 0
    np.testing.assert_allclose(t(1000)[1:], 1.0)
    cos_quarter = 0.5 - 0.5 * math.cos(math.pi * 0.25)  # bright eases 0 -> 1 over 0..2000
    np.testing.assert_allclose(t(500)[0], 0.5 + cos_quarter)
    np.testing.assert_allclose(t(2999)[1:], 1.0)  # a step holds until its time
    np.testing.assert_allclose(t(3000)[1:], -1.0)
    np.testing.assert_allclose(t(10**6), -np.ones(D) + np.eye(D)[0])  # holds after the last
    np.testing.assert_allclose(kf.target(3500, 2999)[1:], 1.0)  # a step not yet happened is not seen
    assert list(kf.step_times()) == [3000]
    with pytest.raises(ValueError, match="unknown macro 'brite'.*bright, dark"):
        kf.add_keyframe(Keyframe(4000, macros={"brite": 1.0}))


def test_jumps_become_one_pole_glides():
    kf = ControlPath.from_keyframes(SPACE, [Keyframe(4000, latent=np.ones(D), curve="step")], base=np.zeros(D))
    tau = 800
    sm = SmoothedLatent(kf, tau)
    z = np.array([sm.latent(t) for t in range(3000, 9000)])
    assert np.abs(np.diff(z, axis=0)).max() <= 1.0 / tau + 1e-12  # never a jump
    np.testing.assert_allclose(z[1000 + tau], 1 - math.exp(-1), atol=1e-12)
    np.testing.assert_allclose(z[0], 0.0)


def test_latents_used_by_the_stream_never_jump():
    """Each generator call's latents differ from the last call's by at most the first glide step."""
    fake = HarmonicFake()
    kf = ControlPath.from_keyframes(
        SPACE,
        [Keyframe(3000, latent=np.full(D, 0.8), curve="step"), Keyframe(9000, latent=np.full(D, -0.8), curve="step")],
        base=np.zeros(D),
    )
    settings = StreamSettings(crossfade=128, latent_smoothing_s=0.05, control_period_s=0.02)
    stream = SegmentStream(fake, kf, settings)
    stream.read(16000)
    seen = np.concatenate(fake.calls).astype(np.float64)
    steps = np.abs(np.diff(seen, axis=0)).max(axis=1)
    bound = 1.6 * (1 - math.exp(-0.02 / 0.05))
    assert steps.max() <= bound + 1e-6
    assert stream.regenerations > 0
    np.testing.assert_allclose(seen[-1], -0.8, atol=2e-3)  # and they get there


# -- control changes -----------------------------------------------------------------------------


def control_stream(change_at=None, live=False, **settings):
    kf = ControlPath.from_keyframes(SPACE, [], base=SPACE.seed_latent(2), seed=2, walk_rate=2.0, walk_depth=0.3, sample_rate=SR)
    frame = Keyframe(change_at, SPACE.seed_latent(9), {"bright": 1.5, "dark": -1.0}, "step") if change_at else None
    if frame and not live:
        kf.add_keyframe(frame)
    return SegmentStream(HarmonicFake(), kf, StreamSettings(**{"crossfade": 128, **settings})), kf, frame


@pytest.mark.parametrize(
    "t_change, mode", [(3000, "crossfade"), (3500, "crossfade"), (3000, "texture")]
)  # inside a segment, inside a join, and among overlapping windows
def test_a_control_change_is_heard_at_once(t_change, mode):
    base = control_stream(mode=mode)[0].read(12000)
    changed_stream = control_stream(t_change, mode=mode)[0]
    changed = changed_stream.read(12000)
    x = round(changed_stream.settings.control_crossfade_s * SR)
    np.testing.assert_array_equal(changed[:t_change], base[:t_change])
    first = int(np.flatnonzero(changed != base)[0])
    assert t_change <= first < t_change + 4  # the position-locked crossfade starts at the change
    assert np.abs(changed[t_change + x : t_change + 2 * x] - base[t_change + x : t_change + 2 * x]).max() > 0.01


@pytest.mark.parametrize("mode", ["crossfade", "texture"])
def test_a_live_change_matches_the_same_change_known_in_advance(mode):
    """The live engine adds a step when it happens; render knows it up front: same samples."""
    t_change = 5000
    ahead = control_stream(t_change, mode=mode)[0]
    expected = read_blocks(ahead, 16000, [333])
    live, kf, frame = control_stream(t_change, live=True, mode=mode)
    got = [live.read(t_change)]  # up to the change...
    kf.add_keyframe(frame)  # ...which arrives stamped with the current position
    got.append(read_blocks(live, 16000 - t_change, BLOCKS))
    np.testing.assert_array_equal(np.concatenate(got), expected)


def test_control_crossfade_prevents_a_click():
    t_change = 3333  # where old and new differ clearly: a hard switch here jumps
    smooth = control_stream(t_change, latent_smoothing_s=0.0)[0].read(8000)
    hard = control_stream(t_change, latent_smoothing_s=0.0, control_crossfade_s=1 / SR)[0].read(8000)
    assert max_jump_ratio(smooth, [t_change], 80) < 1.5
    assert max_jump_ratio(hard, [t_change], 80) > 3.0


def test_steps_closer_than_the_control_period_share_regenerations():
    kf = ControlPath.from_keyframes(SPACE, [Keyframe(3000 + 10 * i, macros={"bright": i / 10}, curve="step") for i in range(10)])
    stream = SegmentStream(HarmonicFake(), kf, StreamSettings(crossfade=128, control_period_s=0.02))
    stream.read(8000)
    # one glide, regenerated every 20 ms while it lasts, not ten
    assert stream.generator_calls < 8000 // stream.hop + 1 + 15


# -- resampling ----------------------------------------------------------------------------------


class Sine:
    def __init__(self, hz, rate):
        self.hz, self.rate, self.n = hz, rate, 0

    def read(self, n):
        t = np.arange(self.n, self.n + n)
        self.n += n
        return (0.5 * np.sin(2 * np.pi * self.hz * t / self.rate)).astype(np.float32)


@pytest.mark.parametrize("out_rate", [48000, 44100, 22050])
def test_resampler_is_block_independent_and_exact(out_rate):
    total = out_rate  # one second
    whole = ResampledStream(Sine(1000, SR), SR, out_rate).read(total)
    blocks = read_blocks(ResampledStream(Sine(1000, SR), SR, out_rate), total, BLOCKS)
    assert len(whole) == total
    np.testing.assert_array_equal(whole, blocks)
    t = np.arange(total) / out_rate
    ref = 0.5 * np.sin(2 * np.pi * 1000 * t)
    np.testing.assert_allclose(whole[200:], ref[200:], atol=2e-3)  # in time, no delay


def test_resampler_passes_equal_rates_through():
    a = ResampledStream(Sine(440, SR), SR, SR).read(5000)
    np.testing.assert_array_equal(a, Sine(440, SR).read(5000))
