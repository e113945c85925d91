"""Rebuilds the embedded default bundle (realtime/default_bundle/) from nothing: train, then export.

    python tools/build_default_bundle.py [--steps N] [--runs DIR] [--resume]

Both commands it runs are recorded in the bundle's manifest (provenance.command),
so the shipped bundle says exactly how it was made.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "default-bundle.yaml"
TARGET = ROOT / "realtime" / "default_bundle"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--runs", type=Path, default=ROOT / "runs")
    p.add_argument("--resume", action="store_true", help="continue the run of an earlier build instead of starting over")
    args = p.parse_args()

    from ganstream.export.bundle import export_run
    from ganstream.training.config import load_config
    from ganstream.training.loop import run_dir_for

    run_dir = run_dir_for(load_config(CONFIG, [f"run.out_dir={args.runs}"]))
    if args.resume and (run_dir / "checkpoints").is_dir():
        train = ["train", "--resume", str(run_dir), f"train.steps={args.steps}"]
    else:
        train = ["train", str(CONFIG.relative_to(ROOT)), f"train.steps={args.steps}", "--out", str(args.runs)]
    print("$", shlex.join(train))
    subprocess.run(train, cwd=ROOT, check=True)
    export = ["ganstream", "export", str(run_dir), "-o", str(TARGET.relative_to(ROOT)), "--name", "piano (default)"]
    print("$", shlex.join(export))
    export_run(run_dir, TARGET, name="piano (default)", command=" && ".join(shlex.join(c) for c in (train, export)), log=print)


if __name__ == "__main__":
    sys.exit(main())
