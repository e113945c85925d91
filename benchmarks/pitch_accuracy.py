"""Pitch accuracy of pitch-conditioned bundles: does the generator sound the note it is asked for?

For every MIDI note in the range (default: the bundle's `condition.pitch_range`) it generates
--per-note clips, one per seeded latent (clip i of every note has the latent that seed
`--seed + i` names, `LatentSpace.seed_latent`, as the live player's seeds do, so every note is
asked with the same latents), through the bundle's ONNX graph (realtime `Generator`, on one
thread). A pitch+velocity bundle is asked at velocity --velocity (default 0.75), or with
`--velocity spread` at velocities spread evenly over 0.3..1.0 across each note's clips.

Each clip's pitch is then estimated by librosa's pYIN (training/data/labels.py `pyin_pitch`:
the median of the frames pYIN calls voiced with probability 0.5 or more, looked for over a
fixed C1..C8, so octave errors show; confident when half the sounding frames are voiced and
their interquartile range is within a semitone). A clip is a hit when its confident pitch is
within 50 cents of the note asked for; a clip without a confident pitch is a miss, counted
apart as unpitched; an octave error is a miss within 50 cents of the note an octave or more
away. The bar: at least 80% of the clips over the range are hits. ganstream's own McLeod
estimator (core/pitch.py, over the same C1..C8) gives a second hit rate; it is not
independent of the code it checks (export estimates root notes with it), so it is not the bar.

Prints one table per bundle (one row per octave, C2..B2, C3..B3, ...) and writes the JSON
(per octave, per note with every clip's estimate, overall; the command, commit, timings) to --out.
With --reference FOLDER (say the notes set's held-out clips) it scores real labelled clips the
same way, the first segment of each: the trackers' ceiling. On set:notes/heldout (200 clips,
C2..C7) pYIN hits 95%: its 10 misses are all C2..D2, the right pitch but under half the
sounding frames voiced, so the generator's C2 octave cannot be expected to reach the bar.

    python benchmarks/pitch_accuracy.py BUNDLE [BUNDLE ...] [--per-note 8] [--seed 0] [--notes LO HI] [--velocity 0.75|spread]
                                        [--reference ~/.cache/ganstream/sets/notes/heldout]
    python benchmarks/pitch_accuracy.py --table        # the tables of the JSON already written
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from quality_per_cpu import REPO, git_commit, pin_threads

OUT = REPO / "benchmarks" / "results" / "pitch_accuracy.json"
HIT_CENTS = 50.0  # a hit: within this many cents of the note asked for
BAR = 0.80  # the bar: at least this share of the clips over the range are hits
SPREAD = (0.3, 1.0)  # --velocity spread: the velocities of each note's clips, evenly over this
DEFAULT_VELOCITY = 0.75
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_label(n: int) -> str:
    return f"{_NAMES[n % 12]}{n // 12 - 1}"


def octave_label(octave: int) -> str:
    """Scientific octave (C4 = MIDI 60 starts octave 4) -> `C4..B4`."""
    return f"C{octave}..B{octave}"


def classify(asked: int, estimate: float | None) -> str:
    """One clip: "hit", "octave" (within HIT_CENTS of asked +- 12k semitones, k != 0), "miss", or "unpitched" (estimate None)."""
    if estimate is None:
        return "unpitched"
    cents = 100.0 * (estimate - asked)
    if abs(cents) <= HIT_CENTS:
        return "hit"
    octaves = round(cents / 1200.0)
    return "octave" if octaves != 0 and abs(cents - 1200.0 * octaves) <= HIT_CENTS else "miss"


def summarise(asked: list[int], pyin: list[float | None], mcleod: list[float | None]) -> dict[str, Any]:
    """Figures over a set of clips: asked notes, pYIN's confident estimates (None: unpitched) and McLeod's."""
    n = len(asked)
    kinds = [classify(a, e) for a, e in zip(asked, pyin)]
    errors = [abs(100.0 * (e - a)) for a, e in zip(asked, pyin) if e is not None]
    mc_hits = sum(classify(a, e) == "hit" for a, e in zip(asked, mcleod))
    share = lambda k: round(kinds.count(k) / n, 4) if n else None  # noqa: E731
    return {
        "clips": n,
        "hits": kinds.count("hit"),
        "hit_rate": share("hit"),
        "octave_errors": kinds.count("octave"),
        "octave_error_rate": share("octave"),
        "other_misses": kinds.count("miss"),
        "unpitched": kinds.count("unpitched"),
        "unpitched_rate": share("unpitched"),
        "median_abs_cents": round(float(np.median(errors)), 1) if errors else None,  # over the pitched clips
        "mcleod_hits": mc_hits,
        "mcleod_hit_rate": round(mc_hits / n, 4) if n else None,
    }


def parse_velocity(text: str) -> str | float:
    if text == "spread":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--velocity: a number in [0, 1] or 'spread', not {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"--velocity: a number in [0, 1] or 'spread', not {text!r}")
    return v


def velocities(velocity: str | float, per_note: int) -> np.ndarray:
    if velocity == "spread":
        return np.linspace(SPREAD[0], SPREAD[1], per_note) if per_note > 1 else np.array([np.mean(SPREAD)])
    return np.full(per_note, float(velocity))


class NotConditioned(Exception):
    pass


def track(audio: Any, sr: int) -> tuple[list[Any], list[float | None], list[float | None], tuple[float, float]]:
    """Clips (each (T,)) -> (pYIN's PitchEstimates, its confident notes (None: unpitched), McLeod's confident
    notes, (pYIN seconds, McLeod seconds)); both look for C1..C8 (labels.TRACK_RANGE)."""
    from ganstream.core.pitch import estimate_pitch, midi_to_hz
    from ganstream.training.data.labels import TRACK_RANGE, pyin_pitch

    fmin, fmax = (midi_to_hz(n) for n in TRACK_RANGE)
    t = time.perf_counter()
    raw = [pyin_pitch(x, sr) for x in audio]
    t_pyin = time.perf_counter() - t
    t = time.perf_counter()
    mc = [estimate_pitch(x, sr, fmin=fmin, fmax=fmax) for x in audio]
    t_mc = time.perf_counter() - t
    return raw, [e.note if e.confident else None for e in raw], [e.note if e.confident else None for e in mc], (t_pyin, t_mc)


def by_octave(asked: list[int], pyin: list[float | None], mcleod: list[float | None]) -> list[dict[str, Any]]:
    """`summarise` per octave of the notes asked (C2..B2, C3..B3, ...)."""
    out = []
    for octave in sorted({a // 12 - 1 for a in asked}):
        idx = [i for i, a in enumerate(asked) if a // 12 - 1 == octave]
        notes = [asked[i] for i in idx]
        out.append({"octave": octave, "name": octave_label(octave), "notes": [min(notes), max(notes)],
                    **summarise(notes, [pyin[i] for i in idx], [mcleod[i] for i in idx])})
    return out


def reference(folder: Path, notes: tuple[int, int], segment: int, sr: int, say=print) -> dict[str, Any]:
    """The trackers' ceiling: the same figures on real labelled clips (their first `segment` samples) of
    `folder` whose pitch is within `notes`, e.g. the notes set's held-out clips."""
    from ganstream.training.data import audio as audio_io
    from ganstream.training.data.labels import clip_labels

    t0 = time.perf_counter()
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    labels = clip_labels(folder, names, sample_rate=sr)
    keep = [i for i in range(len(names)) if notes[0] <= labels.pitch[i] <= notes[1]]
    if not keep:
        raise ValueError(f"--reference {folder}: no labelled clip within MIDI {notes[0]}..{notes[1]} ({labels.summary()})")
    say(f"reference: {len(keep)} labelled clips of {folder} within {note_label(notes[0])}..{note_label(notes[1])}")
    clips = []
    for i in keep:
        x = audio_io.decode(folder / names[i], sr)[:segment]
        clips.append(np.pad(x, (0, segment - len(x))))
    asked = [int(labels.pitch[i]) for i in keep]
    _, est, mc, (dp, dm) = track(clips, sr)
    overall = summarise(asked, est, mc)
    # The real notes' loudness and brightness by velocity, in thirds of MIDI velocity: what a soft note sounds like.
    vel = np.array([int(labels.velocity[i]) for i in keep])
    rms, cen = brightness(np.stack(clips), sr)
    by_velocity = [{"velocity": f"{a}..{b - 1}", "clips": int(m.sum()), "rms_db": round(float(np.median(rms[m])), 2),
                    "centroid_hz": round(float(np.median(cen[m])), 1)}
                   for a, b in ((1, 43), (43, 86), (86, 128)) if (m := (vel >= a) & (vel < b)).any()]
    return {"folder": str(folder), "segment": segment, "sample_rate": sr, "notes": list(notes),
            "labels": labels.summary(), "overall": overall, "per_octave": by_octave(asked, est, mc),
            "velocity_response": {"by_velocity": by_velocity},
            "misses": [{"file": names[i], "note": a, "pyin": None if e is None else round(e, 2)}
                       for i, a, e in zip(keep, asked, est) if classify(a, e) != "hit"],
            "timings_s": {"pyin": round(dp, 2), "mcleod": round(dm, 2), "total": round(time.perf_counter() - t0, 2)}}


def measure(path: Path, per_note: int, seed: int, notes: tuple[int, int] | None, velocity: str | float,
            say=print) -> dict[str, Any]:
    """The figures of one bundle (see the module docstring)."""
    from ganstream.core.pitch import midi_to_hz
    from ganstream.realtime.bundle import load_bundle
    from ganstream.realtime.inference import Generator
    from ganstream.realtime.latents import LatentSpace
    from ganstream.training.data.labels import TRACK_RANGE

    t0 = time.perf_counter()
    bundle = load_bundle(path)
    condition = bundle.spec.condition
    if condition is None:
        raise NotConditioned(f"{path}: not a pitch-conditioned bundle (its manifest has no `condition` section, "
                             f"format version {bundle.spec.format_version}); this benchmark asks a conditioned generator for notes")
    gen = Generator(bundle, threads=1)
    load_s = time.perf_counter() - t0
    lo, hi = notes if notes is not None else condition.pitch_range
    if not (0 <= lo <= hi <= 127):
        raise ValueError(f"--notes {lo} {hi}: MIDI notes 0..127, the lowest first")
    space = LatentSpace.from_bundle(bundle)
    z = np.stack([space.seed_latent(seed + i) for i in range(per_note)]).astype(np.float32)  # (per_note, D)
    vel = velocities(velocity, per_note) if gen.condition_size > 1 else None
    fmin, fmax = (midi_to_hz(n) for n in TRACK_RANGE)  # for the record: `track` looks over these
    sr = bundle.sample_rate

    say(f"{path}: {condition.kind}, trained on {note_label(condition.pitch_range[0])}..{note_label(condition.pitch_range[1])}; "
        f"asking {note_label(lo)}..{note_label(hi)}, {per_note} clips per note"
        + (f", velocity {velocity}" if vel is not None else ""))
    say("  (the first pYIN call compiles librosa's numba code: tens of seconds)")
    gen_s = pyin_s = mc_s = 0.0
    per_note_rows = []
    asked_all: list[int] = []
    pyin_all: list[float | None] = []
    mc_all: list[float | None] = []
    for k, note in enumerate(range(lo, hi + 1)):
        t = time.perf_counter()
        cond = np.full((per_note, gen.condition_size), float(note), np.float32)
        if vel is not None:
            cond[:, 1] = vel
        audio = gen.generate(np.concatenate([z, cond], axis=1))
        gen_s += time.perf_counter() - t
        raw, est, mc_est, (dp, dm) = track(audio, sr)
        pyin_s, mc_s = pyin_s + dp, mc_s + dm
        row = {"note": note, "name": note_label(note), "in_training_range": condition.pitch_range[0] <= note <= condition.pitch_range[1],
               "training_segments": int(condition.histogram.get(str(note), 0)),
               **summarise([note] * per_note, est, mc_est),
               "pyin_midi": [None if e is None else round(e, 2) for e in est],
               "pyin_unconfident_midi": [None if (e.confident or e.note is None) else round(e.note, 2) for e in raw],
               "mcleod_midi": [None if e is None else round(e, 2) for e in mc_est],
               "peak": [round(float(np.abs(x).max()), 4) for x in audio]}
        per_note_rows.append(row)
        asked_all += [note] * per_note
        pyin_all += est
        mc_all += mc_est
        say(f"  [{k + 1}/{hi - lo + 1}] {row['name']:>4} ({note}): {row['hits']}/{per_note} hits, "
            f"{row['octave_errors']} octave errors, {row['unpitched']} unpitched, "
            f"median |error| {row['median_abs_cents'] if row['median_abs_cents'] is not None else '-'} cents; "
            f"{time.perf_counter() - t0:.0f} s so far")

    octaves = by_octave(asked_all, pyin_all, mc_all)
    overall = summarise(asked_all, pyin_all, mc_all)
    soft_loud = velocity_response(gen, z, lo, hi) if gen.condition_size > 1 else None
    total = time.perf_counter() - t0
    return {
        "bundle": str(path),
        "name": bundle.name,
        "kind": bundle.kind,
        "sample_rate": sr,
        "segment": bundle.segment,
        "condition": {"kind": condition.kind, "pitch_range": list(condition.pitch_range), "labels": condition.labels},
        "notes": [lo, hi],
        "per_note": per_note,
        "seed": seed,
        "latents": f"clip i of every note: LatentSpace.seed_latent({seed} + i), i < {per_note}",
        "velocity": None if vel is None else (
            f"spread: {per_note} velocities evenly over {SPREAD[0]}..{SPREAD[1]}, one per clip" if velocity == "spread" else float(velocity)),
        "tracker": f"librosa {_librosa_version()} pYIN via training/data/labels.py pyin_pitch, notes "
                   f"{note_label(TRACK_RANGE[0])}..{note_label(TRACK_RANGE[1])}, confident clips only",
        "second_tracker": f"core/pitch.py estimate_pitch (McLeod), {fmin:.1f}..{fmax:.0f} Hz, confident clips only",
        "hit": f"within {HIT_CENTS:g} cents of the note asked for",
        "bar": f"at least {BAR:.0%} of the clips are hits",
        "pass": overall["hit_rate"] is not None and overall["hit_rate"] >= BAR,
        "overall": overall,
        "per_octave": octaves,
        "per_note_figures": per_note_rows,
        **({"velocity_response": soft_loud} if soft_loud is not None else {}),
        "timings_s": {"load": round(load_s, 2), "generate": round(gen_s, 2), "pyin": round(pyin_s, 2),
                      "mcleod": round(mc_s, 2), "total": round(total, 2),
                      "pyin_per_clip": round(pyin_s / max(1, len(asked_all)), 3)},
    }


VELOCITY_STEPS = (0.3, 0.65, 1.0)


def brightness(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) clips -> (RMS in dBFS, spectral centroid in Hz) of each, over the whole clip."""
    rms = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=1)) + 1e-9)
    power = np.abs(np.fft.rfft(audio.astype(np.float64), axis=1)) ** 2
    freqs = np.fft.rfftfreq(audio.shape[1], 1.0 / sr)
    return rms, (power * freqs).sum(1) / np.maximum(power.sum(1), 1e-30)


def velocity_response(gen: Any, z: np.ndarray, lo: int, hi: int) -> dict[str, Any]:
    """A pitch+velocity bundle asked for the same notes and latents at VELOCITY_STEPS: a soft note should be
    darker (lower centroid), not only quieter; the real piano's notes are. Every 6th note of the range."""
    rows = []
    for v in VELOCITY_STEPS:
        rms_all, cen_all = [], []
        for note in range(lo, hi + 1, 6):
            cond = np.tile(np.array([note, v], np.float32), (len(z), 1))
            rms, cen = brightness(gen.generate(np.concatenate([z, cond], axis=1)), gen.sample_rate)
            rms_all.append(rms)
            cen_all.append(cen)
        rows.append({"velocity": v, "rms_db": round(float(np.median(np.concatenate(rms_all))), 2),
                     "centroid_hz": round(float(np.median(np.concatenate(cen_all))), 1)})
    return {"notes": f"every 6th of {lo}..{hi}, the same latents as above", "by_velocity": rows}


def _librosa_version() -> str:
    import librosa

    return librosa.__version__


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(one: dict[str, Any]) -> str:
    lines = [f"**{one['bundle']}** ({one['condition']['kind']}; notes {note_label(one['notes'][0])}..{note_label(one['notes'][1])}, "
             f"{one['per_note']} clips per note" + (f", velocity {one['velocity']}" if one["velocity"] is not None else "") + ")",
             "",
             "| octave | clips | hits (pYIN) | median abs error | octave errors | unpitched | hits (McLeod) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in [*one["per_octave"], {**one["overall"], "name": "**all**"}]:
        cents = "-" if r["median_abs_cents"] is None else f"{r['median_abs_cents']:.1f} cents"
        lines.append(f"| {r['name']} | {r['clips']} | {pct(r['hit_rate'])} | {cents} | {pct(r['octave_error_rate'])} | "
                     f"{pct(r['unpitched_rate'])} | {pct(r['mcleod_hit_rate'])} |")
    o = one["overall"]
    lines += ["", f"{o['hits']} of {o['clips']} clips within {HIT_CENTS:g} cents ({pct(o['hit_rate'])}); "
                  f"bar: {one['bar']}: **{'PASS' if one['pass'] else 'FAIL'}** "
                  f"({one['timings_s']['total']:.0f} s, pYIN {one['timings_s']['pyin_per_clip']:.2f} s a clip)"]
    if "velocity_response" in one:
        lines += ["", "velocity asked | RMS | spectral centroid", "--- | --- | ---"]
        lines += [f"{r['velocity']:g} | {r['rms_db']:.1f} dBFS | {r['centroid_hz']:.0f} Hz" for r in one["velocity_response"]["by_velocity"]]
    return "\n".join(lines)


def reference_table(ref: dict[str, Any]) -> str:
    lines = [f"**reference: real clips of {ref['folder']}** (first {ref['segment']} samples; notes "
             f"{note_label(ref['notes'][0])}..{note_label(ref['notes'][1])}): the trackers' ceiling",
             "",
             "| octave | clips | hits (pYIN) | median abs error | octave errors | unpitched | hits (McLeod) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in [*ref["per_octave"], {**ref["overall"], "name": "**all**"}]:
        cents = "-" if r["median_abs_cents"] is None else f"{r['median_abs_cents']:.1f} cents"
        lines.append(f"| {r['name']} | {r['clips']} | {pct(r['hit_rate'])} | {cents} | {pct(r['octave_error_rate'])} | "
                     f"{pct(r['unpitched_rate'])} | {pct(r['mcleod_hit_rate'])} |")
    if "velocity_response" in ref:
        lines += ["", "MIDI velocity | clips | RMS | spectral centroid", "--- | --- | --- | ---"]
        lines += [f"{r['velocity']} | {r['clips']} | {r['rms_db']:.1f} dBFS | {r['centroid_hz']:.0f} Hz"
                  for r in ref["velocity_response"]["by_velocity"]]
    return "\n".join(lines)


def tables(report: dict[str, Any]) -> str:
    parts = [table(one) for one in report["bundles"]]
    if report.get("reference"):
        parts.append(reference_table(report["reference"]))
    return "\n\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="*", type=Path, metavar="BUNDLE", help="pitch-conditioned bundles (directories or .zip)")
    p.add_argument("--per-note", type=int, default=8, help="clips per note, one per seeded latent (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="clip i has the latent of seed SEED + i (default: %(default)s)")
    p.add_argument("--notes", type=int, nargs=2, metavar=("LO", "HI"), help="MIDI notes asked for (default: the bundle's condition.pitch_range)")
    p.add_argument("--velocity", type=parse_velocity, default=DEFAULT_VELOCITY,
                   help="pitch+velocity bundles: the velocity asked, in [0, 1], or 'spread' (%(default)s)")
    p.add_argument("--reference", type=Path, metavar="FOLDER",
                   help="also score real labelled clips of FOLDER within the notes asked (the trackers' ceiling), "
                        "e.g. ~/.cache/ganstream/sets/notes/heldout")
    p.add_argument("--threads", type=int, default=1, help="torch, BLAS and ONNX Runtime threads (default: %(default)s)")
    p.add_argument("--out", type=Path, default=OUT, help="the JSON (default: %(default)s)")
    p.add_argument("--table", action="store_true", help="measure nothing: print the tables of the JSON in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.table:
        print(tables(json.loads(args.out.read_text())))
        return 0
    if not args.bundles:
        parser.error("give one or more pitch-conditioned bundles (or --table)")
    if args.per_note < 1:
        parser.error("--per-note: at least 1")
    pin_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731  (progress; the tables go to stdout)
    results = []
    for path in args.bundles:
        try:
            results.append(measure(path, args.per_note, args.seed, tuple(args.notes) if args.notes else None, args.velocity, say))
        except (NotConditioned, ValueError) as e:
            print(f"pitch_accuracy: {e}", file=sys.stderr)
            return 2
    ref = None
    if args.reference is not None:
        first = results[0]
        try:
            ref = reference(args.reference.expanduser(), tuple(first["notes"]), first["segment"], first["sample_rate"], say)
        except (OSError, ValueError) as e:
            print(f"pitch_accuracy: {e}", file=sys.stderr)
            return 2
    report = {
        "command": shlex.join(["python", "benchmarks/pitch_accuracy.py", *(sys.argv[1:] if argv is None else argv)]),
        "commit": git_commit(),
        "measured_utc": started.isoformat(timespec="seconds"),
        "wall_s": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads},
        "bundles": results,
        **({"reference": ref} if ref is not None else {}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(tables(report))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
