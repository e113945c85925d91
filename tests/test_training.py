"""The training loop end to end at tiny size: every model and loss, resume, rollback, checkpoints."""

import csv
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from ganstream.training.checkpoint import CheckpointError, load_checkpoint
from ganstream.train import main as train_main
from ganstream.training.gan import GANTrainer
from ganstream.evaluation.evaluate import Evaluator
from ganstream.training.loop import Run, TrainingDiverged, run_dir_for

CPU = torch.device("cpu")


def tensors_equal(a, b):
    """Deep equality of nested state dicts: every tensor bit-identical."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.kind=wgan-gp"],
        ["loss.kind=bce", "loss.label_smooth=0.1", "loss.label_noise=0.1", "optim.kick=true"],
        ["loss.kind=hinge", "train.ema_decay=0"],
        ["model.kind=dcgan1d", "model.ngf=16", "model.ndf=16", "model.segment=100", "data.source=synth:gaussian", "loss.kind=bce", "loss.critic_steps=1"],
        ["model.kind=dcgan1d", "model.ngf=16", "model.ndf=16", "model.segment=16384", "loss.kind=wgan-gp"],
        ["model.upsample=nearest", "model.post_filter=16", "loss.drift=0.001"],
    ],
    ids=["wavegan-wgangp", "wavegan-bce-kick", "wavegan-hinge", "dcgan1d-gaussian", "dcgan1d-piano", "wavegan-options"],
)
def test_every_model_and_loss_trains(tiny_config, overrides):
    cfg = tiny_config(*overrides, "train.preview_every=2")
    run = Run(cfg, run_dir_for(cfg), CPU)
    before = {k: v.clone() for k, v in run.trainer.generator.state_dict().items()}
    run.train()
    after = run.trainer.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())

    rows = list(csv.DictReader(open(run.run_dir / "metrics.csv")))
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3, 4]
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_g", "lr_d"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    audio, sr = sf.read(run.run_dir / "previews" / "step_00000004.wav")
    assert sr == cfg.data.sample_rate
    assert len(audio) == 2 * (cfg.model.segment + sr // 5)
    assert np.abs(audio).max() > 0
    assert (run.run_dir / "previews" / "step_00000002.png").stat().st_size > 1000
    assert (run.run_dir / "curves.png").stat().st_size > 1000
    assert load_checkpoint(run.run_dir / "checkpoints" / "latest.pt")["step"] == 4


@pytest.mark.filterwarnings("ignore:train.bf16")  # a CPU without native bf16 emulates it: slower, same result
def test_bf16_autocast_trains_on_the_cpu_and_keeps_float32_weights(tiny_config):
    cfg = tiny_config("train.bf16=true", "loss.kind=bce", "loss.critic_steps=1", "loss.r1_gamma=0.1", "loss.r1_every=1",
                      "loss.feature_matching=1", "augment.enabled=true")
    trainer = GANTrainer(cfg, CPU)
    with trainer.autocast():  # what the step runs under: bf16 convolutions
        assert trainer.generator(trainer.latents(2)).dtype == torch.bfloat16
    batch = [torch.rand(4, 1, cfg.model.segment) * 2 - 1]
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    stats = [trainer.step(batch) for _ in range(3)]
    for key in ("loss_d", "loss_g", "r1", "feature_matching"):
        assert all(np.isfinite(float(s[key])) for s in stats), key
    assert all(p.dtype == torch.float32 for p in trainer.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.generator.parameters()))
    assert trainer.export_generator(trainer.latents(2)).dtype == torch.float32  # previews, evaluation, export


def test_config_is_written_before_the_first_step(tiny_config):
    cfg = tiny_config("train.steps=1")
    seen = []
    run = Run(cfg, run_dir_for(cfg), CPU)
    run.train(callbacks=(lambda r: seen.append((r.run_dir / "config.yaml").read_text()),))
    assert "width: 2" in seen[0]
    assert run.run_dir.name == f"run-{cfg.hash()}"


def test_resume_is_exact(tiny_config, tmp_path):
    """Stopping at step 3 and resuming gives bit-identical weights, optimisers and EMA to a straight run.
    Evaluating every 2 steps in between draws nothing from the random streams training uses."""
    evals = ("train.eval_every=2", "train.eval_samples=8")
    straight_cfg = tiny_config("train.steps=6", f"run.out_dir={tmp_path / 'a'}", "model.phase_shuffle=2", "data.synth_items=40", *evals)
    straight = Run(straight_cfg, run_dir_for(straight_cfg), CPU, evaluator=Evaluator)
    straight.train()

    cfg = tiny_config("train.steps=6", f"run.out_dir={tmp_path / 'b'}", "model.phase_shuffle=2", "data.synth_items=40", *evals)
    first = Run(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)
    first.train(callbacks=(lambda r: r.request_stop() if r.step == 3 else None,))
    assert first.step == 3 and load_checkpoint(first.run_dir / "checkpoints" / "latest.pt")["step"] == 3

    resumed = Run(cfg, run_dir_for(cfg), CPU, resume=True, evaluator=Evaluator)
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 6
    assert tensors_equal(straight.trainer.state(), resumed.trainer.state())
    # The data order continued too: the next batch both would read is the same.
    assert straight.order.state() == resumed.order.state()
    rows = list(csv.DictReader(open(resumed.run_dir / "metrics.csv")))
    assert [int(float(r["step"])) for r in rows if r["loss_d"]] == [1, 2, 3, 4, 5, 6]
    assert [int(float(r["step"])) for r in rows if r["eval/fd_logmel"]] == [2, 4, 6]
    # The resumed run knew the best score so far: best.pt holds the best of all three evaluations.
    best = load_checkpoint(resumed.run_dir / "checkpoints" / "best.pt")["best"]
    assert best["value"] == min(float(r["eval/fd_logmel"]) for r in rows if r["eval/fd_logmel"])


def test_nan_loss_rolls_back_with_halved_learning_rate(tiny_config, monkeypatch):
    cfg = tiny_config("train.steps=5", "train.ckpt_every=2")
    run = Run(cfg, run_dir_for(cfg), CPU)
    real_step = GANTrainer.step
    calls = {"n": 0}

    def poisoned(self, batches):
        calls["n"] += 1
        stats = real_step(self, batches)
        if calls["n"] == 4:  # the 4th step goes bad, after the step-2 checkpoint
            stats["loss_d"] = float("nan")
        return stats

    monkeypatch.setattr(GANTrainer, "step", poisoned)
    with pytest.warns(UserWarning, match=r"non-finite loss \(loss_d=nan\): rolled back to step 2 with learning rates halved"):
        run.train()
    assert run.step == 5 and run.rollbacks == 1
    assert run.trainer.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_g / 2)
    assert all(torch.isfinite(p).all() for p in run.trainer.generator.parameters())
    assert calls["n"] == 7  # 3 good steps, the bad one, then steps 3 to 5 again from the step-2 checkpoint


def test_persistent_nan_stops_with_a_clear_error(tiny_config, monkeypatch):
    cfg = tiny_config("train.max_rollbacks=2")
    run = Run(cfg, run_dir_for(cfg), CPU)
    monkeypatch.setattr(GANTrainer, "step", lambda self, b: {"loss_d": float("inf"), "loss_g": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDiverged, match=r"after 2 rollbacks; the last good checkpoint is .*latest\.pt"):
            run.train()


def test_checkpoints_are_pruned_and_latest_kept(tiny_config):
    cfg = tiny_config("train.steps=6", "train.ckpt_every=1", "train.keep_checkpoints=2")
    run = Run(cfg, run_dir_for(cfg), CPU)
    run.train()
    names = sorted(p.name for p in (run.run_dir / "checkpoints").iterdir())
    assert names == ["latest.pt", "step_00000005.pt", "step_00000006.pt"]


def test_truncated_checkpoint_is_a_clear_error(tiny_config):
    cfg = tiny_config("train.steps=1")
    run = Run(cfg, run_dir_for(cfg), CPU)
    run.train()
    latest = run.run_dir / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    latest.unlink()  # a hard link: write a new file rather than truncating the numbered one too
    latest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"latest\.pt: not a readable checkpoint"):
        load_checkpoint(latest)


def test_mismatched_checkpoint_is_refused_strictly(tiny_config):
    cfg = tiny_config("train.steps=1")
    Run(cfg, run_dir_for(cfg), CPU).train()
    wider = tiny_config("train.steps=1", "model.width=4")
    with pytest.raises(CheckpointError, match="does not match the model of this config"):
        Run(wider, run_dir_for(cfg), CPU, resume=True)


def test_cli_resume_refuses_changing_what_is_trained(tiny_config, capsys):
    cfg = tiny_config("train.steps=1")
    Run(cfg, run_dir_for(cfg), CPU).train()
    assert train_main(["--resume", str(run_dir_for(cfg)), "optim.lr_g=1"]) == 2
    assert "cannot change optim.lr_g when resuming" in capsys.readouterr().err


def test_sigterm_checkpoints_and_resume_continues(tmp_path):
    """A real `train` process stopped by SIGTERM writes a checkpoint; --resume finishes the run."""
    args = [
        sys.executable, "-m", "ganstream.train", "model.width=2", "data.synth_items=24",
        f"data.cache_dir={tmp_path / 'cache'}", "train.batch_size=4", "loss.critic_steps=1", "train.steps=100000",
        "train.progress=false", "train.tensorboard=false", "train.ckpt_every=100000", "--out", str(tmp_path / "runs"),
    ]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    ckpt_dir = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("*/checkpoints/latest.pt"))
        if found:
            ckpt_dir = found[0].parent
            break
        time.sleep(0.2)
    assert ckpt_dir is not None, "the run never wrote its step-0 checkpoint"
    time.sleep(2.0)  # let it train a few steps
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM: finishing this step" in err and "continue with: train --resume" in err
    step = load_checkpoint(ckpt_dir / "latest.pt")["step"]
    assert step > 0
    resumed = subprocess.run(
        [sys.executable, "-m", "ganstream.train", "--resume", str(ckpt_dir.parent), f"train.steps={step + 2}"],
        capture_output=True, text=True, timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(ckpt_dir / "latest.pt")["step"] == step + 2


def test_a_preview_quieter_than_the_colour_floor_is_still_drawn(tmp_path):
    """A clip whose spectrum lies below -120 dB everywhere (a vocoder run's last preview once was) must not end
    the run: the colour scale's top is kept above its floor."""
    from ganstream.training.monitor import spectrogram_figure

    clips = np.stack([np.full(8192, 1e-9, np.float32), np.zeros(8192, np.float32), 0.1 * np.sin(np.arange(8192, dtype=np.float32))])
    fig = spectrogram_figure(clips, 16000, "quiet")
    fig.savefig(tmp_path / "quiet.png", dpi=40)
    assert (tmp_path / "quiet.png").stat().st_size > 1000
