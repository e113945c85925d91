"""Spectrogram GANs: SpecGAN, the spectrogram DCGAN (square and the article's own architecture), ProGAN;
their data path, and every shipped config trained two steps at tiny size."""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from ganstream.training.checkpoint import load_checkpoint, load_generator
from ganstream.train import main as train_main
from ganstream.training.config import ConfigError, load_config
from ganstream.training.data import load_dataset
from ganstream.training.data.spectrograms import SpectrogramSegments, spectrogram_norm
from ganstream.training.loop import run_dir_for
from ganstream.training.models import FAMILIES, OutputKind, build_critic, build_generator, sample_latents
from ganstream.training.models.progan import ProGANConfig
from ganstream.training.models.specdcgan import SpecDCGANConfig
from ganstream.training.models.specgan import SpecGANConfig
from ganstream.training.progressive import ProgressiveRun
from ganstream.training.spectral_train import SpectralRun

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
CPU = torch.device("cpu")

# Small enough to build and run in well under a second; one per spectral model and layout.
TINY = {
    "specgan": SpecGANConfig(width=2),
    "specdcgan-own": SpecDCGANConfig(ngf=2, ndf=2),
    "specdcgan-square": SpecDCGANConfig(architecture="square", ngf=2, ndf=2),
    "specdcgan-own-256": SpecDCGANConfig(ngf=2, ndf=2, frames=256),
    "progan-512": ProGANConfig(fmap_base=16, fmap_max=4, latent_dim=8),
    "progan-128x256": ProGANConfig(n_fft=256, frames=256, base_frames=8, fmap_base=16, fmap_max=4, latent_dim=8),
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(TINY))
def test_shapes_and_range(name):
    cfg = TINY[name]
    cfg.validate()
    g, d = build_generator(cfg).eval(), build_critic(cfg)
    torch.manual_seed(0)
    x = g(sample_latents(cfg, 3))
    assert x.shape == (3, 1, cfg.bins, cfg.frames)
    assert x.abs().max() <= 1.0 and x.std() > 0
    assert d(x).shape == (3,)


def test_front_end_sizes():
    assert (SpecGANConfig().bins, SpecGANConfig().frames, SpecGANConfig().segment) == (128, 128, 16384)
    # The progressive-growing article: n_fft 1024, hop 128, 512 x 512, about 4 s at 16 kHz.
    cfg = ProGANConfig()
    assert (cfg.bins, cfg.frames, cfg.segment, cfg.stages) == (512, 512, 65536, 8)
    assert cfg.resolution(0) == (4, 4) and cfg.resolution(7) == (512, 512)


def test_specgan_paper_layout():
    cfg = SpecGANConfig()  # d=64, 128 x 128
    g, d = build_generator(cfg), build_critic(cfg)
    assert g.dense.out_features == 4 * 4 * 16 * 64
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1024, 512), (512, 256), (256, 128), (128, 64), (64, 1)]
    assert {c.kernel_size for c in convs} == {(5, 5)} and {c.stride for c in convs} == {(2, 2)}
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 5
    assert isinstance(list(g.modules())[-1], nn.ConvTranspose2d)  # tanh is applied in forward, after the last layer


@pytest.mark.parametrize(
    "small, large",
    [
        (SpecGANConfig(width=4), SpecGANConfig(width=16)),
        (SpecDCGANConfig(ngf=4, ndf=4), SpecDCGANConfig(ngf=16, ndf=16)),
        (SpecDCGANConfig(architecture="square", ngf=4, ndf=4), SpecDCGANConfig(architecture="square", ngf=16, ndf=16)),
        (ProGANConfig(fmap_base=64, fmap_max=8, latent_dim=8), ProGANConfig(fmap_base=256, fmap_max=32, latent_dim=8)),
    ],
    ids=["specgan", "specdcgan-own", "specdcgan-square", "progan"],
)
def test_parameter_counts_scale_with_width(small, large):
    # 4x the width: convolutions between widened layers grow 16x, dense and edge layers 4x; well over 5x in all.
    for build in (build_generator, build_critic):
        assert n_params(build(large)) > 5 * n_params(build(small))


def _conv_outputs(g: nn.Module, z: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    g(z)
    for h in hooks:
        h.remove()
    return shapes


def test_own_architecture_grows_along_time_and_expands_in_frequency_last():
    cfg = SpecDCGANConfig(ngf=2, ndf=2)  # the article's 128 x 128
    g = build_generator(cfg).eval()
    shapes = _conv_outputs(g, sample_latents(cfg, 2))
    # (B, channels, bins, frames): one bin high while the time axis doubles, all 128 bins only at the end.
    assert [s[2:] for s in shapes] == [(1, 4), (1, 8), (1, 16), (1, 32), (1, 64), (128, 128)]
    # The article's channels: 16, 8, then 4 ngf throughout (the same widest layer as the square DCGAN).
    assert [s[1] for s in shapes] == [32, 16, 8, 8, 8, 1]
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert all(c.kernel_size == (1, 4) for c in convs[:-1]) and convs[-1].kernel_size == (128, 4)


def test_square_architecture_doubles_both_axes():
    cfg = SpecDCGANConfig(architecture="square", ngf=2, ndf=2)
    shapes = _conv_outputs(build_generator(cfg).eval(), sample_latents(cfg, 2))
    assert [s[1:] for s in shapes] == [(32, 4, 4), (16, 8, 8), (8, 16, 16), (4, 32, 32), (2, 64, 64), (1, 128, 128)]
    d = build_critic(cfg)
    assert not isinstance(list(d.main)[-1], nn.Sigmoid)  # logits, for BCE with logits
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 4  # none on the first layer, as in DCGAN


@pytest.mark.parametrize("name", ["specgan", "specdcgan-own", "specdcgan-square"])
def test_every_parameter_gets_a_gradient(name):
    cfg = TINY[name]
    g, d = build_generator(cfg), build_critic(cfg)
    d(g(sample_latents(cfg, 2))).sum().backward()
    for module in (g, d):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in module.parameters())


def test_generator_carries_its_norm_in_its_weights():
    from ganstream.core.spectral import BinNorm

    cfg = TINY["specgan"]
    g = build_generator(cfg)
    norm = BinNorm.from_arrays(np.linspace(-5, 0, cfg.bins), np.linspace(1, 2, cfg.bins), clip=cfg.norm_clip)
    g.set_norm(norm)
    other = build_generator(cfg)
    other.load_state_dict(g.state_dict())  # strict: the statistics are part of the weights
    mean, std = other.norm().to_arrays()
    np.testing.assert_allclose(mean, np.linspace(-5, 0, cfg.bins), rtol=1e-6)
    np.testing.assert_allclose(std, np.linspace(1, 2, cfg.bins), rtol=1e-6)
    with pytest.raises(ValueError, match="clips at"):
        g.set_norm(BinNorm.from_arrays(mean, std, clip=2.0))


@pytest.mark.parametrize(
    "cfg, message",
    [
        (SpecGANConfig(frames=100), "multiples of 32"),
        (SpecDCGANConfig(architecture="square", frames=256), "square spectrograms"),
        (SpecDCGANConfig(frames=96), "4 x 2"),
        (SpecDCGANConfig(architecture="round"), "architecture"),
        (ProGANConfig(base_frames=8), "doubled a whole number of times"),
    ],
)
def test_invalid_configs(cfg, message):
    with pytest.raises(ValueError, match=message):
        cfg.validate()


# ---- the data path ----------------------------------------------------------------------------


def test_spectrogram_data_is_normalised_per_bin_and_cached(tmp_path):
    cfg = load_config(None, ["model.kind=specgan", "data.synth_items=24", f"data.cache_dir={tmp_path}"])
    params = cfg.model.spectral()
    audio = load_dataset(cfg.data, cfg.model.segment, 0, "train", progress=False)
    norm = spectrogram_norm(audio, params, cfg.model.norm_clip)
    cached = list(tmp_path.glob("*.moments-*.npz"))
    assert len(cached) == 1
    again = spectrogram_norm(audio, params, cfg.model.norm_clip)
    np.testing.assert_array_equal(again.to_arrays()[0], norm.to_arrays()[0])
    specs = SpectrogramSegments(audio, params, norm, cfg.model.frames)
    x = specs.batch(np.arange(len(specs)), 0)
    assert x.shape == (len(specs), 128, 128) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    # Per-bin z-scores of the training split, scaled by 1 / clip: each bin's mean is near 0.
    assert np.abs(x.mean(axis=(0, 2))).max() < 0.1
    # Another front end keys another cache file.
    spectrogram_norm(audio, params, 2.0)
    assert len(list(tmp_path.glob("*.moments-*.npz"))) == 2


# ---- training -----------------------------------------------------------------------------------

# Per model.kind: overrides that make a shipped config tiny.
TINY_OVERRIDES = {
    "wavegan": ["model.width=2"],
    "dcgan1d": ["model.ngf=16", "model.ndf=16"],
    "specgan": ["model.width=2"],
    "specdcgan": ["model.ngf=2", "model.ndf=2"],
    "progan": ["model.fmap_base=8", "model.fmap_max=4", "model.latent_dim=8", "progressive.batch_sizes=[4]"],
    "vocoder": ["model.width=8", "model.depth=1"],
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains_two_steps(path, tmp_path):
    kind = load_config(path).model.kind
    assert kind in TINY_OVERRIDES, f"{path.name}: add tiny overrides for model.kind {kind} to this test"
    args = [
        str(path), *TINY_OVERRIDES[kind], "data.synth_items=24", f"data.cache_dir={tmp_path / 'cache'}",
        "train.batch_size=4", "train.steps=2", "train.preview_every=1", "train.preview_count=2", "train.eval_every=0",
        "train.progress=false", "train.tensorboard=false", "--device", "cpu", "--out", str(tmp_path / "runs"),
    ]
    assert train_main(args) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["step"] == 2
    assert (run_dir / "previews" / "step_00000002.png").stat().st_size > 1000
    if kind in ("specgan", "specdcgan", "progan"):
        generator, cfg, _ = load_generator(run_dir / "checkpoints" / "latest.pt")
        mean, std = generator.norm().to_arrays()
        assert mean.shape == (cfg.model.bins,) and np.all(std > 0) and np.ptp(mean) > 0  # the data's moments, not identity
        # The generated spectrograms as images, and audio from them by Griffin-Lim: two clips with gaps.
        assert (run_dir / "previews" / "step_00000002_generated.png").stat().st_size > 1000
        audio, sr = sf.read(run_dir / "previews" / "step_00000002.wav")
        assert sr == 16000 and len(audio) == 2 * (cfg.model.segment + sr // 5) and np.abs(audio).max() > 0


def test_a_spectral_run_is_evaluated_through_griffin_lim_and_progan_refuses(tmp_path):
    from ganstream.evaluation.evaluate import Evaluator, generate
    from ganstream.training.spectral_train import griffin_lim_audio

    common = ["data.synth_items=24", f"data.cache_dir={tmp_path}", f"run.out_dir={tmp_path}", "train.batch_size=4",
              "train.progress=false", "train.tensorboard=false", "data.holdout=0.2"]
    cfg = load_config(CONFIG_DIR / "specgan.yaml", ["model.width=2", "train.steps=2", "train.eval_every=2", "train.eval_samples=8", *common])
    run = SpectralRun(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)
    run.train()
    logged = [r for r in csv.DictReader(open(run.run_dir / "metrics.csv")) if r["eval/fd_logmel"]]
    assert len(logged) == 1 and np.isfinite(float(logged[0]["eval/fd_logmel"]))
    assert (run.run_dir / "checkpoints" / "best.pt").is_file()
    # What was scored is the generator's spectrograms made audible by Griffin-Lim, at the front end's length.
    g = run.trainer.export_generator
    z = torch.rand(2, cfg.model.latent_dim) * 2 - 1
    audio = generate(g, z, cfg.model)
    assert audio.shape == (2, cfg.model.segment) and audio.dtype == np.float32 and np.abs(audio).max() > 0
    with torch.no_grad():
        specs = g(z)[:, 0].numpy()
    assert np.allclose(audio, griffin_lim_audio(specs, cfg.model.spectral(), g.norm(), iters=32), atol=1e-6)

    cfg = load_config(CONFIG_DIR / "progan-cpu.yaml", [*TINY_OVERRIDES["progan"], "train.eval_every=10", *common])
    with pytest.raises(ConfigError, match="train.eval_every: the progressive GAN's early stages"):
        ProgressiveRun(cfg, run_dir_for(cfg), CPU, evaluator=Evaluator)


def test_spectral_kinds_are_registered():
    spectral = {kind for kind, family in FAMILIES.items() if family.output is OutputKind.SPECTRAL}
    assert spectral == {"specgan", "specdcgan", "progan"}
    for kind in spectral:
        assert FAMILIES[kind].config().spectral().bins > 0  # each describes its front end
