"""benchmarks/quality_per_cpu.py at toy size: the position formula, IS as a fraction, the budget clock,
and a run that writes a row per budget and resumes from its last one. No quality figure is asserted."""

import importlib.util
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("quality_per_cpu", Path(__file__).parent.parent / "benchmarks" / "quality_per_cpu.py")
qpc = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = qpc  # a script, not a package module: dataclasses look their module up by name
SPEC.loader.exec_module(qpc)


def test_position_on_known_numbers():
    assert qpc.position(1.0, 1.0, 100.0) == 0.0  # as good as real against real
    assert qpc.position(100.0, 1.0, 100.0) == 1.0  # as bad as shaped noise
    assert qpc.position(10.0, 1.0, 100.0) == pytest.approx(0.5)  # halfway on the log scale, not the linear one
    assert qpc.position(8.0, 2.0, 32.0) == pytest.approx(0.5)
    assert qpc.position(1000.0, 1.0, 100.0) == pytest.approx(1.5)  # worse than noise stays visible
    assert qpc.position(0.5, 1.0, 100.0) == pytest.approx(math.log(0.5) / math.log(100))
    for undefined in [(None, 1.0, 2.0), (1.0, 0.0, 2.0), (1.0, 2.0, 2.0), (1.0, 3.0, 2.0)]:
        assert qpc.position(*undefined) is None


def test_inception_fraction_on_known_numbers():
    eye = np.eye(10)
    # Confident and balanced: IS 10 (a little less from 200 clips per split), though in folder order, class by class.
    real = eye[np.repeat(np.arange(10), 200)]
    collapsed = eye[np.zeros(3000, int)]  # one digit only: IS 1
    out = qpc.inception_fraction(collapsed, real)
    assert out["is_real_heldout"] == pytest.approx(10.0, rel=0.05)
    assert out["is_matched"] == pytest.approx(1.0)
    assert out["is_fraction"] == pytest.approx(0.1, rel=0.05)
    assert out["is_clips"] == 2000  # the larger set is cut to the smaller's size
    half = eye[np.arange(3000) % 5]  # five digits, evenly: IS 5
    assert qpc.inception_fraction(half, real)["is_fraction"] == pytest.approx(0.5, rel=0.05)


def _burn(seconds):
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass


def test_budget_clock_leaves_out_excluded_spans_once():
    clock = qpc.BudgetClock(offset_cpu=60.0)
    _burn(0.05)
    with clock.excluded():
        _burn(0.15)
        with clock.excluded():  # nested: subtracted with the outer span, not twice
            _burn(0.05)
    cpu = clock.cpu()
    assert 60.05 <= cpu < 60.15, cpu


TOY = ",".join([
    "configs/wavegan-cpu-baseline.yaml", "model.width=2", "train.batch_size=4", "data.synth_items=24", "data.holdout=0.2",
    "train.tensorboard=false", "train.preview_every=100000", "train.eval_samples=16", "train.ckpt_minutes=1000",
])


def test_rows_per_budget_and_resume_from_the_last(tmp_path, capsys, monkeypatch):
    pinned = []  # pinning is for the whole process: recorded here, so other tests keep their threads
    monkeypatch.setattr(qpc, "pin_threads", pinned.append)
    out, runs = tmp_path / "q.json", tmp_path / "runs"
    spec = TOY + f",data.cache_dir={tmp_path / 'cache'}"
    common = ["--configs", spec, "--sets", "synth:piano", "--eval-every", "100000", "--out", str(out), "--runs", str(runs)]
    # Budgets a second apart at least: the first steps' CPU time varies with the machine's load (oneDNN sets up).
    assert qpc.main([*common, "--budgets", "0.01", "0.04"]) == 0

    assert pinned == [1]  # one thread unless told otherwise
    rows = json.loads(out.read_text())["rows"]
    assert [(r["config"], r["set"], r["budget_cpu_min"]) for r in rows] == [(spec, "synth:piano", 0.01), (spec, "synth:piano", 0.04)]
    for r in rows:
        assert r["cpu_min"] >= r["budget_cpu_min"]
        assert r["position"] == pytest.approx(qpc.position(r["fd"], r["floor"], r["ceiling"]))
        assert r["threads"] == 1 and r["command"].startswith("python benchmarks/quality_per_cpu.py") and r["commit"]
        assert Path(r["checkpoint"]).is_file() and r["eval_command"].startswith("ganstream eval ")
        assert "is_fraction" not in r  # no classifier for synth:piano
        assert r["best_chosen_against"] == "train"  # --select-against's default: a third of the training clips
    assert rows[1]["steps_trained"] > rows[0]["steps_trained"]  # one run, checkpointed as it crossed each budget
    # With no scheduled evaluation, only the states at the budgets compete for best.pt.
    assert rows[0]["step"] == rows[0]["steps_trained"]
    assert rows[1]["step"] in (rows[0]["steps_trained"], rows[1]["steps_trained"])
    assert out.with_suffix(".png").stat().st_size > 1000
    assert f"| {rows[0]['step']} / {rows[0]['steps_trained']} (train) |" in qpc.markdown_table(rows)

    # --resume skips both rows and continues the same run, with its CPU time, to the new budget, from the
    # state at the last budget even when a periodic checkpoint came after it (a run killed on its way).
    run_dir = Path(rows[1]["checkpoint"]).parent.parent
    shutil.copyfile(run_dir / "checkpoints" / "step_00000000.pt", run_dir / "checkpoints" / "latest.pt")
    capsys.readouterr()
    assert qpc.main([*common, "--budgets", "0.01", "0.04", "0.1", "--resume"]) == 0
    # From the CPU time where it stopped: 0.04 and what the step that crossed it took (more on a loaded machine).
    assert re.search(rf"resuming {re.escape(str(run_dir))} to 0.1 CPU-min from 0\.0[4-9]", capsys.readouterr().err)
    again = json.loads(out.read_text())["rows"]
    assert again[:2] == rows
    assert again[2]["budget_cpu_min"] == 0.1 and again[2]["cpu_min"] >= 0.1
    assert again[2]["steps_trained"] > rows[1]["steps_trained"]
    assert Path(rows[0]["checkpoint"]).is_file() and Path(again[2]["checkpoint"]).parent == run_dir / "budgets"

    # --rescore trains nothing: the first row is scored again from its snapshot, the others are left alone.
    assert qpc.main([*common, "--budgets", "0.01", "--rescore"]) == 0
    rescored = json.loads(out.read_text())["rows"]
    assert rescored[1:] == again[1:]
    first = rescored[0]
    assert {k: first[k] for k in ("step", "steps_trained", "cpu_min", "checkpoint")} == {k: rows[0][k] for k in ("step", "steps_trained", "cpu_min", "checkpoint")}
    assert first["fd"] == pytest.approx(rows[0]["fd"])  # the same checkpoint, latents and reference
    assert first["rescored"]["command"].endswith("--rescore")
    assert first["position"] == pytest.approx(qpc.position(first["fd"], first["floor"], first["ceiling"]))
    assert "wide" not in first
