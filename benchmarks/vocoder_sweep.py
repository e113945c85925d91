"""The reconstruction network at a fixed CPU budget: which design beats Griffin-Lim on real recordings.

Trains each vocoder config on each real set (training/data/real_sets.py) for a budget of training CPU
time, exports it, and scores it with `ganstream eval-reconstruction` on the set's held-out split
(other notes, kits, voices) beside Griffin-Lim and PGHI on the same clips:

    python benchmarks/vocoder_sweep.py --configs configs/vocoder.yaml,model.phase=residual --sets piano --budget 10
    python benchmarks/vocoder_sweep.py --score-only ...   # score runs an earlier call trained

- **Budget** is CPU time of this process (`time.process_time`), as in quality_per_cpu.py, whose
  clock this borrows; a run that reaches train.steps first stops there (train.steps is also the
  horizon of the learning-rate decay, so give it about the steps the budget allows).
- **Scores** are the eval-reconstruction rows against exact (unclipped) magnitudes: spectral
  convergence and log-spectral distance in dB (lower is better) and one-thread compute seconds per
  second of audio in ONNX Runtime, with GL-32 and GL-100 on the same clips.

Rows go to benchmarks/results/vocoder_sweep.json as each is measured, with the command and commit.
Runs go under --runs (default /tmp/ganstream-vocoder-sweep), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_per_cpu import REPO, BudgetClock, BudgetStops, _utc_now, git_commit, pin_threads  # noqa: E402  (one budget clock)

OUT = REPO / "benchmarks" / "results" / "vocoder_sweep.json"


def config_for(spec: str, set_name: str, runs: Path) -> Any:
    """CONFIG[,section.key=value...] trained on the set's training split, under runs."""
    from ganstream.training.config import load_config

    path, *overrides = spec.split(",")
    return load_config(REPO / path if not Path(path).is_absolute() else path, [
        *overrides, f"data.source=set:{set_name}", f"run.out_dir={runs}", "train.device=cpu", "train.progress=false",
    ])


def train(spec: str, set_name: str, budgets: list[float], runs: Path, log: Any) -> tuple[Path, list[dict[str, Any]]]:
    """Trains to the last budget (or train.steps), snapshotting the state at each budget crossed.

    Returns the run directory and, per budget reached, what training measured there and its snapshot.
    A run that reaches train.steps first records its final state under the first budget it did not reach.
    """
    import torch

    from ganstream.training.loop import run_dir_for
    from ganstream.training.models import family_of

    cfg = config_for(spec, set_name, runs)
    run_dir = run_dir_for(cfg)
    clock = BudgetClock()
    measured: list[dict[str, Any]] = []

    def on_budget(run: Any, budget: float, snap: Path, cpu: float, wall: float) -> None:
        measured.append(dict(budget_cpu_min=budget, step=run.step, cpu_min=round(cpu / 60, 3), wall_min=round(wall / 60, 3), checkpoint=str(snap)))

    with clock.excluded():
        run = family_of(cfg.model).run_class()(cfg, run_dir, torch.device("cpu"))
    log(f"{set_name} / {spec}: training {run_dir} for {', '.join(f'{b:g}' for b in budgets)} CPU-min")
    run.train(callbacks=(BudgetStops(budgets, clock, on_budget),))
    unreached = [b for b in sorted(budgets) if b not in {m["budget_cpu_min"] for m in measured}]
    if unreached:  # train.steps came first
        run.checkpoint()
        measured.append(dict(budget_cpu_min=unreached[0], step=run.step, cpu_min=round(clock.cpu() / 60, 3),
                             wall_min=round(clock.wall() / 60, 3), checkpoint="latest"))
    (run_dir / "sweep.json").write_text(json.dumps(measured))
    return run_dir, measured


def score(run_dir: Path, set_name: str, max_clips: int, checkpoint: str, tag: str) -> dict[str, Any]:
    """Exports one checkpoint of the run and scores it on the set's held-out split."""
    bundle, report = run_dir / f"sweep-{tag}.gsb", run_dir / f"sweep-{tag}-eval.json"
    # The commands inherit pin_threads' OMP_NUM_THREADS and MKL_NUM_THREADS.
    subprocess.run(["ganstream", "export", str(run_dir), "--checkpoint", checkpoint, "-o", str(bundle)], check=True, capture_output=True)
    subprocess.run(["ganstream", "eval-reconstruction", f"set:{set_name}/heldout", "--network", str(bundle),
                    "--max-clips", str(max_clips), "--json", str(report)], check=True, capture_output=True)
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["configs/vocoder.yaml"], help="CONFIG[,section.key=value...] each")
    p.add_argument("--sets", nargs="+", default=["piano"], help="real set names (default: piano)")
    p.add_argument("--budget", type=float, nargs="+", default=[10.0],
                   help="training CPU-minutes per run; several give one run scored at each (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default: %(default)s)")
    p.add_argument("--max-clips", type=int, default=48, help="held-out clips scored per set (default: %(default)s)")
    p.add_argument("--runs", type=Path, default=Path("/tmp/ganstream-vocoder-sweep"))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--score-only", action="store_true", help="train nothing: score runs an earlier call trained")
    args = p.parse_args(argv)
    pin_threads(args.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    command = shlex.join(["python", "benchmarks/vocoder_sweep.py", *(sys.argv[1:] if argv is None else argv)])
    commit = git_commit()
    rows = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    for set_name in args.sets:
        for spec in args.configs:
            if args.score_only:
                from ganstream.training.loop import run_dir_for

                run_dir = run_dir_for(config_for(spec, set_name, args.runs))
                measured = json.loads((run_dir / "sweep.json").read_text())
            else:
                run_dir, measured = train(spec, set_name, args.budget, args.runs, log)
            for m in measured:
                m = dict(m)
                checkpoint, budget = m.pop("checkpoint"), m.pop("budget_cpu_min")
                report = score(run_dir, set_name, args.max_clips, checkpoint, f"{budget:g}")
                row = {"config": spec, "set": set_name, "budget_cpu_min": budget, **m, "threads": args.threads,
                       "eval": report, "run": str(run_dir), "command": command, "commit": commit,
                       "measured_utc": _utc_now()}
                rows = [r for r in rows if (r["config"], r["set"], r["budget_cpu_min"]) != (spec, set_name, budget)] + [row]
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_suffix(".json.tmp")
                tmp.write_text(json.dumps({"benchmark": "vocoder_sweep", "rows": rows}, indent=2) + "\n")
                os.replace(tmp, args.out)
                log(f"{set_name} / {spec}: {budget:g} CPU-min, step {m['step']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
