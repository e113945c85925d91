"""Adversarial losses and the learning-rate kick, checked against hand-computed values."""

import math

import pytest
import torch

from ganstream.training.config import LossConfig, OptimConfig
from ganstream.training.gan import LRKick
from ganstream.training.losses import GANLoss, gradient_penalty


class Linear(torch.nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so the penalty is (|w| - 1)^2."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w).sum(1)


def test_gradient_penalty_of_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # |w| = 5
    gp = gradient_penalty(Linear(w), torch.randn(8, 1, 2), torch.randn(8, 1, 2))
    assert gp.item() == pytest.approx(16.0)


def test_wgan_gp_losses():
    crit = Linear(torch.tensor([0.6, 0.8]))  # unit norm: no penalty
    real, fake = torch.ones(4, 1, 2), torch.zeros(4, 1, 2)
    loss = GANLoss(LossConfig(kind="wgan-gp"))
    d_loss, stats = loss.critic(crit, real, fake)
    assert d_loss.item() == pytest.approx(0.0 - 1.4, abs=1e-6)
    assert float(stats["d_real"]) == pytest.approx(1.4) and float(stats["gp"]) == pytest.approx(0.0, abs=1e-10)
    assert loss.generator(crit, real).item() == pytest.approx(-1.4)


def test_drift_term_adds_eps_times_squared_real_scores():
    crit = Linear(torch.tensor([0.6, 0.8]))
    real, fake = torch.ones(4, 1, 2), torch.zeros(4, 1, 2)
    plain, _ = GANLoss(LossConfig(kind="wgan-gp")).critic(crit, real, fake)
    drift, _ = GANLoss(LossConfig(kind="wgan-gp", drift=0.001)).critic(crit, real, fake)
    assert float(drift - plain) == pytest.approx(0.001 * 1.4**2, rel=1e-4)


def test_bce_losses_at_zero_logits():
    crit = Linear(torch.zeros(2))
    x = torch.randn(4, 1, 2)
    loss = GANLoss(LossConfig(kind="bce"))
    d_loss, _ = loss.critic(crit, x, x)
    assert float(d_loss) == pytest.approx(2 * math.log(2))
    assert float(loss.generator(crit, x)) == pytest.approx(math.log(2))


def test_bce_label_smoothing_changes_only_real_targets():
    crit = Linear(torch.tensor([10.0, 0.0]))
    real, fake = torch.ones(2, 1, 2), -torch.ones(2, 1, 2)  # logits +10 and -10
    hard, _ = GANLoss(LossConfig(kind="bce")).critic(crit, real, fake)
    smooth, _ = GANLoss(LossConfig(kind="bce", label_smooth=0.1)).critic(crit, real, fake)
    # Target 0.9 at logit 10 costs about 0.1 * 10 more than target 1.
    assert float(smooth - hard) == pytest.approx(1.0, abs=1e-3)


def test_bce_noisy_labels_are_random_but_bounded():
    crit = Linear(torch.zeros(2))
    x = torch.randn(64, 1, 2)
    loss = GANLoss(LossConfig(kind="bce", label_noise=0.1))
    torch.manual_seed(0)
    a, _ = loss.critic(crit, x, x)
    b, _ = loss.critic(crit, x, x)
    # At zero logits BCE is log 2 whatever the target: noise must not change it, only the gradient.
    assert float(a) == pytest.approx(2 * math.log(2)) and float(b) == pytest.approx(2 * math.log(2))


def test_hinge_losses():
    crit = Linear(torch.tensor([0.5, 0.0]))
    real, fake = torch.ones(2, 1, 2), torch.ones(2, 1, 2) * 4  # scores 0.5 and 2
    loss = GANLoss(LossConfig(kind="hinge"))
    d_loss, _ = loss.critic(crit, real, fake)
    assert float(d_loss) == pytest.approx(0.5 + 3.0)
    assert float(loss.generator(crit, fake)) == pytest.approx(-2.0)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'lsgan'"):
        LossConfig(kind="lsgan").validate()


def test_lr_kick_doubles_up_to_five_times_and_resets():
    kick = LRKick(OptimConfig(kick=True))
    factors = [kick.factor(g_loss=11.0, d_loss=1.0) for _ in range(7)]
    assert factors == [2, 4, 8, 16, 32, 32, 32]
    assert kick.factor(g_loss=5.0, d_loss=1.0) == 1.0
    assert LRKick(OptimConfig(kick=False)).factor(100.0, 1.0) == 1.0
