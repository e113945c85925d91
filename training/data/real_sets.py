"""Real data sets built on demand from Debian packages: drum one-shots, sampled piano notes, spoken digits.

    folder = build_set("piano", root, seed=0)     # installs what is missing, builds once, then reuses
    train configs/wavegan-laptop.yaml data.source=set:piano
    ganstream eval RUN set:piano/heldout

Each set lands in `<root>/sets/<name>/` (root: the data cache, ~/.cache/ganstream) as a
plain folder of 16 kHz mono 16-bit WAVs, so it trains like any user's folder:

    train/...  heldout/...      the clips, with a labels.csv in each split
    stamp.json                  build parameters, package versions and licences, counts, build time
    licenses/<package>.copyright  the Debian copyright files, for a bundle's provenance

The stamp is written last, inside a temp folder that replaces the old set in one rename, so a
set with a stamp is whole. It is rebuilt when its format, seed, parameters or any package
version change. Nothing here is committed; tests build tiny sets from fake inputs.

The held-out split is by source, so no held-out clip is a copy of a training clip:
- drums: whole kits, chosen by the seed, aiming at a fifth of the one-shots (seed 0: 3 of 14 kits,
  185 of 754);
- piano: every fifth MIDI pitch (offset by the seed) is never played in training; every held-out
  clip sounds at least one of those pitches (its only note, or a chord's root);
- digits: two accents (espeak-ng voices) and three voice variants (two male, one female) are
  never heard in training; held-out clips use only those voices with those variants.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..config import DataConfig
from . import audio
from .dataset import DataError, _cache_root

log = logging.getLogger("ganstream.training.data")

FORMAT = 1  # bump whenever a builder's output changes for the same parameters
SET_PREFIX = "set:"
SPLITS = ("train", "heldout")
STAMP = "stamp.json"
LABELS = "labels.csv"
# Where Debian keeps each package's copyright file; a module constant so tests can point it at a fake tree.
DOC_ROOT = Path("/usr/share/doc")
_SUBTYPE = "PCM_16"  # 16-bit like the sources; the loudest clip of a set peaks at -1 dBFS
_PEAK = 10 ** (-1 / 20)


class SetError(DataError):
    """A real set that cannot be built or found; the message names the set, and the package or file."""


# --- Debian packages ---------------------------------------------------------


def installed_version(package: str) -> str | None:
    """The installed version of a Debian package, or None when it is not installed.

    Raises SetError naming the package when dpkg-query is not there (not a Debian-like system).
    """
    exe = shutil.which("dpkg-query")
    if exe is None:
        raise SetError(f"Debian package {package} is needed, but dpkg-query is not on PATH: "
                       "the real sets are built from Debian/Ubuntu packages")
    r = subprocess.run([exe, "-W", "-f=${db:Status-Status}\t${Version}", package], capture_output=True, text=True)
    status, _, version = r.stdout.partition("\t")
    return version.strip() if r.returncode == 0 and status == "installed" and version.strip() else None


def ensure_packages(packages: Sequence[str], set_name: str) -> dict[str, str]:
    """{package: version} for `packages`, installing the missing ones with apt-get (sudo when not root).

    Raises SetError naming every package that is still missing and why.
    """
    versions = {p: installed_version(p) for p in packages}
    missing = [p for p, v in versions.items() if v is None]
    if not missing:
        return versions  # type: ignore[return-value]
    names = " ".join(missing)
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise SetError(f"the {set_name} set needs the Debian package(s) {names}; not root and no sudo to install them: "
                           f"run `apt-get install {names}` as root")
        prefix = [sudo]
    apt = shutil.which("apt-get")
    if apt is None:
        raise SetError(f"the {set_name} set needs the Debian package(s) {names}, and apt-get is not on PATH to install them")
    log.warning("%s set: installing the Debian package(s) %s", set_name, names)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*prefix, apt, "update", "-qq"], [*prefix, apt, "install", "-y", "-qq", "--no-install-recommends", *missing]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            why = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
            shown = " ".join(cmd[len(prefix) :])
            raise SetError(f"the {set_name} set needs the Debian package(s) {names}: `{shown}` exited {r.returncode} ({why[0]})")
    versions = {p: installed_version(p) for p in packages}
    still = [p for p, v in versions.items() if v is None]
    if still:
        raise SetError(f"the {set_name} set needs the Debian package(s) {' '.join(still)}: apt-get succeeded, yet they are not installed")
    return versions  # type: ignore[return-value]


def copy_licences(packages: Iterable[str], folder: Path) -> dict[str, Any]:
    """Copies each package's Debian copyright file into folder/licenses/; {package: {file, licenses}}.

    `licenses` lists the DEP-5 `License:` short names; a package without a copyright file is
    recorded as such rather than refused (the stamp then says so).
    """
    out: dict[str, Any] = {}
    (folder / "licenses").mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        src = DOC_ROOT / pkg / "copyright"
        if not src.is_file():
            out[pkg] = {"file": None, "licenses": [], "note": f"no {src}"}
            continue
        text = src.read_text(errors="replace")
        dst = folder / "licenses" / f"{pkg}.copyright"
        dst.write_text(text)
        names = sorted({m.strip() for m in re.findall(r"^License:[ \t]*(\S[^\n]*)$", text, re.M)})
        out[pkg] = {"file": dst.relative_to(folder).as_posix(), "licenses": names}
        if not names:  # espeak-ng's and fluid-soundfont-gm's are free text: the set's `licence` line summarises them
            out[pkg]["note"] = "free-text copyright file (not DEP-5): read the file"
    return out


# --- shared writing ----------------------------------------------------------


def write_clip(path: Path, clip: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(clip, -1.0, 1.0), sample_rate, subtype=_SUBTYPE)


def write_labels(folder: Path, rows: list[dict[str, Any]]) -> None:
    """folder/labels.csv, one row per clip; `file` is the clip's path relative to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LABELS, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file"])
        w.writeheader()
        w.writerows(rows)


def read_labels(folder: Path) -> list[dict[str, str]]:
    with open(folder / LABELS, newline="") as f:
        return list(csv.DictReader(f))


def _safe(name: str) -> str:
    """A file-system-safe name: kit and instrument names hold spaces, slashes and '#'."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "unnamed"


# --- drums: Hydrogen kits ----------------------------------------------------


@dataclass(frozen=True)
class DrumParams:
    kits_dir: str = "/usr/share/hydrogen/data/drumkits"
    heldout_fraction: float = 0.2  # of the one-shots, reached with whole kits
    sample_rate: int = 16000


@dataclass(frozen=True)
class DrumSample:
    file: Path
    kit: str
    instrument: str
    instrument_id: str
    layer_min: str  # the velocity range Hydrogen plays this layer at, as written ("" for single-layer kits)
    layer_max: str


@dataclass(frozen=True)
class DrumKit:
    name: str
    licence: str
    samples: tuple[DrumSample, ...]
    missing: int  # files drumkit.xml names that are not in the kit's folder


def read_drumkit(xml_path: Path) -> DrumKit:
    """A kit's drumkit.xml -> its one-shots, each file once, with instrument names as labels.

    Reads both layouts Hydrogen has used: <layer><filename> (multi-layer kits) and a bare
    <filename> inside <instrument> (older kits); the XML namespace of newer kits is ignored.
    """
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as e:
        raise SetError(f"{xml_path}: unreadable drumkit.xml ({e})") from None

    def local(el: ET.Element) -> str:
        return el.tag.rsplit("}", 1)[-1]

    def child(el: ET.Element, name: str) -> str:
        for c in el:
            if local(c) == name:
                return (c.text or "").strip()
        return ""

    root = tree.getroot()
    kit = child(root, "name") or xml_path.parent.name
    licence = child(root, "license") or child(root, "licence")
    samples: list[DrumSample] = []
    seen: set[Path] = set()
    missing = 0
    for inst in (el for el in root.iter() if local(el) == "instrument"):
        name, ident = child(inst, "name"), child(inst, "id")
        layers = [el for el in inst.iter() if local(el) == "layer"]
        entries = [(child(la, "filename"), child(la, "min"), child(la, "max")) for la in layers] or [(child(inst, "filename"), "", "")]
        for filename, lo, hi in entries:
            if not filename:
                continue
            path = xml_path.parent / filename
            if path in seen:
                continue  # a file shared by two instruments is one clip, labelled by the first
            seen.add(path)
            if not path.is_file():
                missing += 1
                continue
            samples.append(DrumSample(path, kit, name, ident, lo, hi))
    # Files the kit ships but no instrument names (49 in rumpf_kit_z01_h2) are one-shots too: kept, unlabelled.
    for path in sorted(xml_path.parent.iterdir()):
        if path not in seen and path.suffix.lower() in audio.AUDIO_SUFFIXES and not path.name.startswith("."):
            samples.append(DrumSample(path, kit, "", "", "", ""))
    return DrumKit(kit, licence, tuple(samples), missing)


def split_kits(sizes: dict[str, int], fraction: float, seed: int) -> list[str]:
    """{kit: clips} -> the sorted kits held out: whole kits adding up to about `fraction` of the clips.

    Kits are taken in a seeded random order, skipping any that would overshoot the target by half
    again; at least one kit is held out and at least one stays in training.
    """
    if len(sizes) < 2:
        raise SetError(f"the drums set needs at least two kits to hold one out, found {sorted(sizes)}")
    target = fraction * sum(sizes.values())
    order = [sorted(sizes)[i] for i in np.random.default_rng([seed, 0xD2]).permutation(len(sizes))]
    held: list[str] = []
    total = 0
    for kit in order:
        if total >= target or len(held) == len(sizes) - 1:
            break
        if held and total + sizes[kit] > 1.5 * target:
            continue
        held.append(kit)
        total += sizes[kit]
    return sorted(held)


def build_drums(out: Path, seed: int, p: DrumParams) -> dict[str, Any]:
    kits_dir = Path(p.kits_dir)
    xmls = sorted(kits_dir.glob("*/drumkit.xml"))
    if not xmls:
        raise SetError(f"no */drumkit.xml under {kits_dir} (package hydrogen-drumkits)")
    kits = [read_drumkit(x) for x in xmls]
    kits = [k for k in kits if k.samples]
    held = set(split_kits({k.name: len(k.samples) for k in kits}, p.heldout_fraction, seed))
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    skipped: Counter[str] = Counter()
    for kit in kits:
        split = "heldout" if kit.name in held else "train"
        for s in kit.samples:
            try:
                clip = audio.decode(s.file, p.sample_rate)
            except audio.SkipFile as e:
                log.warning("drums set: skipped %s: %s", s.file, e)
                skipped[str(e).split(" (")[0]] += 1
                continue
            rel = Path(_safe(kit.name)) / (_safe(s.instrument) if s.instrument else "_unassigned") / f"{_safe(s.file.stem)}.wav"
            while (out / split / rel).exists():  # a.wav beside a.flac, or names that only differ in spaces vs '_'
                rel = rel.with_name(f"{rel.stem}+.wav")
            write_clip(out / split / rel, clip, p.sample_rate)
            rows[split].append({
                "file": rel.as_posix(), "kit": kit.name, "instrument": s.instrument, "instrument_id": s.instrument_id,
                "layer_min": s.layer_min, "layer_max": s.layer_max,
                "source": s.file.relative_to(kits_dir).as_posix(), "licence": kit.licence,
            })
    for split in SPLITS:
        write_labels(out / split, rows[split])
    return {
        "split": {"rule": "whole kits held out", "heldout_kits": sorted(held),
                  "train_kits": sorted(k.name for k in kits if k.name not in held)},
        "kits": {k.name: {"licence": k.licence, "clips": len(k.samples), "missing_files": k.missing} for k in kits},
        "skipped": dict(skipped),
    }


# --- piano: FluidR3 rendered by fluidsynth -----------------------------------

# Chord shapes as semitones above the root: intervals, triads and sevenths of 2 to 4 notes.
CHORDS = (
    (0, 3), (0, 4), (0, 5), (0, 7), (0, 12),
    (0, 4, 7), (0, 3, 7), (0, 3, 6), (0, 5, 7), (0, 4, 8),
    (0, 4, 7, 11), (0, 3, 7, 10), (0, 4, 7, 10), (0, 4, 7, 12), (0, 3, 7, 12),
)


@dataclass(frozen=True)
class PianoParams:
    soundfont: str = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
    program: int = 0  # General MIDI 1, Acoustic Grand Piano
    train: int = 300
    heldout: int = 80
    pitch: tuple[int, int] = (36, 96)  # MIDI notes, inclusive
    velocity: tuple[int, int] = (30, 127)
    hold_s: tuple[float, float] = (0.2, 1.5)  # note-on to note-off
    chord_fraction: float = 0.25
    heldout_every: int = 5  # every 5th pitch is held out: 5 and 12 are coprime, so all pitch classes and octaves are covered
    # 0: no pitch is held out; the held-out clips are fresh draws of the same notes (the notes set, for
    # pitch-conditioned models, which must hear every note of their range)
    tail_s: float = 1.0  # kept after note-off; FluidR3's piano release measured about 0.35 s at 16 kHz
    sample_rate: int = 16000


@dataclass(frozen=True)
class PianoClip:
    split: str
    pitches: tuple[int, ...]  # ascending; the first is the root
    velocity: int
    hold_ms: int


def heldout_pitches(p: PianoParams, seed: int) -> frozenset[int]:
    lo, hi = p.pitch
    if p.heldout_every == 0:
        return frozenset()
    offset = seed % p.heldout_every
    return frozenset(n for n in range(lo, hi + 1) if (n - lo) % p.heldout_every == offset)


def draw_piano_clips(p: PianoParams, seed: int) -> list[PianoClip]:
    """The set's notes and chords, train then held out, fixed by `seed`.

    No training clip sounds a held-out pitch; every held-out clip's root (or only note) is one,
    so a held-out clip always differs in pitch from every training clip.
    """
    held = heldout_pitches(p, seed)
    lo, hi = p.pitch
    rng = np.random.default_rng([seed, 0x9A])
    clips = []
    for split, count in (("train", p.train), ("heldout", p.heldout)):
        for _ in range(count):
            shape = CHORDS[rng.integers(len(CHORDS))] if rng.random() < p.chord_fraction else (0,)
            roots = [r for r in range(lo, hi - shape[-1] + 1)
                     if not held or (r in held if split == "heldout" else not any(r + i in held for i in shape))]
            root = int(rng.choice(roots))
            velocity = int(rng.integers(p.velocity[0], p.velocity[1] + 1))
            hold_ms = int(round(1000 * rng.uniform(*p.hold_s)))
            clips.append(PianoClip(split, tuple(root + i for i in shape), velocity, hold_ms))
    return clips


def piano_midi(clips: Sequence[PianoClip], p: PianoParams) -> tuple[Any, list[int]]:
    """One MIDI file playing every clip in its own slot (hold + tail, dry) -> (mido.MidiFile, slot starts in ms).

    One file, so fluidsynth loads the 140 MB sound font once instead of once per clip. Ticks are
    milliseconds (500 ticks per beat at 120 bpm), so slot starts convert to samples exactly.
    """
    import mido

    mid = mido.MidiFile(ticks_per_beat=500)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    track.append(mido.Message("program_change", program=p.program, channel=0, time=0))
    lead_ms = 100  # before the first note, while the synth settles
    tail_ms = int(round(1000 * p.tail_s))
    starts, now, pending = [], 0, lead_ms
    for c in clips:
        starts.append(now + pending)
        for i, n in enumerate(c.pitches):
            track.append(mido.Message("note_on", note=n, velocity=c.velocity, channel=0, time=pending if i == 0 else 0))
        for i, n in enumerate(c.pitches):
            track.append(mido.Message("note_off", note=n, velocity=0, channel=0, time=c.hold_ms if i == 0 else 0))
        now = starts[-1] + c.hold_ms
        pending = tail_ms
    track.append(mido.MetaMessage("end_of_track", time=pending))
    return mid, starts


def build_piano(out: Path, seed: int, p: PianoParams) -> dict[str, Any]:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise SetError("the piano set needs fluidsynth on PATH (package fluidsynth)")
    if not Path(p.soundfont).is_file():
        raise SetError(f"the piano set needs the sound font {p.soundfont} (package fluid-soundfont-gm)")
    clips = draw_piano_clips(p, seed)
    mid, starts = piano_midi(clips, p)
    with tempfile.TemporaryDirectory(prefix="piano-", dir=out) as tmp:
        mid.save(str(Path(tmp) / "notes.mid"))
        wav = Path(tmp) / "render.wav"
        # -R 0 -C 0: no reverb or chorus, so no slot's tail leaks into the next; float output, so
        # 4-note chords at velocity 127 cannot clip before the set is scaled as a whole.
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(p.sample_rate), "-O", "float", "-T", "wav",
               "-F", str(wav), p.soundfont, str(Path(tmp) / "notes.mid")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not wav.is_file():
            raise SetError(f"the piano set: fluidsynth exited {r.returncode} ({r.stderr.strip()[-300:] or 'no output'})")
        render, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != p.sample_rate:
        raise SetError(f"the piano set: fluidsynth wrote {rate} Hz, asked for {p.sample_rate}")
    mono = render.mean(axis=1)
    cuts = []
    for c, start_ms in zip(clips, starts):
        a = start_ms * p.sample_rate // 1000
        x = mono[a : a + (c.hold_ms + int(round(1000 * p.tail_s))) * p.sample_rate // 1000]
        _, stop = audio.sound_span(x, -60.0)  # the release has faded 60 dB below the peak by here
        if stop == 0:
            raise SetError(f"the piano set: fluidsynth rendered silence for pitches {c.pitches} (sound font {p.soundfont})")
        cuts.append(x[: stop + p.sample_rate // 100])
    scale = _PEAK / max(float(np.abs(x).max()) for x in cuts)  # one gain for the set: velocity stays audible
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for i, (c, x) in enumerate(zip(clips, cuts)):
        rel = f"{i:04d}_p{'-'.join(map(str, c.pitches))}_v{c.velocity}.wav"
        write_clip(out / c.split / rel, x * scale, p.sample_rate)
        rows[c.split].append({"file": rel, "pitches": " ".join(map(str, c.pitches)), "velocity": c.velocity,
                              "notes": len(c.pitches), "hold_s": c.hold_ms / 1000, "length_s": round(len(x) / p.sample_rate, 4)})
    for split in SPLITS:
        write_labels(out / split, rows[split])
    if p.heldout_every == 0:
        return {"split": {"rule": "held-out clips are fresh draws of the same notes (new velocities and lengths)"}}
    return {"split": {"rule": f"held-out pitches: every {p.heldout_every}th MIDI note, offset by the seed; "
                              "training never sounds them, each held-out clip's root is one",
                      "heldout_pitches": sorted(heldout_pitches(p, seed))}}


# --- digits: espeak-ng voices ------------------------------------------------

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class DigitParams:
    # espeak-ng's own English voices (the mbrola ones need databases Debian ships apart); "en" is en-gb.
    voices: tuple[str, ...] = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                               "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
    variants: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
    heldout_voices: int = 2
    heldout_variants: int = 3  # spread over the m/f groups in proportion: two male, one female
    train_per_digit: int = 60
    heldout_per_digit: int = 15
    speed: tuple[int, int] = (130, 200)  # words per minute; measured: the longest word (en-us "nine" at 138) ends at 0.88 s
    pitch: tuple[int, int] = (25, 75)  # espeak-ng's -p, 0..99
    sample_rate: int = 16000
    length: int = 16000  # every clip is exactly this many samples, as SC09's
    espeak: str = "espeak-ng"


def split_speakers(p: DigitParams, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    """{split: (voices, variants)}: the held-out ones are never used in training, and vice versa."""
    rng = np.random.default_rng([seed, 0xD161])
    voices = list(p.voices)
    held_v = sorted(voices[i] for i in rng.permutation(len(voices))[: p.heldout_voices])
    groups: dict[str, list[str]] = {}
    for v in p.variants:
        groups.setdefault(v[0], []).append(v)
    held_var: list[str] = []
    for g in sorted(groups):  # each group in proportion, so held-out speakers are not all of one sex
        k = round(p.heldout_variants * len(groups[g]) / len(p.variants))
        held_var += [groups[g][i] for i in rng.permutation(len(groups[g]))[:k]]
    if not held_v or not held_var or len(held_v) == len(voices) or len(held_var) == len(p.variants):
        raise SetError(f"the digits set cannot hold out {p.heldout_voices} of {len(voices)} voices "
                       f"and {p.heldout_variants} of {len(p.variants)} variants")
    return {
        "train": ([v for v in voices if v not in held_v], [v for v in p.variants if v not in held_var]),
        "heldout": (held_v, sorted(held_var)),
    }


def fit_to_length(x: np.ndarray, length: int, sample_rate: int, trim_db: float = -50.0) -> tuple[np.ndarray, bool]:
    """(T,) speech -> ((length,) float32 starting 10 ms before its onset, truncated?).

    Silence before and after the word is trimmed, then the clip is zero-padded at the end, or cut
    with a 10 ms fade-out when the word is longer than `length`.
    """
    first, stop = audio.sound_span(x, trim_db)
    x = x[max(0, first - sample_rate // 100) : stop]
    if len(x) <= length:
        return np.pad(x, (0, length - len(x))).astype(np.float32), False
    x = x[:length].astype(np.float32)
    fade = min(length, sample_rate // 100)
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return x, True


def _espeak_names(exe: str, which: str) -> set[str]:
    """The voice names (`--voices=en`) or variant file names without `!v/` (`--voices=variant`) espeak-ng knows."""
    r = subprocess.run([exe, f"--voices={which}"], capture_output=True, text=True)
    cols = [line.split() for line in r.stdout.splitlines()[1:]]
    if which == "variant":
        return {c[4].removeprefix("!v/") for c in cols if len(c) > 4}
    return {c[1] for c in cols if len(c) > 1}


@dataclass(frozen=True)
class DigitClip:
    split: str
    word: str
    voice: str
    variant: str
    speed: int
    pitch: int
    index: int = 0  # the clip's number among its split's clips of the same word


def draw_digit_clips(p: DigitParams, seed: int) -> list[DigitClip]:
    speakers = split_speakers(p, seed)
    rng = np.random.default_rng([seed, 0xD1])
    clips = []
    for split, per in (("train", p.train_per_digit), ("heldout", p.heldout_per_digit)):
        voices, variants = speakers[split]
        for word in DIGITS:
            for i in range(per):
                clips.append(DigitClip(split, word, voices[rng.integers(len(voices))], variants[rng.integers(len(variants))],
                                       int(rng.integers(p.speed[0], p.speed[1] + 1)), int(rng.integers(p.pitch[0], p.pitch[1] + 1)), i))
    return clips


def build_digits(out: Path, seed: int, p: DigitParams) -> dict[str, Any]:
    exe = shutil.which(p.espeak)
    if exe is None:
        raise SetError(f"the digits set needs {p.espeak} on PATH (package espeak-ng)")
    unknown = sorted(set(p.voices) - _espeak_names(exe, "en")) + sorted(f"+{v}" for v in set(p.variants) - _espeak_names(exe, "variant"))
    if unknown:
        # espeak-ng silently falls back to its default voice for an unknown variant: refuse instead.
        raise SetError(f"the digits set: espeak-ng does not know the voice(s) {', '.join(unknown)} (package espeak-ng-data)")
    clips = draw_digit_clips(p, seed)
    tmp = Path(tempfile.mkdtemp(prefix="espeak-", dir=out))

    def render(job: tuple[int, DigitClip]) -> np.ndarray:
        i, c = job
        wav = tmp / f"{i}.wav"
        cmd = [exe, "-v", f"{c.voice}+{c.variant}", "-s", str(c.speed), "-p", str(c.pitch), "-w", str(wav), c.word]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SetError(f"the digits set: `{' '.join(cmd)}` exited {r.returncode} ({r.stderr.strip() or 'no output'})")
        try:
            return audio.decode(wav, p.sample_rate)
        except audio.SkipFile as e:
            raise SetError(f"the digits set: `{' '.join(cmd)}` wrote no usable audio ({e})") from None

    try:
        # espeak-ng is single-threaded and starts in ~15 ms: one process per core keeps them busy.
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            speech = list(pool.map(render, enumerate(clips)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    truncated = 0
    for c, x in zip(clips, speech):
        y, cut = fit_to_length(x, p.length, p.sample_rate)
        truncated += cut
        rel = f"{c.word}/{c.voice}+{c.variant}_s{c.speed}_p{c.pitch}_{c.index:03d}.wav"
        write_clip(out / c.split / rel, y, p.sample_rate)
        rows[c.split].append({"file": rel, "digit": DIGITS.index(c.word), "word": c.word, "voice": c.voice,
                              "variant": c.variant, "speed": c.speed, "pitch": c.pitch, "truncated": int(cut)})
    for split in SPLITS:
        write_labels(out / split, rows[split])
    speakers = split_speakers(p, seed)
    return {
        "split": {"rule": "held-out voices and variants: never used in training",
                  "train_voices": speakers["train"][0], "train_variants": speakers["train"][1],
                  "heldout_voices": speakers["heldout"][0], "heldout_variants": speakers["heldout"][1]},
        "truncated": truncated,
    }


# --- the registry, the cache and the source names ------------------------------


@dataclass(frozen=True)
class RealSet:
    name: str
    packages: tuple[str, ...]  # installed when missing; their versions and licences go into the stamp
    params: Any  # the set's frozen parameter dataclass, with its defaults
    build: Callable[[Path, int, Any], dict[str, Any]]  # (folder to fill, seed, params) -> what the stamp records of the split
    about: str
    licence: str  # what the clips inherit, read by hand from the packages' copyright files (Debian 12)


SETS: dict[str, RealSet] = {
    s.name: s
    for s in (
        RealSet("drums", ("hydrogen-drumkits",), DrumParams(), build_drums, "Hydrogen drum kits' one-shots, labelled by kit and instrument",
                "each kit its own (the stamp's kits.*.licence): GPL-2, CC-BY-3.0, CC-BY-SA-3.0 or CC0"),
        RealSet("piano", ("fluidsynth", "fluid-soundfont-gm"), PianoParams(), build_piano,
                "FluidR3 Acoustic Grand notes and chords, labelled by MIDI pitches and velocity",
                "FluidR3_GM sound font: MIT (Frank Wen); rendered by fluidsynth (LGPL-2.1+)"),
        RealSet("notes", ("fluidsynth", "fluid-soundfont-gm"),
                PianoParams(train=1200, heldout=200, chord_fraction=0.0, hold_s=(0.3, 1.0), heldout_every=0), build_piano,
                "FluidR3 Acoustic Grand single notes over C2..C7, every note in training (for pitch-conditioned models), "
                "labelled by MIDI pitch and velocity",
                "FluidR3_GM sound font: MIT (Frank Wen); rendered by fluidsynth (LGPL-2.1+)"),
        RealSet("digits", ("espeak-ng", "espeak-ng-data"), DigitParams(), build_digits,
                "spoken digits zero..nine, 1 s each, in espeak-ng's English voices and variants",
                "espeak-ng and its voice data: GPL-3+"),
    )
}


def _plain(x: Any) -> Any:
    """Parameters as the stamp's JSON holds them (tuples become lists), so the two compare equal."""
    return json.loads(json.dumps(dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x))


def read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _spec(name: str) -> RealSet:
    if name not in SETS:
        raise SetError(f"unknown real set {name!r} (known: {', '.join(SETS)})")
    return SETS[name]


def build_set(name: str, root: str | Path, seed: int = 0, params: Any = None, force: bool = False) -> Path:
    """Builds (or reuses) set `name` under root/sets/name and returns that folder, which holds train/ and heldout/.

    Missing packages are installed first. The cache is reused when its stamp matches the format,
    seed, parameters and the installed package versions; otherwise it is built again.
    """
    spec = _spec(name)
    params = spec.params if params is None else params
    folder = Path(root).expanduser() / "sets" / name
    versions = ensure_packages(spec.packages, name)
    want = {"format": FORMAT, "set": name, "seed": seed, "params": _plain(params), "packages": versions}
    stamp = read_stamp(folder)
    if not force and stamp is not None and all(stamp.get(k) == v for k, v in want.items()) and all((folder / s).is_dir() for s in SPLITS):
        log.info("%s set: using %s (%s)", name, folder, _count_text(stamp["counts"]))
        return folder
    if stamp is not None:
        changed = [k for k, v in want.items() if stamp.get(k) != v]
        log.warning("%s set: rebuilding %s (changed: %s)", name, folder, ", ".join(changed) or "forced")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        built = spec.build(tmp, seed, params)
        counts = {s: _count(tmp / s) for s in SPLITS}
        stamp = {**want, "counts": counts, **built, "licences": copy_licences(spec.packages, tmp),
                 "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_s": round(time.perf_counter() - t0, 2),
                 "about": spec.about, "licence": spec.licence}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        # Swap in one rename each, so a reader never sees half a set; the old one is removed last.
        old = folder.parent / f".{name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.warning("%s set: built %s in %.1f s (%s)", name, folder, stamp["build_s"], _count_text(counts))
    return folder


def _count(split: Path) -> dict[str, Any]:
    seconds = [sf.info(str(f)).duration for f in sorted(split.rglob("*.wav"))]
    return {"clips": len(seconds), "seconds": round(sum(seconds), 2)}


def _count_text(counts: dict[str, Any]) -> str:
    return ", ".join(f"{s} {c['clips']} clips ({c['seconds'] / 60:.1f} min)" for s, c in counts.items())


def resolve_source(source: str, root: str | Path) -> Path:
    """`set:NAME` -> the train folder of set NAME (built first when needed); `set:NAME/heldout` -> its held-out folder.

    Always seed 0: a set is the same folder for every run, like a user's.
    """
    name, _, split = source[len(SET_PREFIX) :].partition("/")
    split = split or "train"
    if split not in SPLITS:
        raise SetError(f"data source {source!r}: unknown split {split!r} (known: {', '.join(SPLITS)})")
    _spec(name)
    return build_set(name, root) / split


def default_root() -> Path:
    """The data cache folder that `data.cache_dir=""` means, where `set:NAME` sources are built."""
    return _cache_root(DataConfig())
