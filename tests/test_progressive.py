"""Progressive growing: the stage schedule, the paper's layers, fade-ins, and exact resume in the middle of one."""

import csv
import math

import numpy as np
import pytest
import torch
from test_training import tensors_equal
from torch.nn import functional as F

from ganstream.training.config import ProgressiveConfig, load_config
from ganstream.training.loop import run_dir_for
from ganstream.training.models import build_critic, build_generator, sample_latents
from ganstream.training.models.progan import EqualizedConv2d, EqualizedLinear, MinibatchStddev, PixelNorm, ProGANConfig
from ganstream.training.progressive import Phase, ProgressiveRun, Schedule, downsample

CPU = torch.device("cpu")


# ---- the schedule ---------------------------------------------------------------------------------


def test_schedule_numbers():
    prog = ProgressiveConfig(fade_images=[8], stable_images=[4, 8], batch_sizes=[2, 4])
    s = Schedule(prog, stages=3, default_batch=64, critic_steps=1)
    phases = [s.phase(i) for i in range(10)]
    assert phases == [
        # stage 0: 4 images at batch 2 = 2 steps, no fade-in
        Phase(0, 1.0, 2, 0), Phase(0, 1.0, 2, 2),
        # stage 1: fade-in of 8 images at batch 4 = 2 steps, alpha = images shown / 8; then 8 stable images
        Phase(1, 0.0, 4, 4), Phase(1, 0.5, 4, 8), Phase(1, 1.0, 4, 12), Phase(1, 1.0, 4, 16),
        # the last stage: its fade-in, then alpha 1 for good
        Phase(2, 0.0, 4, 20), Phase(2, 0.5, 4, 24), Phase(2, 1.0, 4, 28), Phase(2, 1.0, 4, 32),
    ]
    assert s.phase(10**6) == Phase(2, 1.0, 4, 20 + 4 * (10**6 - 6))
    assert s.batch_sizes() == [2, 4, 4]


def test_schedule_counts_every_critic_batch_and_rounds_phases_up():
    # 2 critic batches of 3: 6 images a step. 10 stable images -> 2 steps; a fade-in of 9 images -> 2 steps.
    s = Schedule(ProgressiveConfig(fade_images=[9], stable_images=[10]), stages=2, default_batch=3, critic_steps=2)
    assert [(p.stage, p.alpha, p.images) for p in map(s.phase, range(5))] == [
        (0, 1.0, 0), (0, 1.0, 6), (1, 0.0, 12), (1, pytest.approx(6 / 9), 18), (1, 1.0, 24),
    ]


def test_fade_in_alpha_is_linear_in_images():
    s = Schedule(ProgressiveConfig(fade_images=[1000], stable_images=[0]), stages=2, default_batch=10, critic_steps=1)
    alphas = [s.phase(i).alpha for i in range(0, 101)]
    np.testing.assert_allclose(alphas[:100], np.arange(100) / 100)
    assert alphas[100] == 1.0 and s.phase(0).stage == 1  # stable_images 0: stage 0 takes no steps


def test_schedule_section_only_for_progressive_models():
    with pytest.raises(Exception, match="progressive: only models that grow in stages"):
        load_config(None, ["progressive.fade_images=[10]"])
    assert load_config(None).hash() == load_config(None, ["progressive.fade_images=[600000]"]).hash()


# ---- the paper's layers ---------------------------------------------------------------------------


def test_equalised_learning_rate_scales_weights_at_run_time():
    torch.manual_seed(0)
    conv = EqualizedConv2d(16, 32, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(16 * 9))
    assert abs(float(conv.weight.detach().std()) - 1.0) < 0.05  # stored weights are N(0, 1)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    lin = EqualizedLinear(64, 8, gain=1.0)
    assert lin.scale == pytest.approx(1 / 8)
    # He's constant keeps unit-variance input at the gain's variance whatever the fan-in.
    big = EqualizedLinear(4096, 4096)
    with torch.no_grad():
        assert float(big(torch.randn(256, 4096)).std()) == pytest.approx(math.sqrt(2), rel=0.05)


def test_minibatch_stddev_adds_a_channel_with_the_group_statistic():
    x = torch.arange(8, dtype=torch.float32).pow(2).view(8, 1, 1, 1).repeat(1, 3, 2, 2)
    y = MinibatchStddev(4)(x)
    assert y.shape == (8, 4, 2, 2)
    torch.testing.assert_close(y[:, :3], x)
    # Groups of 4 are items b = g mod 2: {0, 2, 4, 6} and {1, 3, 5, 7}; population std of their squares.
    even, odd = np.std([0, 4, 16, 36]), np.std([1, 9, 25, 49])
    expected = torch.tensor([even, odd] * 4, dtype=torch.float32)
    torch.testing.assert_close(y[:, 3], expected.view(8, 1, 1).expand(8, 2, 2), rtol=1e-5, atol=1e-5)
    # A batch of 6 with group 4 uses groups of 3.
    assert MinibatchStddev(4)(torch.randn(6, 2, 3, 3)).shape == (6, 3, 3, 3)


def test_pixel_norm_gives_unit_rms_over_channels():
    x = torch.randn(4, 16, 5, 7) * torch.rand(4, 1, 5, 7) * 10
    rms = PixelNorm()(x).pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=1e-4)


# ---- the networks at every stage ------------------------------------------------------------------

TINY = ProGANConfig(n_fft=64, hop=16, frames=64, base_bins=4, base_frames=8, fmap_base=16, fmap_max=8, latent_dim=8)  # 32 x 64


def test_output_at_every_stage_resolution():
    cfg = TINY
    cfg.validate()
    assert [cfg.resolution(s) for s in range(cfg.stages)] == [(4, 8), (8, 16), (16, 32), (32, 64)]
    g, d = build_generator(cfg), build_critic(cfg)
    z = sample_latents(cfg, 4)
    for stage in range(cfg.stages):
        for alpha in (0.0, 0.3, 1.0):
            x = g(z, stage, alpha)
            assert x.shape == (4, 1, *cfg.resolution(stage))
            assert d(x, stage, alpha).shape == (4,)
    assert g(z).shape == (4, 1, 32, 64)  # no stage: the finished network, for export
    with pytest.raises(ValueError, match="stage 1 takes"):
        d(g(z, 0), 1)


def test_eval_clamps_to_the_data_range_training_does_not():
    g = build_generator(TINY)
    with torch.no_grad():
        g.to_spec[-1].bias.fill_(5.0)
    z = sample_latents(TINY, 2)
    assert g.train()(z).max() > 1.0
    assert g.eval()(z).max() == 1.0


def test_fade_in_starts_at_the_previous_stage():
    """At alpha 0 the new block is invisible: the generator is the previous stage upsampled and the
    critic judges the input pooled to the previous stage, so growing does not disturb training."""
    torch.manual_seed(0)
    g, d = build_generator(TINY), build_critic(TINY)
    z = sample_latents(TINY, 4)
    for stage in range(1, TINY.stages):
        torch.testing.assert_close(g(z, stage, 0.0), F.interpolate(g(z, stage - 1, 1.0), scale_factor=2, mode="nearest"))
        x = torch.randn(4, 1, *TINY.resolution(stage))
        torch.testing.assert_close(d(x, stage, 0.0), d(F.avg_pool2d(x, 2), stage - 1, 1.0))
        # Halfway, the output is halfway between the old and the new.
        old, new = g(z, stage, 0.0), g(z, stage, 1.0)
        torch.testing.assert_close(g(z, stage, 0.25), old + 0.25 * (new - old))


def test_a_fade_in_trains_exactly_the_layers_it_uses():
    g, d = build_generator(TINY), build_critic(TINY)
    stage = 2
    d(g(sample_latents(TINY, 4), stage, 0.5), stage, 0.5).sum().backward()
    used_g = {"dense", "first", "blocks.1", "blocks.2", "to_spec.1", "to_spec.2"}
    used_d = {"from_spec.1", "from_spec.2", "blocks.1", "blocks.2", "last"}
    for net, used in ((g, used_g), (d, used_d)):
        for name, p in net.named_parameters():
            trained = any(name.startswith(prefix + ".") for prefix in used)
            assert (p.grad is not None and p.grad.abs().sum() > 0) == trained, name


def test_real_data_is_pooled_to_the_stage_and_blended_in_a_fade_in():
    x = torch.randn(2, 1, 16, 32)
    torch.testing.assert_close(downsample(x, 2), F.avg_pool2d(x, 4))
    coarse = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    torch.testing.assert_close(downsample(x, 0, 0.0), coarse)
    torch.testing.assert_close(downsample(x, 0, 0.75), coarse + 0.75 * (x - coarse))


# ---- training through fade-ins, and resume in the middle of one ------------------------------------


def _config(tmp_path, *extra):
    # stage 0: 2 steps; stage 1: a fade-in of 4 steps (alpha 0, .25, .5, .75) and 2 stable;
    # stage 2 (batch 8): a fade-in of 2 steps (alpha 0, .5), then stable.
    return load_config(
        None,
        [
            "model.kind=progan", "model.n_fft=32", "model.hop=8", "model.frames=16", "model.fmap_base=16",
            "model.fmap_max=4", "model.latent_dim=8",  # 16 x 16 from 4 x 4: three stages
            "progressive.fade_images=[16]", "progressive.stable_images=[8]", "progressive.batch_sizes=[4, 4, 8]",
            "loss.critic_steps=1", "loss.drift=0.001", "optim.beta1=0", "optim.beta2=0.99",
            "data.synth_items=32", f"data.cache_dir={tmp_path / 'cache'}", f"run.out_dir={tmp_path / 'runs'}",
            "train.steps=12", "train.eval_every=0", "train.progress=false", "train.tensorboard=false",
            "train.log_every=1", "train.preview_every=1000", "train.preview_count=2", "train.ckpt_every=1000", "train.device=cpu",
            *extra,
        ],
    )


def test_trains_through_full_fade_ins(tmp_path):
    cfg = _config(tmp_path)
    run = ProgressiveRun(cfg, run_dir_for(cfg), CPU)
    g0 = {k: v.clone() for k, v in run.trainer.generator.state_dict().items()}
    opts = []
    run.train(callbacks=(lambda r: opts.append(r.trainer.opt_g),))
    rows = list(csv.DictReader(open(run.run_dir / "metrics.csv")))
    stages = [int(float(r["stage"])) for r in rows]
    alphas = [float(r["alpha"]) for r in rows]
    assert stages == [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert alphas == [1, 1, 0, 0.25, 0.5, 0.75, 1, 1, 0, 0.5, 1, 1]
    assert all(np.isfinite(float(r["loss_d"])) and np.isfinite(float(r["loss_g"])) for r in rows)
    # Fresh optimisers whenever a stage begins (the paper's code), the same ones within a stage.
    assert [opts[i] is opts[i + 1] for i in range(11)] == [True, False, True, True, True, True, True, False, True, True, True]
    assert int(opts[-1].state_dict()["state"][0]["step"]) == 4  # steps of the last stage
    after = run.trainer.generator.state_dict()
    for name in ("blocks.1.1.weight", "blocks.2.1.weight", "to_spec.0.weight", "to_spec.2.weight", "dense.weight"):
        assert not torch.equal(g0[name], after[name]), name
    assert run.order.batch == 8  # the last stage's batch size
    preview = run.generate_previews()
    assert preview.shape == (2, 16, 16) and np.abs(preview).max() <= 1.0


def test_resume_in_the_middle_of_a_fade_in_is_exact(tmp_path):
    straight_cfg = _config(tmp_path / "a", "train.steps=9")
    straight = ProgressiveRun(straight_cfg, run_dir_for(straight_cfg), CPU)
    straight.train()

    cfg = _config(tmp_path / "b", "train.steps=9")
    first = ProgressiveRun(cfg, run_dir_for(cfg), CPU)
    first.train(callbacks=(lambda r: r.request_stop() if r.step == 4 else None,))
    assert first.step == 4 and (first.trainer.stage, first.trainer.alpha) == (1, 0.25)  # two fade-in steps done

    resumed = ProgressiveRun(cfg, run_dir_for(cfg), CPU, resume=True)
    assert resumed.step == 4 and (resumed.trainer.stage, resumed.trainer.alpha) == (1, 0.25)
    resumed.train()  # on through the stage-2 fade-in's new batch size and fresh optimisers
    assert resumed.step == 9 and resumed.trainer.stage == 2
    assert tensors_equal(straight.trainer.state(), resumed.trainer.state())
    assert straight.order.state() == resumed.order.state() and straight.order.batch == resumed.order.batch == 8


def test_export_refuses_a_run_before_its_last_stage(tmp_path):
    from ganstream.export.bundle import export_run
    from ganstream.export.onnx import ExportError

    cfg = _config(tmp_path, "train.steps=4")  # stops in stage 1's fade-in, of 3 stages
    run = ProgressiveRun(cfg, run_dir_for(cfg), CPU)
    run.train()
    with pytest.raises(ExportError, match="progressive run is at stage 2 of 3; export it once it has reached its last stage"):
        export_run(run.run_dir, tmp_path / "b.gsb", vocoder=tmp_path / "no-vocoder-needed-yet")
    assert not (tmp_path / "b.gsb").exists()
