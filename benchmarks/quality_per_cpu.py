"""Quality per CPU-minute: how close a config gets to real data on a laptop-sized CPU budget.

Trains each config on each real set (training/data/real_sets.py) for fixed budgets of training
CPU time, and at every budget scores the best checkpoint so far with the code `ganstream eval`
runs, against the set's held-out split (other kits, pitches, voices):

    python benchmarks/quality_per_cpu.py                                  # the baseline, 15/30/60 CPU-min
    python benchmarks/quality_per_cpu.py --budgets 15 --threads 1         # one core, the other left free
    python benchmarks/quality_per_cpu.py --configs configs/wavegan-cpu-baseline.yaml,loss.kind=hinge --resume

- **Budget** is CPU time of this process (`time.process_time`, every thread counted), so a run
  pinned to one thread measures the same while another job uses the other core. The in-training
  evaluations and the scoring at each budget are kept out of it: they measure, and their cost
  depends on train.eval_every, not on the recipe. Wall minutes are kept out alike.
- **One run per (config, set)**: when the CPU time crosses a budget, the state of that step is
  evaluated too, best.pt (train.best_metric=fd_logmel against a third of the training clips,
  `--select-against`; never the held-out split, which is only scored) is copied to `budgets/best-<minutes>.pt` and scored. After the
  last budget the run checkpoints and stops; `--resume` with a larger budget continues it from
  there with its CPU time, and skips rows the JSON already has.
- **Position** = log(FD / floor) / log(ceiling / floor): 0 is real against real (`ganstream
  eval`'s floor), 1 is noise shaped to the data's spectrum and loudness (its ceiling). `ganstream
  eval RUN set:NAME/heldout` takes every clip of the held-out folder as its reference (the run
  trained on another source), and the floor is the run's training clips scored against it.
  `--rescore` scores the rows' snapshots again, after a change to evaluation, without training.
- **Digits** are also scored by a classifier trained once with `ganstream train-classifier` on the
  digits' training folder (cached beside the JSON): classifier FD and its position, and IS as a
  fraction of held-out real IS, both IS taken over the same number of clips and splits.

Rows go to benchmarks/results/quality_per_cpu.json as each is measured, with the command and
commit; the plot (position against CPU-minutes, one line per config and set) goes beside it.
Runs go under --runs (default /tmp/ganstream-qpc), never into the repository.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: one invocation at a time there
    fcntl = None

REPO = Path(__file__).resolve().parent.parent
BASELINE = "configs/wavegan-cpu-baseline.yaml"
SETS = ("piano", "drums", "digits")
BUDGETS = (15.0, 30.0, 60.0)  # CPU-minutes
# Sets whose training folder holds one sub-folder per class: scored by a classifier trained on it.
CLASSIFIED = {"digits"}
OUT = REPO / "benchmarks" / "results" / "quality_per_cpu.json"
EVAL_EVERY = 250  # ~2 minutes of one core for wavegan-cpu: finer than its 500, so best.pt tracks the budget
IS_SPLITS = 10  # inception_score's default, for generated and real clips alike
RESUME_CKPT, RESUME_CLOCK = "resume.pt", "budget_clock.json"  # the state at the last budget, and its clock


def position(fd: float | None, floor: float | None, ceiling: float | None) -> float | None:
    """log(fd / floor) / log(ceiling / floor): 0 = real against real, 1 = shaped noise; None when undefined."""
    if fd is None or floor is None or ceiling is None or min(fd, floor, ceiling) <= 0 or ceiling <= floor:
        return None
    return math.log(fd / floor) / math.log(ceiling / floor)


# ---- the budget clock ---------------------------------------------------------------------------


class BudgetClock:
    """Training CPU seconds (and wall seconds) of this process, less the spans run under `excluded()`.

    `offset_*` carries the time of a run resumed from an earlier invocation. Exclusion nests: an
    evaluation forced inside the scoring span is not subtracted twice.
    """

    def __init__(self, offset_cpu: float = 0.0, offset_wall: float = 0.0):
        self._cpu0, self._wall0 = time.process_time() - offset_cpu, time.monotonic() - offset_wall
        self._depth = 0

    def cpu(self) -> float:
        return time.process_time() - self._cpu0

    def wall(self) -> float:
        return time.monotonic() - self._wall0

    @contextmanager
    def excluded(self) -> Iterator[None]:
        self._depth += 1
        cpu, wall = time.process_time(), time.monotonic()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._cpu0 += time.process_time() - cpu
                self._wall0 += time.monotonic() - wall


class ClockedEvaluator:
    """The in-training evaluator (a `loop.QualityHook`) with its time kept off the budget clock."""

    def __init__(self, inner: Any, clock: BudgetClock):
        self.inner, self.clock = inner, clock

    @property
    def best(self) -> dict[str, Any] | None:
        return self.inner.best

    def __call__(self, generator: Any) -> dict[str, float]:
        with self.clock.excluded():
            return self.inner(generator)

    def improved(self, scores: dict[str, float], step: int) -> bool:
        return self.inner.improved(scores, step)


@dataclass
class BudgetStops:
    """A `Run.train` callback: at each budget crossed, snapshot the best checkpoint so far and hand it to
    `on_budget(run, minutes, checkpoint, cpu_s, wall_s)` (off the clock); after the last, stop the run."""

    minutes: list[float]
    clock: BudgetClock
    on_budget: Callable[[Any, float, Path, float, float], None]
    pending: list[float] = field(init=False)
    stopped: dict[str, Any] | None = None  # {"step", "cpu_s", "wall_s"} where the run stopped after the last budget

    def __post_init__(self) -> None:
        self.pending = sorted(self.minutes)

    def __call__(self, run: Any) -> None:
        from ganstream.training.checkpoint import BEST, LATEST

        while self.pending and self.clock.cpu() >= 60 * self.pending[0]:
            minutes = self.pending.pop(0)
            cpu, wall = self.clock.cpu(), self.clock.wall()
            with self.clock.excluded():
                # The state at the budget competes for best too, whatever the eval schedule.
                if run.evaluator is not None and run.step % run.cfg.train.eval_every:
                    run.evaluate()
                best = run.ckpt_dir / BEST
                if not best.is_file():  # evaluation was off (too little data): the state at the budget
                    run.checkpoint()
                    best = run.ckpt_dir / LATEST
                snap = run.run_dir / "budgets" / f"best-{minutes:g}.pt"
                snap.parent.mkdir(exist_ok=True)
                shutil.copyfile(best, snap)
                self.on_budget(run, minutes, snap, cpu, wall)
        if not self.pending and not run.stop_requested:
            # The loop checkpoints at this step on a stop: that checkpoint and this clock resume together.
            self.stopped = {"step": run.step, "cpu_s": self.clock.cpu(), "wall_s": self.clock.wall()}
            run.request_stop()


# ---- the results file ---------------------------------------------------------------------------


def row_key(row: dict[str, Any]) -> tuple[str, str, float]:
    return row["config"], row["set"], float(row["budget_cpu_min"])


class Results:
    """The JSON rows, rewritten whole (atomically) with the plot after every row."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"] if path.is_file() else []

    def has(self, config: str, set_name: str, minutes: float) -> bool:
        return any(row_key(r) == (config, set_name, float(minutes)) for r in self.rows)

    def put(self, row: dict[str, Any]) -> None:
        # Several invocations (one per set, or a --rescore beside a running benchmark) share the file:
        # each re-reads it under an exclusive lock, so none loses another's rows.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            self._put(row)

    def _put(self, row: dict[str, Any]) -> None:
        if self.path.is_file():
            self.rows = json.loads(self.path.read_text())["rows"]
        keys = [row_key(r) for r in self.rows]
        if row_key(row) in keys:
            self.rows[keys.index(row_key(row))] = row
        else:
            self.rows.append(row)
        doc = {
            "benchmark": "quality_per_cpu",
            "what": "position = log(FD / floor) / log(ceiling / floor) of the best checkpoint at each training CPU budget; "
            "0 = real against real, 1 = noise shaped to the data's spectrum (benchmarks/quality_per_cpu.py)",
            "rows": self.rows,
        }
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.path)
        plot(self.rows, self.path.with_suffix(".png"))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r["position"] is not None:
            lines.setdefault((r["config"], r["set"]), []).append((r["cpu_min"], r["position"]))
    for (config, set_name), pts in sorted(lines.items()):
        ax.plot(*zip(*sorted(pts)), marker="o", label=f"{set_name}: {config}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8)
    ax.axhline(0.35, color="grey", lw=0.8, ls="--")  # issue 11's bar at 60 CPU-minutes
    ax.set_title("against every clip of each set's held-out folder", fontsize=9)
    ax.set_xlabel("training CPU-minutes")
    ax.set_ylabel("log-mel FD position (0 real, 1 shaped noise)")
    ax.set_xlim(0, 1.1 * max((r["cpu_min"] for r in rows), default=1.0))
    ax.set_ylim(-0.05, 1.15)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the lines sit where a corner legend would
    ax.grid(alpha=0.3)
    tmp = path.with_suffix(".tmp")
    fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # long config specs widen the legend
    plt.close(fig)
    os.replace(tmp, path)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows by set, config and budget: position, FD beside its floor and ceiling, steps, digits' IS."""
    lines = ["| set | config | CPU-min | best step / trained (chosen on) | position | FD (floor, ceiling) | IS / real IS |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    order = {name: i for i, name in enumerate(SETS)}
    for r in sorted(rows, key=lambda r: (order.get(r["set"], len(SETS)), r["set"], r["config"], r["budget_cpu_min"])):
        pos = "n/a" if r["position"] is None else f"{r['position']:.3f}"
        is_frac = f"{r['is_fraction']:.3f}" if r.get("is_fraction") is not None else ""
        chosen = "train" if r.get("best_chosen_against") == "train" else "holdout"  # rows before --select-against: holdout
        lines.append(f"| {r['set']} | `{r['config']}` | {r['budget_cpu_min']:g} | {r['step']} / {r['steps_trained']} ({chosen}) | {pos} | "
                     f"{r['fd']:.0f} ({r['floor']:.0f}, {r['ceiling']:.0f}) | {is_frac} |")
    return "\n".join(lines)


# ---- scoring ------------------------------------------------------------------------------------


def set_sources(name: str) -> tuple[str, str]:
    """(training source, held-out source) of a set name; any other source (synth:piano, a folder) is
    scored against its own holdout, as `ganstream eval RUN SOURCE` does."""
    return (f"set:{name}", f"set:{name}/heldout") if name in SETS else (name, name)


def inception_fraction(generated_probs: np.ndarray, real_probs: np.ndarray) -> dict[str, float]:
    """IS of generated clips as a fraction of real IS, on equally many clips in equally many splits:
    IS grows with the clips per split (the marginal is estimated from them), so unequal counts bias it."""
    from ganstream.evaluation.metrics import inception_score

    n = min(len(generated_probs), len(real_probs))
    # inception_score shuffles before it splits; the clips kept are a random n of each, not the first
    # n of folder order (a few classes).
    order = np.random.default_rng(0x15).permutation
    gen = inception_score(generated_probs[order(len(generated_probs))[:n]], IS_SPLITS)[0]
    real = inception_score(real_probs[order(len(real_probs))[:n]], IS_SPLITS)[0]
    return {"is_matched": gen, "is_real_heldout": real, "is_fraction": gen / real, "is_clips": n}


def heldout_clips(src: Any) -> np.ndarray:
    """Every segment of the held-out source (both of its splits), as `ganstream eval` reads it."""
    from ganstream.training.data import load_dataset

    parts = [load_dataset(src.data, src.segment, src.seed, split, progress=False) for split in ("train", "holdout")]
    return np.concatenate([p.batch(np.arange(len(p)), 0) for p in parts if len(p)])


def score(run_dir: Path, checkpoint: Path, heldout: str, classifier_path: Path | None) -> dict[str, Any]:
    """`ganstream eval RUN HELDOUT --checkpoint FILE [--classifier CLF]`'s report, condensed to a row's fields."""
    from ganstream.evaluation.classifier import load_classifier
    from ganstream.evaluation.evaluate import evaluate_source, open_run

    src = open_run(run_dir, str(checkpoint), heldout, "cpu")
    classifier = load_classifier(classifier_path) if classifier_path else None
    report = evaluate_source(src, src.default_samples, classifier)
    m = report["metrics"]
    fd = m["fd_logmel"]
    out: dict[str, Any] = {
        "fd": fd["generated"], "floor": fd["floor"], "ceiling": fd["ceiling"],
        "position": position(fd["generated"], fd["floor"], fd["ceiling"]),
        # Diversity beside FD: a pooled-frame FD can improve while the output collapses (docs: quality references).
        "ndb": m["ndb"]["generated"], "ndb_floor": m["ndb"]["floor"],
        "eval_samples": report["samples"], "eval_data": report["data"],
        "metrics": {k: {c: v[c] for c in ("generated", "floor", "ceiling")} for k, v in m.items()},
    }
    if classifier is not None:
        fdc = m["fd_classifier"]
        out["fd_classifier"] = fdc["generated"]
        out["position_classifier"] = position(fdc["generated"], fdc["floor"], fdc["ceiling"])
        out["is"] = m["is"]["generated"]
        real = heldout_clips(src)
        out |= inception_fraction(classifier.predict(src.generate(len(real)))[0], classifier.predict(real)[0])
    return out


def ensure_classifier(path: Path, folder: Path, log: Callable[[str], None]) -> Path:
    """The digits classifier, trained once with `ganstream train-classifier` and reused after."""
    if not path.is_file():
        from ganstream.evaluation.classifier import main as train_classifier

        log(f"training the classifier {path} on {folder} ...")
        if train_classifier([str(folder), "-o", str(path)]) != 0:
            raise RuntimeError(f"ganstream train-classifier {folder} failed")
    return path


# ---- one (config, set) run ----------------------------------------------------------------------


@dataclass
class Bench:
    """What every run of an invocation shares."""

    results: Results
    runs: Path
    threads: int
    eval_every: int
    select_against: str  # train.eval_against: what best.pt is chosen on
    classifier: Path | None  # for CLASSIFIED sets
    command: str
    commit: str
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)


def config_for(spec: str, set_name: str, bench: Bench) -> Any:
    """CONFIG[,section.key=value...] trained on the set, under bench.runs, evaluated every bench.eval_every steps."""
    from ganstream.training.config import load_config

    path, *overrides = spec.split(",")
    return load_config(REPO / path if not Path(path).is_absolute() else path, [
        *overrides,
        f"data.source={set_sources(set_name)[0]}",
        f"run.out_dir={bench.runs}",
        f"train.eval_every={bench.eval_every}",
        "train.best_metric=fd_logmel",
        f"train.eval_against={bench.select_against}",
        "train.device=cpu",
        "train.progress=false",
    ])


def _resume_point(run_dir: Path, before_s: float) -> dict[str, Any] | None:
    """The clock of a run an earlier invocation stopped at its last budget, with its checkpoint put back
    as latest.pt (later periodic checkpoints of a run killed on its way to the next budget are dropped)."""
    from ganstream.training.checkpoint import LATEST, load_checkpoint

    state_file, saved, latest = run_dir / RESUME_CLOCK, run_dir / "budgets" / RESUME_CKPT, run_dir / "checkpoints" / LATEST
    if not state_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    source = saved if saved.is_file() else latest
    if state["cpu_s"] >= before_s or not source.is_file() or load_checkpoint(source)["step"] != state["step"]:
        return None
    if source != latest:
        shutil.copyfile(source, latest)
    return state


def _clear_run(run_dir: Path) -> None:
    """Everything of a run but the snapshots that rows already in the JSON point at."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.is_dir() and path.name != "budgets":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
    (run_dir / "budgets" / RESUME_CKPT).unlink(missing_ok=True)


def run_config_on_set(spec: str, set_name: str, minutes: list[float], bench: Bench, resume: bool) -> None:
    """Trains `spec` on `set_name` until the last budget missing from the results, writing a row at each."""
    import torch

    from ganstream.evaluation.evaluate import Evaluator
    from ganstream.training.checkpoint import LATEST
    from ganstream.training.loop import TrainingDiverged, run_dir_for
    from ganstream.training.models import family_of

    todo = [m for m in sorted(minutes) if not (resume and bench.results.has(spec, set_name, m))]
    if not todo:
        bench.log(f"{set_name} / {spec}: every budget already measured")
        return
    cfg = config_for(spec, set_name, bench)
    run_dir = run_dir_for(cfg)
    earlier = _resume_point(run_dir, 60 * todo[0]) if resume else None
    if earlier is None:
        _clear_run(run_dir)  # a fresh run: no stale best.pt may stand in for this one's
    clock = BudgetClock(*((earlier["cpu_s"], earlier["wall_s"]) if earlier else (0.0, 0.0)))
    heldout = set_sources(set_name)[1]
    classifier = bench.classifier if set_name in CLASSIFIED else None

    def on_budget(run: Any, budget: float, snap: Path, cpu: float, wall: float) -> None:
        t = time.monotonic()
        row = {
            "config": spec, "set": set_name, "budget_cpu_min": budget,
            "step": int(torch.load(snap, map_location="cpu", weights_only=True)["step"]),  # of the best checkpoint
            "steps_trained": run.step, "cpu_min": round(cpu / 60, 3), "wall_min": round(wall / 60, 3),
            **score(run.run_dir, snap, heldout, classifier),
            "threads": bench.threads, "best_chosen_against": bench.select_against, "checkpoint": str(snap), "classifier": str(classifier) if classifier else None,
            "command": bench.command,
            "eval_command": shlex.join(["ganstream", "eval", str(run.run_dir), heldout, "--checkpoint", str(snap)]
                                       + (["--classifier", str(classifier)] if classifier else [])),
            "commit": bench.commit, "measured_utc": _utc_now(),
        }
        bench.results.put(row)
        extra = f"  IS fraction {row['is_fraction']:.3f}" if "is_fraction" in row else ""
        pos = "n/a" if row["position"] is None else f"{row['position']:.3f}"
        bench.log(f"{set_name} / {spec} @ {budget:g} CPU-min: step {row['step']} of {run.step}, "
                  f"position {pos} (FD {row['fd']:.4g}, floor {row['floor']:.4g}, ceiling {row['ceiling']:.4g}){extra}"
                  f"  [scored in {time.monotonic() - t:.0f} s]")

    bench.log(f"{set_name} / {spec}: {'resuming' if earlier else 'training'} {run_dir} to {', '.join(f'{m:g}' for m in todo)} CPU-min"
              + (f" from {earlier['cpu_s'] / 60:.2f}" if earlier else ""))
    factory = lambda c, device, best: ClockedEvaluator(Evaluator(c, device, best), clock)  # noqa: E731
    with clock.excluded():  # reading the data is not training
        run = family_of(cfg.model).run_class()(cfg, run_dir, torch.device("cpu"), resume=earlier is not None, evaluator=factory)
    stops = BudgetStops(todo, clock, on_budget)
    try:
        run.train(callbacks=(stops,))
    except TrainingDiverged as e:  # a recipe that diverges is a result too: the other runs go on
        bench.log(f"{set_name} / {spec}: diverged, no rows for {', '.join(f'{m:g}' for m in stops.pending)} CPU-min: {e}")
        return
    if stops.stopped is not None:
        # Kept apart from checkpoints/, where the run's periodic checkpoints would replace it.
        shutil.copyfile(run.ckpt_dir / LATEST, run_dir / "budgets" / RESUME_CKPT)
        (run_dir / RESUME_CLOCK).write_text(json.dumps(stops.stopped))
    if stops.pending:
        bench.log(f"{set_name} / {spec}: train.steps ended the run at {clock.cpu() / 60:.2f} CPU-min, "
                  f"before {', '.join(f'{m:g}' for m in stops.pending)}: no rows for those")


def rescore(bench: Bench, configs: list[str], sets: list[str], budgets: list[float]) -> None:
    """Scores the snapshots of rows already in the JSON again (after a change to evaluation), keeping
    what training measured."""
    for row in list(bench.results.rows):
        if not (row["config"] in configs and row["set"] in sets and row["budget_cpu_min"] in budgets):
            continue
        snap = Path(row["checkpoint"])
        if not snap.is_file():
            bench.log(f"{row['set']} / {row['config']} @ {row['budget_cpu_min']:g}: {snap} is gone, row kept as it was")
            continue
        classifier = bench.classifier if row["set"] in CLASSIFIED else None
        new = score(snap.parent.parent, snap, set_sources(row["set"])[1], classifier)  # budgets/ sits in the run directory
        kept = {k: v for k, v in row.items() if k != "wide"}  # the half-folder reference of before the whole folder was used
        bench.results.put({**kept, **new, "rescored": {"command": bench.command, "commit": bench.commit, "utc": _utc_now()}})
        bench.log(f"{row['set']} / {row['config']} @ {row['budget_cpu_min']:g}: position {row['position']} -> {new['position']}")


# ---- the command --------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str:
    """HEAD, with "+dirty" when the working tree differs from it (the rows were measured on that tree)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def pin_threads(threads: int) -> None:
    """torch, numpy's BLAS (FD's matrix square roots) and anything started later on `threads` threads, for
    the rest of the process: scoring stays on the cores training had."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=[BASELINE], help="CONFIG[,section.key=value...] each (default: %(default)s)")
    p.add_argument("--sets", nargs="+", default=list(SETS), help="set names (piano, drums, digits) or other sources such as synth:piano (default: all three)")
    p.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS), help="training CPU-minutes (default: 15 30 60)")
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default: %(default)s: one core, comparable under load)")
    p.add_argument("--out", type=Path, default=OUT, help="the JSON (the plot goes beside it as .png; default: %(default)s)")
    p.add_argument("--runs", type=Path, default=Path("/tmp/ganstream-qpc"), help="where runs are trained (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=EVAL_EVERY, help="train.eval_every: how often best.pt may change (default: %(default)s)")
    p.add_argument("--select-against", choices=("train", "holdout"), default="train",
                   help="train.eval_against: best.pt is the step that scored best against a third of the training clips, "
                        "or against the run's data.holdout clips (28 drums: too few to rank steps) (default: %(default)s)")
    p.add_argument("--classifier", type=Path, help="the digits classifier (default: beside --out, trained on first use)")
    p.add_argument("--resume", action="store_true", help="skip rows already in the JSON; continue runs stopped at a smaller budget")
    p.add_argument("--rescore", action="store_true", help="train nothing: score again the snapshots of the rows already in the JSON")
    p.add_argument("--table", action="store_true", help="train nothing: print the JSON's rows as a Markdown table (for the README)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.eval_every < 1 or min(args.budgets) <= 0:
        raise SystemExit("--threads and --eval-every must be at least 1, every budget positive")
    pin_threads(args.threads)
    from ganstream.training.data.real_sets import default_root, resolve_source

    classifier = None
    if CLASSIFIED & set(args.sets):
        classifier = args.classifier or args.out.with_name(args.out.stem + ".digits-classifier.pt")
    bench = Bench(Results(args.out), args.runs, args.threads, args.eval_every, args.select_against, classifier,
                  shlex.join(["python", "benchmarks/quality_per_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
                  git_commit())
    if args.table:
        print(markdown_table(bench.results.rows))
        return 0
    if args.rescore:
        rescore(bench, args.configs, args.sets, args.budgets)
        return 0
    for set_name in args.sets:
        if set_name in CLASSIFIED and classifier is not None:
            ensure_classifier(classifier, resolve_source(f"set:{set_name}", default_root()), bench.log)
        for spec in args.configs:
            run_config_on_set(spec, set_name, args.budgets, bench, args.resume)
    bench.log(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
