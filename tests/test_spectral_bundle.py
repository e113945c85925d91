"""Spectral bundles: a spectrogram generator and the reconstruction network, exported, checked, played and rendered."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from ganstream.core.manifest import FileEntry
from ganstream.export.bundle import export_spectral
from ganstream.export.onnx import ExportError, SpectralAudio
from ganstream.realtime.bundle import BundleError, load_bundle, load_reconstruction
from ganstream.realtime.cli import render_main
from ganstream.realtime.inference import Generator
from ganstream.core.spectral import BinNorm
from ganstream.training.models.spectrogram import SpectrogramFrontEnd, SpectrogramGenerator
from ganstream.training.models.vocoder import Vocoder, VocoderConfig

FRAMES = 32
LATENT = 8


@dataclass
class StandInConfig(SpectrogramFrontEnd):
    """The smallest spectral generator config: the front end's fields and a latent."""

    kind: str = "stand-in"
    latent_dim: int = LATENT
    latent_dist: str = "uniform"
    frames: int = FRAMES


class StandInGenerator(SpectrogramGenerator):
    """z (B, D) -> (B, 1, bins, frames): a dense layer and tanh, like the first and last layers of SpecGAN."""

    def __init__(self, cfg: StandInConfig):
        super().__init__(cfg)
        self.cfg = cfg
        self.dense = nn.Linear(cfg.latent_dim, cfg.bins * cfg.frames)

    def forward(self, z):
        return torch.tanh(0.5 * self.dense(z)).view(z.shape[0], 1, self.cfg.bins, self.cfg.frames)


def norm_of(bins: int, shift: float = 0.0) -> BinNorm:
    mean = np.linspace(-7.0, -1.0, bins).astype(np.float32) + shift
    std = np.linspace(1.0, 2.0, bins).astype(np.float32)
    return BinNorm(mean, std, clip=3.0)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    cfg = StandInConfig()
    generator = StandInGenerator(cfg).eval()
    generator.set_norm(norm_of(cfg.bins, shift=0.2))  # the GAN measured slightly different moments
    vocoder = Vocoder(VocoderConfig(width=8, depth=1)).eval()
    vocoder.set_norm(norm_of(cfg.bins))
    return cfg, generator, vocoder


@pytest.fixture(scope="module")
def bundle_dir(parts, tmp_path_factory):
    cfg, generator, vocoder = parts
    out = tmp_path_factory.mktemp("spectral") / "s.gsb"
    return export_spectral(generator, cfg, generator.norm(), vocoder, out, name="stand-in", provenance={"run_name": "stand-in"}, fused=True)


def copy_bundle(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "b.gsb"
    shutil.copytree(bundle_dir, target)
    return target


def test_spectral_bundle_follows_the_manifest(bundle_dir, parts):
    cfg, _, _ = parts
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["model"]["kind"] == "spectral"
    segment = cfg.spectral().samples(FRAMES)
    assert manifest["model"]["segment"] == segment
    assert set(manifest["graphs"]) == {"generator", "reconstruction", "fused"}
    assert manifest["graphs"]["generator"]["outputs"][0]["shape"] == ["batch", cfg.bins, FRAMES]
    assert manifest["graphs"]["reconstruction"]["inputs"][0]["shape"] == ["batch", cfg.bins, FRAMES]
    for graph in manifest["graphs"].values():
        assert 0 <= graph["parity_max_abs_error"] <= 1e-4
    spectral = manifest["spectral"]
    assert spectral["bins"] == cfg.bins and spectral["frames"] == FRAMES and spectral["params"] == cfg.spectral().to_dict()
    assert set(manifest["files"]) == {"generator.onnx", "vocoder.onnx", "fused.onnx", "norm_mean.npy", "norm_std.npy"}
    bundle = load_bundle(bundle_dir)
    assert bundle.kind == "spectral" and bundle.segment == segment
    assert bundle.spec.to_json() == manifest  # the writer writes the schema (core/manifest.py): nothing more, nothing less
    assert np.array_equal(bundle.spectral.norm.to_arrays()[0], norm_of(cfg.bins, shift=0.2).to_arrays()[0])


@pytest.mark.parametrize("fused", [True, False])
def test_generator_yields_the_audio_of_generator_then_vocoder(bundle_dir, parts, tmp_path, fused):
    cfg, generator, vocoder = parts
    path = bundle_dir
    if not fused:  # a bundle without the fused graph runs generator, then reconstruction
        path = copy_bundle(bundle_dir, tmp_path)
        manifest = json.loads((path / "manifest.json").read_text())
        del manifest["graphs"]["fused"], manifest["files"]["fused.onnx"]
        (path / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(path)
    runner = Generator(bundle, provider="cpu", threads=1)
    z = bundle.random_latents(3, np.random.default_rng(1))
    audio = runner.generate(z)
    # The GAN's moments differ from the vocoder's: the bundle's vocoder renormalises its input.
    with torch.no_grad():
        expected = SpectralAudio(generator, vocoder.with_input_norm(generator.norm()))(torch.from_numpy(z)).numpy()
    assert audio.shape == (3, bundle.segment)
    assert np.abs(audio - expected).max() < 1e-4
    assert np.abs(audio).max() > 1e-3


def test_input_renormalisation_is_exact():
    """A vocoder taking another BinNorm's input computes what it computes on its own normalisation of the same magnitude."""
    vocoder = Vocoder(VocoderConfig(width=8, depth=1)).eval()
    own, other = norm_of(128), norm_of(128, shift=0.3)
    vocoder.set_norm(own)
    log_mag = torch.from_numpy(own.mean)[:, None] + 0.5 * torch.randn(2, 128, FRAMES, generator=torch.Generator().manual_seed(0))

    def normalised(norm):
        mean, std = (torch.from_numpy(a)[:, None] for a in norm.to_arrays())
        return ((log_mag - mean) / std).clamp(-3, 3) / 3

    with torch.no_grad():
        assert torch.allclose(vocoder.with_input_norm(other)(normalised(other)), vocoder(normalised(own)), atol=1e-5)
        assert not torch.allclose(vocoder(normalised(other)), vocoder(normalised(own)), atol=1e-3)


def test_render_plays_a_spectral_bundle(bundle_dir, tmp_path, capsys):
    out = tmp_path / "s.wav"
    assert render_main([str(bundle_dir), "-o", str(out), "--seconds", "1.5", "--sample-rate", "16000", "--seed", "3"]) == 0
    audio, sr = sf.read(out)
    assert sr == 16000 and len(audio) == 24000
    assert np.sqrt(np.mean(audio**2)) > 1e-3  # not silent
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


def test_the_reconstruction_of_a_spectral_bundle_loads_alone(bundle_dir):
    network = load_reconstruction(bundle_dir)
    assert network.graph.role == "reconstruction" and network.spectral.frames == FRAMES


def test_front_ends_must_match(parts, tmp_path):
    cfg, generator, _ = parts
    other = Vocoder(VocoderConfig(width=8, depth=1, hop=64, frames=64)).eval()
    with pytest.raises(ExportError, match=r"different spectral front ends \(hop: GAN 128, vocoder 64\)"):
        export_spectral(generator, cfg, generator.norm(), other, tmp_path / "x.gsb", name="x", provenance={})
    assert not (tmp_path / "x.gsb").exists()


def test_norm_clips_must_match(parts, tmp_path):
    cfg, generator, _ = parts
    norm = generator.norm()
    other = Vocoder(VocoderConfig(width=8, depth=1, frames=64, norm_clip=norm.clip + 1.0)).eval()
    with pytest.raises(ExportError, match=rf"model.norm_clip: the GAN clips its spectrograms at {norm.clip} std, the vocoder at {norm.clip + 1.0}"):
        export_spectral(generator, cfg, norm, other, tmp_path / "x.gsb", name="x", provenance={})
    assert not (tmp_path / "x.gsb").exists()


def _edit(bundle: Path, change) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _rewrite_npy(bundle: Path, name: str, array: np.ndarray) -> None:
    np.save(bundle / name, array)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = FileEntry.of(bundle / name).to_json()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


BAD = [
    ("missing norm file", lambda b: (b / "norm_std.npy").unlink(), r"norm_std\.npy: missing: it is listed in the manifest's `files`"),
    ("norm not listed", lambda b: _edit(b, lambda m: m["spectral"]["norm"].update(mean="other.npy")),
     r"`spectral.norm.mean` names 'other.npy', which is not listed in `files`"),
    ("hop above n_fft", lambda b: _edit(b, lambda m: m["spectral"]["params"].update(hop=512)), r"`spectral.params` are not valid spectral parameters"),
    ("n_fft zero", lambda b: _edit(b, lambda m: m["spectral"]["params"].update(n_fft=0)), r"`spectral.params` are not valid spectral parameters"),
    ("unknown param", lambda b: _edit(b, lambda m: m["spectral"]["params"].update(colour="red")), r"`spectral.params` are not valid spectral parameters"),
    ("rate differs", lambda b: _edit(b, lambda m: m["spectral"]["params"].update(sample_rate=22050)),
     r"`spectral.params.sample_rate` is 22050 but `model.sample_rate` is 16000"),
    ("bins differ", lambda b: _edit(b, lambda m: m["spectral"].update(bins=129)), r"`spectral.bins` is 129 but `spectral.params` make 128 bins"),
    ("frames differ", lambda b: _edit(b, lambda m: m["spectral"].update(frames=64)),
     r"`graphs.generator.outputs\[0\].shape` is \[\"batch\", 128, 32\] but must be \[\"batch\", 128, 64\]"),
    ("segment differs", lambda b: _edit(b, lambda m: m["model"].update(segment=2048)),
     r"`graphs.reconstruction.outputs\[0\].shape` is \[\"batch\", 4096\] but must be \[\"batch\", 2048\]"),
    ("no reconstruction", lambda b: _edit(b, lambda m: m["graphs"].pop("reconstruction")), r"missing required field `graphs.reconstruction`"),
    ("unknown role", lambda b: _edit(b, lambda m: m["graphs"].update(vocoder=m["graphs"]["fused"])),
     r"`graphs.vocoder` is not a graph role of a spectral bundle \(only `generator`, `reconstruction`, `fused`\)"),
    ("version 1", lambda b: _edit(b, lambda m: m.update(format_version=1)), r'`model.kind` is "spectral", which format version 1 does not have'),
    ("std not positive", lambda b: _rewrite_npy(b, "norm_std.npy", np.zeros(128, np.float32)), r"norm_std\.npy: holds NaN or infinite values, or a std that is not > 0"),
    ("norm shape", lambda b: _rewrite_npy(b, "norm_mean.npy", np.zeros(129, np.float32)),
     r"norm_mean\.npy: must hold little-endian float32 of shape \(128,\) \(one value per bin\), got float32 \(129,\)"),
    ("norm dtype", lambda b: _rewrite_npy(b, "norm_mean.npy", np.zeros(128, np.float64)), r"norm_mean\.npy: must hold little-endian float32"),
]


@pytest.mark.parametrize("name, damage, message", BAD, ids=[b[0] for b in BAD])
def test_broken_spectral_bundles_are_refused_clearly(bundle_dir, tmp_path, name, damage, message):
    bundle = copy_bundle(bundle_dir, tmp_path)
    damage(bundle)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_waveform_bundles_have_no_reconstruction(tmp_path):
    from bundle_factory import make_bundle

    path = make_bundle(tmp_path / "w.gsb")
    with pytest.raises(BundleError, match=r'`model.kind` is "waveform": the bundle has no reconstruction network'):
        load_reconstruction(path)


def test_specgan_and_vocoder_runs_export_to_a_bundle_that_renders(tmp_path, capsys):
    """A real SpecGAN run and a vocoder run, both trained by `train`, exported together by `ganstream export`, rendered."""
    from ganstream.export.cli import main as export_main
    from ganstream.training.cli import _config_dir
    CONFIG_DIR = _config_dir()
    from ganstream.train import main as train_main

    common = [f"data.cache_dir={tmp_path / 'cache'}", "data.synth_items=24", "train.batch_size=4", "train.steps=2", "train.eval_every=0",
              "train.progress=false", "train.tensorboard=false", "--device", "cpu"]
    assert train_main([str(CONFIG_DIR / "specgan.yaml"), "model.width=2", *common, "--out", str(tmp_path / "gan")]) == 0
    assert train_main([str(CONFIG_DIR / "vocoder.yaml"), "model.width=8", "model.depth=1", *common, "--out", str(tmp_path / "voc")]) == 0
    (gan_run,) = (tmp_path / "gan").iterdir()
    (voc_run,) = (tmp_path / "voc").iterdir()
    out = tmp_path / "specgan.gsb"
    assert export_main([str(gan_run), "-o", str(out)]) == 2  # a user error (issue 10: exit 2 for every command)
    assert "specgan generates spectrograms; name the reconstruction network with --vocoder VOCODER_RUN" in capsys.readouterr().err
    assert export_main([str(gan_run), "--vocoder", str(voc_run), "-o", str(out), "--controls", "0"]) == 0
    printed = capsys.readouterr().out
    assert "generator: fp32" in printed and "reconstruction: fp32" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "specgan" and manifest["provenance"]["reconstruction"]["run_name"] == "vocoder"
    assert manifest["graphs"]["generator"]["outputs"][0]["shape"] == ["batch", 128, 128]
    assert manifest["model"]["segment"] == 128 * 128
    wav = tmp_path / "specgan.wav"
    assert render_main([str(out), "-o", str(wav), "--seconds", "2", "--sample-rate", "16000"]) == 0
    audio, sr = sf.read(wav)
    assert sr == 16000 and len(audio) == 32000 and np.sqrt(np.mean(audio**2)) > 1e-4
