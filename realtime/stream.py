"""The streaming core: an endless stream of audio joined from generated segments.

`SegmentStream(generator, latents, settings).read(n)` returns the next n
samples at the model rate. The output is a deterministic function of the
generator, the settings and the latent path (seed, walk, keyframes, control
steps with their sample stamps), and is the same for any sequence of read
sizes: every generator call happens at a fixed stream position with a fixed
batch of latents, whatever blocks the samples are pulled in. `render` and the
live engine's producer thread both pull from this class.

Joins (mode):

- crossfade: segment k starts at k * H, H = N - C, and plays whole; it overlaps
  the next one by C samples (`crossfade`) with an equal-power (sin/cos) fade,
  right for joining two unrelated stretches of sound.
- texture: segment k starts at k * H, H = N / overlap, windowed by a periodic
  Hann scaled by 2 / overlap, so the windows sum to exactly 1 at every sample
  (COLA). Segments start at -(overlap - 1) * H, so the sum is 1 from sample 0.
- trigger: silence until a `Trigger` (a MIDI note-on, an OSC trigger) starts a
  one-shot voice at its sample: one segment generated with the latent there,
  played once at gain `velocity`, with `control_crossfade_s` ramps at both ends
  so it neither clicks in nor out. At most `polyphony` voices sound; a trigger
  beyond that steals the oldest, which fades out over the same short ramp. A
  note-off releases (fades out) the voices its note started only with
  `note_off=True`; by default one-shots play to their end. Triggers are events
  of the timeline like control steps: `trigger`/`note_off` add them live,
  stamped at or after `position`, or the constructor takes a list for render.

Notes (trigger mode). With `root_note` set, a trigger's note plays its voice
transposed by (note - root_note) semitones, as a sampler does: the segment is
resampled, band-limited, by 2^(interval / 12) (core/transpose.py), so a voice
an octave up sounds twice as high and lasts half as long. Intervals beyond
+-24 semitones play at +-24. A trigger without a note, or any trigger while
`root_note` is None, plays the segment as generated. The resampling happens
where the voice is made (the producer thread), once per voice and per
regeneration, from plans made when the stream is built, never in the audio
callback. A voice's gain is velocity ** `velocity_exponent`. Crossfade and
texture mode ignore notes.

The stream fades in over `fade_in_s` from sample 0 rather than starting with a
step.

Latents and control changes. A segment generated at sample t uses
`SmoothedLatent.latent(t)`: the path's target with each jump turned into a
one-pole glide (time constant `latent_smoothing_s`). Continuous motion (walk,
keyframe ramps) reaches the sound at each new segment. A *step* (a knob move,
a preset switch, a "step" keyframe) at sample t_i is heard at once: at t_i
every segment in flight is regenerated with the new latent at the same
position in time, and the stream crossfades from the old to the new over
`control_crossfade_s`, position-locked (sample j of the old segment fades into
sample j of the new one). Old and new come from nearby latents at the same
place and are strongly correlated, so this fade is equal-gain (sin^2/cos^2,
summing to 1), not equal-power, which would bulge by up to 3 dB. While the
glide runs, regeneration repeats every `control_period_s` (R), each aiming at
the glide's value R ahead, until the rest of the glide is below `settle` of the
jump; steps closer together than R share regenerations (a step is never
delayed by more than R). The schedule depends only on sample times, so a
render of a recorded control timeline matches the live stream.

Allocation: voices live in a preallocated (slots, longest voice) array (N, or
up to 4N when notes transpose two octaves down), mixing works in place through
a preallocated scratch buffer, and a generator that has `generate_into` writes
into a preallocated array; what remains per generator call is a few small
latent vectors and Python bookkeeping, and per transposed voice its two FFTs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Protocol, Sequence

import numpy as np

from ganstream.core.transpose import MAX_SEMITONES, TransposePlan, Transposer

from .latents import LatentPath, SmoothedLatent

MODES = ("crossfade", "texture", "trigger")
_NEVER = -(1 << 62)


class SegmentGenerator(Protocol):
    """Anything that turns latents into fixed-length segments (`Generator`, or a numpy fake in tests)."""

    sample_rate: int
    segment: int
    latent_size: int

    def generate(self, z: np.ndarray) -> np.ndarray:
        """(B, latent_size) float32 -> (B, segment) float32."""
        ...


@dataclass(frozen=True)
class StreamSettings:
    """How segments are joined and how latent changes are played.

    mode: "crossfade" or "texture".
    crossfade: samples (model rate) of the equal-power fade between segments, 0 <= C <= N/2.
    texture_overlap: segments sounding at once in texture mode (hop N / overlap; N must divide).
    latent_smoothing_s: time constant of the one-pole glide that replaces each latent jump.
    control_crossfade_s: position-locked crossfade into a regenerated segment.
    control_period_s: least time between regenerations (at least control_crossfade_s).
    settle: regeneration stops once the rest of a glide is below this fraction of the jump.
    fade_in_s: fade-in at the very start of the stream.
    batch: hop segments generated per generator call. Above 1 the stream
        generates segments before it reaches them, which is right only when
        the whole latent timeline is known in advance (render); live uses 1.
    polyphony: trigger mode: most one-shot voices sounding at once (K).
    note_off: trigger mode: a note-off fades out its note's voices (else ignored).
    root_note: trigger mode: the MIDI note (0..127, fractions allowed) a voice sounds as generated;
        a note plays (note - root_note) semitones away, within +-24. None: notes do not transpose.
    velocity_exponent: trigger mode: a voice's gain is velocity ** this (1: linear; 2, 3: the
        usual velocity curves of synthesisers, quieter soft notes).
    """

    mode: str = "crossfade"
    crossfade: int = 1024
    texture_overlap: int = 4
    latent_smoothing_s: float = 0.05
    control_crossfade_s: float = 0.005
    control_period_s: float = 0.02
    settle: float = 0.02
    fade_in_s: float = 0.005
    batch: int = 1
    polyphony: int = 8
    note_off: bool = False
    root_note: float | None = None
    velocity_exponent: float = 1.0

    @classmethod
    def from_bundle(cls, bundle, **overrides) -> "StreamSettings":
        """The bundle's recommended `streaming` settings; overrides that are None are ignored.

        `root_note` is not taken from the bundle: `render` and `play` choose it (`cli.note_settings`:
        --root-note, else the bundle's `streaming.root_note`, else None; --no-transpose: None)."""
        s = bundle.streaming
        out = cls(
            mode=s.mode,
            crossfade=int(s.crossfade),
            texture_overlap=int(s.texture_overlap),
            latent_smoothing_s=float(s.latent_smoothing_s),
        )
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown stream settings: {', '.join(sorted(unknown))}")
        return replace(out, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Trigger:
    """Trigger mode: at model sample `sample`, start a one-shot (velocity 0..1 is its gain), or with
    `off=True` release the voices `note` started."""

    sample: int
    velocity: float = 1.0
    note: int | None = None
    off: bool = False


class _Voice:
    """One generated segment placed in stream time, with optional position-locked gates."""

    __slots__ = ("slot", "start", "stop", "gate_in", "gate_out", "z", "env", "gain", "note", "order")

    def __init__(
        self, slot: int, start: int, stop: int, z: np.ndarray, env: np.ndarray, gate_in: int = _NEVER,
        gain: float = 1.0, note: int | None = None, order: int = 0,
    ):
        self.slot = slot
        self.start = start  # stream sample of the segment's sample 0
        self.stop = stop  # first stream sample it no longer sounds at
        self.gate_in = gate_in  # fades in over X samples from here (regenerated voices)
        self.gate_out = _NEVER  # fades out over X samples from here (replaced voices)
        self.z = z
        self.env = env
        self.gain = gain  # trigger velocity
        self.note = note
        self.order = order  # trigger mode: which trigger made it (the oldest is stolen first)


def _voice_order(v: _Voice) -> tuple[int, int, int]:
    return (v.start, v.order, v.gate_in)


class SegmentStream:
    """An endless stream from `generator`, latents from `latents`, joined as `settings` say.

    Not thread-safe: one thread (render's loop, or the live engine's producer)
    calls `read`/`read_into` and, between reads, adds control steps to the
    latent path (`ControlPath.set_latent` and the like) stamped at or after
    `position`. A step stamped earlier than `position` still plays, from
    `position`, but then a render of the same timeline can no longer match.
    """

    def __init__(
        self,
        generator: SegmentGenerator,
        latents: LatentPath,
        settings: StreamSettings | None = None,
        triggers: Sequence[Trigger] = (),
    ):
        s = settings or StreamSettings()
        n, sr = int(generator.segment), int(generator.sample_rate)
        if latents.latent_size != generator.latent_size:
            raise ValueError(f"latents have size {latents.latent_size}, the generator takes {generator.latent_size}")
        if s.mode not in MODES:
            raise ValueError(f"unknown stream mode {s.mode!r} (one of {', '.join(MODES)})")
        if s.batch < 1:
            raise ValueError(f"batch must be >= 1, got {s.batch}")
        if not 0.0 < s.settle < 1.0:
            raise ValueError(f"settle must be in (0, 1), got {s.settle}")
        if s.polyphony < 1:
            raise ValueError(f"polyphony must be >= 1, got {s.polyphony}")
        if s.root_note is not None and not (math.isfinite(s.root_note) and 0 <= s.root_note <= 127):
            raise ValueError(f"root_note must be a MIDI note within [0, 127], got {s.root_note}")
        if not (math.isfinite(s.velocity_exponent) and s.velocity_exponent > 0):
            raise ValueError(f"velocity_exponent must be > 0, got {s.velocity_exponent}")
        self.generator, self.settings = generator, s
        self.sample_rate, self.segment = sr, n

        i = np.arange(n, dtype=np.float64)
        if s.mode == "crossfade":
            c = int(s.crossfade)
            if not 0 <= c <= n // 2:
                raise ValueError(f"crossfade must be between 0 and segment/2 = {n // 2}, got {c}")
            self.hop = n - c
            self._first = 0
            theta = 0.5 * np.pi * (np.arange(c) + 0.5) / max(c, 1)
            env = np.ones(n)
            env[n - c :] = np.cos(theta)
            self._env_first = env.astype(np.float32)  # segment 0: no fade-in, the stream fade-in does it
            env[:c] = np.sin(theta)
            self._env = env.astype(np.float32)
            alive = 2
        elif s.mode == "trigger":
            self.hop = n  # unused: no hop segments
            self._first = 0
            alive = 2 * s.polyphony  # sounding, and as many fading out (stolen or released)
        else:
            ov = int(s.texture_overlap)
            if ov < 2 or n % ov:
                raise ValueError(f"texture_overlap must be >= 2 and divide the segment ({n}), got {ov}")
            self.hop = n // ov
            self._first = -(ov - 1)
            self._env = ((0.5 - 0.5 * np.cos(2 * np.pi * i / n)) * (2.0 / ov)).astype(np.float32)
            self._env_first = self._env
            alive = ov

        self._x = max(1, round(s.control_crossfade_s * sr))  # control crossfade, samples
        self._r = max(self._x, round(s.control_period_s * sr))  # least regeneration spacing, samples
        tau = max(0.0, s.latent_smoothing_s) * sr
        self.latents = SmoothedLatent(latents, tau, lookahead=self._r)
        self._settle_len = tau * math.log(1.0 / s.settle)
        k = np.arange(self._x, dtype=np.float64)
        self._ramp_in = (np.sin(0.5 * np.pi * (k + 0.5) / self._x) ** 2).astype(np.float32)
        self._ramp_out = (1.0 - self._ramp_in.astype(np.float64)).astype(np.float32)
        f = max(0, round(s.fade_in_s * sr))
        self._fade = (np.sin(0.5 * np.pi * (np.arange(f) + 0.5) / max(f, 1)) ** 2).astype(np.float32)
        self._continuous = s.mode != "trigger"
        if not self._continuous:
            env = np.ones(n, dtype=np.float32)
            self._one_shot_ramps(env, n)
            self._env = self._env_first = env
        # Trigger mode with a root: the plan of each MIDI note's interval (None: played as generated).
        self._transposer = Transposer(n)
        self._plans: list[TransposePlan | None] = [None] * 128
        if not self._continuous and s.root_note is not None:
            for note in range(128):
                interval = min(MAX_SEMITONES, max(-MAX_SEMITONES, note - s.root_note))
                self._plans[note] = self._transposer.plan(interval) if interval != 0 else None
        longest = max([n] + [p.length for p in self._plans if p is not None])
        self._triggers: list[Trigger] = []
        self._trigger_seen = 0  # triggers before this index have played
        self._trigger_count = 0
        for tr in triggers:
            self.add_trigger(tr)

        slots = 2 * alive + max(s.batch, alive) + 2
        self._audio = np.zeros((slots, longest), dtype=np.float32)  # a voice's samples from its start
        self._free = list(range(slots - 1, -1, -1))
        self._voices: list[_Voice] = []
        self._scratch = np.zeros(n, dtype=np.float32)
        # A generator with generate_into (the ONNX `Generator`) writes into this, not a fresh array.
        self._generate_into = getattr(generator, "generate_into", None)
        self._generated = np.zeros((slots, n), dtype=np.float32) if self._generate_into else None

        self._pos = 0
        self._next_k = self._first  # next hop segment to generate
        self._step_seen = 0  # steps up to here have been scheduled (steps are > 0)
        self._last_step = _NEVER
        self._last_regen = _NEVER
        self._next_regen: int | None = None
        self._starting: list[tuple[float, int | None]] = []  # trigger mode: one-shots in this generator call
        self.segments_generated = 0  # hop segments (trigger mode: one-shots)
        self.regenerations = 0  # regenerated segments (control changes)
        self.generator_calls = 0
        self.stolen = 0  # trigger mode: voices stolen by a trigger beyond `polyphony`

    # -- triggers -------------------------------------------------------------

    def add_trigger(self, trigger: Trigger) -> None:
        """Append a trigger or note-off; samples must not go back. Other modes keep but ignore them."""
        if self._triggers and trigger.sample < self._triggers[-1].sample:
            raise ValueError(f"trigger samples must not go back (got {trigger.sample} after {self._triggers[-1].sample})")
        if not (trigger.off or 0.0 <= trigger.velocity <= 1.0):
            raise ValueError(f"trigger velocity must be in [0, 1], got {trigger.velocity}")
        self._triggers.append(trigger)

    def trigger(self, sample: int, velocity: float = 1.0, note: int | None = None) -> None:
        self.add_trigger(Trigger(int(sample), float(velocity), note))

    def note_off(self, sample: int, note: int) -> None:
        self.add_trigger(Trigger(int(sample), 0.0, note, off=True))

    @property
    def voices(self) -> int:
        """Voices sounding now and not fading out."""
        return sum(1 for v in self._voices if v.gate_out == _NEVER)

    @property
    def position(self) -> int:
        """Samples read so far (model rate)."""
        return self._pos

    def join_positions(self, stop: int) -> np.ndarray:
        """Stream samples in [0, stop) where a segment starts (its fade-in or window begins)."""
        if not self._continuous:
            return np.array([t.sample for t in self._triggers if not t.off and 0 < t.sample < stop], dtype=np.int64)
        k0 = max(1, self._first + 1) if self.settings.mode == "crossfade" else 1
        return np.arange(k0 * self.hop, stop, self.hop, dtype=np.int64)

    def read(self, n: int) -> np.ndarray:
        """The next n samples, (n,) float32."""
        out = np.empty(n, dtype=np.float32)
        self.read_into(out)
        return out

    def read_into(self, out: np.ndarray) -> None:
        """Fill `out` ((n,) float32) with the next n samples."""
        n = len(out)
        out[:] = 0.0
        done = 0
        while done < n:
            self._events()
            m = min(n - done, self._next_event() - self._pos)
            a, b = self._pos, self._pos + m
            view = out[done : done + m]
            for v in self._voices:
                self._mix(v, a, b, view)
            if a < len(self._fade):
                e = min(b, len(self._fade))
                view[: e - a] *= self._fade[a:e]
            self._pos = b
            done += m
            self._retire()

    # -- events -------------------------------------------------------------

    def _next_event(self) -> int:
        t = self._next_k * self.hop if self._continuous else self._pos + (1 << 40)
        if self._trigger_seen < len(self._triggers) and not self._continuous:
            t = min(t, max(self._triggers[self._trigger_seen].sample, self._pos + 1))
        if self._next_regen is not None:
            t = min(t, self._next_regen)
        step = self.latents.next_step(self._step_seen + 1)
        if step is not None:
            t = min(t, max(step, self._pos + 1))
        return t

    def _events(self) -> None:
        """Everything that happens at the current position: steps, regeneration, new segments."""
        pos = self._pos
        while True:
            step = self.latents.next_step(self._step_seen + 1)
            if step is None or step > pos:
                break
            # A step stamped before the present (a late live event) takes effect now.
            self._step_seen = step
            self._last_step = step
            if self._next_regen is None:
                self._next_regen = max(pos, self._last_regen + self._r)

        rows: list[np.ndarray] = []
        regen: list[_Voice] = []
        if self._next_regen == pos:
            z = self.latents.latent(pos)
            for v in self._voices:
                if v.start <= pos < v.stop and v.gate_out == _NEVER and not np.array_equal(v.z, z):
                    regen.append(v)
                    rows.append(z)
            self._last_regen = pos
            nxt = pos + self._r
            # Go on while the glide left at the next regeneration's target time is above `settle`.
            self._next_regen = nxt if nxt + self._r - self._last_step < self._settle_len else None

        new: list[int] = []
        if not self._continuous:
            self._play_triggers(pos, rows)
        elif self._next_k * self.hop <= pos:
            while self._next_k * self.hop <= pos or len(new) < self.settings.batch:
                new.append(self._next_k)
                self._next_k += 1
            rows.extend(self.latents.latent(k * self.hop) for k in new)
        if not rows:
            return

        z = np.stack(rows)
        if self._generate_into is not None:
            audio = self._generate_into(z.astype(np.float32), self._generated[: len(rows)])
        else:
            audio = np.asarray(self.generator.generate(z.astype(np.float32)))
        if audio.shape != (len(rows), self.segment):
            raise ValueError(f"generator returned shape {audio.shape}, expected {(len(rows), self.segment)}")
        self.generator_calls += 1
        for i, v in enumerate(regen):
            w = self._voice(audio[i], v.start, v.env, z[i], gate_in=pos, gain=v.gain, note=v.note, order=v.order)
            w.stop = v.stop
            v.gate_out = pos
            v.stop = min(v.stop, pos + self._x)
        for i, k in enumerate(new, start=len(regen)):
            env = self._env_first if k == self._first else self._env
            self._voice(audio[i], k * self.hop, env, z[i])
        for i, (velocity, note) in enumerate(self._starting, start=len(regen)):
            self._steal(pos)
            self._trigger_count += 1
            gain = velocity**self.settings.velocity_exponent  # x ** 1.0 is x exactly: linear is unchanged
            self._voice(audio[i], pos, self._env, z[i], gain=gain, note=note, order=self._trigger_count)
            self.segments_generated += 1
        self._starting.clear()
        # Mix in a canonical order, so batching (which changes when voices are made) changes no rounding.
        self._voices.sort(key=_voice_order)
        self.regenerations += len(regen)
        self.segments_generated += len(new)

    def _play_triggers(self, pos: int, rows: list[np.ndarray]) -> None:
        """Trigger mode: note-offs and new one-shots due at pos (their rows join this generator call)."""
        due = []
        while self._trigger_seen < len(self._triggers) and self._triggers[self._trigger_seen].sample <= pos:
            due.append(self._triggers[self._trigger_seen])
            self._trigger_seen += 1
        if not due:
            return
        for tr in due:
            if tr.off and self.settings.note_off:
                for v in self._voices:
                    if v.note == tr.note and v.gate_out == _NEVER and v.start <= pos:
                        self._fade_out(v, pos)
        if self._trigger_seen > 4096:  # a long live session: forget triggers already played
            del self._triggers[: self._trigger_seen]
            self._trigger_seen = 0
        starts = [(t.velocity, t.note) for t in due if not t.off]
        # More triggers at one sample than voices: the earlier ones would be stolen at once, unheard.
        self._starting = starts[-self.settings.polyphony :]
        if self._starting:
            z = self.latents.latent(pos)
            rows.extend(z for _ in self._starting)

    def _steal(self, pos: int) -> None:
        """Make room for one more voice: fade out the oldest sounding voice while `polyphony` sound."""
        live = [v for v in self._voices if v.gate_out == _NEVER and v.stop > pos]
        if len(live) >= self.settings.polyphony:
            oldest = min(live, key=lambda v: (v.order, v.start))
            self._fade_out(oldest, pos)
            self.stolen += 1

    def _fade_out(self, v: _Voice, pos: int) -> None:
        v.gate_out = max(pos, v.gate_in)
        v.stop = min(v.stop, v.gate_out + self._x)

    def _one_shot_ramps(self, row: np.ndarray, length: int) -> None:
        """Ramps row[:length] in and out in place (trigger mode's one-shot envelope: no click at either end)."""
        x = min(self._x, length // 2)
        row[:x] *= self._ramp_in[:x]
        row[length - x : length] *= self._ramp_in[:x][::-1]

    def _voice(
        self, audio: np.ndarray, start: int, env: np.ndarray, z: np.ndarray, gate_in: int = _NEVER,
        gain: float = 1.0, note: int | None = None, order: int = 0,
    ) -> _Voice:
        if not self._free and not self._continuous:
            # Many triggers inside one fade: cut the voice that has faded longest.
            fading = [v for v in self._voices if v.gate_out != _NEVER]
            if fading:
                gone = min(fading, key=lambda v: v.gate_out)
                self._voices.remove(gone)
                self._free.append(gone.slot)
        if not self._free:
            raise RuntimeError("no free voice slot (stream settings allow more overlap than planned)")
        slot = self._free.pop()
        row = self._audio[slot]
        plan = self._plans[note] if note is not None else None  # all None outside trigger mode
        if plan is None:
            length = self.segment
            np.multiply(audio, env, out=row[:length])
        else:  # a transposed one-shot: resampled, then the one-shot ramps at its own ends
            length = plan.length
            self._transposer.apply(audio, plan, row)
            self._one_shot_ramps(row, length)
        if gain != 1.0:
            row[:length] *= np.float32(gain)
        v = _Voice(slot, start, start + length, z, env, gate_in, gain, note, order)
        self._voices.append(v)
        return v

    def _retire(self) -> None:
        pos = self._pos
        if any(v.stop <= pos for v in self._voices):
            keep = []
            for v in self._voices:
                if v.stop <= pos:
                    self._free.append(v.slot)
                else:
                    keep.append(v)
            self._voices = keep

    # -- mixing -------------------------------------------------------------

    def _mix(self, v: _Voice, a: int, b: int, out: np.ndarray) -> None:
        """Add voice v's samples for stream time [a, b) into out (which starts at a)."""
        lo = max(a, v.start, v.gate_in)
        hi = min(b, v.stop)
        if lo >= hi:
            return
        x = self._x
        cuts = [lo]
        for c in (v.gate_in + x, v.gate_out):
            if lo < c < hi:
                cuts.append(c)
        cuts.sort()
        cuts.append(hi)
        src = self._audio[v.slot]
        for p, q in zip(cuts[:-1], cuts[1:]):
            seg = src[p - v.start : q - v.start]
            dst = out[p - a : q - a]
            fading_in = p < v.gate_in + x
            fading_out = v.gate_out != _NEVER and p >= v.gate_out
            if not (fading_in or fading_out):
                dst += seg
                continue
            tmp = self._scratch[: q - p]
            if fading_in:
                np.multiply(seg, self._ramp_in[p - v.gate_in : q - v.gate_in], out=tmp)
                if fading_out:
                    tmp *= self._ramp_out[p - v.gate_out : q - v.gate_out]
            else:
                np.multiply(seg, self._ramp_out[p - v.gate_out : q - v.gate_out], out=tmp)
            dst += tmp
