"""Training data: decoding real files, the cache, splits, batches and the synth sets."""

from __future__ import annotations

import contextlib
import logging
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ganstream.training.config import ConfigError, DataConfig, load_config
from ganstream.training.data import AudioSegments, DataError, load_dataset
from ganstream.training.data import audio as audio_mod

RATE = 16000
SEG = 4096  # hop 0.5 -> 2048
DUR = 0.96  # 15360 samples at 16 kHz = 4096 + 5.5 hops: 6 segments, with half a hop of slack for codec padding
SEGS_PER_FILE = 6
LOGGER = "ganstream.training.data"


def tone(rate: int, freq: float = 1000.0, amp: float = 0.5, channels: int = 1, dur: float = DUR) -> np.ndarray:
    t = np.arange(round(dur * rate)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return x if channels == 1 else np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


# (relative path, rate, subtype, format, channels): every one usable, SEGS_PER_FILE segments each.
GOOD = [
    ("sine44k.wav", 44100, "PCM_16", "WAV", 1),
    ("a/u8.wav", 8000, "PCM_U8", "WAV", 1),
    ("a/b/pcm24.wav", 22050, "PCM_24", "WAV", 1),
    ("a/b/pcm32.wav", 48000, "PCM_32", "WAV", 1),
    ("float48k.wav", 48000, "FLOAT", "WAV", 1),
    ("stereo.flac", 48000, "PCM_16", "FLAC", 2),
    ("quad.wav", 16000, "PCM_16", "WAV", 4),
    ("c/vorbis.ogg", 22050, "VORBIS", "OGG", 1),
    ("c/apple.aiff", 44100, "PCM_16", "AIFF", 1),
]
if audio_mod.mp3_supported():
    GOOD.append(("c/lossy.mp3", 44100, "MPEG_LAYER_III", "MP3", 1))
BAD = {"corrupt.wav": "corrupt or unreadable", "empty.wav": "empty", "a/silent.flac": "silent"}
SHORT = "short.wav"  # 1600 samples: zero-padded into one segment
USED = [g[0] for g in GOOD] + ["half_silent.wav", SHORT]
SEGMENTS = SEGS_PER_FILE * len(GOOD) + 3 + 1  # half_silent keeps 3 of its 6, the short clip gives 1


def write_folder(root: Path) -> Path:
    for rel, rate, subtype, fmt, channels in GOOD:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(rate, channels=channels), rate, subtype=subtype, format=fmt)
    (root / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / SHORT, tone(RATE, dur=0.1), RATE)
    sf.write(root / "a/silent.flac", np.zeros(RATE), RATE)
    # Sound for the first 6144 samples, then digital silence: nominal segments at 0, 2048, 4096 keep, 3 more drop.
    half = tone(RATE)
    half[6144:] = 0
    sf.write(root / "half_silent.wav", half, RATE, subtype="FLOAT")
    (root / "notes.txt").write_text("not audio, ignored")
    (root / "._resource_fork.wav").write_bytes(b"\0" * 10)  # hidden OS litter, ignored without a warning
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "music")


def cfg_for(source: str | Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(source=str(source), sample_rate=RATE, cache_dir=str(tmp_path / "cache"), **kw)


def load(cfg: DataConfig, split: str = "train", segment: int = SEG, seed: int = 0) -> AudioSegments:
    return load_dataset(cfg, segment=segment, seed=seed, split=split, progress=False)


# --- decoding -----------------------------------------------------------------


def test_sine_at_44k_comes_out_at_the_same_frequency_at_16k(folder: Path) -> None:
    x = audio_mod.decode(folder / "sine44k.wav", RATE)
    assert x.dtype == np.float32 and len(x) == round(DUR * RATE)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs(np.argmax(spectrum) * RATE / len(x) - 1000.0) < 2.0
    assert abs(np.abs(x[100:-100]).max() - 0.5) < 0.01


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_bit_depth_decodes_to_the_same_float_scale(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, tone(RATE), RATE, subtype=subtype)
    x = audio_mod.decode(path, RATE)
    assert np.abs(x - tone(RATE)).max() < (0.02 if subtype == "PCM_U8" else 1e-4)


def test_channels_are_averaged(tmp_path: Path) -> None:
    left, right = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 2000))
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    np.testing.assert_allclose(audio_mod.decode(tmp_path / "s.wav", RATE), (left + right) / 2, atol=1e-6)


def test_mp3_without_libsndfile_support_is_skipped_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(audio_mod, "mp3_supported", lambda: False)
    (tmp_path / "x.mp3").write_bytes(b"whatever")
    with pytest.raises(audio_mod.SkipFile, match="mp3 is not supported by the installed libsndfile"):
        audio_mod.decode(tmp_path / "x.mp3", RATE)


# --- folders --------------------------------------------------------------------


def test_folder_segments_warnings_and_summary(folder: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ds = load(cfg_for(folder, tmp_path, holdout=0.0))
    assert (ds.segment, ds.sample_rate, ds.hop) == (SEG, RATE, SEG // 2)
    assert len(ds) == SEGMENTS
    assert sorted(ds.clip_names) == sorted(USED)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for rel, reason in BAD.items():
        (line,) = [w for w in warnings if str(folder / rel) in w and "skipped" in w]
        assert reason in line
    summary = [w for w in warnings if "used " in w]
    assert len(summary) == 1 and f"used {len(USED)} files, skipped {len(BAD)}" in summary[0]
    assert f"1 of the {len(USED)} used were shorter than one segment ({SEG} samples) and are zero-padded at the end" in summary[0]
    for reason in BAD.values():
        assert f"1 {reason}" in summary[0]
    assert not any("resource_fork" in w or "notes.txt" in w for w in warnings)
    assert len(warnings) == len(BAD) + 1


def test_batches_are_peak_normalised_deterministic_and_move_per_epoch(folder: Path, tmp_path: Path) -> None:
    ds = load(cfg_for(folder, tmp_path, holdout=0.0))
    idx = np.arange(len(ds))
    b = ds.batch(idx, epoch=3)
    assert b.dtype == np.float32 and b.shape == (len(ds), SEG)
    np.testing.assert_allclose(np.abs(b).max(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(b, ds.batch(idx, epoch=3))
    np.testing.assert_array_equal(b, load(cfg_for(folder, tmp_path, holdout=0.0)).batch(idx, epoch=3))  # a resumed run
    np.testing.assert_array_equal(b[[4, 2]], ds.batch(np.array([4, 2]), epoch=3))  # independent of batch makeup

    off0, off1 = ds.offsets(idx, 0), ds.offsets(idx, 1)
    assert (off0 != off1).mean() > 0.8
    assert off0.min() >= 0 and max(off0.max(), off1.max()) < ds.hop
    # The last segment of a 15360-sample clip starts at 10240: it may move at most 1024 samples.
    exact = [i for i, n in enumerate(ds.clip_names) if n.endswith((".wav", ".flac", ".aiff")) and n not in ("half_silent.wav", SHORT)]
    last = np.flatnonzero((np.diff(np.append(ds.clips, -1)) != 0) & np.isin(ds.clips, exact))
    assert len(last) == len(exact) >= 7
    offsets = np.stack([ds.offsets(last, e) for e in range(50)])
    assert offsets.min() >= 0 and 900 < offsets.max() <= 1024
    assert abs(offsets.mean() - 512) < 60  # spread over the room, not clamped onto its end

    raw = load(cfg_for(folder, tmp_path, holdout=0.0, normalize=False, random_offset=False))
    sine = np.flatnonzero(np.array(raw.clip_names)[raw.clips] == "sine44k.wav")
    x = raw.batch(sine, epoch=0)
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(x, raw.batch(sine, epoch=7))  # no random offset: epochs agree


def test_second_load_decodes_nothing_and_changes_rebuild(folder: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = cfg_for(folder, tmp_path, holdout=0.0)
    first = load(cfg).batch(np.arange(10), 0)
    calls = []
    real = audio_mod.decode

    def counting(path, rate):
        calls.append(path)
        return real(path, rate)

    monkeypatch.setattr(audio_mod, "decode", counting)
    np.testing.assert_array_equal(load(cfg).batch(np.arange(10), 0), first)
    assert calls == []

    load(cfg, segment=SEG // 2)  # another segment length is another cache
    assert len(calls) > 0
    calls.clear()
    sf.write(folder / "a/new.wav", tone(RATE, freq=300), RATE)
    assert len(load(cfg)) == SEGMENTS + SEGS_PER_FILE
    assert len(calls) == len(USED) + len(BAD) + 1


def test_damaged_cache_is_rebuilt(folder: Path, tmp_path: Path, caplog) -> None:
    cfg = cfg_for(folder, tmp_path, holdout=0.0)
    good = load(cfg).batch(np.arange(5), 0)
    (audio_file,) = (tmp_path / "cache").glob("*.audio.npy")
    audio_file.write_bytes(audio_file.read_bytes()[:1000])  # truncated
    np.testing.assert_array_equal(load(cfg).batch(np.arange(5), 0), good)
    assert any("rebuilding the data cache" in r.getMessage() for r in caplog.records)


def test_interrupted_preparation_leaves_no_cache(folder: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = cfg_for(folder, tmp_path)
    real = audio_mod.decode
    seen = []

    def interrupted(path, rate):
        seen.append(path)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(path, rate)

    monkeypatch.setattr(audio_mod, "decode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(cfg)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(audio_mod, "decode", real)
    assert len(load(cfg)) > 0


def test_holdout_is_whole_clips_disjoint_from_train(folder: Path, tmp_path: Path) -> None:
    cfg = cfg_for(folder, tmp_path, holdout=0.3)
    train, held = load(cfg, "train"), load(cfg, "holdout")
    clips = len(USED)
    assert held.clip_count == round(0.3 * clips) and train.clip_count == clips - held.clip_count
    assert set(train.clips).isdisjoint(held.clips)
    assert set(train.clips) | set(held.clips) == set(range(clips))
    assert len(train) + len(held) == SEGMENTS
    assert set(load(cfg, "holdout", seed=1).clips) != set(held.clips) or clips < 4  # the seed picks the clips


def test_holdout_with_one_or_two_clips(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    sf.write(one / "x.wav", tone(RATE), RATE)
    cfg = cfg_for(one, tmp_path, holdout=0.05)
    assert len(load(cfg, "holdout")) == 0 and len(load(cfg, "train")) == SEGS_PER_FILE
    sf.write(one / "y.wav", tone(RATE), RATE)
    assert load(cfg, "holdout").clip_count == 1 and load(cfg, "train").clip_count == 1


def test_folder_errors_name_the_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty dir"
    empty.mkdir()
    with pytest.raises(DataError, match="no audio files .* found in folder .*empty dir"):
        load(cfg_for(empty, tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"")
    (bad / "y.ogg").write_bytes(b"garbage garbage")
    with pytest.raises(DataError, match=r"no usable audio in folder .*bad: used 0 files, skipped 2: 1 corrupt or unreadable, 1 empty"):
        load(cfg_for(bad, tmp_path))
    with pytest.raises(DataError, match="neither an existing folder nor a synth set .*synth:piano, synth:gaussian"):
        load(cfg_for(tmp_path / "missing", tmp_path))
    with pytest.raises(DataError, match="unknown data source 'synth:organ'.*synth:piano, synth:gaussian"):
        load(cfg_for("synth:organ", tmp_path))
    with pytest.raises(DataError, match="unknown split"):
        load(cfg_for("synth:gaussian", tmp_path), split="test")


def test_pickling_sends_the_path_not_the_audio(folder: Path, tmp_path: Path) -> None:
    ds = load(cfg_for(folder, tmp_path))
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    np.testing.assert_array_equal(pickle.loads(blob).batch(np.arange(4), 2), ds.batch(np.arange(4), 2))


# --- synth sets -----------------------------------------------------------------


def test_synth_piano_is_deterministic_decaying_and_tonal(tmp_path: Path) -> None:
    cfg = replace(cfg_for("synth:piano", tmp_path, holdout=0.0, normalize=False), synth_items=12)
    ds = load(cfg, segment=8192, seed=5)
    assert len(ds) == 12 and ds.clip_count == 12
    x = ds.batch(np.arange(12), epoch=0)
    np.testing.assert_array_equal(x, ds.batch(np.arange(12), epoch=9))  # one segment per clip: offsets are 0
    other_cache = replace(cfg, cache_dir=str(tmp_path / "elsewhere"))
    np.testing.assert_array_equal(load(other_cache, segment=8192, seed=5).batch(np.arange(12), 0), x)
    assert not np.array_equal(load(cfg, segment=8192, seed=6).batch(np.arange(12), 0), x)

    assert np.abs(x).max() <= 1.0 and np.abs(x).max(axis=1).min() > 0.05
    quarter = 8192 // 4
    assert ((x[:, :quarter] ** 2).sum(1) > 2 * (x[:, -quarter:] ** 2).sum(1)).all()
    spectrum = np.abs(np.fft.rfft(x, axis=1))
    assert (20 * np.log10(spectrum.max(1) / np.median(spectrum, axis=1)) > 30).all()  # harmonic peaks, not noise


def test_synth_gaussian_peaks_in_the_centre(tmp_path: Path) -> None:
    cfg = replace(cfg_for("synth:gaussian", tmp_path, normalize=False, silence_db=-10.0), synth_items=64)
    ds = load(cfg, segment=100)
    assert len(ds) + len(load(cfg, "holdout", segment=100)) == 64  # silence_db never drops these
    x = ds.batch(np.arange(len(ds)), epoch=0)
    assert x.shape == (len(ds), 100) and np.abs(x).max() <= 1.0
    assert np.abs(np.argmax(x, axis=1) - 49.5).max() < 10
    assert (x[:, 40:60].mean(1) > 3 * np.abs(x[:, :10]).mean(1)).all()


# --- short clips: trimming, padding, skipping -------------------------------------

LEAD = round(0.005 * RATE)  # the 5 ms DataConfig.trim_leading keeps before an onset
THRESHOLD_DB = -50.0  # DataConfig.trim_db's default
# (name, samples, leading silence, hiss under the lead-in): every one far shorter than a 16384 segment.
ONE_SHOTS = [
    ("kick.wav", 3000, 400, False),
    ("snare.wav", 4500, 1200, False),
    ("hat.wav", 6000, 0, False),
    ("tom.wav", 7500, LEAD // 2, False),  # less lead-in than the kept lead: nothing to trim
    ("crash.wav", 9000, 2500, True),  # recorded hiss 78 dB under the hit: silence all the same
]


def one_shot(n: int, silence: int, hiss: bool, seed: int) -> np.ndarray:
    """A decaying noise burst whose first sample is its peak, after `silence` samples of (near) silence."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n, np.float32)
    if hiss:
        x[:silence] = rng.uniform(-1e-4, 1e-4, silence)
    body = n - silence
    x[silence:] = 0.8 * rng.uniform(-1, 1, body) * np.exp(-np.arange(body) / (body / 5))
    x[silence] = 0.8
    return x


def write_one_shots(root: Path) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    clips = {}
    for seed, (name, n, silence, hiss) in enumerate(ONE_SHOTS):
        clips[name] = one_shot(n, silence, hiss, seed)
        sf.write(root / name, clips[name], RATE, subtype="FLOAT")
    click = np.zeros(2000, np.float32)
    click[500:660] = 0.9 * np.random.default_rng(9).uniform(-1, 1, 160)  # 10 ms of sound, then silence
    click[500] = click[659] = 0.9
    sf.write(root / "click.wav", click, RATE, subtype="FLOAT")
    sf.write(root / "silent.wav", np.zeros(5000), RATE)
    (root / "broken.wav").write_bytes(b"RIFF" + np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return clips


def first_above(x: np.ndarray, db: float = THRESHOLD_DB) -> np.ndarray:
    """(B, T) -> (B,) index of each row's first sample within `db` of the row's peak."""
    peak = np.abs(x).max(axis=1, keepdims=True)
    return np.argmax(np.abs(x) >= peak * 10 ** (db / 20), axis=1)


def test_short_one_shots_train_on_every_readable_clip(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clips = write_one_shots(tmp_path / "shots")
    ds = load(cfg_for(tmp_path / "shots", tmp_path, holdout=0.0, normalize=False), segment=16384)
    assert sorted(ds.clip_names) == sorted(clips) and len(ds) == len(clips)  # one segment per padded clip
    assert list(ds.clips) == list(range(len(clips)))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = {"click.wav": "too short to hold a sound (10.0 ms within -50 dB of its peak < data.min_ms=20)",
                "silent.wav": "silent", "broken.wav": "corrupt or unreadable"}
    for name, reason in expected.items():
        (line,) = [w for w in warnings if w.startswith(f"skipped {tmp_path / 'shots' / name}:")]
        assert reason in line
    (summary,) = [w for w in warnings if "used " in w]
    trimmed = sum(silence > LEAD for _, _, silence, _ in ONE_SHOTS)
    assert (
        f"used {len(clips)} files, skipped 3: 1 corrupt or unreadable, 1 silent, 1 too short to hold a sound; "
        f"{len(clips)} of the {len(clips)} used were shorter than one segment (16384 samples) and are zero-padded at the end; "
        f"{trimmed} had leading silence trimmed" in summary
    )
    assert len(warnings) == 3 + 1  # the skipped files and the summary: no line per padded clip

    x = ds.batch(np.arange(len(ds)), epoch=0)
    for epoch in (1, 2, 7):  # random offsets never move a padded clip's segment into its padding
        np.testing.assert_array_equal(ds.batch(np.arange(len(ds)), epoch=epoch), x)
    for row, name in zip(x, ds.clip_names):
        _, n, silence, _ = next(s for s in ONE_SHOTS if s[0] == name)
        kept = clips[name][max(0, silence - LEAD) :]
        np.testing.assert_array_equal(row[: len(kept)], kept)  # trimmed at the front only, the rest untouched
        assert not row[len(kept) :].any()  # zero-padded at the end
    onsets = first_above(x)
    assert onsets.max() <= LEAD  # every onset within 5 ms of the segment's start ...
    assert onsets[ds.clip_names.index("snare.wav")] == LEAD  # ... with the lead before it kept, so the attack is whole
    assert onsets[ds.clip_names.index("hat.wav")] == 0


def test_trimming_off_and_min_ms_zero_keep_what_they_keep(tmp_path: Path) -> None:
    clips = write_one_shots(tmp_path / "shots")
    ds = load(cfg_for(tmp_path / "shots", tmp_path, holdout=0.0, normalize=False, trim_leading=False, min_ms=0.0), segment=16384)
    assert sorted(ds.clip_names) == sorted([*clips, "click.wav"])
    x = ds.batch(np.arange(len(ds)), epoch=0)
    crash = x[ds.clip_names.index("crash.wav")]
    np.testing.assert_array_equal(crash[:9000], clips["crash.wav"])  # the lead-in stays
    assert first_above(x)[ds.clip_names.index("crash.wav")] == 2500


def test_long_clips_lose_only_their_leading_silence(tmp_path: Path) -> None:
    (tmp_path / "long").mkdir()
    x = np.concatenate([np.zeros(3000), 0.5 * np.cos(2 * np.pi * 440 * np.arange(15360) / RATE)]).astype(np.float32)
    sf.write(tmp_path / "long" / "pad.wav", x, RATE, subtype="FLOAT")
    common = dict(holdout=0.0, normalize=False, random_offset=False)
    trimmed = load(cfg_for(tmp_path / "long", tmp_path, **common))
    kept = load(cfg_for(tmp_path / "long", tmp_path, trim_leading=False, **common))
    np.testing.assert_array_equal(trimmed.batch(np.arange(len(trimmed)), 0)[0], x[3000 - LEAD : 3000 - LEAD + SEG])
    assert first_above(kept.batch(np.arange(1), 0))[0] == 3000
    # 15360 + LEAD samples hold 6 segments at hop 2048, whose room lets offsets reach the clip's end.
    assert len(trimmed) == SEGS_PER_FILE and len(kept) == 7


def sc09_folder(root: Path, count: int) -> Path:
    """1 s clips at 16 kHz, as in SC09: shorter than WaveGAN's 16384-sample segment."""
    root.mkdir()
    t = np.arange(16000) / RATE
    for i in range(count):
        sf.write(root / f"{i}_digit.wav", 0.5 * np.cos(2 * np.pi * (200 + 50 * i) * t) * np.exp(-t * 3), RATE, subtype="PCM_16")
    return root


def test_sc09_clips_load_with_a_16384_segment_and_split_by_clip(tmp_path: Path) -> None:
    folder = sc09_folder(tmp_path / "sc09", 8)
    cfg = cfg_for(folder, tmp_path, holdout=0.25)
    train, held = load(cfg, "train", segment=16384), load(cfg, "holdout", segment=16384)
    assert (len(train), train.clip_count, len(held), held.clip_count) == (6, 6, 2, 2)
    assert set(train.clips).isdisjoint(held.clips)
    for ds in (train, held):
        x = ds.batch(np.arange(len(ds)), epoch=3)
        assert x.shape == (len(ds), 16384)
        np.testing.assert_allclose(np.abs(x).max(axis=1), 1.0, rtol=1e-6)
        assert (np.abs(x[:, 15000:16000]).max(axis=1) > 0.01).all() and not x[:, 16000:].any()  # the whole second, then zeros
        assert (first_above(x) == 0).all()  # sound from the first sample: nothing trimmed


def test_pad_short_false_refuses_short_clips_with_the_reason(tmp_path: Path, caplog) -> None:
    folder = sc09_folder(tmp_path / "sc09", 3)
    with pytest.raises(DataError, match=r"no usable audio in folder .*sc09: used 0 files, skipped 3: 3 shorter than one segment \(data.pad_short=true zero-pads them\)"):
        load(cfg_for(folder, tmp_path, pad_short=False), segment=16384)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(lines) == 3
    assert all("shorter than one segment (16000 samples < 16384, and data.pad_short is false)" in w for w in lines)
    assert len(load(cfg_for(folder, tmp_path, pad_short=False, holdout=0.0), segment=16000)) == 3  # long enough: used


def test_clip_settings_key_the_cache(tmp_path: Path, monkeypatch) -> None:
    write_one_shots(tmp_path / "shots")
    calls = []
    real = audio_mod.decode
    monkeypatch.setattr(audio_mod, "decode", lambda path, rate: calls.append(path) or real(path, rate))
    base = cfg_for(tmp_path / "shots", tmp_path, holdout=0.0)
    first = load(base, segment=16384).batch(np.arange(5), 0)
    files = len(calls)
    for change in (dict(trim_leading=False), dict(trim_db=-30.0), dict(min_ms=5.0), dict(pad_short=False)):
        calls.clear()
        with contextlib.suppress(DataError):  # pad_short=false leaves nothing here
            load(replace(base, **change), segment=16384)
        assert len(calls) == files, change
    calls.clear()
    np.testing.assert_array_equal(load(base, segment=16384).batch(np.arange(5), 0), first)
    assert calls == []


def test_bad_clip_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data: trim_db: below the peak"):
        load_config(None, ["data.trim_db=3"])
    with pytest.raises(ConfigError, match=r"data: min_ms: 0 \(keep all\) or more"):
        load_config(None, ["data.min_ms=-1"])
    with pytest.raises(DataError, match=r"data.min_ms must be 0 or more"):
        load(cfg_for("synth:gaussian", tmp_path, min_ms=-1.0))
    assert load_config(None, ["data.pad_short=false"]).data.pad_short is False


def test_train_runs_on_a_folder_of_short_clips(tmp_path: Path) -> None:
    from ganstream.train import main as train_main
    from ganstream.training.checkpoint import load_checkpoint

    write_one_shots(tmp_path / "shots")
    args = ["model.kind=wavegan", "model.width=2", f"data.source={tmp_path / 'shots'}", f"data.cache_dir={tmp_path / 'cache'}",
            "train.batch_size=4", "train.steps=2", "loss.critic_steps=1", "train.eval_every=0", "train.progress=false",
            "train.tensorboard=false", "train.preview_every=1000", "train.preview_count=2", "--device", "cpu",
            "--out", str(tmp_path / "runs")]
    assert train_main(args) == 0
    (run,) = (tmp_path / "runs").iterdir()
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["data"]["pad_short"] is True
