"""Generators and critics: shapes, ranges and the published layouts."""

import pytest
import torch
from torch import nn

from ganstream.training.config import load_config
from ganstream.training.loop import Run
from ganstream.training.models import FAMILIES, OutputKind, build_critic, build_generator, sample_latents
from ganstream.training.models.dcgan1d import DCGAN1DConfig
from ganstream.training.models.wavegan import PhaseShuffle, WaveGANConfig


@pytest.mark.parametrize("segment", [16384, 32768, 65536])
def test_wavegan_shapes_and_range(segment):
    cfg = WaveGANConfig(width=2, segment=segment)
    g, d = build_generator(cfg), build_critic(cfg)
    x = g(sample_latents(cfg, 3))
    assert x.shape == (3, 1, segment)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (3,)


def test_wavegan_paper_layout():
    cfg = WaveGANConfig()  # d=64, 16384 samples
    g = build_generator(cfg)
    assert g.dense.out_features == 16 * 16 * 64
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1024, 512), (512, 256), (256, 128), (128, 64), (64, 1)]
    assert {c.kernel_size[0] for c in convs} == {25} and {c.stride[0] for c in convs} == {4}
    # About 19M parameters in each network, as in the paper.
    assert 18e6 < sum(p.numel() for p in g.parameters()) < 20e6
    d = build_critic(cfg)
    assert sum(isinstance(m, PhaseShuffle) for m in d.modules()) == 4
    convs = [m for m in d.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [(1, 64, 4), (64, 128, 4), (128, 256, 4), (256, 512, 4), (512, 1024, 4)]


def test_wavegan_extra_layer_for_long_segments():
    g = build_generator(WaveGANConfig(width=2, segment=65536))
    assert sum(isinstance(m, nn.ConvTranspose1d) for m in g.modules()) == 6


def test_wavegan_options():
    cfg = WaveGANConfig(width=2, upsample="nearest", post_filter=512, batchnorm=True)
    g = build_generator(cfg)
    assert any(isinstance(m, nn.Upsample) for m in g.modules())
    assert g.post.kernel_size == (512,)
    assert g(sample_latents(cfg, 2)).shape == (2, 1, 16384)


def test_latent_distributions():
    u = sample_latents(WaveGANConfig(), 4000)
    assert u.min() >= -1 and u.max() <= 1 and abs(float(u.mean())) < 0.01
    n = sample_latents(WaveGANConfig(latent_dist="normal"), 4000)
    assert n.abs().max() > 2.5 and abs(float(n.std()) - 1) < 0.01


def test_phase_shuffle_shifts_within_radius_and_only_in_training():
    torch.manual_seed(0)
    ps = PhaseShuffle(2)
    x = torch.arange(40.0).view(1, 1, 40).repeat(64, 2, 1)
    y = ps.train()(x)
    shifts = set()
    for item in y:
        s = int(item[0, 10] - x[0, 0, 10])
        shifts.add(s)
        assert torch.equal(item[:, 2:-2], x[0, :, 2 + s : 38 + s])  # a pure shift inside
        assert torch.equal(item[0], item[1])  # the same shift for every channel
    assert shifts == {-2, -1, 0, 1, 2}
    assert torch.equal(ps.eval()(x), x)


def test_phase_shuffle_is_reflect_padding_then_a_slice_per_item():
    """The gather equals its definition, edges included, for the same random draws."""
    x = torch.randn(32, 3, 50)
    torch.manual_seed(7)
    y = PhaseShuffle(3).train()(x)
    torch.manual_seed(7)
    shifts = torch.randint(-3, 4, (32,))
    padded = torch.nn.functional.pad(x, (3, 3), mode="reflect")
    expected = torch.stack([padded[i, :, 3 - s : 3 - s + 50] for i, s in enumerate(shifts.tolist())])
    assert torch.equal(y, expected)


def test_dcgan1d_article_layout_at_100_samples():
    cfg = DCGAN1DConfig(ngf=64, ndf=64)
    g, d = build_generator(cfg), build_critic(cfg)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose1d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in convs] == [(4, 1, 64), (4, 2, 32), (4, 2, 16), (4, 2, 8), (10, 2, 1)]
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.2 for m in g.modules()) == 4
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 5
    x = g(sample_latents(cfg, 5))
    assert x.shape == (5, 1, 100)
    # No output layer: logits for BCE-with-logits.
    assert d(x).shape == (5,)
    assert not isinstance(list(d.main)[-1], nn.Sigmoid)


def test_dcgan1d_longer_segments_crop_to_length():
    cfg = DCGAN1DConfig(ngf=16, ndf=16, segment=1000)
    assert build_generator(cfg)(sample_latents(cfg, 2)).shape == (2, 1, 1000)


def tiny_model(kind: str):
    """The model config of family `kind` shrunk by the registry's tiny overrides."""
    return load_config(None, [f"model.kind={kind}", *FAMILIES[kind].tiny]).model


GANS = [kind for kind, family in FAMILIES.items() if family.output is not OutputKind.VOCODER]


# The spectrogram models have their own (tests/test_spectral_models.py): a progressive network uses
# only some of its layers at any one stage.
@pytest.mark.parametrize("kind", [kind for kind, family in FAMILIES.items() if family.output is OutputKind.WAVEFORM])
def test_every_model_learns_gradients(kind):
    cfg = tiny_model(kind)
    g, d = build_generator(cfg), build_critic(cfg)
    d(g(sample_latents(cfg, 2))).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


@pytest.mark.parametrize(
    "cfg, message",
    [
        (WaveGANConfig(segment=20000), "16384, 32768 or 65536"),
        (WaveGANConfig(latent_dist="cauchy"), "latent_dist"),
        (DCGAN1DConfig(segment=50), "at least 100"),
    ],
)
def test_invalid_model_configs(cfg, message):
    with pytest.raises(ValueError, match=message):
        cfg.validate()


# ---- the family registry ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_registry_entries_agree_with_their_classes(kind):
    family = FAMILIES[kind]
    cfg = tiny_model(kind)
    assert family.kind == kind and type(cfg) is family.config and cfg.kind == kind
    assert (family.critic is None) == (family.output is OutputKind.VOCODER)
    assert issubclass(family.run_class(), Run)
    assert family.progressive == (family.run_class().__name__ == "ProgressiveRun")
    if family.output is not OutputKind.WAVEFORM:
        assert cfg.spectral().bins == cfg.bins  # spectrogram in or out: the config describes its front end
    # tiny: a few hundred thousand weights at most, not the millions of the shipped configs
    assert sum(p.numel() for p in build_generator(cfg).parameters()) < 200_000


@pytest.mark.parametrize("kind", GANS)
def test_early_features_come_from_an_early_layer_and_follow_the_latent(kind):
    """Perturbing the first layer changes the features and the last layer does not, while it changes the output."""
    cfg = tiny_model(kind)
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    z = sample_latents(cfg, 6, torch.Generator().manual_seed(1))
    params = [p for _, p in g.named_parameters()]
    with torch.no_grad():
        feats, out = g.early_features(z), g(z)
        assert feats.ndim == 2 and feats.shape[0] == 6 and torch.isfinite(feats).all()
        assert (feats - feats.mean(0)).abs().max() > 1e-4  # they depend on z
        shape = (6, 1, cfg.segment) if FAMILIES[kind].output is OutputKind.WAVEFORM else (6, 1, cfg.bins, cfg.frames)
        assert out.shape == shape
        params[-1].add_(0.5)
        assert torch.equal(g.early_features(z), feats)
        assert not torch.equal(g(z), out)
        params[0].mul_(1.5)
        assert not torch.allclose(g.early_features(z), feats)
