"""Where the latents come from: one `ControlPath` (a fixed seed, a smooth random walk, keyframes, or live changes).

Every source here is a *path*: a pure function of model-rate sample time, so a
stream built on it is the same however it is read, and `render` can reproduce a
live session from its timeline. A path answers two questions:

- `target(t, upto)` -> (D,) float64: the latent the path asks for at sample t,
  counting only the *steps* (discrete changes) stamped at or before `upto`.
  Steps after `upto` have not happened yet: a live engine learns of a knob move
  only when it happens, so the stream never looks past the present for them.
  Continuous motion (the walk, keyframe ramps) is known in advance.
- `step_times()` -> the sorted sample times at which the target jumps.

Jumps are never played as jumps. `SmoothedLatent` turns each jump J at t_i into
a one-pole glide with time constant tau (`latent_smoothing_s`):

    z(t) = target(t) - sum_{t_i <= t} J_i * exp(-(t - t_i) / tau)

which is exactly the one-pole response to the step part of the target, and is
continuous at every t_i. Continuous motion is already smooth and is not
delayed. Latents are float64 here and cast to float32 only at the generator.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

CURVES = ("linear", "cosine", "step")
_WALK_TAG = 0x77616C6B  # "walk": keeps the walk's random stream apart from the seed latent's
_KNOTS_PER_CHUNK = 256


class LatentPath(Protocol):
    latent_size: int

    def target(self, t: int, upto: int) -> np.ndarray: ...

    def step_times(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class LatentSpace:
    """The latent space of one generator: size D, distribution, and its named control directions.

    controls: name -> (direction (D,), scale); a macro at value v adds
    v * scale * direction to the latent (the bundle's `controls`).
    sampler: (n, rng) -> (n, D) float32 random latents; `from_bundle` uses the
    bundle's own `random_latents`, so a seed means the same latent everywhere.
    """

    size: int
    distribution: str = "uniform"
    controls: Mapping[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    sampler: Callable[[int, np.random.Generator], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.distribution not in ("uniform", "normal"):
            raise ValueError(f"unknown latent distribution {self.distribution!r} (uniform or normal)")

    @classmethod
    def from_bundle(cls, bundle) -> "LatentSpace":
        controls = {item.name: bundle.control(item.name) for item in bundle.control_items}
        return cls(bundle.latent_size, bundle.latent_distribution, controls, bundle.random_latents)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, D) float32 latents drawn from the distribution."""
        if self.sampler is not None:
            return np.asarray(self.sampler(n, rng), dtype=np.float32).reshape(n, self.size)
        if self.distribution == "uniform":
            return rng.uniform(-1.0, 1.0, size=(n, self.size)).astype(np.float32)
        return rng.standard_normal((n, self.size)).astype(np.float32)

    def seed_latent(self, seed: int) -> np.ndarray:
        """(D,) float64: the latent that `seed` names (`np.random.default_rng(seed)`, first draw)."""
        return self.random(1, np.random.default_rng(seed))[0].astype(np.float64)

    def fold(self, z: np.ndarray) -> np.ndarray:
        """Keep a wandering latent inside the distribution's range.

        uniform: reflect into [-1, 1] (a triangle fold: continuous, so a path
        never jumps at the edge); normal: unchanged.
        """
        if self.distribution != "uniform":
            return z
        # 1 - |((z + 1) mod 4) - 2| is z on [-1, 1] and mirrors it at each edge.
        return 1.0 - np.abs(np.mod(z + 1.0, 4.0) - 2.0)

    def macro_offset(self, values: Mapping[str, float]) -> np.ndarray:
        """(D,) sum of v * scale * direction over the named macros."""
        out = np.zeros(self.size)
        for name, v in values.items():
            direction, scale = self.controls[name]
            out += float(v) * float(scale) * np.asarray(direction, dtype=np.float64)
        return out


class Walk:
    """A smooth, bounded random offset: a uniform cubic B-spline through random knots.

    Knots come `rate_hz` times a second, each uniform in [-depth, depth] per
    component; the B-spline weights are a convex combination, so the offset
    never leaves [-depth, depth] and is twice continuously differentiable.
    Knot j is drawn from `SeedSequence([seed, "walk", j // 256])`, so the walk
    can be evaluated at any time in any order and is the same on every run.

    `change(t, rate, depth)` (a live session's walk control) starts a new
    segment at sample t: the phase goes on from where it was, so a rate change
    does not jump, and rate 0 holds the walk where it is. Without changes the
    phase is t / spacing, the same arithmetic a render uses.
    """

    def __init__(self, size: int, seed: int, rate_hz: float, depth: float, sample_rate: int):
        if rate_hz < 0 or depth < 0 or not (math.isfinite(rate_hz) and math.isfinite(depth)):
            raise ValueError(f"walk rate and depth must be finite and >= 0, got rate {rate_hz}, depth {depth}")
        self.size, self.seed = size, int(seed)
        self.sample_rate = sample_rate
        self._chunks: dict[int, np.ndarray] = {}
        # Segment i: from times[i], phase phases[i] + (t - times[i]) / spacings[i], depth depths[i].
        self.times = [0]
        self.phases = [0.0]
        self.spacings = [self._spacing(rate_hz)]
        self.depths = [float(depth)]

    @property
    def depth(self) -> float:
        """The depth it started with."""
        return self.depths[0]

    @property
    def spacing(self) -> float:
        """Samples between knots at the start (inf for rate 0)."""
        return self.spacings[0]

    def _spacing(self, rate_hz: float) -> float:
        return self.sample_rate / float(rate_hz) if rate_hz > 0 else math.inf

    def _knots(self, j: int) -> np.ndarray:
        """(4, D): knots j-1 .. j+2."""
        rows = []
        for k in range(j - 1, j + 3):
            c, i = divmod(k, _KNOTS_PER_CHUNK)
            chunk = self._chunks.get(c)
            if chunk is None:
                if len(self._chunks) > 8:
                    self._chunks.clear()
                rng = np.random.default_rng([self.seed, _WALK_TAG, c + (1 << 31)])
                chunk = self._chunks[c] = rng.uniform(-1.0, 1.0, size=(_KNOTS_PER_CHUNK, self.size))
            rows.append(chunk[i])
        return np.stack(rows)

    def _segment(self, t: int, upto: int) -> int:
        return max(0, bisect.bisect_right(self.times, min(t, upto)) - 1)

    def _phase(self, i: int, t: int) -> float:
        if i == 0:
            return t / self.spacings[0]
        return self.phases[i] + (t - self.times[i]) / self.spacings[i]

    def depth_at(self, t: int, upto: int | None = None) -> float:
        """The depth at sample t, counting changes stamped at or before `upto` (default t)."""
        return self.depths[self._segment(t, t if upto is None else upto)]

    def offset(self, t: int, upto: int | None = None) -> np.ndarray:
        """(D,) float64 offset at sample t (any integer, negative included), changes up to `upto` (default t)."""
        i = self._segment(t, t if upto is None else upto)
        return self.at(self._phase(i, t), self.depths[i])

    def at(self, u: float, depth: float) -> np.ndarray:
        """(D,) float64 offset at knot phase u (knot j at u = j) with the given depth."""
        j = math.floor(u)
        f = u - j
        w = np.array(
            [(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3]
        ) / 6.0
        return depth * (w @ self._knots(j))

    def change(self, t: int, rate_hz: float, depth: float) -> None:
        """From sample t (not before the last change), go on at this rate and depth."""
        if rate_hz < 0 or depth < 0 or not (math.isfinite(rate_hz) and math.isfinite(depth)):
            raise ValueError(f"walk rate and depth must be finite and >= 0, got rate {rate_hz}, depth {depth}")
        i = self._segment(t, t)
        phase = self._phase(i, t)
        self.times.append(t)
        self.phases.append(phase)
        self.spacings.append(self._spacing(rate_hz))
        self.depths.append(float(depth))

    def forget_before(self, t: int) -> None:
        i = bisect.bisect_right(self.times, t) - 1
        if i > 1:  # keep segment 0: its phase formula is the unchanged walk's
            for seq in (self.times, self.phases, self.spacings, self.depths):
                del seq[1:i]


@dataclass(frozen=True)
class Keyframe:
    """At model sample `sample`, the base latent and/or some macro values.

    latent: (D,) base latent, or None to leave the base alone.
    macros: name -> value (knob units: v adds v * scale * direction).
    curve: how each value it sets travels from the previous keyframe of the
    same track: "linear", "cosine" (eased) or "step" (hold, then jump here;
    a jump is smoothed by `SmoothedLatent` and, in a stream, heard at once).
    """

    sample: int
    latent: np.ndarray | None = None
    macros: Mapping[str, float] = field(default_factory=dict)
    curve: str = "linear"


class _Track:
    """One value (the base latent, or one macro) over time: `initial`, then segments.

    Segment i starts at times[i] from starts[i] (the value there) and goes to
    goals[i]: at once (duration 0) or along a linear or cosine curve over
    `durations[i]` samples, then holds. A live change (`change`) is a segment
    that is a *step*: known only from its own time on. A keyframe (`keyframe`)
    with a curve is a glide from the previous keyframe, known in advance; a
    "step" keyframe is a step. `value(t, upto)` hides every step after `upto`
    and everything added after such a step: nothing after an unknown jump is
    known either. Both kinds use the same arithmetic, so a live session and a
    render of its keyframes give the same values, bit for bit.
    """

    def __init__(self, initial):
        self.initial = initial
        self.times: list[int] = []
        self.starts: list = []
        self.goals: list = []
        self.durations: list[int] = []
        self.eased: list[bool] = []  # cosine (True) or linear
        self.step_idx: list[int] = []  # indices of the segments that are steps
        self.step_t: list[int] = []  # their times
        self._key = 0  # time of the last keyframe (or change)
        self._explicit0 = False

    def value(self, t: int, upto: int):
        s = bisect.bisect_right(self.step_t, upto)
        stop = self.step_idx[s] if s < len(self.step_idx) else len(self.times)
        i = bisect.bisect_right(self.times, t, 0, stop) - 1
        if i < 0:
            return self.initial
        d = self.durations[i]
        if d <= 0 or t - self.times[i] >= d:
            return self.goals[i]
        f = (t - self.times[i]) / d
        if self.eased[i]:
            f = 0.5 - 0.5 * math.cos(math.pi * f)
        return self.starts[i] + (self.goals[i] - self.starts[i]) * f

    def _append(self, t: int, goal, duration: int, eased: bool, step: bool) -> None:
        self.starts.append(self.value(t, t))
        self.times.append(t)
        self.goals.append(goal)
        self.durations.append(int(duration))
        self.eased.append(eased)
        if step:
            self.step_idx.append(len(self.times) - 1)
            self.step_t.append(t)

    def change(self, t: int, goal, duration: int = 0) -> None:
        """A live change at t: to `goal` at once, or eased (cosine) over `duration` samples from wherever it is."""
        if self.times and self.times[-1] == t and duration == 0 and self.durations[-1] == 0:
            self.goals[-1] = goal  # two sets at one sample: the later wins, one event
            return
        self._append(t, goal, duration, True, step=True)
        self._key = t

    def keyframe(self, t: int, value, curve: str) -> None:
        """A keyframe: `value` at t, reached from the previous keyframe along `curve`."""
        if t == 0 and not self.times and not self._explicit0:
            self.initial = value  # an explicit keyframe at 0 replaces the default
            self._explicit0 = True
            return
        if t <= self._key:
            raise ValueError(f"keyframe times must increase (got {t} after {self._key})")
        if curve == "step":
            self._append(t, value, 0, False, step=True)
        else:
            self._append(self._key, value, t - self._key, curve == "cosine", step=False)
        self._key = t

    def forget_before(self, t: int) -> None:
        """Drop segments that no longer matter at or after t (keeps the last one at or before t)."""
        i = bisect.bisect_right(self.times, t) - 1
        if i > 0:
            for seq in (self.times, self.starts, self.goals, self.durations, self.eased):
                del seq[:i]
            k = bisect.bisect_left(self.step_idx, i)
            self.step_idx = [j - i for j in self.step_idx[k:]]
            del self.step_t[:k]


class ControlPath:
    """The latent path of a stream: a base latent, macro values and a walk, each changed over time.

        target(t) = fold(base(t) + walk(t)) + sum_m value_m(t) * scale_m * direction_m

    with the walk left out (and no fold) while its depth is 0. Render and play
    both play one of these; they differ only in how it is filled:

    - `render` builds it up front: `fixed`, `random_walk`, or `from_keyframes`
      (an automation file). Each track (the base, and each macro) starts with
      an implicit keyframe at sample 0 holding its default (`base`, macros 0)
      unless a keyframe at 0 sets it, holds its last value after its last
      keyframe, and between keyframes follows the later keyframe's curve.
    - the live engine adds control changes as they arrive, each stamped at a
      model sample: `set_latent` (the whole base), `set_macro`, `ramp` (an eased
      glide of the base and/or macros from wherever they are: a preset morph)
      and `set_walk` (rate and depth; a rate change keeps the walk's phase, so
      the walk does not jump).

    A live change and a "step" keyframe are *steps* for the stream: known only
    from their stamp on (`target(t, upto)` ignores steps after `upto`), and the
    stream regenerates the segments in flight at their stamp, so they are heard
    at once. Times must not go back. A live session with only `set_latent` and
    `set_macro` changes (and the walk it started with) gives the same targets,
    bit for bit, as its changes written as "step" keyframes.
    """

    def __init__(
        self,
        space: LatentSpace,
        base: np.ndarray | None = None,
        *,
        seed: int = 0,
        walk_rate: float = 0.2,
        walk_depth: float = 0.0,
        sample_rate: int = 16000,
    ):
        self.latent_size = space.size
        self._space = space
        self._base = _Track(np.zeros(space.size) if base is None else _check_latent(base, space.size))
        self._macros: dict[str, _Track] = {}
        self.walk = Walk(space.size, seed, walk_rate, walk_depth, sample_rate)
        self._steps: list[int] = []
        self._last = 0

    # -- render: built up front

    @classmethod
    def fixed(cls, space: LatentSpace, seed: int = 0, latent: np.ndarray | None = None) -> "ControlPath":
        """One latent for ever: `space.seed_latent(seed)`, or the latent given."""
        return cls(space, space.seed_latent(seed) if latent is None else latent, seed=seed, walk_depth=0.0)

    @classmethod
    def random_walk(cls, space: LatentSpace, seed: int, rate_hz: float, depth: float, sample_rate: int) -> "ControlPath":
        """The seed latent plus a walk seeded by the same seed, folded into range."""
        if rate_hz <= 0 or depth <= 0:
            raise ValueError(f"a random walk needs rate > 0 and depth > 0, got rate {rate_hz}, depth {depth}")
        return cls(space, space.seed_latent(seed), seed=seed, walk_rate=rate_hz, walk_depth=depth, sample_rate=sample_rate)

    @classmethod
    def from_keyframes(
        cls, space: LatentSpace, keyframes: Sequence[Keyframe] = (), base: np.ndarray | None = None, *,
        seed: int = 0, walk_rate: float = 0.2, walk_depth: float = 0.0, sample_rate: int = 16000,
    ) -> "ControlPath":
        """Keyframes over `base` (default zeros), with a walk while walk_depth > 0."""
        path = cls(space, base, seed=seed, walk_rate=walk_rate, walk_depth=walk_depth, sample_rate=sample_rate)
        for kf in keyframes:
            path.add_keyframe(kf)
        return path

    def add_keyframe(self, kf: Keyframe) -> None:
        """Append a keyframe; its sample must not be earlier than any before it."""
        if kf.curve not in CURVES:
            raise ValueError(f"unknown curve {kf.curve!r} (one of {', '.join(CURVES)})")
        unknown = sorted(set(kf.macros) - set(self._space.controls))
        if unknown:
            self._macro_track(unknown[0])  # raises, naming the macros there are
        for name, v in kf.macros.items():
            if not math.isfinite(float(v)):
                raise ValueError(f"macro {name!r} is not finite")
        z = None if kf.latent is None else _check_latent(kf.latent, self.latent_size)
        self._stamp(kf.sample, step=kf.curve == "step")
        if z is not None:
            self._base.keyframe(kf.sample, z, kf.curve)
        for name, v in kf.macros.items():
            self._macro_track(name).keyframe(kf.sample, float(v), kf.curve)

    # -- play: live changes, each a step

    def set_latent(self, t: int, z: np.ndarray) -> None:
        z = _check_latent(z, self.latent_size)
        self._stamp(t)
        self._base.change(t, z)

    def set_macro(self, t: int, name: str, value: float) -> None:
        track = self._macro_track(name)
        if not math.isfinite(value):
            raise ValueError(f"macro {name!r} is not finite")
        self._stamp(t)
        track.change(t, float(value))

    def ramp(self, t: int, duration: int, latent: np.ndarray | None = None, macros: Mapping[str, float] | None = None) -> None:
        """Glide the base (if `latent`) and the named macros to these values over `duration` samples from t."""
        z = None if latent is None else _check_latent(latent, self.latent_size)
        tracks = [(self._macro_track(n), float(v)) for n, v in (macros or {}).items()]
        self._stamp(t)
        if z is not None:
            self._base.change(t, z, duration)
        for track, v in tracks:
            track.change(t, v, duration)

    def set_walk(self, t: int, rate_hz: float, depth: float) -> None:
        if rate_hz < 0 or depth < 0 or not (math.isfinite(rate_hz) and math.isfinite(depth)):
            raise ValueError(f"walk rate and depth must be finite and >= 0, got rate {rate_hz}, depth {depth}")
        self._stamp(t)
        self.walk.change(t, rate_hz, depth)

    # -- the path

    def target(self, t: int, upto: int) -> np.ndarray:
        z = self._base.value(t, upto)
        if self.walk.depth_at(t, upto) > 0:
            z = self._space.fold(z + self.walk.offset(t, upto))
        if self._macros:
            z = z + self._space.macro_offset({n: tr.value(t, upto) for n, tr in self._macros.items()})
        return z

    def step_times(self) -> Sequence[int]:
        return self._steps

    def forget_before(self, t: int) -> None:
        """Free changes that cannot matter to any target at or after sample t (a long live session's memory)."""
        self._base.forget_before(t)
        for track in self._macros.values():
            track.forget_before(t)
        self.walk.forget_before(t)
        i = bisect.bisect_left(self._steps, t)
        if i > 1024:
            del self._steps[:i]

    def _stamp(self, t: int, step: bool = True) -> None:
        if t < self._last:
            raise ValueError(f"events must not go back in time (got sample {t} after {self._last})")
        if step and t > 0 and (not self._steps or self._steps[-1] != t):
            self._steps.append(t)
        self._last = t

    def _macro_track(self, name: str) -> _Track:
        if name not in self._space.controls:
            known = ", ".join(self._space.controls) or "none"
            raise ValueError(f"unknown macro {name!r} (known: {known})")
        return self._macros.setdefault(name, _Track(0.0))

class SmoothedLatent:
    """A path's latent with its jumps turned into one-pole glides, as the stream asks for it.

    latent(t) is the latent for a segment generated at sample t:

        latent(t) = target(t + L, upto=t) - sum_{t_i <= t} J_i * exp(-(t + L - t_i) / tau)

    with J_i = target(t_i, upto=t_i) - target(t_i, upto=t_i - 1) the jump at
    step t_i, tau = `smoothing` samples (0: no smoothing) and L = `lookahead`
    samples: a regeneration aims at where the glide will be when the next one
    can happen, so the first regeneration after a jump already moves. Only
    steps at or before t are used, so the answer never depends on when a live
    step became known, only on its time stamp.
    """

    def __init__(self, path: LatentPath, smoothing: float, lookahead: int = 0):
        self.path = path
        self.latent_size = path.latent_size
        self.tau = float(smoothing)
        self.lookahead = int(lookahead)
        self._jumps: dict[int, np.ndarray] = {}

    def jump(self, t_i: int) -> np.ndarray:
        j = self._jumps.get(t_i)
        if j is None:
            j = self._jumps[t_i] = self.path.target(t_i, t_i) - self.path.target(t_i, t_i - 1)
        return j

    def latent(self, t: int) -> np.ndarray:
        """(D,) float64."""
        te = t + self.lookahead
        z = np.array(self.path.target(te, t), dtype=np.float64)
        if self.tau > 0:
            steps = self.path.step_times()
            # Terms older than 40 tau are below 1e-17 of their jump: skip them.
            horizon = te - int(40 * self.tau)
            lo = bisect.bisect_left(steps, horizon)
            hi = bisect.bisect_right(steps, t)
            for i in range(lo, hi):
                t_i = steps[i]
                z -= self.jump(t_i) * math.exp(-(te - t_i) / self.tau)
            if len(self._jumps) > 4096:  # a long live session: forget jumps that no longer count
                self._jumps = {k: v for k, v in self._jumps.items() if k >= horizon}
        return z

    def next_step(self, t: int) -> int | None:
        """The first step time >= t, or None."""
        steps = self.path.step_times()
        i = bisect.bisect_left(steps, t)
        return steps[i] if i < len(steps) else None


def _check_latent(z, size: int) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if z.shape != (size,):
        raise ValueError(f"latent has {z.size} values, the generator takes {size}")
    if not np.all(np.isfinite(z)):
        raise ValueError("latent has a NaN or infinite value")
    return z
