"""The pieces of the laptop recipe (issue 11, item 4) at tiny size: the extra critics, lazy R1, feature
matching, adaptive augmentation (and that it never reaches the generator's output), resume, the new config.

Quality is the benchmark's business (benchmarks/quality_per_cpu.py); these check that each piece does what
it says and is wired where it should be.
"""

import math

import pytest
import torch

from ganstream.training.augment import AdaptiveAugment, Transform, tilt_coefficient
from ganstream.training.checkpoint import load_checkpoint, load_generator
from ganstream.training.cli import _config_dir
from ganstream.training.config import AugmentConfig, ConfigError, LossConfig, load_config
from ganstream.training.gan import GANTrainer
from ganstream.training.loop import Run, run_dir_for
from ganstream.training.losses import GANLoss, r1_penalty
from ganstream.training.models import FAMILIES
from ganstream.training.models.critics import CRITICS, FeatureTap, feature_matching
from test_losses import Linear

CPU = torch.device("cpu")
# Width 4, not 2: WaveGAN's 2-channel layers can start with every ReLU dead (training/models/families.py).
TINY = ("model.width=4", "train.batch_size=4", "loss.critic_steps=1", "loss.stft_channels=4", "loss.multiscale_channels=4",
        "loss.period_channels=4")


def trainer(*overrides: str, seed: int = 0) -> GANTrainer:
    cfg = load_config(None, [*TINY, *overrides])
    torch.manual_seed(seed)
    return GANTrainer(cfg, CPU)


def real_batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    """(n, 1, 16384): decaying tones, a little like the piano set."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(16384) / 16000
    freqs = 100 + 900 * torch.rand(n, 1, 1, generator=g)
    return torch.sin(2 * math.pi * freqs * t) * torch.exp(-4 * t)


# ---- the critics


@pytest.mark.parametrize("name, count", [("stft", 3), ("multiscale", 3), ("period", 5)])
def test_each_new_critic_trains_a_step_and_passes_gradient_to_the_generator(name, count):
    t = trainer(f"loss.critics=[wave,{name}]", "loss.kind=hinge")
    critic = t.extra_critics[name]
    assert critic(real_batch()).shape == (4, count)  # one score per item and resolution (or scale)
    before = [p.detach().clone() for p in critic.parameters()]

    stats = t.step([real_batch()])
    assert all(math.isfinite(v) for v in stats.values())
    assert {f"{name}/d_real", f"{name}/d_fake"} <= stats.keys()
    # The critic step reached every layer of the new critic (its grads stay after the step) and moved its weights.
    # (Not every bias: under hinge, the last bias's gradient is -1 + 1 = 0 while every score is inside the margin.)
    for (pname, p), old in zip(critic.named_parameters(), before):
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if p.dim() > 1:
            assert p.grad.abs().sum() > 0 and not torch.equal(p.detach(), old), pname

    # The new critic alone gives the generator a gradient: its scores depend on G's output.
    t.generator.zero_grad(set_to_none=True)
    t.loss.generator(critic, t.generate(t.latents(4))).backward()
    grads = [p.grad for p in t.generator.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_critic_registry_and_config_agree():
    """loss.critics accepts exactly the registered names, with the family's critic always among them."""
    assert set(CRITICS) == {"wave", "stft", "multiscale", "period"}
    with pytest.raises(ConfigError, match="critics"):
        load_config(None, ["loss.critics=[stft]"])  # no family critic
    with pytest.raises(ConfigError, match="critics"):
        load_config(None, ["loss.critics=[wave,mpd]"])
    with pytest.raises(ConfigError, match="outputs audio"):
        load_config(None, ["model.kind=specgan", "loss.critics=[wave,stft]"])


def test_defaults_leave_the_run_name_alone_and_settings_change_it():
    """Runs named before these fields existed keep their names (and so resume); a setting other than the default renames."""
    default = load_config(None).hash()
    assert load_config(None, ["loss.critics=[wave]", "augment.enabled=false", "loss.r1_every=16", "loss.period_periods=[2,3,5,7,11]"]).hash() == default
    for override in ("loss.critics=[wave,stft]", "loss.period_channels=4", "loss.r1_gamma=1", "loss.feature_matching=1", "augment.enabled=true"):
        assert load_config(None, [override]).hash() != default, override


# ---- R1


def test_r1_penalty_of_a_linear_critic_and_its_lazy_scale():
    """D(x) = w . x: its input gradient is w for every item, so R1 is |w|^2."""
    w = torch.tensor([3.0, 4.0])
    real = torch.randn(8, 1, 2, requires_grad=True)
    assert r1_penalty(Linear(w)(real), real).item() == pytest.approx(25.0)

    real, fake = torch.randn(8, 1, 2), torch.randn(8, 1, 2)
    cfg = LossConfig(kind="hinge", r1_gamma=0.5, r1_every=4)
    plain, _ = GANLoss(cfg).critic(Linear(w), real, fake)
    lazy, stats = GANLoss(cfg).critic(Linear(w), real, fake, r1=True)
    assert float(stats["r1"]) == pytest.approx(25.0)
    assert float((lazy - plain).detach()) == pytest.approx(0.5 * 0.5 * 4 * 25.0, rel=1e-5)  # gamma / 2 x every x penalty


def test_r1_runs_only_every_r1_every_critic_steps_and_is_positive_on_real_data():
    t = trainer("loss.kind=hinge", "loss.r1_gamma=1", "loss.r1_every=3")
    r1_steps, values = [], []
    for step in range(7):
        stats = t.step([real_batch(seed=step)])
        if "r1" in stats:
            r1_steps.append(step)
            values.append(stats["r1"])
    assert r1_steps == [0, 3, 6] and t.critic_updates == 7
    assert all(v > 0 for v in values)
    # Negative control: off, it never runs.
    off = trainer("loss.kind=hinge")
    assert not any("r1" in off.step([real_batch(seed=s)]) for s in range(4))


# ---- feature matching


def test_feature_matching_is_l1_of_batch_means():
    real = [torch.ones(4, 2, 3), torch.zeros(4, 5)]
    fake = [torch.zeros(4, 2, 3), torch.zeros(4, 5)]
    assert feature_matching(real, fake).item() == pytest.approx(0.5)  # 1 and 0, averaged over the two layers
    shuffled = real[0][torch.randperm(4)]
    assert feature_matching([shuffled], [real[0]]).item() == 0.0  # batch means: the order of items does not matter


def test_feature_tap_takes_every_activation_of_a_family_critic():
    t = trainer("loss.critics=[wave,stft]")
    x = real_batch()
    for critic, layers in ((t.critic, 5), (t.extra_critics["stft"], 3 * 4)):
        with FeatureTap(critic) as tap:
            critic(x)
        assert len(tap.features) == layers and all(f.shape[0] == 4 for f in tap.features)
        critic(x)
        assert len(tap.features) == layers  # the hooks are gone after the block


@pytest.mark.parametrize("critics", ["[wave]", "[wave,stft]"])
def test_feature_matching_changes_the_generators_gradient(critics):
    def generator_grads(weight: float) -> list[torch.Tensor]:
        t = trainer(f"loss.critics={critics}", f"loss.feature_matching={weight}", "model.phase_shuffle=0")
        torch.manual_seed(3)
        loss, stats = t._generator_loss(t.generate(t.latents(4)), real_batch())
        loss.backward()
        assert ("feature_matching" in stats) == (weight > 0)
        return [p.grad.clone() for p in t.generator.parameters()]

    plain, matched = generator_grads(0.0), generator_grads(1.0)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, matched))
    assert torch.equal(torch.cat([g.flatten() for g in plain]), torch.cat([g.flatten() for g in generator_grads(0.0)]))


# ---- augmentation


def augment(**kwargs) -> AdaptiveAugment:
    return AdaptiveAugment(AugmentConfig(enabled=True, **kwargs))


def test_one_draw_transforms_real_and_fake_alike():
    torch.manual_seed(0)
    x = real_batch(16)
    a, b = augment(p_init=1.0, p_max=1.0).pair(x, x.clone())
    assert torch.equal(a, b)  # the same transform for item i of real and of fake
    assert not torch.allclose(a, x)  # and it did transform them
    # Within a training step too: every critic input pair went through one draw.
    t = trainer("augment.enabled=true", "augment.p_init=1", "augment.p_max=1")
    draws: list[Transform] = []
    calls: list[int] = []
    draw = t.augment.draw

    def counting_draw(*args):
        transform = draw(*args)
        draws.append(transform)
        calls.append(0)
        return _Counted(transform, calls)

    t.augment.draw = counting_draw
    t.step([real_batch()])
    assert len(draws) == 2  # one for the critic step, a fresh one for the generator step
    assert calls == [2, 1]  # real and fake share the first; only G's output the second (no feature matching)


class _Counted:
    """A Transform that counts its applications in the last slot of `calls`."""

    def __init__(self, transform: Transform, calls: list[int]):
        self.transform, self.calls = transform, calls

    def __call__(self, x):
        self.calls[-1] += 1
        return self.transform(x)


def test_p_rises_while_the_critic_is_sure_of_the_reals_and_falls_otherwise():
    aug = augment(p_init=0.3, p_max=0.8, target=0.6, interval=2, ramp_images=100)
    sure, unsure = torch.ones(10), torch.tensor([1.0, -1.0] * 5)  # E[sign] 1 and 0
    aug.observe([sure])
    assert aug.p == 0.3  # nothing before `interval` critic steps
    aug.observe([sure, sure[:, None].expand(10, 3)])  # scores of two critics, one with K = 3
    assert aug.p == pytest.approx(0.3 + 20 / 100) and aug.r == 1.0
    # Each critic weighs alike whatever its K (its scores of an item are averaged first).
    other = augment(interval=1)
    other.observe([sure, -sure[:, None].expand(10, 3)])
    assert other.r == 0.0
    other.observe([sure, torch.stack([sure, sure, -sure], 1)])
    assert other.r == pytest.approx((1 + 1 / 3) / 2)
    for _ in range(4):
        aug.observe([unsure])
    assert aug.p == pytest.approx(0.5 - 2 * 20 / 100) and aug.r == 0.0
    for _ in range(10):
        aug.observe([unsure])
    assert aug.p == 0.0  # clamped at 0
    for _ in range(20):
        aug.observe([sure])
    assert aug.p == 0.8  # and at p_max


def test_a_training_run_moves_p_by_the_critics_signal():
    t = trainer("augment.enabled=true", "augment.p_init=0.5", "augment.interval=1", "augment.ramp_images=400")
    stats = t.step([real_batch()])
    direction = 1 if stats["augment_r"] > 0.6 else -1
    assert stats["augment_p"] == pytest.approx(0.5 + direction * 4 / 400)


def test_augmentation_parameters_stay_in_their_ranges():
    torch.manual_seed(0)
    n, length = 4000, 64
    aug = augment(p_init=1.0, p_max=1.0, gain_db=6.0, tilt_db=6.0, shift=0.25)
    tr = aug.draw(n, length, CPU)
    gains_db = 20 * torch.log10(tr.gain.abs())
    assert gains_db.abs().max() <= 6.0 + 1e-4 and gains_db.abs().max() > 5.9  # uniform in +-6 dB, reaching the edge
    assert 0.4 < (tr.gain < 0).float().mean() < 0.6  # polarity flipped about half the time at p = 1
    assert tr.shift.abs().max() <= 16 and tr.shift.abs().max() == 16

    # The tilt as a filter: an impulse's spectrum gives the DC-to-Nyquist gain ratio.
    impulse = torch.zeros(n, 1, length)
    impulse[:, :, 0] = 1
    plain = Transform(torch.ones(n), torch.zeros(n, dtype=torch.long), tr.tilt, circular=False)
    spectrum = torch.fft.rfft(plain(impulse)[:, 0]).abs()
    tilt_db = 20 * torch.log10(spectrum[:, 0] / spectrum[:, -1])
    assert tilt_db.abs().max() <= 6.0 + 1e-3 and tilt_db.abs().max() > 5.9
    assert torch.allclose(tilt_db, 20 * torch.log10((1 + tr.tilt) / (1 - tr.tilt)), atol=1e-3)
    assert tilt_coefficient(torch.tensor(0.0)) == 0
    # White noise keeps its power under the tilt (sqrt(1 + a^2) normalisation): within a few percent.
    noise = torch.randn(n, 1, 4096)
    assert plain(noise).pow(2).mean().item() == pytest.approx(noise.pow(2).mean().item(), rel=0.02)

    # At p = 0.5 about half the items get each operation; at p = 0 nothing is drawn at all.
    half = augment(p_init=0.5, p_max=1.0, polarity=False, tilt_db=0.0, shift=0.0).draw(n, length, CPU)
    assert 0.45 < (half.gain != 1).float().mean() < 0.55
    assert augment(p_init=0.0).draw(n, length, CPU) is None


def test_time_shift_moves_samples_and_fills_or_wraps():
    x = torch.arange(1.0, 9.0).view(1, 1, 8)
    one, none = torch.ones(1), torch.zeros(1)
    later = Transform(one, torch.tensor([3]), none, circular=False)(x)
    assert later.flatten().tolist() == [0, 0, 0, 1, 2, 3, 4, 5]
    earlier = Transform(one, torch.tensor([-2]), none, circular=True)(x)
    assert earlier.flatten().tolist() == [3, 4, 5, 6, 7, 8, 1, 2]


def test_augmentation_never_reaches_the_generators_output(tiny_config):
    """G(z), previews and the exported checkpoint are the same with augmentation on (at p = 1) or off, for
    the same weights; the critic meanwhile does see augmented audio (the negative control)."""
    cfg_on = tiny_config("model.width=4", "augment.enabled=true", "augment.p_init=1", "augment.p_max=1", "train.steps=2")
    cfg_off = tiny_config("model.width=4", "train.steps=2")
    run_on = Run(cfg_on, run_dir_for(cfg_on), CPU)
    run_on.train()
    run_off = Run(cfg_off, run_dir_for(cfg_off), CPU)
    run_off.trainer.generator.load_state_dict(run_on.trainer.generator.state_dict())
    run_off.trainer.ema.module.load_state_dict(run_on.trainer.ema.module.state_dict())

    z = run_on.trainer.latents(4)
    assert torch.equal(run_on.trainer.generate(z), run_off.trainer.generate(z))
    assert (run_on.generate_previews() == run_off.generate_previews()).all()
    exported, _, _ = load_generator(run_on.run_dir / "checkpoints" / "latest.pt", "ema")
    with torch.no_grad():
        assert torch.equal(exported.eval()(z), run_off.trainer.export_generator.eval()(z))

    # What the critics were shown in the generator step is not what G returned: augmentation was on.
    seen: list[torch.Tensor] = []
    made: list[torch.Tensor] = []
    trainer_on = run_on.trainer
    generate, score = trainer_on.generate, trainer_on.score
    trainer_on.generate = lambda z: made.append(generate(z)) or made[-1]
    trainer_on.score = lambda x: seen.append(x.detach()) or score(x)
    trainer_on.step(run_on._batches())
    assert not torch.allclose(seen[-1], made[-1].detach())


def test_resume_is_exact_with_every_piece_on(tiny_config, tmp_path):
    """3 steps straight against 2, a checkpoint and 1 more: the same weights, optimisers, p and R1 clock."""
    recipe = (
        "model.width=4", "loss.kind=hinge", "loss.critic_steps=1", "loss.critics=[wave,stft]", "loss.stft_channels=4",
        "loss.r1_gamma=1", "loss.r1_every=2", "loss.feature_matching=1",
        "augment.enabled=true", "augment.p_init=0.4", "augment.interval=1", "augment.ramp_images=40", "train.steps=3",
    )
    straight_cfg = tiny_config(*recipe, f"run.out_dir={tmp_path / 'a'}")
    straight = Run(straight_cfg, run_dir_for(straight_cfg), CPU)
    straight.train()

    cfg = tiny_config(*recipe, f"run.out_dir={tmp_path / 'b'}")
    first = Run(cfg, run_dir_for(cfg), CPU)
    first.train(callbacks=(lambda r: r.request_stop() if r.step == 2 else None,))
    assert load_checkpoint(first.run_dir / "checkpoints" / "latest.pt")["step"] == 2
    resumed = Run(cfg, run_dir_for(cfg), CPU, resume=True)
    resumed.train()

    a, b = straight.trainer, resumed.trainer
    assert resumed.step == 3 and b.critic_updates == a.critic_updates == 3
    assert b.augment.state() == pytest.approx(a.augment.state())
    assert b.augment.p != 0.4  # p moved, so its resume was tested
    for name in ("generator", "critic", "extra_critics", "ema"):
        sa, sb = a.state()[name], b.state()[name]
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-5, atol=1e-6, msg=f"{name}.{k}")


# ---- the laptop config


def test_laptop_config_loads_and_trains_two_steps(tmp_path):
    path = _config_dir() / "wavegan-laptop.yaml"
    cfg = load_config(path)
    assert cfg.loss.critics == ["wave"] and cfg.augment.enabled and cfg.loss.r1_gamma > 0 and cfg.loss.feature_matching > 0
    tiny = load_config(path, [
        *FAMILIES["wavegan"].tiny, "loss.critics=[wave,stft]", "loss.stft_channels=4", "train.steps=2", "train.batch_size=4",
        "data.synth_items=8", "train.eval_every=0", "train.progress=false", "train.tensorboard=false", "train.log_every=1",
        "loss.r1_every=1", f"data.cache_dir={tmp_path / 'cache'}", f"run.out_dir={tmp_path / 'runs'}",
    ])
    run = Run(tiny, run_dir_for(tiny), CPU)
    run.train()
    assert run.step == 2
    rows = run.monitor.history
    assert [int(r["step"]) for r in rows] == [1, 2]
    for key in ("loss_d", "loss_g", "stft/d_real", "feature_matching", "augment_p", "r1"):
        assert math.isfinite(rows[0][key]), key
