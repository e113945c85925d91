"""Evaluation end to end at tiny size: the training hook and best.pt, `ganstream eval`, `ganstream train-classifier`."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ganstream.main import main as ganstream
from ganstream.training.checkpoint import load_checkpoint, load_generator
from ganstream.evaluation.classifier import load_classifier
from ganstream.training.config import ConfigError
from ganstream.training.loop import Run, run_dir_for
from ganstream.evaluation.evaluate import Evaluator
from ganstream.evaluation.metrics import inception_score

CPU = torch.device("cpu")
SR = 16000
TONES = {"low": (200, 300), "mid": (800, 1200), "high": (3000, 4500)}


def write_tone_classes(root, files=6, seconds=0.75, seed=0):
    """root/<class>/<i>.wav: decaying tones whose pitch range is the class, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    for name, (lo, hi) in TONES.items():
        (root / name).mkdir(parents=True)
        for i in range(files):
            f = rng.uniform(lo, hi)
            x = 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) * np.exp(-rng.uniform(1, 4) * t)
            sf.write(root / name / f"{i}.wav", (x + 0.003 * rng.standard_normal(len(t))).astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def tone_classifier(tmp_path_factory):
    """A classifier trained through the CLI on 3 tone classes; (path, its CLI output, the data folder)."""
    tmp = tmp_path_factory.mktemp("classifier")
    data = write_tone_classes(tmp / "tones")
    out = tmp / "tones.pt"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = ganstream(["train-classifier", str(data), "-o", str(out), "--steps", "40", "--batch-size", "30",
                        "--segment", "4096", "--holdout", "0.34", "--cache-dir", str(tmp / "cache")])
    assert rc == 0
    return out, buf.getvalue(), data


def test_train_classifier_learns_three_tone_classes(tone_classifier):
    path, printed, _ = tone_classifier
    clf = load_classifier(path)
    assert clf.classes == ["high", "low", "mid"]
    assert clf.info["accuracy_on"] == "held-out files"
    assert clf.info["accuracy"] > 0.8, printed
    assert "3 classes" in printed and "accuracy" in printed
    # The file is plain tensors and numbers: it loads weights-only, with its sample rate and feature settings.
    state = torch.load(path, weights_only=True)
    assert state["config"]["sample_rate"] == SR and state["config"]["segment"] == 4096
    assert state["feature_mean"].shape == (64,)


def test_inception_score_of_the_trained_classifier(tone_classifier, tmp_path):
    path, _, _ = tone_classifier
    clf = load_classifier(path)
    held = write_tone_classes(tmp_path / "fresh", files=20, seconds=0.3, seed=1)
    clips = {name: np.stack([sf.read(p, dtype="float32")[0][:4096] for p in sorted((held / name).glob("*.wav"))]) for name in TONES}
    balanced = np.concatenate([clips["low"], clips["mid"], clips["high"]])[np.argsort(np.arange(60) % 20)]  # interleaved
    probs, emb = clf.predict(balanced)
    assert probs.shape == (60, 3) and emb.shape == (60, clf.cfg.embed_dim)
    assert inception_score(probs, splits=2)[0] > 2.2  # 3 classes, mostly confident
    assert inception_score(clf.predict(clips["mid"])[0], splits=2)[0] < 1.3  # one class only


def test_training_evaluates_and_keeps_the_best_checkpoint(tiny_config):
    cfg = tiny_config("train.steps=3", "train.eval_every=1", "train.eval_samples=16", "train.preview_every=3", "data.holdout=0.2")
    run = Run(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)
    run.train()
    rows = [r for r in csv.DictReader(open(run.run_dir / "metrics.csv")) if r["eval/fd_logmel"]]
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3]
    for key in ("fd_logmel", "ndb", "mem_nn_ratio", "mem_copies", "loudness_w1", "flatness_w1"):
        assert all(np.isfinite(float(r[f"eval/{key}"])) for r in rows), key
    fds = [float(r["eval/fd_logmel"]) for r in rows]
    best = load_checkpoint(run.run_dir / "checkpoints" / "best.pt")
    assert best["best"]["metric"] == "fd_logmel"
    assert best["best"]["value"] == pytest.approx(min(fds))
    assert best["step"] == best["best"]["step"] == 1 + int(np.argmin(fds))
    generator, _, _ = load_generator(run.run_dir / "checkpoints" / "best.pt")  # what export reads
    assert sum(p.numel() for p in generator.parameters()) > 0
    assert (run.run_dir / "curves.png").stat().st_size > 1000


def test_eval_against_train_scores_training_clips_without_the_small_holdout_warning(tiny_config, recwarn):
    """train.eval_against=train: a third of the training clips is the reference (no warning, the
    held-out clips unused); the default still uses the holdout; anything else is refused."""
    from ganstream.evaluation.evaluate import load_real

    cfg = tiny_config("data.holdout=0.2")
    data, segment, seed = cfg.data, cfg.model.segment, cfg.run.seed
    apart = load_real(data, segment, seed, against_train=True)
    held = load_real(data, segment, seed)
    assert "train.eval_against=train" in apart.note and "held-out split" in held.note
    assert not [w for w in recwarn if "third of the training" in str(w.message)]
    train_clips = {c.tobytes() for c in apart.spare_source.batch(np.arange(len(apart.spare_source)), 0)}
    assert all(c.tobytes() in train_clips for c in apart.heldout)  # drawn from the training split
    assert not any(c.tobytes() in train_clips for c in held.heldout)  # the holdout never is
    # The reference and the NDB/memorisation half are disjoint clips.
    ref = {c.tobytes() for c in apart.train}
    assert len(apart.heldout) >= 2 and not any(c.tobytes() in ref for c in apart.heldout)
    with pytest.raises(ValueError, match="eval_against: holdout or train, not 'all'"):
        tiny_config("train.eval_against=all")


def test_too_little_data_turns_evaluation_off_with_a_warning(tiny_config):
    cfg = tiny_config("data.synth_items=6", "train.batch_size=2", "train.steps=1", "train.eval_every=1", "train.eval_samples=4")
    run = Run(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)
    with pytest.warns(UserWarning, match="evaluation is off for this run: .*too few clips"):
        run.train()
    assert run.step == 1 and not (run.run_dir / "checkpoints" / "best.pt").exists()


def test_a_missing_classifier_stops_the_run_at_once(tiny_config):
    cfg = tiny_config("train.eval_every=1", "train.classifier=/nonexistent/c.pt")
    with pytest.raises(ConfigError, match="train.classifier: no such file"):
        Run(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)


def test_best_metric_is_checked_before_the_data_loads(tiny_config, tmp_path):
    def run(*overrides):
        cfg = tiny_config("train.eval_every=1", "data.source=/nonexistent/data", *overrides)
        Run(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)

    with pytest.raises(ConfigError, match="train.best_metric: unknown or not a quality metric 'mem_copies'"):
        run("train.best_metric=mem_copies")
    with pytest.raises(ConfigError, match="train.best_metric: is needs a classifier"):
        run("train.best_metric=is")
    clf = tmp_path / "c.pt"
    clf.write_bytes(b"")
    # Accepted: the run goes on to load its data, which is missing.
    with pytest.raises(Exception, match="nonexistent"):
        run("train.best_metric=is", f"train.classifier={clf}")


def test_eval_prints_floor_and_ceiling_and_matches_training(tiny_config, tone_classifier, tmp_path, capsys):
    cfg = tiny_config("train.steps=2", "train.eval_every=2", "train.eval_samples=16", "data.holdout=0.2")
    run = Run(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)
    run.train()
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert ganstream(["eval", str(run.run_dir), "synth:piano", "--checkpoint", "best", "--json", str(out),
                      "--classifier", str(tone_classifier[0])]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("metric"))
    assert header.split()[:4] == ["metric", "generated", "floor", "ceiling"]
    report = json.loads(out.read_text())
    m = report["metrics"]
    assert {"fd_logmel", "fd_classifier", "is", "ndb", "mem_nn_ratio", "mem_copies", "loudness_w1", "flatness_w1"} <= set(m)
    for name in ("fd_logmel", "fd_classifier", "ndb", "loudness_w1", "flatness_w1"):
        assert name in printed
    # Real audio is closer to real audio than noise with the data's spectrum is (with 5 held-out clips, not by far).
    assert m["fd_logmel"]["floor"] < m["fd_logmel"]["ceiling"]
    assert m["mem_copies"]["floor"] == 0.0
    assert report["samples"] == 16 and report["data"]["floor_clips"] > 0
    # Same latents, same reference: the table's generated column is what training logged at that step.
    logged = [r for r in csv.DictReader(open(run.run_dir / "metrics.csv")) if r["eval/fd_logmel"]]
    assert m["fd_logmel"]["generated"] == pytest.approx(float(logged[-1]["eval/fd_logmel"]), rel=1e-6)


def test_eval_of_a_bundle(tmp_path, capsys):
    pytest.importorskip("ganstream.realtime.inference")
    factory = pytest.importorskip("bundle_factory")
    bundle = factory.make_bundle(tmp_path / "b.gsb", segment=4096)
    data = write_tone_classes(tmp_path / "tones")  # any folder: scored at the bundle's rate and segment
    assert ganstream(["eval", str(bundle), str(data), "--samples", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "bundle" in printed and "fd_logmel" in printed


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert ganstream(["eval", str(tmp_path / "nothing"), "synth:piano"]) == 2
    err = capsys.readouterr().err
    assert "eval: error:" in err and "not the name of a shipped bundle (the bundles shipped with ganstream: " in err
    assert len(err.strip().splitlines()) == 1
    assert ganstream(["train-classifier", str(tmp_path)]) == 2
    assert "needs at least two class sub-folders" in capsys.readouterr().err


def test_eval_against_another_source_holds_all_of_it_out(tiny_config, tmp_path, capsys):
    """A run scored on data it never trained on: every clip of that data is the reference, and the floor
    is the run's own training data scored against it; --train-data naming the same data splits it instead."""
    cfg = tiny_config("train.steps=2", "data.holdout=0.2")
    run = Run(cfg, run_dir_for(cfg), CPU)
    run.train()
    data = write_tone_classes(tmp_path / "tones", files=5)  # 15 clips of one segment each (padded)
    reports = {}
    for name, extra in (("apart", []), ("split", ["--train-data", str(data)])):
        out = tmp_path / f"{name}.json"
        assert ganstream(["eval", str(run.run_dir), str(data), "--samples", "8", "--json", str(out), *extra]) == 0
        reports[name] = json.loads(out.read_text())
    capsys.readouterr()
    apart, split = reports["apart"]["data"], reports["split"]["data"]
    assert apart["heldout_clips"] == 15 and "all of it held out" in apart["split"]
    assert "synth:piano" in apart["split"]
    assert split["heldout_clips"] < 15 and "held-out split" in split["split"]
    # The apart floor is piano notes against tones; the split floor is tones against tones.
    fd = lambda r: r["metrics"]["fd_logmel"]["floor"]  # noqa: E731
    assert fd(reports["apart"]) > 1.5 * fd(reports["split"])
