"""The live engine: a producer thread that keeps a ring buffer just full enough, and an output that drains it.

    producer thread                                        audio callback
    Controls.pop() -> Chain.apply(event, stamp)             ring.read_into(out)
    Chain: ControlPath -> SegmentStream -> GainStage ->        ^  (copy, nothing else)
           ResampledStream -> Ring ------------------------------'

The producer owns the whole streaming chain (`Chain`). Once per step
(`chunk_s` of output) it drains the controls' queue and applies each typed
event (realtime/events.py) stamped at the stream's current write position
(model-rate samples), then, if the ring holds less than its target,
generates one more step and writes it. A control change is therefore heard
after exactly the audio already in flight: the ring's fill, the resampler's
delay and the device's latency. The target fill ("lookahead") adapts: one device block plus
`safety` times the decaying peaks of the time one step takes (a generator call
lands in some steps) and of how late the thread wakes, plus `margin_s`; an
underrun widens the margin. It shrinks back as the peaks decay, so it stays as
short as the machine allows.

Every event the producer applies is recorded with its stamp (`timeline()`),
and `render_timeline` plays such a timeline offline through the same chain:
the result matches the live output sample for sample (the stream, the gain
and the resampler are functions of stamped sample time, not of when blocks
were pulled). `automation_from_timeline` turns a timeline of latent, seed,
macro and preset changes and notes into an automation file for `ganstream render`.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from .control import Controls
from .events import (
    ControlEvent,
    GainChange,
    LatentChange,
    MacroChange,
    NoteOff,
    NoteOn,
    PadChange,
    PitchChange,
    PresetRecall,
    SeedChange,
    Stamped,
    WalkChange,
    stamped_from_json,
    stamped_to_json,
)
from .kit import Pad, parse_kit
from .latents import ControlPath, LatentSpace
from ganstream.core.resample import ResampledStream
from .ring import Ring
from .stream import SegmentStream, StreamSettings, probe_rows

LOG_BLOCKS = 1 << 13  # output blocks remembered for latency measurement


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs (the stream's own settings are a `StreamSettings`).

    sample_rate, blocksize: the output's rate and block (frames per callback).
    chunk_s: output produced per producer step; controls are read once per step.
    margin_s, safety, max_lookahead_s, min_lookahead_s: the ring's target fill is
        blocksize + clamp(safety * (peak step time + peak wake-up lateness) + margin_s + extra,
        min_lookahead_s, max_lookahead_s) seconds; peaks decay with `peak_half_life_s`.
        extra starts at `startup_margin_s` (halving every second: imports, page faults and
        caches warming up make the first seconds the least predictable) and grows by 5 ms
        at each underrun (halving every 30 s).
    gain_smoothing_s: time constant of the master gain's one-pole glide.
    resample_quality: "live" (default): `resample.PolyphaseResampler`, 2 ms of delay at a
        16 kHz model rate and output sample by sample; soxr's "HQ" (what `render` uses by
        default), "MQ" or "LQ" emit in 20-30 ms bursts and add as much latency again.
        `render --resample-quality` matches whichever the session used.
    resample_block_s: model-rate input per resampler call (the output does not depend on it).
    ring_s: ring capacity.
    realtime_priority: run the producer thread under SCHED_FIFO at the lowest real-time
        priority where the system allows it (below JACK's threads, above every ordinary
        process, so a busy machine does not make it late); otherwise it runs as usual.
    """

    sample_rate: int = 48000
    blocksize: int = 256
    chunk_s: float = 0.002
    margin_s: float = 0.005
    safety: float = 1.5
    startup_margin_s: float = 0.02
    min_lookahead_s: float = 0.0
    max_lookahead_s: float = 0.5
    peak_half_life_s: float = 5.0
    gain_smoothing_s: float = 0.02
    resample_quality: str = "live"
    resample_block_s: float = 0.002
    ring_s: float = 2.0
    realtime_priority: bool = True

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.blocksize <= 0:
            raise ValueError(f"sample rate and blocksize must be positive, got {self.sample_rate}, {self.blocksize}")
        if self.max_lookahead_s + self.blocksize / self.sample_rate + 4 * self.chunk_s >= self.ring_s:
            raise ValueError("ring_s must exceed max_lookahead_s plus a block and a few chunks")


# `--low-latency`: a 2 ms margin and a smaller safety factor. The producer keeps its 2 ms steps:
# shorter ones mean more GIL hand-overs, which cost 64-frame callbacks more than they save.
LOW_LATENCY = {"margin_s": 0.002, "safety": 1.25, "startup_margin_s": 0.01}


def low_latency_help() -> str:
    """What `--low-latency` changes, in words, made from LOW_LATENCY itself so the help cannot drift from it."""
    d = EngineSettings()
    lo = EngineSettings(**LOW_LATENCY)
    return (
        f"smaller safety margins: a {1000 * lo.margin_s:g} ms margin (default {1000 * d.margin_s:g}), "
        f"safety factor {lo.safety:g} ({d.safety:g}), start-up margin {1000 * lo.startup_margin_s:g} ms "
        f"({1000 * d.startup_margin_s:g}); producer steps stay {1000 * lo.chunk_s:g} ms. "
        "Lower latency, less headroom against underruns"
    )


# -- master gain ---------------------------------------------------------------------------------


class GainStage:
    """A source (the SegmentStream) times a master gain that glides (one pole) to each new value.

    A change at model sample t_i to g starts from the gain at t_i and approaches
    g as exp(-(t - t_i) / tau); once the rest is below 1e-7 it is exactly g. The
    gain is a function of stamped sample time only, so the output does not
    depend on read sizes. Gain 1 passes samples through untouched.
    """

    def __init__(self, source, sample_rate: int, smoothing_s: float, gain: float = 1.0, max_block: int = 1 << 14):
        self.source = source
        self.tau = max(0.0, smoothing_s) * sample_rate
        self._t0, self._from, self._to, self._settled = 0, float(gain), float(gain), 0
        self._events: deque[tuple[int, float]] = deque()
        self._pos = 0
        self._idx = np.arange(max_block, dtype=np.float64)
        self._env = np.empty(max_block, dtype=np.float64)

    @property
    def position(self) -> int:
        return self._pos

    @property
    def gain(self) -> float:
        """The gain now (at `position`)."""
        return self._value(self._pos)

    @property
    def target(self) -> float:
        return self._events[-1][1] if self._events else self._to

    def set(self, t: int, gain: float) -> None:
        """Glide to `gain` from model sample t (>= the last change's)."""
        last = self._events[-1][0] if self._events else self._t0
        if t < last:
            raise ValueError(f"gain changes must not go back (got sample {t} after {last})")
        self._events.append((int(t), float(gain)))

    def _value(self, t: int) -> float:
        if t >= self._settled or self.tau == 0:
            return self._to
        return self._to + (self._from - self._to) * math.exp(-(t - self._t0) / self.tau)

    def _begin(self, t: int, gain: float) -> None:
        g = self._value(t)
        self._t0, self._from, self._to = t, g, gain
        diff = abs(g - gain)
        self._settled = t if diff < 1e-7 or self.tau == 0 else t + math.ceil(self.tau * math.log(diff / 1e-7))

    def read(self, n: int) -> np.ndarray:
        out = self.source.read(n)
        done = 0
        while done < n:
            while self._events and self._events[0][0] <= self._pos:
                self._begin(self._pos, self._events.popleft()[1])
            stop = self._pos + (n - done)
            if self._events:
                stop = min(stop, self._events[0][0])
            self._apply(out[done : done + stop - self._pos], self._pos)
            done += stop - self._pos
            self._pos = stop
        return out

    def _apply(self, x: np.ndarray, a: int) -> None:
        m = len(x)
        b = a + m
        if a >= self._settled:
            if self._to != 1.0:
                x *= np.float32(self._to)
            return
        k = min(b, self._settled) - a  # samples still gliding
        for lo in range(0, k, len(self._idx)):
            hi = min(k, lo + len(self._idx))
            env = self._env[: hi - lo]
            np.add(self._idx[: hi - lo], float(a + lo - self._t0), out=env)
            env *= -1.0 / self.tau
            np.exp(env, out=env)
            env *= self._from - self._to
            env += self._to
            x[lo:hi] *= env.astype(np.float32)
        if k < m and self._to != 1.0:
            x[k:] *= np.float32(self._to)


# -- outputs ------------------------------------------------------------------------------------


class NullOutput:
    """An output without a sound card: a thread pulls the ring at the real-time pace of `sample_rate`.

    capture_s: keep the first so many seconds of what it pulled in `captured` (tests).
    Its clock is time.monotonic; a block's "DAC time" is when it was pulled.
    """

    name = "null"

    def __init__(self, ring: Ring, sample_rate: int, blocksize: int = 256, capture_s: float = 0.0):
        self.ring = ring
        self.sample_rate = sample_rate
        self.blocksize = blocksize
        self.channels = 1
        self.xruns = 0
        self.block_pos = np.zeros(LOG_BLOCKS, dtype=np.int64)
        self.block_dac = np.zeros(LOG_BLOCKS, dtype=np.float64)
        self.blocks = 0
        self.first_sound: tuple[float, float] | None = None  # (dac time, monotonic time)
        self.captured = np.zeros(round(capture_s * sample_rate), dtype=np.float32)
        self._buf = np.zeros(blocksize, dtype=np.float32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def latency(self) -> float:
        return 0.0

    def time(self) -> float:
        return time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ganstream-null-output", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)  # it sleeps a block at most between checks

    def _run(self) -> None:
        period = self.blocksize / self.sample_rate
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            due = start + k * period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            self.pull(time.monotonic())
            k += 1

    def pull(self, now: float) -> int:
        """One block, as the device callback would take it."""
        i = self.blocks & (LOG_BLOCKS - 1)
        pos = self.ring.read_position
        self.block_pos[i] = pos
        self.block_dac[i] = now
        n = self.ring.read_into(self._buf)
        self.blocks += 1
        if n and self.first_sound is None:
            self.first_sound = (now, time.monotonic())
        c = self.captured
        if pos < len(c):
            m = min(len(c) - pos, self.blocksize)
            c[pos : pos + m] = self._buf[:m]
        return n


# -- the chain and its timeline -------------------------------------------------------------------


@dataclass
class Timeline:
    """What a live session did: its starting state and every event it applied, with its model-rate stamp.

    events: `Stamped` control events (realtime/events.py) in the order applied;
    `to_dict`/`from_dict` give and read the JSON `play --record` writes.
    """

    model_rate: int
    output_rate: int
    seed: int
    latent: list[float]
    walk_rate: float
    walk_depth: float
    gain: float
    stream: dict
    engine: dict
    events: list[Stamped] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "events"}
        return {**d, "events": [stamped_to_json(e, self.model_rate) for e in self.events]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Timeline":
        rate = int(d["model_rate"])
        return cls(**{**d, "events": [stamped_from_json(e, rate) for e in d.get("events", ())]})


class Chain:
    """The streaming chain both the live engine and `render_timeline` pull from:

        ControlPath -> SegmentStream -> GainStage -> ResampledStream

    `apply(event, t)` puts one control event into it at model sample t, by the
    event's type; `read(n)` gives the next n samples at the output rate.
    """

    def __init__(
        self, generator, space: LatentSpace, stream_settings: StreamSettings, settings: EngineSettings,
        *, seed: int, latent: np.ndarray | None, walk_rate: float, walk_depth: float, gain: float,
    ):
        self.model_rate = int(generator.sample_rate)
        base = space.seed_latent(seed) if latent is None else np.asarray(latent, dtype=np.float64)
        self.path = ControlPath(
            space, base, seed=seed, walk_rate=walk_rate, walk_depth=walk_depth, sample_rate=self.model_rate
        )
        self.stream = SegmentStream(generator, self.path, stream_settings)
        self.gain = GainStage(self.stream, self.model_rate, settings.gain_smoothing_s, gain)
        block = max(16, round(settings.resample_block_s * self.model_rate))
        self.resampled = ResampledStream(
            self.gain, self.model_rate, settings.sample_rate, quality=settings.resample_quality, block=block
        )

    def read(self, n: int) -> np.ndarray:
        return self.resampled.read(n)

    @functools.singledispatchmethod
    def apply(self, event: ControlEvent, t: int) -> None:
        raise ValueError(f"unknown control event {event!r}")

    @apply.register
    def _latent(self, event: LatentChange, t: int) -> None:
        self.path.set_latent(t, event.latent)

    @apply.register
    def _seed(self, event: SeedChange, t: int) -> None:
        self.path.set_latent(t, event.latent)

    @apply.register
    def _macro(self, event: MacroChange, t: int) -> None:
        self.path.set_macro(t, event.name, float(event.value))

    @apply.register
    def _recall(self, event: PresetRecall, t: int) -> None:
        samples = event.samples(self.model_rate)
        if samples > 0:
            self.path.ramp(t, samples, event.latent, event.macros)
            return
        if event.latent is not None:
            self.path.set_latent(t, event.latent)
        for name, v in event.macros.items():
            self.path.set_macro(t, name, float(v))

    @apply.register
    def _walk(self, event: WalkChange, t: int) -> None:
        self.path.set_walk(t, float(event.rate), float(event.depth))

    @apply.register
    def _gain(self, event: GainChange, t: int) -> None:
        self.gain.set(t, float(event.gain))

    @apply.register
    def _note_on(self, event: NoteOn, t: int) -> None:
        self.stream.trigger(t, float(event.velocity), event.note)

    @apply.register
    def _note_off(self, event: NoteOff, t: int) -> None:
        self.stream.note_off(t, int(event.note))

    @apply.register
    def _pitch(self, event: PitchChange, t: int) -> None:
        self.stream.set_pitch(t, float(event.pitch))

    @apply.register
    def _pad(self, event: PadChange, t: int) -> None:
        latent = np.asarray(event.latent, dtype=np.float32)
        self.stream.set_pad(t, Pad(int(event.note), event.name, latent, float(event.gain), event.choke))


OUT_OF_RANGE = ("fold", "refuse")  # what a conditioned bundle does with a note outside its trained range


def stream_json(s: StreamSettings) -> dict:
    """Stream settings as a timeline holds them: JSON values, a kit's pads with their latents spelt out."""
    d = {f.name: getattr(s, f.name) for f in fields(s)}
    if s.pitch_range is not None:
        d["pitch_range"] = list(s.pitch_range)
    if s.kit is not None:
        d["kit"] = {"name": s.kit.name, "pads": {
            int(n): {"name": p.name, "latent": [float(v) for v in p.latent], "gain": p.gain, **({"choke": p.choke} if p.choke else {})}
            for n, p in s.kit.pads.items()}}
    return d


def stream_from_json(d: Mapping, space: LatentSpace) -> StreamSettings:
    """`stream_json` read back (a timeline from before kits and conditions has neither)."""
    d = dict(d)
    if d.get("pitch_range") is not None:
        d["pitch_range"] = tuple(d["pitch_range"])
    if d.get("kit") is not None:
        d["kit"] = parse_kit(d["kit"], space, where="timeline stream.kit")
    return StreamSettings(**d)


def render_timeline(generator, space: LatentSpace, timeline: Timeline, samples: int) -> np.ndarray:
    """(samples,) float32 at the output rate: what the live engine played for this timeline."""
    chain = Chain(
        generator, space, stream_from_json(timeline.stream, space), EngineSettings(**timeline.engine), seed=timeline.seed,
        latent=np.asarray(timeline.latent), walk_rate=timeline.walk_rate, walk_depth=timeline.walk_depth,
        gain=timeline.gain,
    )
    # All known in advance: the path, the gain and the triggers only use an event from its own stamp on.
    for e in sorted(timeline.events, key=lambda e: e.sample):  # stable: same-stamp order kept
        chain.apply(e.event, e.sample)
    return chain.read(samples)


@functools.singledispatch
def _automation_fields(event: ControlEvent, model_rate: int) -> dict | None:
    """The keyframe fields an event becomes in an automation file; None: it cannot be one."""
    return None


@_automation_fields.register
def _(event: LatentChange, model_rate: int) -> dict:
    return {"latent": event.latent.tolist()}


@_automation_fields.register
def _(event: SeedChange, model_rate: int) -> dict:
    return {"latent": event.latent.tolist()}


@_automation_fields.register
def _(event: MacroChange, model_rate: int) -> dict:
    return {"macros": {event.name: event.value}}


@_automation_fields.register
def _(event: PresetRecall, model_rate: int) -> dict | None:
    if event.samples(model_rate) != 0:
        return None  # a morph: an automation ramp starts at the previous keyframe, not at the recall
    fields = {"macros": dict(event.macros)}
    if event.latent is not None:
        fields["latent"] = event.latent.tolist()
    return fields


def _note_entry(event: ControlEvent, sample: int, model_rate: int) -> dict | None:
    """A note-on or note-off as an entry of an automation file's "notes"; None for other events."""
    if isinstance(event, NoteOn):
        return {"time": sample / model_rate, **({} if event.note is None else {"note": event.note}), "velocity": event.velocity}
    if isinstance(event, NoteOff):
        return {"time": sample / model_rate, "note": event.note, "off": True}
    if isinstance(event, PitchChange):
        return {"time": sample / model_rate, "pitch": event.pitch}
    return None


def automation_from_timeline(timeline: Timeline) -> dict:
    """An automation document (docs/automation.md) with the timeline's latent and macro changes as steps,
    and its note-ons and note-offs as notes.

    Render it with `ganstream render --automation FILE --seed SEED` and the walk
    and stream options of the session (`render_options`). Raises ValueError for
    events an automation file cannot hold (walk or gain changes, morphs).
    """
    sr = timeline.model_rate
    frames: list[dict] = []
    notes: list[dict] = []
    for e in timeline.events:
        note = _note_entry(e.event, e.sample, sr)
        if note is not None:
            notes.append(note)
            continue
        fields = _automation_fields(e.event, sr)
        if fields is None:
            raise ValueError(f"an automation file cannot hold a {e.event.kind} event (sample {e.sample})")
        if frames and frames[-1]["sample"] == e.sample:
            last = frames[-1]
            if "latent" in fields:
                last["latent"] = fields["latent"]
            if "macros" in fields:
                last.setdefault("macros", {}).update(fields["macros"])
        else:
            frames.append({"sample": e.sample, **fields})
    keyframes = [{"time": f.pop("sample") / sr, **f, "curve": "step"} for f in frames]
    for k in keyframes:  # a first keyframe at 0 would replace the track's start instead of stepping
        if k["time"] == 0:
            raise ValueError("an event at sample 0 cannot be an automation step")
    return {"keyframes": keyframes, **({"notes": notes} if notes else {})}


def render_options(timeline: Timeline) -> list[str]:
    """`ganstream render` options that set up the stream as the live session had it."""
    s = {**asdict(StreamSettings()), **timeline.stream}  # a timeline from before a setting existed: its default
    opts = ["--seed", str(timeline.seed), "--mode", s["mode"], "--crossfade", str(s["crossfade"]),
            "--texture-overlap", str(s["texture_overlap"]), "--smoothing", repr(s["latent_smoothing_s"]),
            "--sample-rate", str(timeline.output_rate), "--polyphony", str(s["polyphony"]),
            *(["--note-off"] if s["note_off"] else []),
            *(["--no-transpose"] if s["root_note"] is None else ["--root-note", repr(float(s["root_note"]))]),
            "--velocity-curve", "linear" if s["velocity_exponent"] == 1.0 else f"exp:{s['velocity_exponent']!r}"]
    if timeline.walk_depth > 0:
        opts += ["--walk-rate", repr(timeline.walk_rate), "--walk-depth", repr(timeline.walk_depth)]
    else:
        opts += ["--no-walk"]
    return opts


# -- the engine ---------------------------------------------------------------------------------


def raise_priority() -> str:
    """Put the calling thread under SCHED_FIFO priority 1 if allowed; say what it runs under.

    Threads the caller starts afterwards inherit it (Linux). `ganstream play` calls this
    first thing, so every thread that takes Python's GIL (producer, OSC, MIDI, main)
    outranks ordinary processes: a busy machine cannot preempt a thread holding the GIL
    while the audio callback waits for it. Priority 1 stays below JACK's own threads.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # 0: the calling thread
        return "SCHED_FIFO 1"
    except (AttributeError, OSError):
        return "normal"


class _Silence:
    def read(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)


class _Peak:
    """A peak hold that decays with a half-life (seconds of wall time)."""

    def __init__(self, half_life: float, value: float = 0.0):
        self.rate = math.log(2.0) / max(half_life, 1e-6)
        self.value = value
        self._t = time.perf_counter()

    def update(self, x: float, now: float) -> float:
        self.value = max(x, self.value * math.exp(-self.rate * (now - self._t)))
        self._t = now
        return self.value


class Engine:
    """The live engine for one generator: controls in, audio out.

        engine = Engine(generator, LatentSpace.from_bundle(bundle), StreamSettings.from_bundle(bundle))
        engine.start(output="device")   # or "null" (no sound card), or an output object
        engine.controls.set_macro("pc1", 0.5)
        print(engine.status())
        engine.stop()

    seed, walk_rate, walk_depth, gain, latent: where the session starts.
    presets_path: the presets JSON file (see `Controls`).
    record: keep the timeline of applied events (`timeline()`): one entry per
        control change, about 1 KB for a 100-dimensional latent, so a session at
        hundreds of changes a second grows by ~0.1-0.5 MB a second; `play` records
        only with --record.
    """

    def __init__(
        self,
        generator,
        space: LatentSpace,
        stream_settings: StreamSettings | None = None,
        settings: EngineSettings | None = None,
        *,
        seed: int = 0,
        walk_rate: float = 0.2,
        walk_depth: float = 0.0,
        gain: float = 1.0,
        latent: np.ndarray | None = None,
        presets_path=None,
        record: bool = True,
        out_of_range: str = "fold",
    ):
        if out_of_range not in OUT_OF_RANGE:
            raise ValueError(f"out_of_range: one of {', '.join(OUT_OF_RANGE)}, not {out_of_range!r}")
        self.generator = generator
        self.space = space
        self.settings = s = settings or EngineSettings()
        self.stream_settings = replace(stream_settings or StreamSettings(), batch=1)
        self.controls = Controls(
            space, seed=seed, walk_rate=walk_rate, walk_depth=walk_depth, gain=gain,
            presets_path=presets_path, latent=latent,
        )
        self.model_rate = int(generator.sample_rate)
        self.provider = getattr(generator, "provider", "numpy")
        self._chain_args = dict(
            seed=seed, latent=self.controls.latent, walk_rate=walk_rate, walk_depth=walk_depth, gain=gain
        )
        self.chain = Chain(generator, space, self.stream_settings, s, **self._chain_args)
        self.ring = Ring(round(s.ring_s * s.sample_rate), fade=max(16, round(0.002 * s.sample_rate)))
        self.chunk = max(16, round(s.chunk_s * s.sample_rate))
        self._record = record
        self._trigger_mode = self.stream_settings.mode == "trigger"
        # A conditioned bundle hears notes in every mode: the held note sets the drone's pitch.
        self._notes_play = self._trigger_mode or getattr(generator, "condition_size", 0) > 0
        self.controls.pitch_range = self.stream_settings.pitch_range if getattr(generator, "condition_size", 0) else None
        self.controls.refuse_out_of_range = out_of_range == "refuse"
        self.controls.kit = self.stream_settings.kit
        self._events: list[tuple[int, ControlEvent]] = []
        self.output: Any = None
        self.priority = "normal"
        self.final_status: dict | None = None
        self.error: BaseException | None = None
        # Producer-side state (only the producer thread writes these; readers take snapshots).
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._step_peak = _Peak(s.peak_half_life_s)
        self._late_peak = _Peak(s.peak_half_life_s)
        self._extra = 0.0  # seconds added after underruns
        self._startup = s.startup_margin_s
        self._target = s.blocksize + round(s.max_lookahead_s * s.sample_rate / 4)  # until measured
        self._seen_underruns = 0
        self._busy = 0.0
        self._made = 0
        self._load = 0.0
        self._load_t = self._relax_t = self._froze = time.perf_counter()
        self._cpu_t = (time.perf_counter(), time.process_time())
        self._cpu = 0.0
        self._applied = 0
        self._pending_latency: deque[tuple[int, float]] = deque()
        self.latencies: deque[float] = deque(maxlen=200_000)
        self._forgot = 0
        self._started_at: float | None = None
        self.resampler_delay = self._measure_resampler_delay()
        self._step_peak.value = 2.0 * self._time_generator()  # until steps are measured
        self.controls.attach(self.status)

    # -- lifecycle --------------------------------------------------------------

    def start(self, output: Any = "device", *, device=None, latency: str | float = "low", wait_s: float = 10.0) -> None:
        """Open the output ("device": PortAudio; "null": no sound card; or an object like NullOutput),
        fill the ring to its target, then start the audio."""
        from .audio import AudioOutput

        s = self.settings
        self._started_at = time.monotonic()
        # The audio callback needs the GIL: a thread waiting for it asks the holder to let go
        # after the switch interval; 0.5 ms instead of 5 leaves the callback most of its block.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        # A full garbage collection holds the GIL for as long as it walks every object (tens of
        # ms with onnxruntime loaded); freezing what exists now leaves it only what comes later.
        gc.collect()
        gc.freeze()
        if output == "device":
            output = AudioOutput(self.ring, s.sample_rate, device=device, blocksize=s.blocksize, latency=latency)
        elif output == "null":
            output = NullOutput(self.ring, s.sample_rate, s.blocksize)
        self.output = output
        self.controls.clock = output.time  # arrivals on the DAC times' clock
        self._thread = threading.Thread(target=self._run, name="ganstream-producer", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while self.ring.available() < min(self._target, self.ring.capacity // 2) and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if self.error is not None:
            raise self.error
        output.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the audio, then the producer; `final_status` keeps the status just before.

        The producer finishes its step (one generator call at most) and ends; it is a daemon
        thread, so one that does not within `timeout` seconds cannot keep the process alive.
        """
        if self.running:
            self.final_status = self.status()
        try:
            if self.output is not None:
                self.output.stop()
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    # -- the producer thread -----------------------------------------------------

    def _run(self) -> None:
        sr = self.settings.sample_rate
        if self.settings.realtime_priority:
            self.priority = raise_priority()
        try:
            while not self._stop.is_set():
                self._apply_controls()
                self._resolve_latencies()
                self._adapt()
                fill = self.ring.available()
                if fill >= self._target:
                    want = max(0.0005, (fill - self._target) / sr)
                    t0 = time.perf_counter()
                    self._stop.wait(want)
                    t1 = time.perf_counter()
                    self._late_peak.update(max(0.0, t1 - t0 - want), t1)
                    continue
                t0 = time.perf_counter()
                x = self.chain.read(self.chunk)
                self.ring.write(x)
                t1 = time.perf_counter()
                self._step_peak.update(t1 - t0, t1)
                self._busy += t1 - t0
                self._made += len(x)
                self._housekeeping(t1)
        except BaseException as e:  # the status line and `play` report it
            self.error = e

    def _apply_controls(self) -> None:
        cmd = self.controls.pop()
        if cmd is None:
            return
        t = self.chain.stream.position
        q = -(-t * self.settings.sample_rate // self.model_rate)  # first output sample at stamp t
        while cmd is not None:
            ev = cmd.event
            if self._plays(ev):
                self.chain.apply(ev, t)
                if self._record:
                    # The events are immutable and shared with nothing; `_housekeeping` freezes
                    # them out of the collector every 5 s, so a long record does not lengthen
                    # the collections that hold the GIL the audio callback needs.
                    self._events.append((t, ev))
                self._applied += 1
                self._pending_latency.append((q, cmd.arrival))
            cmd = self.controls.pop()

    def _plays(self, event: ControlEvent) -> bool:
        """Notes only play in trigger mode or for a conditioned bundle; otherwise they are dropped (unrecorded,
        so a render matches)."""
        return self._notes_play or not isinstance(event, (NoteOn, NoteOff))

    def _adapt(self) -> None:
        s = self.settings
        # Only the ring running dry says the lookahead was too short; a device underflow
        # (a late callback, another JACK client) is not helped by a fuller ring.
        under = self.ring.underruns
        if under > self._seen_underruns:
            self._seen_underruns = under
            self._extra = min(s.max_lookahead_s, self._extra + 0.005)
        look = s.safety * (self._step_peak.value + self._late_peak.value) + s.margin_s + self._extra + self._startup
        look = min(max(look, s.min_lookahead_s), s.max_lookahead_s)
        self._target = s.blocksize + round(look * s.sample_rate)

    def _housekeeping(self, now: float) -> None:
        if now - self._load_t >= 0.5:
            if self._made:
                self._load = self._busy / (self._made / self.settings.sample_rate)
            self._busy, self._made, self._load_t = 0.0, 0, now
            wall, cpu = time.perf_counter(), time.process_time()
            if wall > self._cpu_t[0]:
                self._cpu = (cpu - self._cpu_t[1]) / (wall - self._cpu_t[0])
            self._cpu_t = (wall, cpu)
            # A long session: drop events no target can need any more.
            pos = self.chain.stream.position
            keep = 2 * (40 * self.stream_settings.latent_smoothing_s * self.model_rate + self.chain.stream.segment) + self.model_rate
            if pos - self._forgot > self.model_rate * 5:
                self.chain.path.forget_before(int(pos - keep))
                self._forgot = pos
            # Objects that survived this long are session state: freeze them, so a full collection
            # (which holds the GIL the audio callback needs) only ever walks what is new.
            if now - self._froze >= 5.0:
                gc.collect(1)
                gc.freeze()
                self._froze = now
            # What underruns added relaxes again (halving every 30 s), the start-up margin faster.
            dt = now - self._relax_t
            self._relax_t = now
            self._extra *= 0.5 ** (dt / 30.0)
            self._startup *= 0.5 ** (dt / 1.0)

    def _xruns(self) -> int:
        out = self.output
        return 0 if out is None else int(getattr(out, "xruns", 0))

    def _resolve_latencies(self) -> None:
        """Turn applied controls whose first sample has reached the device into arrival-to-DAC latencies."""
        out = self.output
        pend = self._pending_latency
        if out is None or not pend:
            return
        blocks = out.blocks
        if blocks == 0:
            return
        mask = LOG_BLOCKS - 1
        last_pos = int(out.block_pos[(blocks - 1) & mask])
        sr = self.settings.sample_rate
        while pend and pend[0][0] < last_pos:
            q, arrival = pend.popleft()
            # Find the block holding sample q, newest first.
            for back in range(1, min(blocks, LOG_BLOCKS) + 1):
                i = (blocks - back) & mask
                p = int(out.block_pos[i])
                if p <= q:
                    dac = float(out.block_dac[i]) + (q - p) / sr
                    if self._started_at is not None and arrival > 0:
                        self.latencies.append(dac - arrival)
                    break
        if len(pend) > 100_000:
            pend.clear()

    # -- reading ---------------------------------------------------------------------

    def timeline(self) -> Timeline:
        """The session so far: its start and every applied event (JSON-ready)."""
        events = [Stamped(t, ev) for t, ev in list(self._events)]
        return Timeline(
            model_rate=self.model_rate, output_rate=self.settings.sample_rate, seed=self._chain_args["seed"],
            latent=[float(v) for v in self._chain_args["latent"]], walk_rate=self._chain_args["walk_rate"],
            walk_depth=self._chain_args["walk_depth"], gain=self._chain_args["gain"],
            stream=stream_json(self.stream_settings), engine=asdict(self.settings), events=events,
        )

    def latency_stats(self) -> dict[str, float] | None:
        """Control-to-sound latency (ms) measured so far: p50, p95, max, count; None before any."""
        lat = np.asarray(self.latencies, dtype=np.float64)
        if lat.size == 0:
            return None
        p50, p95 = np.percentile(lat, [50, 95])
        return {"p50": 1000 * p50, "p95": 1000 * p95, "max": 1000 * lat.max(), "count": int(lat.size)}

    def _measure_resampler_delay(self) -> int:
        """Output samples the resampler holds back at most (its filter delay plus its output bursts)."""
        if self.model_rate == self.settings.sample_rate:
            return 0
        r = ResampledStream(_Silence(), self.model_rate, self.settings.sample_rate,
                            quality=self.settings.resample_quality, block=self.chain.resampled._block)
        src = r._soxr
        n = self.model_rate // r._block * r._block  # about a second in
        worst, got = 0, 0
        for i in range(n // r._block):
            got += len(src.resample_chunk(np.zeros(r._block, dtype=np.float32)))
            worst = max(worst, ((i + 1) * r._block * self.settings.sample_rate) // self.model_rate - got)
        return worst

    def _time_generator(self) -> float:
        """Seconds one generator call for the voices a control change regenerates takes (best of 3)."""
        rows = 2 if self.stream_settings.mode == "crossfade" else (
            self.stream_settings.texture_overlap if self.stream_settings.mode == "texture" else 1
        )
        z = probe_rows(self.generator, rows)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            self.generator.generate(z)
            best = min(best, time.perf_counter() - t0)
        return best

    def status(self) -> dict:
        """A snapshot of the engine (any thread; the numbers are read without locks and may be a step apart)."""
        s = self.settings
        sr = s.sample_rate
        fill = self.ring.available()
        out = self.output
        device_latency = float(out.latency) if out is not None else 0.0
        ring_under, xruns = self.ring.underruns, self._xruns()
        lat = self.latency_stats()
        first = getattr(out, "first_sound", None) if out is not None else None
        load = self._load
        if load == 0.0 and self._made:  # before the first half-second window closes
            load = self._busy / (self._made / sr)
        return {
            "provider": self.provider,
            "mode": self.stream_settings.mode,
            "running": self.running,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "sample_rate": sr,
            "model_rate": self.model_rate,
            "blocksize": s.blocksize,
            "rtf": (1.0 / load) if load > 0 else None,
            "load": load,
            "cpu": self._cpu,
            "buffer_fill": fill / self._target if self._target else 0.0,
            "buffer_ms": 1000.0 * fill / sr,
            "lookahead_ms": 1000.0 * self._target / sr,
            "underruns": ring_under + xruns,
            "ring_underruns": ring_under,
            "xruns": xruns,
            "device_latency_ms": 1000.0 * device_latency,
            "late_callbacks": int(getattr(out, "late_callbacks", 0)),
            "callback_wait_ms": 1000.0 * float(getattr(out, "callback_wait_max", 0.0)),
            "latency_ms": 1000.0 * ((fill + self.resampler_delay) / sr + device_latency),
            "control_latency_ms": lat,
            "position": self.chain.stream.position,
            "position_s": self.chain.stream.position / self.model_rate,
            "voices": self.chain.stream.voices,
            "gain": self.controls.gain,
            "generator_calls": self.chain.stream.generator_calls,
            "regenerations": self.chain.stream.regenerations,
            "controls_applied": self._applied,
            "controls_pending": self.controls.pending(),
            "controls_rejected": self.controls.rejected,
            "first_sound_s": None if first is None or self._started_at is None else first[1] - self._started_at,
        }


def status_line(st: Mapping) -> str:
    """One line for a terminal: provider, real-time factor, buffer, underruns, latency."""
    rtf = st.get("rtf")
    rtf_s = f"{rtf:5.1f}x" if rtf else "  -  "
    lat = st.get("control_latency_ms")
    meas = f" ctl p95 {lat['p95']:.0f} ms" if lat else ""
    return (
        f"{st['provider'].replace('ExecutionProvider', '')} {st['mode']} | rt {rtf_s} cpu {100 * st['cpu']:3.0f}% | "
        f"buf {st['buffer_ms']:5.1f}/{st['lookahead_ms']:5.1f} ms | underruns {st['underruns']} | "
        f"latency ~{st['latency_ms']:4.0f} ms{meas} | {st['position_s']:7.1f} s"
    )
