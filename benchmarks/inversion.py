"""How near `ganstream invert` gets to real held-out sounds, and how fast: the encoder against random search.

For each real set (training/data/real_sets.py: piano, drums, digits), a WaveGAN run trained on it is
exported with an encoder (`ganstream export RUN --encoder`, once, under --work), and every held-out clip
(other notes, kits and voices than training's; evenly spread, --clips of them) is inverted as
`ganstream invert` does (Inverter.prepare: cut from its onset). Each row is the multi-resolution
spectral distance (core/distance.py) of what the bundle generates to the clip, lower is nearer:

- **encoder**: the encoder's latent alone, and its time (the encoder graph, its proposals heard and its
  refiner's corrections; and with the generator run that measures the distance); beside it, for an encoder
  that proposes several latents, its first proposal corrected as if it proposed no other (the ablation);
- **random 1000**: the best of 1000 random latents (the issue's baseline), and its time;
- **encoder + CMA-ES**: --cma generations of CMA-ES on ONNX Runtime from the encoder's latent;
- **encoder + Adam**: --adam gradient steps through the run's torch generator from the encoder's latent;
- **nearest training clip**: the training clip nearest the held-out clip (up to --train-clips of them),
  the memorisation reference: how near a model that had learnt the training set by heart would get.

`wins` is the fraction of clips where the encoder is nearer than the best of 1000 random latents (the
issue asks 80%), and where refinement is nearer still than the encoder. One thread throughout.

    python benchmarks/inversion.py --sets piano drums digits

Rows go to benchmarks/results/inversion.json as each set finishes, with the command and commit. The
full run shares the machine with its own searches (and whatever else runs); `--time-only` afterwards
times the encoder column alone on the same bundles, for the time an inversion takes on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_per_cpu import REPO, _utc_now, git_commit, pin_threads  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "inversion.json"
# The WaveGAN runs of quality_per_cpu.py the table uses, by set (their best.pt); --runs SET=DIR replaces one.
RUNS = {
    "piano": "/tmp/ganstream-qpc/wavegan-laptop-57e9ef3e",
    "drums": "/tmp/ganstream-qpc/wavegan-cpu-baseline-81918151",
    "digits": "/tmp/ganstream-qpc/wavegan-laptop-10dd51ec",
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=list(RUNS))
    p.add_argument("--runs", nargs="*", default=[], metavar="SET=RUN_DIR")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--clips", type=int, default=40, help="held-out clips per set (default: %(default)s)")
    p.add_argument("--random", type=int, default=1000)
    p.add_argument("--cma", type=int, default=40, help="CMA-ES generations (default: %(default)s)")
    p.add_argument("--adam", type=int, default=50, help="Adam steps through the torch generator (default: %(default)s)")
    p.add_argument("--train-clips", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="the export's seed, the encoder's among them: how much the counts owe to it")
    p.add_argument("--proposals", type=int, default=None, help="the export's --encoder-proposals (default: export's own)")
    p.add_argument("--corrections", type=int, nargs="*", default=[], metavar="K",
                   help="also measure the encoder column with K corrections in place of the bundle's count, each K (a host "
                        "reading the same bundle with its manifest's count changed)")
    p.add_argument("--beam", type=int, default=None, metavar="B",
                   help="the proposals the host corrects side by side, in place of the bundle's `refiner.beam` (a host reading the "
                        "same bundle with its manifest's beam changed)")
    p.add_argument("--work", type=Path, default=Path("/tmp/ganstream-inversion"))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the table of --out and stop")
    p.add_argument("--threads", type=int, default=1,
                   help="with --time-only: onnxruntime threads (default 1; `ganstream invert` uses every core), into "
                        "seconds.encoder_quiet_N_threads for N > 1")
    p.add_argument("--time-only", action="store_true",
                   help="time the encoder column alone on the bundles already under --work, and add it to --out's rows as "
                        "seconds.encoder_quiet: the full run's times share the machine with the searches it also runs")
    return p.parse_args()


def bundle_for(set_name: str, run: str, checkpoint: str, work: Path, seed: int = 0, proposals: int | None = None) -> Path:
    out = work / f"{set_name}.gsb"
    if not (out / "manifest.json").is_file():
        cmd = ["ganstream", "export", run, "-o", str(out), "--checkpoint", checkpoint, "--encoder", "--controls", "0", "--seed", str(seed)]
        cmd += ["--encoder-proposals", str(proposals)] if proposals is not None else []
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return out


def clips_of(source: str, segment: int, n: int) -> np.ndarray:
    from ganstream.training.config import DataConfig
    from ganstream.training.data.dataset import load_dataset

    cfg = DataConfig(source=source, sample_rate=16000, holdout=0.0, hop=1.0, random_offset=False)
    cfg.validate()
    segs = load_dataset(cfg, segment, 0, "train", progress=False)
    idx = np.unique(np.linspace(0, len(segs) - 1, min(n, len(segs))).astype(np.int64))
    return segs.batch(idx, 0)


def measure(set_name: str, args: argparse.Namespace) -> dict[str, Any]:
    from ganstream.core.distance import spectral_distance
    from ganstream.export.invert import run_refiner
    from ganstream.realtime.bundle import load_bundle
    from ganstream.realtime.inversion import Inverter

    runs = {**RUNS, **dict(r.split("=", 1) for r in args.runs)}
    path = bundle_for(set_name, runs[set_name], args.checkpoint, args.work, args.seed, args.proposals)
    bundle = load_bundle(path)
    inv = Inverter(bundle, provider="cpu", threads=1)
    if args.beam is not None:
        inv.beam = args.beam
    refiner = run_refiner(Path(runs[set_name]), args.checkpoint, bundle)
    held = clips_of(f"set:{set_name}/heldout", bundle.segment, args.clips)
    train = clips_of(f"set:{set_name}", bundle.segment, args.train_clips)
    per_clip = []
    for k, raw in enumerate(held):
        x, _ = inv.prepare(raw, bundle.sample_rate, f"held-out clip {k}")
        t = time.perf_counter()
        row = inv.encode(x)
        t_encode = time.perf_counter() - t
        enc_d = float(inv.distance(x, row[None])[0])
        t_encoder = time.perf_counter() - t
        at = {}
        for kk in args.corrections:  # the same bundle with another count of corrections
            corrections, inv.corrections = inv.corrections, kk
            t = time.perf_counter()
            z = inv.encode(x)
            at[kk] = (float(inv.distance(x, z[None])[0]), time.perf_counter() - t)
            inv.corrections = corrections
        first_d = None
        if inv.proposals > 1:  # the ablation: the encoder's first proposal corrected, as if it proposed no other
            proposals, inv.proposals = inv.proposals, 1
            first = inv.encode(x)
            inv.proposals = proposals
            first_d = float(inv.distance(x, first[None])[0])
        t = time.perf_counter()
        _, rand_d = inv.random_search(x, args.random, seed=k)
        t_random = time.perf_counter() - t
        t = time.perf_counter()
        _, cma_d = inv.refine(x, row, args.cma, seed=k)
        t_cma = time.perf_counter() - t
        t = time.perf_counter()
        adam_row, _ = refiner(x, row.copy(), args.adam, k)
        adam_d = min(enc_d, float(inv.distance(x, np.asarray(adam_row, np.float32)[None])[0]))
        t_adam = time.perf_counter() - t
        nearest = float(np.min(spectral_distance(x, train)))
        per_clip.append(dict(encoder=enc_d, first_proposal=first_d, random=rand_d, cma=cma_d, adam=adam_d, nearest_training=nearest,
                             t_encode=t_encode, t_encoder=t_encoder, t_random=t_random, t_cma=t_cma, t_adam=t_adam,
                             corrections={str(kk): dict(encoder=d, t_encode=t_k) for kk, (d, t_k) in at.items()}))
        print(f"{set_name} clip {k + 1}/{len(held)}: encoder {enc_d:.3f}, random {rand_d:.3f}, cma {cma_d:.3f}, adam {adam_d:.3f}, "
              f"nearest training {nearest:.3f}", flush=True)
    arr = {key: np.array([c[key] for c in per_clip]) for key in per_clip[0] if key != "corrections"}
    scan = {}
    for kk in map(str, args.corrections):
        d = np.array([c["corrections"][kk]["encoder"] for c in per_clip])
        scan[kk] = {"encoder_beats_random": float(np.mean(d < arr["random"])), "distance": float(d.mean()),
                    "seconds_encoder_graph": float(np.median([c["corrections"][kk]["t_encode"] for c in per_clip]))}
    return {
        "set": set_name,
        "run": runs[set_name],
        "bundle": str(path),
        "clips": len(per_clip),
        "distance": {key: float(arr[key].mean()) for key in ("encoder", "random", "cma", "adam", "nearest_training")},
        "median_distance": {key: float(np.median(arr[key])) for key in ("encoder", "random", "cma", "adam", "nearest_training")},
        "encoder_beats_random": float(np.mean(arr["encoder"] < arr["random"])),
        "proposals": inv.proposals,
        # The same encoder with its first proposal alone (then the corrections): what choosing among the proposals adds.
        "first_proposal_beats_random": float(np.mean(arr["first_proposal"] < arr["random"])) if inv.proposals > 1 else None,
        "first_proposal_distance": float(arr["first_proposal"].mean()) if inv.proposals > 1 else None,
        "corrections": inv.corrections,
        "beam": inv.beam,
        # The encoder column again with other counts of corrections (--corrections), the same proposals and refiner.
        "corrections_scan": scan,
        "cma_beats_encoder": float(np.mean(arr["cma"] < arr["encoder"])),
        "adam_beats_encoder": float(np.mean(arr["adam"] < arr["encoder"])),
        "seconds": {
            "encoder_graph": float(np.median(arr["t_encode"])),
            "encoder_with_distance": float(np.median(arr["t_encoder"])),
            "random": float(np.median(arr["t_random"])),
            "cma": float(np.median(arr["t_cma"])),
            "adam": float(np.median(arr["t_adam"])),
        },
        "settings": {"random": args.random, "cma_generations": args.cma, "adam_steps": args.adam, "train_clips": len(train),
                     "checkpoint": args.checkpoint, "encoder": bundle.provenance.get("encoder", {}).get("config")},
        "per_clip": per_clip,
    }


def time_encoder(set_name: str, args: argparse.Namespace) -> float:
    """The median seconds of one inversion without refinement (the encoder column) over the held-out clips."""
    from ganstream.realtime.bundle import load_bundle
    from ganstream.realtime.inversion import Inverter

    inv = Inverter(load_bundle(args.work / f"{set_name}.gsb"), provider="cpu", threads=args.threads)
    if args.beam is not None:
        inv.beam = args.beam
    times = []
    for k, raw in enumerate(clips_of(f"set:{set_name}/heldout", inv.segment, args.clips)):
        x, _ = inv.prepare(raw, inv.sample_rate, f"held-out clip {k}")
        t = time.perf_counter()
        inv.encode(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def table(doc: dict[str, Any]) -> str:
    head = (f"{'set':<7} {'encoder':>8} {'random 1000':>12} {'enc+CMA-ES':>11} {'enc+Adam':>9} {'nearest train':>14} "
            f"{'enc<random':>11} {'refined<enc':>12} {'encoder ms':>11} {'random s':>9} {'CMA s':>6} {'Adam s':>7}")
    lines = [head, "-" * len(head)]
    for r in doc["sets"]:
        d, s = r["distance"], r["seconds"]
        refined = max(r["cma_beats_encoder"], r["adam_beats_encoder"])
        lines.append(
            f"{r['set']:<7} {d['encoder']:>8.3f} {d['random']:>12.3f} {d['cma']:>11.3f} {d['adam']:>9.3f} {d['nearest_training']:>14.3f} "
            f"{r['encoder_beats_random']:>10.0%} {refined:>11.0%} {1000 * s['encoder_graph']:>11.1f} {s['random']:>9.2f} {s['cma']:>6.2f} {s['adam']:>7.2f}"
        )
        if "encoder_quiet" in s:
            lines.append(f"  encoder alone on a quiet machine (--time-only): {1000 * s['encoder_quiet']:.1f} ms")
        for key in sorted(k for k in s if k.startswith("encoder_quiet_")):
            lines.append(f"  the same on {key.split('_')[2]} threads: {1000 * s[key]:.1f} ms")
        for k, c in r.get("corrections_scan", {}).items():
            lines.append(f"  with {k} corrections: encoder {c['distance']:.3f}, nearer than random {c['encoder_beats_random']:.0%}, "
                         f"{1000 * c['seconds_encoder_graph']:.1f} ms")
    return "\n".join(lines)


def main() -> int:
    args = parse()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return 0
    pin_threads(args.threads if args.time_only else 1)
    args.work.mkdir(parents=True, exist_ok=True)
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    command = " ".join(["python", "benchmarks/inversion.py", *sys.argv[1:]])
    threads = "" if args.threads == 1 else f"_{args.threads}_threads"  # where --time-only's figures go
    if args.time_only:
        doc["time_only_command" + threads] = command
    else:
        doc.update({"benchmark": "inversion", "command": command, "commit": git_commit(), "threads": 1})
    sets = {r["set"]: r for r in doc.get("sets", [])}
    for name in args.sets:
        if args.time_only:
            sets[name]["seconds"]["encoder_quiet" + threads] = time_encoder(name, args)
        else:
            sets[name] = measure(name, args)
        doc["sets"] = [sets[k] for k in sorted(sets, key=list(RUNS).index)]
        doc["measured_utc"] = _utc_now()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(table(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
