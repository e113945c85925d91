"""The real data sets (training/data/real_sets.py), on tiny fake inputs.

No Debian package and no network is needed: dpkg-query, apt-get and espeak-ng are fakes written
into tmp_path and put first on PATH, and the drum kits are folders written here. Two tests render
a few clips with the real fluidsynth and espeak-ng, and skip when those packages are not installed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from ganstream.training.config import DataConfig
from ganstream.training.data import DataError, load_dataset
from ganstream.training.data import real_sets as rs

RATE = 16000


# --- fakes -------------------------------------------------------------------


class FakeDebian:
    """dpkg-query answering from a dict, an apt-get that fails (or installs), and a doc tree of copyright files."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.db = root / "dpkg.json"
        self.apt_log = root / "apt.log"
        self.doc = root / "doc"
        self.installable: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self._save()
        self._script("dpkg-query", """
            import json, sys
            pkg = sys.argv[-1]
            db = json.load(open(DB))["installed"]
            if pkg in db:
                sys.stdout.write("installed\\t" + db[pkg])
                sys.exit(0)
            sys.stderr.write("dpkg-query: no packages found matching " + pkg + "\\n")
            sys.exit(1)
        """)
        self._script("apt-get", """
            import json, sys
            open(LOG, "a").write(" ".join(sys.argv[1:]) + "\\n")
            state = json.load(open(DB))
            if sys.argv[1] == "update":
                sys.exit(0)
            pkgs = [a for a in sys.argv[2:] if not a.startswith("-")]
            if not all(p in state["installable"] for p in pkgs):
                sys.stderr.write("E: Unable to locate package " + pkgs[-1] + "\\n")
                sys.exit(100)
            for p in pkgs:
                state["installed"][p] = state["installable"][p]
            json.dump(state, open(DB, "w"))
        """)

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        head = f"#!{sys.executable} -S\nDB = {str(self.db)!r}\nLOG = {str(self.apt_log)!r}\n"
        path.write_text(head + textwrap.dedent(body))
        path.chmod(0o755)

    def _save(self) -> None:
        self.db.write_text(json.dumps({"installed": self.versions, "installable": self.installable}))

    def install(self, package: str, version: str = "1.0", licence: str | None = "CC0") -> None:
        self.versions[package] = version
        self._save()
        if licence is not None:
            (self.doc / package).mkdir(parents=True, exist_ok=True)
            (self.doc / package / "copyright").write_text(f"Format: dep5\n\nFiles: *\nLicense: {licence}\n text\n")

    def installed(self) -> dict[str, str]:
        return json.loads(self.db.read_text())["installed"]


@pytest.fixture
def debian(tmp_path, monkeypatch):
    deb = FakeDebian(tmp_path / "debian")
    monkeypatch.setenv("PATH", f"{deb.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(rs, "DOC_ROOT", deb.doc)
    monkeypatch.setattr(rs.os, "geteuid", lambda: 0)
    return deb


def burst(rate: int, seconds: float, freq: float, channels: int = 1) -> np.ndarray:
    """A decaying tone with 20 ms of silence before it: a stand-in for a one-shot."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t * 8)
    x = np.concatenate([np.zeros(int(0.02 * rate)), x])
    return x if channels == 1 else np.stack([x] * channels, axis=1)


# Four kits in Hydrogen's two layouts. Each instrument: (name, [files]); "missing.wav" is named
# but absent, "shared.wav" is named by two instruments, and kit A ships a file no instrument names.
KITS = {
    "KitA": {"ns": True, "instruments": [("Kick", ["kick_soft.wav", "kick_hard.wav"]), ("Snare", ["snare.wav", "missing.wav"])]},
    "Kit B": {"ns": False, "instruments": [("Hat #1", ["hat.wav"]), ("Hat 2", ["shared.wav"]), ("Ride", ["shared.wav"])]},
    "KitC": {"ns": False, "old": True, "instruments": [("Tom", ["tom.wav"]), ("Clap", ["clap.wav"]), ("Cow", ["cow.wav"])]},
    "KitD": {"ns": True, "instruments": [("Kick", ["k1.wav", "k2.wav", "k3.wav"]), ("Rim", ["rim.wav"])]},
}
UNREFERENCED = ("KitA", "extra.wav")


def write_kits(root: Path) -> Path:
    for k, (kit, spec) in enumerate(KITS.items()):
        folder = root / f"dir{k}"  # folder names differ from kit names, as in Hydrogen's own kits
        folder.mkdir(parents=True)
        xmlns = ' xmlns="http://www.hydrogen-music.org/drumkit"' if spec["ns"] else ""
        insts = []
        for i, (name, files) in enumerate(spec["instruments"]):
            if spec.get("old"):
                body = f"<filename>{files[0]}</filename>"
            else:
                body = "".join(f"<layer><filename>{f}</filename><min>{j / len(files):g}</min><max>{(j + 1) / len(files):g}</max></layer>"
                               for j, f in enumerate(files))
            insts.append(f"<instrument><id>{i}</id><name>{name}</name>{body}</instrument>")
            for j, f in enumerate(files):
                if f != "missing.wav" and not (folder / f).exists():
                    sf.write(folder / f, burst(44100, 0.2 + 0.05 * j, 200 + 100 * i, channels=2), 44100)
        (folder / "drumkit.xml").write_text(
            f"<drumkit_info{xmlns}><name>{kit}</name><license>GPL</license><instrumentList>{''.join(insts)}</instrumentList></drumkit_info>")
    sf.write(root / "dir0" / UNREFERENCED[1], burst(44100, 0.3, 900), 44100)
    return root


def expected_drums() -> set[tuple[str, str, str]]:
    """(kit, instrument, file name) of every clip the fake kits should give, worked out from KITS by hand."""
    out = set()
    for kit, spec in KITS.items():
        seen = set()
        for name, files in spec["instruments"]:
            for f in files[:1] if spec.get("old") else files:
                if f not in seen and f != "missing.wav":
                    out.add((kit, name, f))
                seen.add(f)
    out.add((UNREFERENCED[0], "", UNREFERENCED[1]))
    return out


@pytest.fixture
def kits(tmp_path, debian):
    debian.install("hydrogen-drumkits", "2017.1", licence="GPL-2+")
    return write_kits(tmp_path / "kits")


def drum_params(kits: Path) -> rs.DrumParams:
    return rs.DrumParams(kits_dir=str(kits), heldout_fraction=0.25)


def labels(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- drums -------------------------------------------------------------------


def test_drums_hold_out_whole_kits_and_keep_instrument_labels(tmp_path, kits):
    folder = rs.build_set("drums", tmp_path / "cache", seed=3, params=drum_params(kits))
    rows = {s: labels(folder / s) for s in rs.SPLITS}
    kits_in = {s: {r["kit"] for r in rows[s]} for s in rs.SPLITS}
    assert kits_in["train"] and kits_in["heldout"] and not kits_in["train"] & kits_in["heldout"]
    got = {(r["kit"], r["instrument"], Path(r["source"]).name) for s in rs.SPLITS for r in rows[s]}
    assert got == expected_drums()  # every one-shot once: the shared file once, the missing one not at all
    for s in rs.SPLITS:
        for r in rows[s]:
            info = sf.info(str(folder / s / r["file"]))
            assert (info.samplerate, info.channels) == (RATE, 1)
            assert abs(info.duration - sf.info(str(kits / r["source"])).duration) < 0.01  # whole, not cut
    layered = next(r for s in rs.SPLITS for r in rows[s] if r["source"].endswith("kick_hard.wav"))
    assert (layered["layer_min"], layered["layer_max"]) == ("0.5", "1")
    stamp = rs.read_stamp(folder)
    assert stamp["counts"]["train"]["clips"] == len(rows["train"]) and stamp["counts"]["heldout"]["clips"] == len(rows["heldout"])
    assert sorted(stamp["split"]["heldout_kits"]) == sorted(kits_in["heldout"])
    assert stamp["kits"]["KitA"]["missing_files"] == 1 and stamp["kits"]["KitA"]["licence"] == "GPL"
    assert stamp["packages"] == {"hydrogen-drumkits": "2017.1"}
    assert stamp["licences"]["hydrogen-drumkits"]["licenses"] == ["GPL-2+"]
    assert (folder / stamp["licences"]["hydrogen-drumkits"]["file"]).read_text().startswith("Format: dep5")


@pytest.mark.parametrize("seed", range(6))
def test_split_kits_holds_out_about_the_fraction_with_whole_kits(seed):
    sizes = {"a": 14, "b": 86, "c": 31, "d": 32, "e": 124, "f": 70, "g": 16, "h": 52, "i": 40, "j": 106}
    held = rs.split_kits(sizes, 0.2, seed)
    total, out = sum(sizes.values()), sum(sizes[k] for k in held)
    assert 0.2 * total <= out <= 0.2 * total * 1.5 + max(sizes.values())
    assert 0 < len(held) < len(sizes)
    assert rs.split_kits(sizes, 0.2, seed) == held


def test_split_kits_depends_on_the_seed_and_needs_two_kits():
    sizes = {k: 10 for k in "abcdefgh"}
    assert len({tuple(rs.split_kits(sizes, 0.2, s)) for s in range(8)}) > 1
    assert rs.split_kits({"a": 100, "b": 1}, 0.9, 0) in (["a"], ["b"])  # never all kits
    with pytest.raises(rs.SetError, match="at least two kits"):
        rs.split_kits({"only": 5}, 0.2, 0)


def test_unreadable_drumkit_xml_names_the_file(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "drumkit.xml").write_text("<drumkit_info><name>x</name>")
    with pytest.raises(rs.SetError, match=r"k/drumkit\.xml"):
        rs.read_drumkit(tmp_path / "k" / "drumkit.xml")


# --- piano -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_piano_heldout_clips_sound_pitches_training_never_plays(seed):
    p = rs.PianoParams()
    clips = rs.draw_piano_clips(p, seed)
    held = rs.heldout_pitches(p, seed)
    train = [c for c in clips if c.split == "train"]
    heldout = [c for c in clips if c.split == "heldout"]
    assert (len(train), len(heldout)) == (p.train, p.heldout)
    assert not any(set(c.pitches) & held for c in train)
    assert all(c.pitches[0] in held for c in heldout)
    assert {c.pitches for c in train}.isdisjoint({c.pitches for c in heldout})
    # every pitch class and every octave of the range has a held-out pitch
    assert {n % 12 for n in held} == set(range(12)) and max(np.diff(sorted(held))) == p.heldout_every
    for c in clips:
        assert p.pitch[0] <= min(c.pitches) and max(c.pitches) <= p.pitch[1] and list(c.pitches) == sorted(set(c.pitches))
        assert p.velocity[0] <= c.velocity <= p.velocity[1]
        assert 1000 * p.hold_s[0] <= c.hold_ms <= 1000 * p.hold_s[1]
    sizes = np.array([len(c.pitches) for c in clips])
    assert set(sizes) == {1, 2, 3, 4} and 0.15 < np.mean(sizes > 1) < 0.35
    assert rs.draw_piano_clips(p, seed) == clips
    assert rs.draw_piano_clips(p, seed + 1) != clips


def test_the_notes_set_trains_every_note_of_its_range():
    """The notes set (pitch-conditioned models): single notes only, no pitch held out, so training hears every
    note of C2..C7 and the held-out clips are fresh draws of the same notes."""
    p = rs.SETS["notes"].params
    assert rs.heldout_pitches(p, 0) == frozenset()
    clips = rs.draw_piano_clips(p, 0)
    train = [c.pitches[0] for c in clips if c.split == "train"]
    heldout = [c.pitches[0] for c in clips if c.split == "heldout"]
    assert (len(train), len(heldout)) == (1200, 200)
    assert all(len(c.pitches) == 1 for c in clips)
    assert set(train) == set(range(p.pitch[0], p.pitch[1] + 1))  # 61 notes, about 20 clips each
    assert set(heldout) <= set(train)
    assert min(np.bincount(train)[p.pitch[0]:]) >= 8


def test_piano_midi_plays_each_clip_in_its_own_slot():
    p = rs.PianoParams(train=5, heldout=2, chord_fraction=0.5)
    clips = rs.draw_piano_clips(p, 0)
    mid, starts = rs.piano_midi(clips, p)
    mid = mido.MidiFile(file=_roundtrip(mid))  # as fluidsynth will read it
    now, ons, offs = 0, [], []
    for msg in mid.tracks[0]:
        now += msg.time
        if msg.type == "note_on":
            ons.append((now, msg.note, msg.velocity))
        elif msg.type == "note_off":
            offs.append((now, msg.note))
    assert mid.ticks_per_beat == 500  # with the default 120 bpm, a tick is 1 ms
    assert ons == [(s, n, c.velocity) for s, c in zip(starts, clips) for n in c.pitches]
    assert offs == [(s + c.hold_ms, n) for s, c in zip(starts, clips) for n in c.pitches]
    gaps = [starts[i + 1] - starts[i] - clips[i].hold_ms for i in range(len(clips) - 1)]
    assert gaps == [1000 * p.tail_s] * (len(clips) - 1)
    assert now == starts[-1] + clips[-1].hold_ms + 1000 * p.tail_s  # the last release is rendered too


def _roundtrip(mid) -> object:
    import io

    buf = io.BytesIO()
    mid.save(file=buf)
    buf.seek(0)
    return buf


def _installed(*packages: str) -> bool:
    try:
        return all(rs.installed_version(p) for p in packages)
    except rs.SetError:  # no dpkg-query: not a Debian system
        return False


@pytest.mark.skipif(not _installed("fluidsynth", "fluid-soundfont-gm"), reason="needs the Debian packages fluidsynth and fluid-soundfont-gm")
def test_piano_renders_the_labelled_pitches_with_fluidsynth(tmp_path):
    p = rs.PianoParams(train=2, heldout=1, chord_fraction=0.0, pitch=(55, 84))
    folder = rs.build_set("piano", tmp_path, seed=5, params=p)
    rows = [(s, r) for s in rs.SPLITS for r in labels(folder / s)]
    assert len(rows) == 3
    for split, r in rows:
        x, rate = sf.read(str(folder / split / r["file"]))
        assert rate == RATE and x.ndim == 1 and abs(len(x) / rate - float(r["length_s"])) < 1e-3
        assert float(r["hold_s"]) < len(x) / rate < float(r["hold_s"]) + p.tail_s + 0.05
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=1 << 17))
        peak = np.fft.rfftfreq(1 << 17, 1 / rate)[np.argmax(spectrum)]
        f0 = 440 * 2 ** ((int(r["pitches"]) - 69) / 12)
        assert abs(peak / f0 - round(peak / f0)) < 0.03 * round(peak / f0)  # the strongest partial is a harmonic
    assert max(abs(sf.read(str(folder / s / r["file"]))[0]).max() for s, r in rows) == pytest.approx(10 ** (-1 / 20), abs=1e-3)


# --- digits ------------------------------------------------------------------


def test_fit_to_length_trims_the_lead_and_pads_or_cuts_to_exactly_one_second():
    t = np.arange(int(0.4 * RATE)) / RATE
    word = 0.5 * np.cos(2 * np.pi * 300 * t) * np.exp(-t * 8)  # loud from its first sample: that is the onset
    short = np.concatenate([np.zeros(3000), word, np.zeros(500)])
    y, cut = rs.fit_to_length(short, 16000, RATE)
    assert y.shape == (16000,) and y.dtype == np.float32 and not cut
    lead = RATE // 100
    np.testing.assert_allclose(y[lead : lead + 2000], word[:2000], atol=1e-6)  # starts 10 ms before the onset
    assert not y[:lead].any() and not y[lead + len(word) :].any()
    long = np.concatenate([np.zeros(800), 0.5 * np.sin(np.arange(24000) * 0.1)])
    y, cut = rs.fit_to_length(long, 16000, RATE)
    assert y.shape == (16000,) and cut
    assert y[-1] == 0 and abs(y[-200:]).max() < abs(y[-400:-200]).max()  # faded out, not clicked off


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digit_speakers_are_split_by_voice_and_by_variant(seed):
    p = rs.DigitParams()
    sp = rs.split_speakers(p, seed)
    (tv, tvar), (hv, hvar) = sp["train"], sp["heldout"]
    assert not set(tv) & set(hv) and not set(tvar) & set(hvar)
    assert sorted(tv + hv) == sorted(p.voices) and sorted(tvar + hvar) == sorted(p.variants)
    assert (len(hv), len(hvar)) == (p.heldout_voices, p.heldout_variants)
    assert {v[0] for v in hvar} == {"m", "f"}  # held-out speakers are not all of one sex
    clips = rs.draw_digit_clips(p, seed)
    for c in clips:
        voices, variants = sp[c.split]
        assert c.voice in voices and c.variant in variants
    assert len(clips) == 10 * (p.train_per_digit + p.heldout_per_digit)


# Standard library only, started with -S: a numpy import per clip made this test 15 s on a busy machine.
FAKE_ESPEAK = """
import math, struct, sys, wave
args = sys.argv[1:]
if args[0] in ("--voices=en", "--voices=variant"):
    print("Pty Language Age/Gender VoiceName File Other")
    for v in VOICES if args[0] == "--voices=en" else ["!v/" + v for v in VARIANTS]:
        print(" 5 xx --/M name %s" % v if v.startswith("!v/") else " 5 %s --/M name gmw/x" % v)
    sys.exit(0)
opt = dict(zip(args[:-1:2], args[1:-1:2]))
word = args[-1]
rate = 22050
# longer for slower speech; a slow "seven" is longer than 1 s, to be cut
n = int(rate * (0.25 + 0.1 * len(word)) * 160 / int(opt["-s"]) * (2.5 if word == "seven" else 1))
tone = [0.3 * math.sin(2 * math.pi * (100 + int(opt["-p"])) * i / rate) for i in range(n)]
with wave.open(opt["-w"], "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(struct.pack("<%dh" % (n + 3000), *([0] * 2000 + [int(32767 * v) for v in tone] + [0] * 1000)))
"""


@pytest.fixture
def fake_espeak(tmp_path, debian):
    debian.install("espeak-ng", "1.51")
    debian.install("espeak-ng-data", "1.51", licence=None)  # no copyright file: recorded, not refused

    def make(variants=rs.DigitParams().variants) -> str:
        exe = debian.bin / "espeak-ng"
        head = f"#!{sys.executable} -S\nVOICES = {list(rs.DigitParams().voices)!r}\nVARIANTS = {list(variants)!r}\n"
        exe.write_text(head + FAKE_ESPEAK)
        exe.chmod(0o755)
        return str(exe)

    return make


def test_digits_one_folder_per_digit_of_exactly_one_second(tmp_path, fake_espeak):
    fake_espeak()
    p = rs.DigitParams(train_per_digit=2, heldout_per_digit=1, speed=(100, 200))
    folder = rs.build_set("digits", tmp_path / "cache", seed=0, params=p)
    for split, per in (("train", 2), ("heldout", 1)):
        assert sorted(d.name for d in (folder / split).iterdir() if d.is_dir()) == sorted(rs.DIGITS)
        rows = labels(folder / split)
        assert len(rows) == 10 * per
        for r in rows:
            x, rate = sf.read(str(folder / split / r["file"]))
            assert (rate, x.shape) == (RATE, (16000,))
            assert Path(r["file"]).parent.name == r["word"] == rs.DIGITS[int(r["digit"])]
    train, held = labels(folder / "train"), labels(folder / "heldout")
    assert not {r["voice"] for r in train} & {r["voice"] for r in held}
    assert not {r["variant"] for r in train} & {r["variant"] for r in held}
    stamp = rs.read_stamp(folder)
    cut = sum(int(r["truncated"]) for r in train + held)
    assert stamp["truncated"] == cut and cut > 0  # the fake's slow "seven"s are longer than 1 s
    assert stamp["licences"]["espeak-ng-data"]["file"] is None


def test_digits_refuse_a_variant_espeak_does_not_know(tmp_path, fake_espeak):
    fake_espeak(variants=["m1", "m2", "f1", "f2"])
    with pytest.raises(rs.SetError, match=r"\+m3.*espeak-ng-data"):
        rs.build_set("digits", tmp_path, params=rs.DigitParams(variants=("m1", "m3", "f1", "f2"), train_per_digit=1, heldout_per_digit=1))


@pytest.mark.skipif(not _installed("espeak-ng", "espeak-ng-data"), reason="needs the Debian packages espeak-ng and espeak-ng-data")
def test_digits_with_the_real_espeak(tmp_path):
    folder = rs.build_set("digits", tmp_path, params=rs.DigitParams(train_per_digit=1, heldout_per_digit=1))
    for split in rs.SPLITS:
        for r in labels(folder / split):
            x, rate = sf.read(str(folder / split / r["file"]))
            assert (rate, x.shape) == (RATE, (16000,))
            assert np.sqrt(np.mean(x[:4000] ** 2)) > 0.01  # speech within the first quarter second


# --- the cache: stamp, reuse, rebuild -------------------------------------------


@pytest.fixture
def counted(monkeypatch, kits):
    """The drums set on the fake kits, with its builder counting its calls."""
    calls = []
    spec = rs.SETS["drums"]

    def build(out, seed, params):
        calls.append(seed)
        return spec.build(out, seed, params)

    monkeypatch.setitem(rs.SETS, "drums", dataclasses.replace(spec, build=build, params=drum_params(kits)))
    return calls


def test_a_built_set_is_reused_until_its_inputs_change(tmp_path, debian, counted):
    root = tmp_path / "cache"
    folder = rs.build_set("drums", root)
    first = rs.read_stamp(folder)
    assert rs.build_set("drums", root) == folder and len(counted) == 1 and rs.read_stamp(folder) == first
    rs.build_set("drums", root, seed=1)
    assert len(counted) == 2  # another seed
    debian.install("hydrogen-drumkits", "2017.2")
    rs.build_set("drums", root, seed=1)
    assert len(counted) == 3 and rs.read_stamp(folder)["packages"]["hydrogen-drumkits"] == "2017.2"
    rs.build_set("drums", root, seed=1, params=dataclasses.replace(rs.SETS["drums"].params, heldout_fraction=0.5))
    assert len(counted) == 4  # other parameters
    shutil.rmtree(folder / "heldout")
    rs.build_set("drums", root, seed=1, params=dataclasses.replace(rs.SETS["drums"].params, heldout_fraction=0.5))
    assert len(counted) == 5 and (folder / "heldout").is_dir()  # a damaged set
    (folder / rs.STAMP).write_text("{not json")
    rs.build_set("drums", root, seed=1, params=dataclasses.replace(rs.SETS["drums"].params, heldout_fraction=0.5))
    assert len(counted) == 6
    rs.build_set("drums", root, seed=1, params=dataclasses.replace(rs.SETS["drums"].params, heldout_fraction=0.5), force=True)
    assert len(counted) == 7
    assert [p.name for p in (root / "sets").iterdir()] == ["drums"]  # no temp or old folders left


def test_a_failed_build_leaves_the_old_set_whole(tmp_path, monkeypatch, counted):
    root = tmp_path / "cache"
    folder = rs.build_set("drums", root)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    def broken(out, seed, params):
        (out / "train").mkdir()
        raise RuntimeError("render crashed")

    monkeypatch.setitem(rs.SETS, "drums", dataclasses.replace(rs.SETS["drums"], build=broken))
    with pytest.raises(RuntimeError, match="render crashed"):
        rs.build_set("drums", root, seed=9)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert rs.read_stamp(folder)["seed"] == 0
    assert [p.name for p in (root / "sets").iterdir()] == ["drums"]


# --- packages ----------------------------------------------------------------


def test_a_package_apt_cannot_install_is_named(tmp_path, debian):
    with pytest.raises(rs.SetError) as e:
        rs.build_set("drums", tmp_path)
    assert "hydrogen-drumkits" in str(e.value) and "apt-get install" in str(e.value) and "exited 100" in str(e.value)
    assert "install -y -qq --no-install-recommends hydrogen-drumkits" in debian.apt_log.read_text()


def test_missing_packages_are_installed_with_apt_get(debian):
    debian.installable.update({"fluidsynth": "2.3", "fluid-soundfont-gm": "3.1"})
    debian.install("fluidsynth", "2.3")
    assert rs.ensure_packages(("fluidsynth", "fluid-soundfont-gm"), "piano") == {"fluidsynth": "2.3", "fluid-soundfont-gm": "3.1"}
    lines = debian.apt_log.read_text().splitlines()
    assert lines[0] == "update -qq" and lines[1].split()[-1] == "fluid-soundfont-gm" and "fluidsynth " not in lines[1] + " "


def test_without_root_or_sudo_the_missing_package_is_named(debian, monkeypatch):
    monkeypatch.setattr(rs.os, "geteuid", lambda: 1000)
    which = shutil.which
    monkeypatch.setattr(rs.shutil, "which", lambda name: None if name == "sudo" else which(name))
    with pytest.raises(rs.SetError, match=r"espeak-ng espeak-ng-data.*no sudo"):
        rs.ensure_packages(("espeak-ng", "espeak-ng-data"), "digits")
    assert not debian.apt_log.exists()


def test_without_dpkg_the_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(rs.SetError, match="hydrogen-drumkits.*dpkg-query"):
        rs.ensure_packages(("hydrogen-drumkits",), "drums")


# --- data.source=set:NAME ------------------------------------------------------


def test_set_sources_resolve_to_the_split_folders(tmp_path, counted):
    cfg = DataConfig(source="set:drums", cache_dir=str(tmp_path / "cache"), holdout=0.0)
    train = load_dataset(cfg, segment=2048, seed=0, progress=False)
    held = load_dataset(dataclasses.replace(cfg, source="set:drums/heldout"), segment=2048, seed=0, progress=False)
    assert len(counted) == 1  # built once, then found
    stamp = rs.read_stamp(tmp_path / "cache" / "sets" / "drums")
    assert train.clip_count == stamp["counts"]["train"]["clips"] and held.clip_count == stamp["counts"]["heldout"]["clips"]
    assert {n.split("/")[0] for n in train.clip_names}.isdisjoint({n.split("/")[0] for n in held.clip_names})
    assert train.source == "set:drums"
    with pytest.raises(DataError, match=r"unknown real set 'nope' \(known: drums, piano, notes, digits\)"):
        load_dataset(dataclasses.replace(cfg, source="set:nope"), segment=2048, seed=0, progress=False)
    with pytest.raises(DataError, match=r"unknown split 'test'"):
        load_dataset(dataclasses.replace(cfg, source="set:drums/test"), segment=2048, seed=0, progress=False)
