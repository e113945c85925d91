"""Pitch and velocity labels per clip (training/data/labels.py), from labels.csv, file names and a pitch tracker.

The tracker tests run librosa's pYIN on harmonic tones and noise made here, and skip without librosa;
the rest needs no audio at all, or a fake tracker.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from ganstream.core.pitch import PitchEstimate, midi_to_hz
from ganstream.training.data.labels import (
    FROM_CSV,
    FROM_NAME,
    FROM_TRACKER,
    ClipLabels,
    clip_labels,
    labels_from_name,
    note_number,
    pyin_pitch,
)
from ganstream.training.data.real_sets import write_labels

RATE = 16000


@pytest.mark.parametrize("name, note", [
    ("C4", 60), ("A4", 69), ("A#3", 58), ("Bb2", 46), ("c-1", 0), ("G9", 127), ("B#3", 60), ("Cb4", 59), (" e5 ", 76),
])
def test_note_names(name, note):
    assert note_number(name) == note


@pytest.mark.parametrize("text, says", [
    ("H2", "'H2' is not a note name"), ("C", "'C' is not a note name"), ("60", "'60' is not a note name"),
    ("C4 soft", "'C4 soft' is not a note name"), ("", "'' is not a note name"), ("G#9", "G#9 is MIDI note 128"),
])
def test_a_bad_note_name_is_named(text, says):
    with pytest.raises(ValueError, match=says):
        note_number(text)


@pytest.mark.parametrize("path, labels", [
    # NSynth: pitch-velocity, three digits each, at the end of the stem
    ("guitar_acoustic_001-082-050.wav", (82, 50)),
    ("nsynth/keys_060-100.wav", (60, 100)),
    ("x_123-456.wav", (None, None)),  # not MIDI numbers
    # the piano set's own names; a chord's root is its first pitch
    ("0001_p55_v39.wav", (55, 39)),
    ("heldout/0000_p77-80-84-87_v32.wav", (77, 32)),
    ("en+m1_s150_p50_001.wav", (None, None)),  # the digits set: espeak-ng's voice pitch, no note
    # a note name as a word of its own
    ("piano_C4_soft.wav", (60, None)),
    ("A#3.wav", (58, None)),
    ("Piano.ff.Bb1.aiff", (34, None)),
    ("low/kick-C-1.flac", (0, None)),
    ("C4 and C4.wav", (60, None)),
    # ... and not inside words or numbers, nor two different ones
    ("Bass.wav", (None, None)),
    ("deadbeef.wav", (None, None)),
    ("xA3.wav", (None, None)),
    ("C4soft.wav", (None, None)),
    ("take_12E4.wav", (None, None)),
    ("E12.wav", (None, None)),
    ("take_a1.wav", (None, None)),  # lower case: a take, a mic, a section
    ("C4_to_E4.wav", (None, None)),
])
def test_labels_from_file_names(path, labels):
    assert labels_from_name(path) == labels


def test_labels_csv_comes_before_file_names_and_names_before_nothing(tmp_path):
    write_labels(tmp_path, [
        {"file": "0000_p60_v100.wav", "pitches": "48", "velocity": 30, "notes": 1},  # the csv wins over the name
        {"file": "0001_p77-80-84_v64.wav", "pitches": "77 80 84", "velocity": 64, "notes": 3},
        {"file": "piano_D4.wav", "pitches": "", "velocity": "", "notes": 0},  # an empty row: the name still says
    ])
    names = ["0000_p60_v100.wav", "0001_p77-80-84_v64.wav", "piano_D4.wav", "0002_p40_v90.wav", "noise.wav"]
    labels = clip_labels(tmp_path, names)
    np.testing.assert_array_equal(labels.pitch, [48, 77, 62, 40, -1])
    np.testing.assert_array_equal(labels.velocity, [30, 64, -1, 90, -1])
    assert labels.source == (FROM_CSV, FROM_CSV, FROM_NAME, FROM_NAME, "")
    assert labels.tracked == 0
    assert labels.summary() == "4 of 5 clips labelled: 2 from labels.csv, 2 from file name; pitch 40-77; velocity 30-90"


def test_the_nearest_labels_csv_above_a_clip_labels_it(tmp_path):
    write_labels(tmp_path / "train", [{"file": "a/x.wav", "pitches": "50", "velocity": 70}])
    write_labels(tmp_path / "train" / "a", [{"file": "y.wav", "pitches": "51", "velocity": 71}])
    labels = clip_labels(tmp_path, ["train/a/x.wav", "train/a/y.wav", "heldout/z.wav"])
    np.testing.assert_array_equal(labels.pitch, [50, 51, -1])
    np.testing.assert_array_equal(labels.velocity, [70, 71, -1])


def test_a_labels_csv_without_pitches_is_not_a_note_label(tmp_path):
    # The digits set's `pitch` is espeak-ng's voice pitch, and drums are labelled by instrument.
    write_labels(tmp_path, [{"file": "one/en_p50.wav", "digit": 1, "pitch": 50},
                            {"file": "snare_C3.wav", "digit": "", "pitch": 40}])
    labels = clip_labels(tmp_path, ["one/en_p50.wav", "snare_C3.wav"])
    np.testing.assert_array_equal(labels.pitch, [-1, 48])
    assert labels.source == ("", FROM_NAME)


@pytest.mark.parametrize("row, says", [
    ({"file": "b.wav", "pitches": "sixty", "velocity": 64}, r"line 3 \(b.wav\): pitches 'sixty'"),
    ({"file": "b.wav", "pitches": "60 128", "velocity": 64}, r"line 3 \(b.wav\): pitches '60 128'"),
    ({"file": "b.wav", "pitches": "60", "velocity": 200}, r"line 3 \(b.wav\): pitches '60' and velocity '200'"),
    ({"file": "", "pitches": "60", "velocity": 64}, r"line 3 \(no file\)"),
    ({"file": "a.wav", "pitches": "61", "velocity": 64}, r"line 3: a.wav is labelled twice"),
])
def test_a_bad_labels_csv_row_names_the_file_and_the_line(tmp_path, row, says):
    write_labels(tmp_path, [{"file": "a.wav", "pitches": "60", "velocity": 64}, row])
    with pytest.raises(ValueError, match=f"labels.csv: {says}") as e:
        clip_labels(tmp_path, ["a.wav"])
    assert str(tmp_path / "labels.csv") in str(e.value)


class FakeTracker:
    """Answers each clip's pitch from its first sample (0: no clear pitch), and counts its calls."""

    def __init__(self):
        self.heard = 0

    def __call__(self, x, sample_rate):
        self.heard += 1
        note = float(x[0])
        return PitchEstimate(midi_to_hz(note), 1.0, 0.0) if note else PitchEstimate(None, 0.0, math.inf)


def test_the_tracker_hears_only_what_nothing_else_labelled_and_only_when_asked(tmp_path):
    names = ["C4.wav", "a.wav", "b.wav", "c.wav"]
    heard = {"a.wav": 57.0, "b.wav": 0.0, "c.wav": 71.4}

    def load(path, sample_rate):
        assert sample_rate == 22050
        return np.full(100, heard[path.name], np.float32)

    tracker = FakeTracker()
    assert clip_labels(tmp_path, names, sample_rate=22050, audio_loader=load, tracker=tracker).summary() == \
        "1 of 4 clips labelled: 1 from file name; pitch 60-60; no velocity"
    assert tracker.heard == 0
    labels = clip_labels(tmp_path, names, track=True, sample_rate=22050, audio_loader=load, tracker=tracker)
    assert tracker.heard == 3
    np.testing.assert_array_equal(labels.pitch, [60, 57, -1, 71])
    assert labels.source == (FROM_NAME, FROM_TRACKER, "", FROM_TRACKER)
    assert labels.summary() == ("3 of 4 clips labelled: 1 from file name, 2 from pitch tracker "
                                "(2 of 3 tracked clips had a confident pitch); pitch 57-71; no velocity")


def test_a_clip_the_tracker_cannot_read_is_named(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.wav: cannot track its pitch: empty"):
        clip_labels(tmp_path, ["empty.wav"], track=True, tracker=FakeTracker())


def test_summary_histogram_and_record():
    pitch = np.array([36] * 100 + [60] * 150 + [96] * 48 + [-1, -1])
    velocity = np.where(pitch < 0, -1, np.resize([30, 127, 64], len(pitch)))
    labels = ClipLabels(pitch, velocity, tuple(FROM_CSV if p >= 0 else "" for p in pitch))
    assert labels.summary() == "298 of 300 clips labelled: 298 from labels.csv; pitch 36-96; velocity 30-127"
    assert labels.histogram() == {36: 100, 60: 150, 96: 48}
    assert labels.pitch_range() == (36, 96)
    record = json.loads(json.dumps(labels.as_dict()))
    assert record == {"clips": 300, "labelled": 298, "sources": {"labels.csv": 298}, "tracked": 0,
                      "pitch_range": [36, 96], "velocity_range": [30, 127], "histogram": {"36": 100, "60": 150, "96": 48}}
    empty = ClipLabels(np.full(3, -1), np.full(3, -1), ("", "", ""))
    assert empty.summary() == "0 of 3 clips labelled; no pitch; no velocity"
    assert empty.pitch_range() is None and empty.histogram() == {}


# --- the pitch tracker: librosa's pYIN -----------------------------------------


def struck(note: float, seconds: float = 0.5, partials: int = 8) -> np.ndarray:
    """A harmonic tone at MIDI `note` (partials weighted 1/h, those below Nyquist), decaying like a struck string."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = midi_to_hz(note)
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, partials + 1) if h * f0 < RATE / 2)
    return (0.5 * x * np.exp(-3.0 * t) / np.abs(x).max()).astype(np.float32)


NOTES = (33.0, 58.3, 69.0, 92.8)  # A1 (55 Hz), A#3 +30 cents, A4, G#6 -20 cents (1.6 kHz)


def test_pyin_finds_harmonic_tones_within_50_cents_and_no_pitch_in_noise():
    pytest.importorskip("librosa", reason="the pitch tracker is librosa's pYIN; librosa is not installed")
    for note in NOTES:
        e = pyin_pitch(struck(note), RATE)
        assert e.confident, (note, e)
        assert abs(e.note - note) < 0.5, (note, e)
    noise = 0.3 * np.random.default_rng(0).standard_normal(RATE // 2).astype(np.float32)
    assert not pyin_pitch(noise, RATE).confident
    assert not pyin_pitch(np.zeros(RATE // 2, np.float32), RATE).confident


def test_tracked_labels_from_wav_files(tmp_path):
    pytest.importorskip("librosa", reason="the pitch tracker is librosa's pYIN; librosa is not installed")
    names = [f"tone{i}.wav" for i in range(len(NOTES))] + ["noise.wav"]
    for name, x in zip(names, [struck(n) for n in NOTES] + [0.3 * np.random.default_rng(1).standard_normal(RATE // 2)]):
        sf.write(str(tmp_path / name), x, RATE)
    labels = clip_labels(tmp_path, names, track=True, sample_rate=RATE)
    np.testing.assert_array_equal(labels.pitch, [33, 58, 69, 93, -1])
    assert labels.summary() == ("4 of 5 clips labelled: 4 from pitch tracker (4 of 5 tracked clips had a confident pitch); "
                                "pitch 33-93; no velocity")
