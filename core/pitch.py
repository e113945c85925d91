"""Pitch: MIDI note numbers and names, and a pitch estimator for clips, in numpy.

A bundle's root note (docs/bundle.md, `streaming.root_note`) is the pitch its
generated segments sound at; a sampler plays a voice `note - root` semitones
away from it (core/transpose.py). Export estimates it with `estimate_root`:
the median pitch of the generated clips that have a clear one.

`estimate_pitch` is the McLeod pitch method (McLeod and Wyvill 2005, "A
smarter way to find pitch"), an autocorrelation method: per frame, the
normalised square difference function n(tau) = 2 r(tau) / m(tau) (r the
autocorrelation at lag tau, m the energy of both windows; 1 for a lag that
repeats the frame exactly). Its positive peaks past its first negative
excursion are candidate periods; the first within KEY of the highest is the
period (so not a multiple of it), refined by a parabola through the peak at
the largest multiple of it within reach (divided by that multiple), and the
frame is voiced when its peak reaches CLARITY. A clip's pitch is the
median over its voiced frames, in semitones; it counts as confident when at
least half of its sounding frames are voiced and their pitches agree within a
semitone (interquartile range). On the harmonic tones of tests/test_transpose.py
it is within 1 cent from 55 to 880 Hz.

YIN (de Cheveigne and Kawahara 2002) was tried first and dropped: it takes the
first lag where its normalised difference dips below a threshold, and
WaveGAN's upsampling leaves a faint tone at a fraction of the sample rate whose
dip at a few samples' lag comes first. It gave every clip subset of the
shipped drums bundle 95.22 (1975 Hz, near 16 kHz / 8) and the piano bundle
87-89 (1.2-1.4 kHz), far above the notes it was trained on. The NSDF stays
near 1 over such short lags while the low notes dominate the energy, so its
first negative excursion comes after them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

A4_HZ = 440.0
A4_NOTE = 69
NOTE_MIN, NOTE_MAX = 0, 127
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
NOTE_NAME = re.compile(r"([A-Ga-g])([#b]?)(-?\d+)")  # a note name, whole: letter, accidental, octave

FMIN_HZ = 50.0  # the lowest pitch looked for (G1 is 49 Hz)
FMAX_HZ = 2000.0
CLARITY = 0.8  # a frame is voiced when its chosen peak of the NSDF reaches this
KEY = 0.9  # the period is the first peak within this fraction of the highest (McLeod and Wyvill's k)
# Frames more than this below the clip's loudest do not count: in a decayed note's tail WaveGAN's faint
# upsampling tone (2 kHz, 16 kHz / 8, 50-60 dB down) is all that is left, and at -50 dB it outvoted the note.
SILENCE_DB = -30.0
MIN_VOICED = 0.5  # a confident clip: at least this share of its sounding frames voiced,
MAX_SPREAD = 1.0  # and their pitches within this many semitones (interquartile range)
# A root needs this share of the clips confident (and at least 3): a bundle whose sounds mostly have a pitch.
# Measured on 512 clips of each shipped bundle: piano 47% (clustered at MIDI 80-95, above the notes of its
# set: whistles of a GAN trained for an hour), drums 24% (every one at 2 kHz, the upsampling tone); both none.
MIN_CONFIDENT = 0.5


def midi_to_hz(note: float) -> float:
    return A4_HZ * 2.0 ** ((note - A4_NOTE) / 12.0)


def hz_to_midi(hz: float) -> float:
    return A4_NOTE + 12.0 * math.log2(hz / A4_HZ)


def note_name(note: float) -> str:
    """The nearest note's name with its octave (C4 is MIDI 60, C-1 is 0), and the cents off it if any: `A#3 -17 cents`."""
    k = int(round(note))
    name = f"{_NAMES[k % 12]}{k // 12 - 1}"
    cents = round(100 * (note - k))
    return name if cents == 0 else f"{name} {cents:+d} cents"


def fold_note(note: float, low: float, high: float) -> float:
    """`note` moved by whole octaves into [low, high] (a conditioned bundle's trained range), by as few as reach
    it; a range under an octave wide cannot hold every pitch class, so what no octave reaches is clamped to the
    nearer end."""
    if note < low:
        moved = note + 12 * math.ceil((low - note) / 12)
    elif note > high:
        moved = note - 12 * math.ceil((note - high) / 12)
    else:
        return note
    return moved if low <= moved <= high else min(max(note, low), high)


def parse_note(text: str) -> float:
    """A MIDI note number (60, or 60.5 between notes) or a name (C4, A#3, Bb2, C-1) -> the MIDI number in [0, 127].

    Raises ValueError saying what is accepted."""
    s = str(text).strip()
    m = NOTE_NAME.fullmatch(s)
    if m:
        letter, accidental, octave = m.groups()
        note = 12 * (int(octave) + 1) + _PITCH_CLASS[letter.upper()] + {"#": 1, "b": -1, "": 0}[accidental]
    else:
        try:
            note = float(s)
        except ValueError:
            note = math.nan
        if not math.isfinite(note):
            raise ValueError(f"{s!r} is not a note: give a MIDI number (60) or a name (C4, A#3, Bb2)")
    if not NOTE_MIN <= note <= NOTE_MAX:
        raise ValueError(f"{s} is MIDI note {note:g}, outside {NOTE_MIN}..{NOTE_MAX} (C-1..G9)")
    return float(note)


@dataclass(frozen=True)
class PitchEstimate:
    """One clip's pitch: `hz` (None: no voiced frame), `voiced` (share of sounding frames with a clear period)
    and `spread` (interquartile range of the voiced frames' pitches, semitones)."""

    hz: float | None
    voiced: float
    spread: float

    @property
    def confident(self) -> bool:
        return self.hz is not None and self.voiced >= MIN_VOICED and self.spread <= MAX_SPREAD

    @property
    def note(self) -> float | None:
        return None if self.hz is None else hz_to_midi(self.hz)


@dataclass(frozen=True)
class RootEstimate:
    """The root of a set of clips: `note` (MIDI, to the cent; None when fewer than MIN_CONFIDENT of
    the clips, or fewer than 3, are confident), and how many clips were confident out of how many."""

    note: float | None
    confident: int
    clips: int

    def describe(self) -> str:
        if self.note is None:
            return f"none ({self.confident} of {self.clips} clips have a clear pitch)"
        return f"{self.note:.2f} ({note_name(self.note)}), the median of {self.confident} of {self.clips} clips"


def frame_periods(x: np.ndarray, sample_rate: int, fmin: float = FMIN_HZ, fmax: float = FMAX_HZ,
                  clarity: float = CLARITY) -> tuple[np.ndarray, np.ndarray]:
    """(T,) audio -> (periods in samples, NaN where unvoiced; sounding mask), one per frame.

    Frames are 1.5 periods of `fmin` plus the largest lag, every half window; `sounding` marks the
    frames within SILENCE_DB of the loudest. Empty arrays when the clip is shorter than one frame."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    tau_max = int(math.ceil(sample_rate / fmin))
    tau_min = max(2, int(math.floor(sample_rate / fmax)))
    w = int(math.ceil(1.5 * tau_max))
    length = w + tau_max + 2
    if len(x) < length:
        return np.zeros(0), np.zeros(0, dtype=bool)
    starts = np.arange(0, len(x) - length + 1, w // 2)
    frames = x[starts[:, None] + np.arange(length)[None, :]]  # (F, length)
    head = frames[:, :w]
    nfft = 1 << int(math.ceil(math.log2(w + length)))
    lags = np.arange(tau_max + 2)
    # r(tau) = sum_j head[j] * frame[j + tau]; m(tau) = the energy of both windows
    r = np.fft.irfft(np.conj(np.fft.rfft(head, nfft)) * np.fft.rfft(frames, nfft), nfft)[:, lags]
    power = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    m = power[:, w : w + 1] + power[:, lags + w] - power[:, lags]
    n = 2.0 * r / np.maximum(m, 1e-300)  # the normalised square difference function, in [-1, 1]

    energy = power[:, w] / w
    sounding = energy > max(energy.max() * 10.0 ** (SILENCE_DB / 10.0), 1e-12)
    # Candidates: positive local maxima of n past its first negative excursion, within the lags asked for.
    inner = n[:, 1:-1]
    peak = (inner > n[:, :-2]) & (inner >= n[:, 2:]) & (inner > 0)
    past = np.cumsum(n[:, 1:-1] < 0, axis=1) > 0
    tau_range = (lags[1:-1] >= tau_min) & (lags[1:-1] <= tau_max)
    cand = peak & past & tau_range[None, :]
    height = np.where(cand, inner, -np.inf)
    best = height.max(axis=1)
    # The first candidate within KEY of the highest: the period, not a multiple of it.
    first = np.argmax(cand & (height >= KEY * best[:, None]), axis=1)
    voiced = sounding & np.isfinite(best) & (best >= clarity)
    rows = np.arange(len(frames))
    period = _vertex(n, rows, first + 1)
    # A parabola through a peak a few samples from 0 is biased by a fraction of a sample (3.6 cents at
    # 880 Hz, 16 kHz); the peak at the largest multiple m of the period within reach has the same
    # fraction over m periods.
    m = np.maximum(1, np.floor(tau_max / np.where(voiced, period, tau_max)))
    centre = np.rint(m * period).astype(np.int64)
    near = np.clip(centre[:, None] + np.arange(-2, 3)[None, :], 1, tau_max)
    top = near[rows, np.argmax(n[rows[:, None], near], axis=1)]
    period = _vertex(n, rows, top) / m
    return np.where(voiced, period, np.nan), sounding


def _vertex(n: np.ndarray, rows: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """The lag of the vertex of the parabola through n at tau - 1, tau, tau + 1 (each row's own tau)."""
    a, b, c = n[rows, tau - 1], n[rows, tau], n[rows, np.minimum(tau + 1, n.shape[1] - 1)]
    den = a - 2.0 * b + c
    shift = np.where(den < 0, 0.5 * (a - c) / np.where(den < 0, den, -1.0), 0.0)
    return tau + np.clip(shift, -0.5, 0.5)


def estimate_pitch(x: np.ndarray, sample_rate: int, fmin: float = FMIN_HZ, fmax: float = FMAX_HZ,
                   clarity: float = CLARITY) -> PitchEstimate:
    """(T,) audio -> its pitch: the median of its voiced frames' pitches (see the module docstring)."""
    periods, sounding = frame_periods(x, sample_rate, fmin, fmax, clarity)
    count = int(sounding.sum())
    ok = ~np.isnan(periods)
    if count == 0 or not ok.any():
        return PitchEstimate(None, 0.0, math.inf)
    notes = A4_NOTE + 12.0 * np.log2(sample_rate / periods[ok] / A4_HZ)
    q1, med, q3 = np.percentile(notes, [25, 50, 75])
    return PitchEstimate(midi_to_hz(float(med)), float(ok.sum()) / count, float(q3 - q1))


def estimate_root(clips: np.ndarray, sample_rate: int) -> RootEstimate:
    """(N, T) clips -> the median pitch of the confident ones, rounded to the cent (RootEstimate)."""
    notes = [e.note for e in (estimate_pitch(c, sample_rate) for c in np.asarray(clips)) if e.confident]
    n = len(clips)
    if len(notes) < max(3, MIN_CONFIDENT * n):
        return RootEstimate(None, len(notes), n)
    return RootEstimate(round(float(np.median(notes)), 2), len(notes), n)
