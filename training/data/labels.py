"""Pitch and velocity labels per clip, for pitch-conditioned models, taken from the data.

    labels = clip_labels(folder, ds.clip_names)      # ds: an AudioSegments of that folder
    log.info("labels: %s", labels.summary())         # 298 of 300 clips labelled: 298 from labels.csv; ...
    pitch = labels.pitch[ds.clips]                   # (N,) the MIDI pitch of every segment, -1 unknown
    cfg_record = labels.as_dict()                    # pitch range and histogram, for the run's config and the bundle

Each clip is labelled by the first of these that knows it:
1. labels.csv (real_sets.write_labels' format), the nearest one in the clip's folder or above it, up
   to `folder`: its `pitches` column (MIDI numbers, space-separated, the first one the root, as the
   FluidR3 piano set writes them) and `velocity`. Only `pitches`: the digits set's `pitch` column is
   espeak-ng's voice pitch, not a note.
2. The file name (`labels_from_name`): the piano set's own `0001_p55_v39`, NSynth's `..._060-100`
   (pitch-velocity), or one note name such as `piano_C4_soft` or `A#3`.
3. With `track=True` only, a pitch tracker on the clip's audio (`pyin_pitch`, librosa's pYIN);
   clips without a confident pitch stay unlabelled, and the summary says how many got one.

Pitches are MIDI numbers (C4 = 60); -1 means unknown, for pitch and velocity alike.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganstream.core.pitch import NOTE_NAME, SILENCE_DB, PitchEstimate, parse_note

from . import audio
from .real_sets import LABELS, read_labels

FROM_CSV, FROM_NAME, FROM_TRACKER = LABELS, "file name", "pitch tracker"
UNKNOWN = -1

# A note name as a word of its own in a file name: an upper-case letter (a lower-case `b` is the flat), an
# octave from -1 to 9, and neither letters nor digits on either side, so `Bass`, `deadbeef`, `E12` and `xA3`
# are no notes. Upper case only: lower-case `a1`, `b2`, `e3` name takes, mics and sections too often.
_NOTE_TOKEN = re.compile(r"(?<![A-Za-z0-9])[A-G][#b]?(?:-1|[0-9])(?![A-Za-z0-9])")
# The piano set's own names (real_sets.build_piano): `0001_p55_v39`, chords `0000_p77-80-84-87_v32`.
_PIANO_SET_NAME = re.compile(r"(?:^|[^A-Za-z0-9])p([0-9]{1,3}(?:-[0-9]{1,3})*)_v([0-9]{1,3})$")
# NSynth: `guitar_acoustic_001-082-050`, three-digit pitch then velocity at the end of the stem.
_NSYNTH_NAME = re.compile(r"(?:^|[^0-9])([0-9]{3})-([0-9]{3})$")
_MIDI = range(0, 128)

# pYIN: a frame counts when pYIN calls it voiced with at least this probability. On a second of white
# noise it called 91% of the frames voiced, with a median probability of 0.01 and none reaching 0.5;
# on harmonic tones from 55 Hz to 2 kHz the median was 0.72-1.0.
MIN_VOICED_PROB = 0.5
TRACK_RANGE = (24, 108)  # MIDI notes looked for, C1..C8 (a piano's range, about)


def note_number(name: str) -> int:
    """A note name -> its MIDI number: "C4" -> 60, "A#3" -> 58, "Bb2" -> 46, "c-1" -> 0 (scientific pitch notation).

    Raises ValueError naming the text when it is not a note name, or is one outside MIDI 0..127."""
    text = str(name).strip()
    if not NOTE_NAME.fullmatch(text):
        raise ValueError(f"{name!r} is not a note name: give a letter, an optional # or b, and an octave (C4, A#3, Bb2, C-1)")
    return int(parse_note(text))


def labels_from_name(path: str | Path) -> tuple[int | None, int | None]:
    """A clip's file name -> (MIDI pitch, velocity), None where the name does not say.

    `0000_p77-80-84-87_v32` (the piano set; a chord's root is its first pitch) and NSynth's
    `..._060-100` give both; a note name (`piano_C4_soft`, `A#3`) gives the pitch. A name holding two
    different note names, or numbers outside MIDI 0..127, says nothing.
    """
    stem = Path(path).stem
    for pattern in (_PIANO_SET_NAME, _NSYNTH_NAME):
        m = pattern.search(stem)
        if m:
            pitch, velocity = int(m.group(1).split("-")[0]), int(m.group(2))
            if pitch in _MIDI and velocity in _MIDI:
                return pitch, velocity
    notes = set()
    for token in _NOTE_TOKEN.findall(stem):
        try:
            notes.add(note_number(token))
        except ValueError:  # Cb-1 or G#9: a note name's shape, outside MIDI
            continue
    return (notes.pop(), None) if len(notes) == 1 else (None, None)


@dataclass(frozen=True, eq=False)
class ClipLabels:
    """Labels of C clips, in the dataset's clip order (`AudioSegments.clip_names`)."""

    pitch: np.ndarray  # (C,) int64 MIDI pitch (a chord's root), -1 unknown
    velocity: np.ndarray  # (C,) int64 MIDI velocity, -1 unknown
    source: tuple[str, ...]  # (C,) FROM_CSV, FROM_NAME, FROM_TRACKER, or "" for an unlabelled clip
    tracked: int = 0  # clips the pitch tracker heard (those nothing else labelled, with track=True)

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def labelled(self) -> np.ndarray:
        """(C,) bool: the clips with a known pitch."""
        return self.pitch != UNKNOWN

    def histogram(self) -> dict[int, int]:
        """Labelled clips per MIDI pitch, in pitch order."""
        return dict(sorted(Counter(int(p) for p in self.pitch[self.labelled]).items()))

    def pitch_range(self) -> tuple[int, int] | None:
        """(lowest, highest) labelled pitch; None when no clip is labelled."""
        return _range(self.pitch)

    def velocity_range(self) -> tuple[int, int] | None:
        return _range(self.velocity)

    def summary(self) -> str:
        """One line: `298 of 300 clips labelled: 298 from labels.csv; pitch 36-96; velocity 30-127`."""
        counts = Counter(s for s in self.source if s)
        text = f"{sum(counts.values())} of {len(self)} clips labelled"
        if counts:
            text += ": " + ", ".join(f"{n} from {s}" for s, n in counts.items())
        if self.tracked:
            text += f" ({counts[FROM_TRACKER]} of {self.tracked} tracked clips had a confident pitch)"
        for name, span in (("pitch", self.pitch_range()), ("velocity", self.velocity_range())):
            text += f"; {name} {span[0]}-{span[1]}" if span else f"; no {name}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the run's config and the bundle: counts, sources, ranges, and the histogram keyed by pitch."""
        return {
            "clips": len(self),
            "labelled": int(self.labelled.sum()),
            "sources": dict(Counter(s for s in self.source if s)),
            "tracked": self.tracked,
            "pitch_range": list(r) if (r := self.pitch_range()) else None,
            "velocity_range": list(r) if (r := self.velocity_range()) else None,
            "histogram": {str(p): n for p, n in self.histogram().items()},
        }


def _range(values: np.ndarray) -> tuple[int, int] | None:
    known = values[values != UNKNOWN]
    return (int(known.min()), int(known.max())) if known.size else None


Tracker = Callable[[np.ndarray, int], PitchEstimate]


def clip_labels(
    folder: str | Path,
    clip_names: list[str],
    track: bool = False,
    sample_rate: int = 16000,
    audio_loader: Callable[[Path, int], np.ndarray] = audio.decode,
    tracker: Tracker | None = None,
) -> ClipLabels:
    """The labels of the clips `clip_names` (paths relative to `folder`), from labels.csv, then file names,
    then, with `track`, `tracker` (default `pyin_pitch`) on each remaining clip as `audio_loader(path, sample_rate)` reads it.

    Raises ValueError naming the file for a labels.csv that cannot be read or holds a bad row, and
    for a clip the tracker cannot read."""
    folder = Path(folder)
    csv_rows = _CsvLabels(folder)
    pitch = np.full(len(clip_names), UNKNOWN, np.int64)
    velocity = np.full(len(clip_names), UNKNOWN, np.int64)
    source = [""] * len(clip_names)
    for i, name in enumerate(clip_names):
        for where, (p, v) in ((FROM_CSV, csv_rows.get(name)), (FROM_NAME, labels_from_name(name))):
            if p is not None:
                pitch[i], velocity[i], source[i] = p, UNKNOWN if v is None else v, where
                break
    todo = [i for i, s in enumerate(source) if not s] if track else []
    if todo:
        tracker = pyin_pitch if tracker is None else tracker
        for i in todo:
            path = folder / clip_names[i]
            try:
                x = audio_loader(path, sample_rate)
            except audio.SkipFile as e:
                raise ValueError(f"{path}: cannot track its pitch: {e}") from None
            estimate = tracker(x, sample_rate)
            if estimate.confident and estimate.note is not None and round(estimate.note) in _MIDI:
                pitch[i], source[i] = round(estimate.note), FROM_TRACKER
    return ClipLabels(pitch, velocity, tuple(source), tracked=len(todo))


class _CsvLabels:
    """Pitch and velocity by clip from the labels.csv files at and below `folder`, each read once when first asked."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._read: dict[str, dict[str, tuple[int, int | None]]] = {}  # folder relative to the root -> file -> labels

    def get(self, name: str) -> tuple[int | None, int | None]:
        """The nearest labels.csv row for clip `name` with a pitch; (None, None) when none has one."""
        parts = name.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            rows = self._rows("/".join(parts[:depth]))
            found = rows.get("/".join(parts[depth:]))
            if found is not None:
                return found
        return None, None

    def _rows(self, sub: str) -> dict[str, tuple[int, int | None]]:
        if sub not in self._read:
            self._read[sub] = self._parse(self.folder / sub)
        return self._read[sub]

    @staticmethod
    def _parse(where: Path) -> dict[str, tuple[int, int | None]]:
        path = where / LABELS
        if not path.is_file():
            return {}
        try:
            rows = read_labels(where)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{path}: unreadable ({e})") from None
        if not rows or "pitches" not in rows[0]:
            return {}  # a set labelled by something else (drums: kit and instrument; digits: the word)
        if "file" not in rows[0]:
            raise ValueError(f"{path}: a `pitches` column but no `file` column")
        out: dict[str, tuple[int, int | None]] = {}
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            file, pitches, vel = ((row.get(k) or "").strip() for k in ("file", "pitches", "velocity"))
            if not pitches:
                continue  # an unlabelled clip: its name may still say
            try:
                notes = [int(n) for n in pitches.split()]
                v = int(vel) if vel else None
            except ValueError:
                notes, v = [], None
            if not notes or any(n not in _MIDI for n in notes) or (v is not None and v not in _MIDI) or not file:
                raise ValueError(f"{path}: line {line} ({file or 'no file'}): pitches {pitches!r} and velocity {vel!r} "
                                 "must be MIDI numbers 0..127 (pitches space-separated, the root first)")
            if file in out:
                raise ValueError(f"{path}: line {line}: {file} is labelled twice")
            out[file] = (notes[0], v)
        return out


def pyin_pitch(x: np.ndarray, sample_rate: int, notes: tuple[int, int] = TRACK_RANGE) -> PitchEstimate:
    """(T,) audio -> its pitch by librosa's pYIN (Mauch and Dixon 2014): the median of its confident frames.

    A frame is confident when pYIN calls it voiced with probability MIN_VOICED_PROB or more; `voiced` is
    their share of the sounding frames (RMS within core.pitch.SILENCE_DB of the loudest), `spread` the
    interquartile range of their pitches, so `PitchEstimate.confident` applies core/pitch.py's rule.
    Raises RuntimeError when librosa is not installed."""
    try:
        import librosa
    except ImportError:
        raise RuntimeError("tracking pitch needs librosa: pip install librosa") from None
    fmin, fmax = (float(librosa.midi_to_hz(n)) for n in notes)
    frame = 1 << math.ceil(math.log2(2.5 * sample_rate / fmin))  # 2048 at 16 kHz for C1: 2.5 periods of fmin
    x = np.asarray(x, np.float32).reshape(-1)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    f0, voiced, prob = librosa.pyin(x, fmin=fmin, fmax=min(fmax, 0.45 * sample_rate), sr=sample_rate, frame_length=frame)
    rms = librosa.feature.rms(y=x, frame_length=frame, hop_length=frame // 4)[0][: len(f0)]
    sounding = rms > max(float(rms.max()) * 10.0 ** (SILENCE_DB / 20.0), 1e-6)
    sure = voiced & (prob >= MIN_VOICED_PROB) & sounding & np.isfinite(f0)
    if not sounding.any() or not sure.any():
        return PitchEstimate(None, 0.0, math.inf)
    midi = librosa.hz_to_midi(f0[sure])
    q1, med, q3 = np.percentile(midi, [25, 50, 75])
    return PitchEstimate(float(librosa.midi_to_hz(med)), float(sure.sum() / sounding.sum()), float(q3 - q1))


def segment_conditions(ds: Any, condition_columns: int, track: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The condition columns of every segment of `ds` (an AudioSegments of a folder), and the record of the
    labels that goes into the run's config and the bundle (models/condition.py's `labels`).

    Returns (N, condition_columns) float32, column 0 the MIDI pitch, column 1 the velocity in [0, 1]
    (MIDI velocity / 127), -1 where unknown; and `ClipLabels.as_dict()` plus `pitch_counts` and
    `velocity_counts` (segments per value), what previews and evaluations draw conditions from, and
    `summary`. Raises ValueError when the data has no folder or no clip a pitch."""
    if ds.folder is None or not ds.clip_names:
        raise ValueError(f"data.source {ds.source!r}: a conditioned model needs a folder of labelled clips, not a synth set")
    labels = clip_labels(ds.folder, ds.clip_names, track=track, sample_rate=ds.sample_rate)
    if not labels.labelled.any():
        raise ValueError(f"data.source {ds.source!r}: no clip has a pitch label ({labels.summary()}); "
                         "name files by note (C4, A#3, _060-100), add a labels.csv, or set model.track_pitch")
    pitch = labels.pitch[ds.clips].astype(np.float32)
    velocity = np.where(labels.velocity[ds.clips] >= 0, labels.velocity[ds.clips] / 127.0, UNKNOWN).astype(np.float32)
    cond = np.stack([pitch, velocity], axis=1)[:, :condition_columns].copy()
    record = labels.as_dict()
    trained = pitch[pitch >= 0]  # the range the model hears: the training segments', not every clip's (held-out ones too)
    record["pitch_range"] = [int(trained.min()), int(trained.max())]
    record["summary"] = labels.summary()
    record["sample_rate"] = int(ds.sample_rate)  # what a generator's oscillator prior (model.harmonics) runs at
    record["pitch_counts"] = {str(int(p)): int(n) for p, n in sorted(Counter(pitch[pitch >= 0].tolist()).items())}
    record["velocity_counts"] = {f"{v:.4f}": int(n) for v, n in sorted(Counter(velocity[velocity >= 0].tolist()).items())}
    return cond, record
