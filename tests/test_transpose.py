"""Transposition as a sampler does it (core/transpose.py), the pitch estimator it is checked with and
export uses for a bundle's root note (core/pitch.py), the trigger-mode stream that plays notes
transposed (realtime/stream.py), and the manifest's optional `streaming.root_note` (core/manifest.py).

Pitches are checked twice: by core/pitch.estimate_pitch and, independently, by the peak of a
windowed, zero-padded FFT refined by a parabola through its log magnitude."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from bundle_factory import make_bundle, read_manifest, rehash, write_manifest

from ganstream.core.manifest import BundleError, StreamingSettings, lowest_version
from ganstream.core.pitch import (
    PitchEstimate,
    estimate_pitch,
    estimate_root,
    hz_to_midi,
    midi_to_hz,
    note_name,
    parse_note,
)
from ganstream.core.transpose import MAX_SEMITONES, Transposer, make_plan
from ganstream.realtime.bundle import load_bundle, shipped_bundles
from ganstream.realtime.latents import ControlPath, LatentSpace
from ganstream.realtime.stream import SegmentStream, StreamSettings, Trigger

SR = 16000
N = 16384  # the shipped bundles' segment


def cents(a: float, b: float) -> float:
    return 1200.0 * math.log2(a / b)


def harmonic(f0: float, n: int = N, sr: int = SR, partials: int = 8, amp: float = 0.3) -> np.ndarray:
    """A harmonic tone, partials weighted 1/h (those below Nyquist), float32."""
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * f0 * h * t + 0.7 * h) / h for h in range(1, partials + 1) if f0 * h < sr / 2)
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


def blackman_harris(n: int) -> np.ndarray:
    """The 4-term Blackman-Harris window: sidelobes below -92 dB, so a -60 dB product is not a tone's leakage."""
    k = 2 * np.pi * np.arange(n) / (n - 1)
    return 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)


def fft_peak_hz(x: np.ndarray, sr: int = SR) -> float:
    """The strongest component's frequency: Hann window, 8x zero padding, a parabola through the log peak."""
    pad = 8 * len(x)
    s = np.log(np.abs(np.fft.rfft(x * np.hanning(len(x)), pad)) + 1e-30)
    k = int(np.argmax(s[1:-1])) + 1
    a, b, c = s[k - 1], s[k], s[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / pad


# -- pitch: the estimator and note names ---------------------------------------------------------------


@pytest.mark.parametrize("f0", [55.0, 110.0, 220.5, 440.0, 880.0])
def test_the_pitch_estimator_finds_harmonic_tones_within_3_cents(f0):
    e = estimate_pitch(harmonic(f0), SR)
    assert e.confident and e.voiced == 1.0
    assert abs(cents(e.hz, f0)) < 3.0
    assert abs(cents(fft_peak_hz(harmonic(f0)), f0)) < 3.0  # the independent check agrees on the tone


def test_the_pitch_estimator_hears_a_missing_fundamental_and_ignores_a_faint_high_tone():
    t = np.arange(N) / SR
    missing = sum(np.sin(2 * np.pi * 200 * h * t) / h for h in range(2, 8))
    assert abs(cents(estimate_pitch(missing, SR).hz, 200.0)) < 3.0
    # WaveGAN's upsampling leaves a faint 2 kHz tone (16 kHz / 8); the note is what dominates.
    whistle = np.sin(2 * np.pi * 200 * t) + 0.1 * np.sin(2 * np.pi * 2000 * t)
    assert abs(cents(estimate_pitch(whistle, SR).hz, 200.0)) < 3.0


def test_noise_and_silence_have_no_pitch():
    noise = np.random.default_rng(0).standard_normal(N)
    assert estimate_pitch(noise, SR) == PitchEstimate(None, 0.0, math.inf)
    assert estimate_pitch(np.zeros(N), SR).hz is None
    assert estimate_pitch(np.ones(100), SR).hz is None  # shorter than a frame
    assert not estimate_pitch(noise, SR).confident


def test_the_root_is_the_median_of_the_clips_with_a_clear_pitch():
    rng = np.random.default_rng(1)
    notes = 57.3 + rng.uniform(-3, 3, 12)
    tones = [harmonic(midi_to_hz(n), 8192) for n in notes]
    noise = [0.3 * rng.standard_normal(8192).astype(np.float32) for _ in range(4)]
    root = estimate_root(np.stack(tones + noise), SR)
    assert (root.confident, root.clips) == (12, 16)
    assert abs(root.note - np.median(notes)) < 0.05  # 5 cents
    assert root.note == round(root.note, 2)
    assert "the median of 12 of 16 clips" in root.describe()
    # Fewer than half the clips with a clear pitch: no root at all (the engine then takes 60, with a warning).
    few = estimate_root(np.stack(tones[:5] + noise + noise[:3]), SR)
    assert few.note is None and few.describe() == "none (5 of 12 clips have a clear pitch)"
    assert estimate_root(np.stack(tones[:2]), SR).note is None  # and at least 3


@pytest.mark.parametrize(
    "text, note", [("60", 60.0), ("C4", 60.0), ("A4", 69.0), ("A#3", 58.0), ("Bb3", 58.0), ("c-1", 0.0), ("G9", 127.0), ("57.5", 57.5)]
)
def test_notes_by_number_or_name(text, note):
    assert parse_note(text) == note


@pytest.mark.parametrize(
    "text, message",
    [("H2", "'H2' is not a note: give a MIDI number (60) or a name (C4, A#3, Bb2)"),
     ("G#9", "G#9 is MIDI note 128, outside 0..127 (C-1..G9)"), ("-1", "outside 0..127"), ("nan", "is not a note"), ("", "is not a note")],
)
def test_a_bad_note_says_what_is_accepted(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_note(text)


def test_note_names_and_frequencies():
    assert (note_name(60), note_name(58), note_name(0), note_name(57.83)) == ("C4", "A#3", "C-1", "A#3 -17 cents")
    assert midi_to_hz(69) == 440.0 and hz_to_midi(220.0) == pytest.approx(57.0)


# -- transposition ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("semitones", [12, -12, 7, -5, 24, -24])
def test_a_transposed_tone_sounds_the_interval_within_10_cents(semitones):
    """Done-when: +-12 semitones double or halve the estimated pitch within 10 cents (and other intervals too)."""
    f0 = 220.0
    x = harmonic(f0)
    y = Transposer(N).transpose(x, semitones)
    want = f0 * 2.0 ** (semitones / 12)
    est = estimate_pitch(y, SR)
    assert est.confident
    assert abs(cents(est.hz, want)) < 10.0, (est.hz, want)
    assert abs(cents(fft_peak_hz(y), want)) < 10.0
    if abs(semitones) == 12:  # the done-when's own figure: the estimates' ratio
        ratio = est.hz / estimate_pitch(x, SR).hz
        assert abs(cents(ratio, 2.0 ** (semitones / 12))) < 10.0


def test_every_interval_plays_within_a_fifth_of_a_cent_and_a_higher_note_is_shorter():
    t = Transposer(N)
    plans = [t.plan(s) for s in range(-MAX_SEMITONES, MAX_SEMITONES + 1) if s]
    assert max(abs(p.cents_off) for p in plans) < 0.2
    lengths = [p.length for p in plans]
    assert lengths == sorted(lengths, reverse=True)
    for p in plans:
        assert p.length == math.ceil(N * p.b / p.a)
        assert abs(p.length - N / 2.0 ** (p.semitones / 12)) <= 2
    assert (t.plan(12).length, t.plan(-12).length, t.plan(24).length, t.plan(-24).length) == (N // 2, 2 * N, N // 4, 4 * N)
    assert t.plan(12) is t.plan(12.0)  # made once
    with pytest.raises(ValueError, match="within \\+-24"):
        make_plan(N, 24.5)
    np.testing.assert_array_equal(t.transpose(harmonic(220.0), 0), harmonic(220.0))  # unison: untouched


def test_transposition_keeps_level_and_time():
    """Output sample j is the input at time j * ratio, at the input's level: a 1 kHz sine comes out as the
    sine at 1 kHz * ratio with the same phase, away from the clip's edges."""
    t = np.arange(N) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000 * t + 0.3)).astype(np.float32)
    tr = Transposer(N)
    for s in (3, -7, 12.37):
        p = tr.plan(s)
        y = tr.transpose(x, s)
        j = np.arange(p.length)
        want = 0.5 * np.sin(2 * np.pi * 1000 * j * p.ratio / SR + 0.3)
        mid = slice(p.length // 8, -p.length // 8)
        np.testing.assert_allclose(y[mid], want[mid], atol=2e-3)


def aliasing_db(y: np.ndarray, expected_hz: list[float], sr: int = SR, guard: int = 8) -> float:
    """The strongest component of y outside `guard` bins of each expected frequency, in dB relative to
    a full-scale sine of the same amplitude as the test tones (0.25)."""
    w = blackman_harris(len(y))
    spectrum = np.abs(np.fft.rfft(y * w)) / (0.25 * w.sum() / 2)
    freqs = np.fft.rfftfreq(len(y), 1.0 / sr)
    keep = np.ones(len(freqs), dtype=bool)
    for f in expected_hz:
        keep &= np.abs(freqs - f) > guard * sr / len(y)
    return 20 * np.log10(spectrum[keep].max() + 1e-20)


TONES_HZ = (1000.0, 5000.0, 7000.0, 7600.0)  # a reference tone, and high ones that go past Nyquist going up


def tones() -> np.ndarray:
    t = np.arange(N) / SR
    return sum(0.25 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(TONES_HZ)).astype(np.float32)


@pytest.mark.parametrize("semitones", [1, 3, 7, 12, 19, 24])
def test_no_aliasing_product_rises_above_minus_60_db(semitones):
    """Done-when: high tones transposed up by up to +24 semitones leave nothing folded back below Nyquist
    above -60 dB (relative to the input tones). Only what lies below Nyquist after the shift may be there."""
    tr = Transposer(N)
    y = tr.transpose(tones(), semitones)
    r = tr.plan(semitones).ratio
    kept = [f * r for f in TONES_HZ if f * r < SR / 2]
    assert 1000.0 * r in kept
    assert aliasing_db(y, kept) < -60.0


def test_the_aliasing_check_catches_a_resampler_that_aliases():
    """Negative control: linear interpolation, with no low-pass, folds the high tones back far above -60 dB."""
    r = 2.0
    x = tones()
    y = np.interp(np.arange(N // 2) * r, np.arange(N), x).astype(np.float32)
    kept = [f * r for f in TONES_HZ if f * r < SR / 2]
    assert aliasing_db(y, kept) > -20.0


# -- the stream: notes transpose one-shots -------------------------------------------------------------------


class Tone:
    """A generator whose every segment is a 220 Hz harmonic tone, whatever the latent."""

    sample_rate, segment, latent_size = SR, 4096, 8

    def generate(self, z):
        return np.tile(harmonic(220.0, self.segment), (len(z), 1))


def voices(y: np.ndarray, gap: int = 64) -> list[tuple[int, int]]:
    """(start, stop) of each stretch of sound: non-zero samples with fewer than `gap` zeros between them."""
    on = np.flatnonzero(y)
    if not len(on):
        return []
    cut = np.flatnonzero(np.diff(on) > gap)
    return list(zip(on[np.r_[0, cut + 1]], on[np.r_[cut, len(on) - 1]] + 1))


def play_notes(notes, root, **settings) -> np.ndarray:
    space = LatentSpace(8)
    s = StreamSettings(mode="trigger", root_note=root, fade_in_s=0.0, **settings)
    gap = 20000
    triggers = [Trigger(100 + i * gap, 1.0, n) for i, n in enumerate(notes)]
    return SegmentStream(Tone(), ControlPath(space, np.zeros(8), sample_rate=SR), s, triggers=triggers).read(len(notes) * gap + 100)


def test_a_note_plays_its_voice_transposed_from_the_root():
    notes = [57, 69, 45, 64, None, 100, 0]
    y = play_notes(notes, root=57)
    spans = voices(y)
    assert len(spans) == len(notes)
    # +-24 at most: note 100 plays two octaves up, note 0 two octaves down
    intervals = [0, 12, -12, 7, 0, 24, -24]
    for (a, b), interval in zip(spans, intervals):
        assert b - a == math.ceil(4096 / 2 ** (interval / 12)) or abs(b - a - 4096 / 2 ** (interval / 12)) <= 1
        want = 220.0 * 2.0 ** (interval / 12)
        core = y[a + 80 : b - 80]
        assert abs(cents(estimate_pitch(core, SR).hz, want)) < 10.0
        assert abs(cents(fft_peak_hz(core), want)) < 10.0


def test_without_a_root_notes_play_as_generated():
    y = play_notes([45, 69, 81], root=None)
    assert [b - a for a, b in voices(y)] == [4096] * 3
    z = play_notes([57, 57, 57], root=57)  # every note at the root: the same samples
    np.testing.assert_array_equal(y, z)


def test_a_fractional_root_tunes_every_note():
    y = play_notes([60], root=59.5)  # half a semitone up
    a, b = voices(y)[0]
    assert abs(cents(estimate_pitch(y[a + 80 : b - 80], SR).hz, 220.0 * 2 ** (0.5 / 12))) < 10.0


def test_a_control_change_regenerates_a_transposed_voice_in_tune():
    space = LatentSpace(8)
    path = ControlPath(space, np.zeros(8), sample_rate=SR)
    s = StreamSettings(mode="trigger", root_note=60, fade_in_s=0.0)
    stream = SegmentStream(Tone(), path, s, triggers=[Trigger(100, 1.0, 72)])
    path.set_latent(900, np.full(8, 0.5))
    y = stream.read(4000)
    assert stream.regenerations > 0
    a, b = voices(y)[0]
    assert b - a == 2048  # the regenerated voice keeps the transposed length
    assert abs(cents(estimate_pitch(y[a + 80 : b - 80], SR).hz, 440.0)) < 10.0


@pytest.mark.parametrize("bad, message", [({"root_note": 128.0}, "root_note must be a MIDI note"),
                                          ({"velocity_exponent": 0.0}, "velocity_exponent must be > 0")])
def test_bad_note_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        SegmentStream(Tone(), ControlPath(LatentSpace(8), np.zeros(8)), StreamSettings(mode="trigger", **bad))


# -- the manifest: streaming.root_note -------------------------------------------------------------------------


def test_the_root_note_is_optional_and_round_trips(tmp_path):
    b = make_bundle(tmp_path / "b.gsb")
    assert load_bundle(b).streaming.root_note is None
    assert "root_note" not in read_manifest(b)["streaming"]  # absent, not null: written back as it was read
    m = read_manifest(b)
    m["streaming"]["root_note"] = 57.31
    write_manifest(b, m)
    bundle = load_bundle(rehash(b))
    assert bundle.streaming.root_note == 57.31
    assert json.loads(bundle.spec.dumps())["streaming"]["root_note"] == 57.31
    assert bundle.spec.format_version == 1  # no version of its own: older readers ignore it and play untransposed
    assert lowest_version("waveform", "crossfade") == 1
    m["streaming"]["root_note"] = None
    write_manifest(b, m)
    assert load_bundle(rehash(b)).streaming.root_note is None


@pytest.mark.parametrize("value, message", [(128, "must be a MIDI note within [0, 127], got 128"), (-1, "must be a MIDI note within [0, 127], got -1"),
                                            ("C4", "must be a finite number"), (True, "must be a finite number")])
def test_a_bad_root_note_is_refused_naming_the_field(value, message):
    data = {"mode": "trigger", "crossfade": 0, "texture_overlap": 1, "latent_smoothing_s": 0.05, "walk_rate": 0.2,
            "walk_depth": 0.3, "root_note": value}
    with pytest.raises(BundleError, match=r"`streaming.root_note` " + message.replace("[", r"\[").replace("]", r"\]")):
        StreamingSettings.from_json(data, "manifest.json", segment=4096)


def test_the_shipped_bundles_load_unchanged_without_a_root():
    for name in shipped_bundles():
        b = load_bundle(name)
        assert b.streaming.root_note is None
        assert b.spec.dumps() == (b.source / "manifest.json").read_text()
