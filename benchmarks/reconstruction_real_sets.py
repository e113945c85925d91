"""Reconstruction from magnitudes on the three real sets' held-out folders, and what the normalisation's clip costs.

Runs `ganstream eval-reconstruction` once on set:piano/heldout, set:drums/heldout and
set:digits/heldout (other notes, kits and voices, every clip of each), on one thread:
GL-32, GL-100 and PGHI on the exact (unclipped) magnitudes, GL-32 on the magnitudes
clipped at each of --norm-clips standard deviations (each set's training statistics,
as SpecGAN normalises them), and with --network the reconstruction network, whose
input is necessarily clipped at its own norm_clip. Prints one Markdown table per set
and writes the command's JSON, with the command line, the git commit and the machine,
to --out.

    python benchmarks/reconstruction_real_sets.py [--network BUNDLE] [--norm-clips 1.5,2,2.5,3,4,none]
    python benchmarks/reconstruction_real_sets.py --table     # the tables of the JSON already written
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from quality_per_cpu import REPO, SETS, git_commit, pin_threads

OUT = REPO / "benchmarks" / "results" / "reconstruction_real_sets.json"
CLIPS = "1.5,2,2.5,3,4,none"


def markdown(one: dict[str, Any]) -> str:
    """One set's rows as a Markdown table; a clipped row's cells add its paired cost against GL-32 exact."""
    costs = {c["method"]: c for c in one["clip_costs"] if c["clip"] is not None}
    rows = one["rows"]
    lines = [f"**{one['audio']}**: {rows[0]['clips']} clips ({one['seconds']:.1f} s) from {one['files']} files, {one['held_out']}",
             "",
             "| method | input | spectral convergence | log-spectral distance | compute | bins clipped (above / below) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sc, lsd, clipped = f"{r['spectral_convergence_db']:.2f} dB", f"{r['log_spectral_distance_db']:.2f} dB", ""
        c = costs.get(r["method"])
        if c:
            sc += f" ({c['spectral_convergence_cost_db']:+.2f} ± {c['spectral_convergence_cost_sem_db']:.2f})"
            lsd += f" ({c['log_spectral_distance_cost_db']:+.2f} ± {c['log_spectral_distance_cost_sem_db']:.2f})"
            clipped = f"{100 * c['bins_clipped_above']:.4f}% / {100 * c['bins_clipped_below']:.4f}%"
        name = f"**{r['method']}**" if r["input"] == "exact" else r["method"]
        lines.append(f"| {name} | {r['input']} | {sc} | {lsd} | {r['compute_s_per_audio_s']:.4f} s/s | {clipped} |")
    return "\n".join(lines)


def tables(report: dict[str, Any]) -> str:
    p = report["spectral"]
    head = (f"n_fft {p['n_fft']}, hop {p['hop']}, segments of {report['segment']} samples; one thread. In brackets: "
            "the clip's cost against GL-32 exact on the same clips (mean ± standard error, dB).")
    return "\n\n".join([head, *(markdown(one) for one in report["sets"])])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", metavar="BUNDLE", help="a spectral or reconstruction bundle, to add the network's rows")
    p.add_argument("--norm-clips", default=CLIPS, help="clips whose cost GL-32 measures (default: %(default)s)")
    p.add_argument("--max-clips", type=int, help="at most this many clips per set (default: the command's)")
    p.add_argument("--out", type=Path, default=OUT, help="the JSON (default: %(default)s)")
    p.add_argument("--table", action="store_true", help="measure nothing: print the tables of the JSON in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table:
        print(tables(json.loads(args.out.read_text())))
        return 0
    pin_threads(1)
    from ganstream.evaluation.recon_eval import main as eval_reconstruction

    out = os.path.relpath(args.out, REPO) if args.out.resolve().is_relative_to(REPO) else str(args.out)
    command = [*(f"set:{name}/heldout" for name in SETS), "--norm-clips", args.norm_clips, "--json", out]
    command += ["--network", args.network] if args.network else []
    command += ["--max-clips", str(args.max_clips)] if args.max_clips else []
    started = datetime.datetime.now(datetime.timezone.utc)
    os.chdir(REPO)  # where the command's --json is relative to
    rc = eval_reconstruction(command)
    if rc:
        return rc
    report = json.loads(args.out.read_text())
    report = {
        "command": shlex.join(["python", "benchmarks/reconstruction_real_sets.py", *(sys.argv[1:] if argv is None else argv)]),
        "eval_reconstruction": shlex.join(["ganstream", "eval-reconstruction", *command]),
        "commit": git_commit(),
        "measured_utc": started.isoformat(timespec="seconds"),
        "wall_s": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": 1},
        **report,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(tables(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
