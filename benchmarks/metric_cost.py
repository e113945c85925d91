"""What evaluating during training costs: seconds per evaluation against seconds per training step.

Builds the run of a config (default configs/wavegan-laptop.yaml) in a temporary
directory and times, in the same process and on the same cores:

- training steps (critic_steps critic updates and one generator update, on real batches);
- the one-off preparation of an evaluation (real clips read, reference features, NDB bins);
- whole evaluations as the loop runs them (`Run.evaluate`: train.eval_samples clips through the
  EMA generator, every metric, metrics.csv, and writing best.pt when the score improves), without
  and with a classifier (an untrained one of the default size costs what a trained one does).

The fraction of training time spent evaluating is seconds per evaluation over
train.eval_every x seconds per step; the issue's budget is 10%.

    python benchmarks/metric_cost.py [--config configs/wavegan-laptop.yaml] [--steps 4] [--evals 3] [--threads N]

On a machine shared with another job, give --threads the number of free cores:
torch threads competing for a busy core slow training steps several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ganstream.evaluation.classifier import Classifier, ClassifierConfig, ClassifierNet, save_classifier
from ganstream.training.config import load_config
from ganstream.training.loop import Run, run_dir_for

BUDGET = 0.10


def timed(fn, repeat: int) -> float:
    """Mean seconds per call over `repeat` calls."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def measure(config: str, steps: int, evals: int, tmp: Path, classifier: bool) -> dict:
    overrides = [f"run.out_dir={tmp / 'runs'}", "train.progress=false", "train.tensorboard=false", "train.device=cpu"]
    if classifier:
        cfg0 = load_config(config)
        ccfg = ClassifierConfig(sample_rate=cfg0.data.sample_rate, segment=cfg0.model.segment)
        with torch.random.fork_rng(devices=[]):
            net = ClassifierNet(ccfg, 10)
        path = save_classifier(Classifier(net, ccfg, [str(i) for i in range(10)], np.zeros(ccfg.n_mels), np.ones(ccfg.n_mels)), tmp / "clf.pt")
        overrides.append(f"train.classifier={path}")
    cfg = load_config(config, overrides)
    run = Run(cfg, run_dir_for(cfg), torch.device("cpu"))
    run.trainer.step(run._batches())  # warm-up
    step_s = timed(lambda: run.trainer.step(run._batches()), steps)
    t0 = time.perf_counter()
    _ = run.evaluator.reference
    setup_s = time.perf_counter() - t0
    run.evaluate()  # warm-up: the first one always writes best.pt
    eval_s = timed(run.evaluate, evals)
    every = cfg.train.eval_every
    return {
        "classifier": classifier,
        "eval_samples": cfg.train.eval_samples,
        "eval_every": every,
        "s_per_step": round(step_s, 3),
        "s_per_eval": round(eval_s, 3),
        "setup_s": round(setup_s, 2),
        "fraction_at_eval_every": round(eval_s / (every * step_s), 5),
        "first_interval_fraction": round((eval_s + setup_s) / (every * step_s), 5),
        "within_budget": eval_s / (every * step_s) <= BUDGET,
        "smallest_eval_every_within_budget": int(np.ceil(eval_s / (BUDGET * step_s))),
        "heldout_clips": len(run.evaluator.reference.heldout_nn),
        "train_reference_clips": len(run.evaluator.reference.train_spec),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/wavegan-laptop.yaml")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--evals", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/metric_cost.json")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results = []
    for classifier in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(args.config, args.steps, args.evals, Path(tmp), classifier)
        results.append(row)
        print(f"{'with' if classifier else 'without':7} classifier: {row['s_per_step']:.2f} s/step, {row['s_per_eval']:.2f} s/eval "
              f"({row['eval_samples']} clips), setup {row['setup_s']:.1f} s once -> {100 * row['fraction_at_eval_every']:.2f}% "
              f"of training time at eval_every={row['eval_every']} (budget {100 * BUDGET:.0f}%)")
    report = {
        "benchmark": "metric_cost",
        "config": args.config,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "torch": torch.__version__,
        "budget": BUDGET,
        "results": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
