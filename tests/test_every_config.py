"""Every shipped config, end to end at tiny size: train 2 steps, export with the default options, check parity, render 1 s.

Each config is shrunk by its family's `tiny` overrides (training/models/families.py), trained by
the `train` command and exported by `ganstream export` exactly as a user would, controls and all.
A spectral GAN goes out with a vocoder run trained here on its own front end; the vocoder config
exports alone, as a reconstruction bundle, whose "render" is 1 s of audio reconstructed by its graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from ganstream.core.spectral import log_magnitude, normalise
from ganstream.export.onnx import TOLERANCE, SpectralAudio
from ganstream.main import main as ganstream
from ganstream.realtime.bundle import load_bundle, load_reconstruction
from ganstream.realtime.inference import Generator
from ganstream.training.checkpoint import load_generator, load_vocoder
from ganstream.training.cli import _config_dir
from ganstream.training.config import load_config
from ganstream.training.data.synth import generate
from ganstream.training.models import FAMILIES, OutputKind, sample_latents

CONFIGS = sorted(_config_dir().glob("*.yaml"))
VOCODER_CONFIG = _config_dir() / "vocoder.yaml"
# What every tiny run shares beyond its family's overrides: two steps of four items, one critic step each, nothing on the side.
COMMON = (
    "train.steps=2", "train.batch_size=4", "loss.critic_steps=1", "train.eval_every=0", "train.progress=false", "train.tensorboard=false",
    "train.preview_count=1", "data.synth_items=8",
)
# ONNX Runtime against PyTorch on the whole latent -> audio path: a spectral bundle chains two graphs,
# each checked by export at 1e-4, and the second (Griffin-Lim steps) can amplify the first's rounding.
PATH_TOLERANCE = {OutputKind.WAVEFORM: TOLERANCE["fp32"], OutputKind.SPECTRAL: 10 * TOLERANCE["fp32"]}


def test_every_shipped_config_is_here():
    """The parametrisation reads the package's configs; a checkout's configs/ holds the same files."""
    checkout = Path(__file__).resolve().parents[1] / "configs"
    assert CONFIGS and [p.name for p in CONFIGS] == sorted(p.name for p in checkout.glob("*.yaml"))


def _kind(config: Path) -> str:
    return load_config(config).model.kind


def labelled_notes(folder: Path, sample_rate: int) -> Path:
    """Eight short decaying tones named by note and velocity (the piano set's `0001_p60_v100`), for a
    pitch-conditioned config, which needs labelled clips where the others train on synth:piano."""
    t = np.arange(int(0.3 * sample_rate)) / sample_rate
    for i, note in enumerate((48, 52, 55, 60, 64, 67, 72, 76)):
        hz = 440.0 * 2.0 ** ((note - 69) / 12)
        sf.write(folder / f"{i:04d}_p{note}_v{40 + 10 * i}.wav", 0.5 * np.sin(2 * np.pi * hz * t) * np.exp(-4 * t), sample_rate)
    return folder


def train_tiny(config: Path, out: Path, cache: Path, *extra: str) -> Path:
    """Trains `config` shrunk by its family's tiny overrides with `ganstream train`; returns the run directory.
    A config on a real set (set:NAME, built from Debian packages) trains on synth:piano here, or, conditioned
    on pitch, on a folder of labelled tones."""
    cfg = load_config(config)
    real_set = ["data.source=synth:piano"] if cfg.data.source.startswith("set:") else []
    if getattr(cfg.model, "condition", "none") != "none":
        notes = out.parent / f"{out.name}-notes"
        notes.mkdir(exist_ok=True)
        real_set = [f"data.source={labelled_notes(notes, cfg.data.sample_rate)}", "data.holdout=0"]
    argv = [str(config), *FAMILIES[_kind(config)].tiny, *COMMON, *real_set, f"data.cache_dir={cache}", *extra, "--device", "cpu", "--out", str(out)]
    assert ganstream(["train", *argv]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    """One data cache for every run: the synthetic sets are made once per segment length."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def vocoder_run(tmp_path_factory, data_cache):
    """model config with a spectral front end -> a tiny vocoder run of configs/vocoder.yaml on that front end, trained once."""
    runs: dict[tuple, Path] = {}

    def run_for(model_cfg) -> Path:
        # what export requires the GAN and the vocoder to share: the front end and the normalisation's clip
        front = (*model_cfg.spectral().to_dict().items(), ("norm_clip", model_cfg.norm_clip))
        if front not in runs:
            runs[front] = train_tiny(VOCODER_CONFIG, tmp_path_factory.mktemp("vocoder"), data_cache, *(f"model.{k}={v}" for k, v in front))
        return runs[front]

    return run_for


def assert_audible(audio: np.ndarray) -> None:
    """Finite, and neither silent nor a constant: its level about the mean is above -100 dBFS, far above
    24-bit PCM's floor (-144 dBFS). Untrained tiny networks are quiet: the 1D DCGAN at 16384 samples
    renders near -87 dBFS, its eval-mode BatchNorm shrinking the signal block after block."""
    assert np.isfinite(audio).all()
    assert np.sqrt(np.mean(np.square(audio - audio.mean()))) > 1e-5


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_exports_with_defaults_and_renders(config, tmp_path, data_cache, vocoder_run):
    family = FAMILIES[_kind(config)]
    model_cfg = load_config(config, family.tiny).model
    if family.output is OutputKind.VOCODER:
        run = vocoder_run(model_cfg)  # configs/vocoder.yaml on its own front end
    else:
        run = train_tiny(config, tmp_path / "run", data_cache)
    bundle = tmp_path / "b.gsb"
    argv = ["export", str(run), "-o", str(bundle)]
    if family.output is OutputKind.SPECTRAL:
        argv += ["--vocoder", str(vocoder_run(model_cfg))]
    assert ganstream(argv) == 0  # the default options: fp32, 8 principal controls

    # export's own parity check passed for every graph, at the default precision
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == family.kind
    for graph in manifest["graphs"].values():
        assert graph["precision"] == "fp32" and 0 <= graph["parity_max_abs_error"] <= TOLERANCE["fp32"]

    if family.output is OutputKind.VOCODER:
        _check_reconstruction_bundle(run, bundle)
        return

    controls = manifest["controls"]["items"]
    assert [c["name"] for c in controls if c["kind"] == "principal"] == [f"pc{i}" for i in range(1, 9)]
    assert {c["name"] for c in controls if c["kind"] == "descriptor"} <= {"loudness", "brightness", "noisiness"}

    # the loaded bundle's ONNX generate against the PyTorch networks it came from
    generator, cfg, _ = load_generator(run / "checkpoints" / "latest.pt", "ema")
    torch_path = generator
    if family.output is OutputKind.SPECTRAL:
        vocoder, _, _ = load_vocoder(vocoder_run(model_cfg) / "checkpoints" / "latest.pt", "ema")
        torch_path = SpectralAudio(generator, vocoder.with_input_norm(generator.norm()))
    z = sample_latents(cfg.model, 4, torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = torch_path.eval()(z).reshape(4, -1).numpy()
    loaded = load_bundle(bundle)
    got = Generator(loaded, provider="cpu", threads=1).generate(z.numpy())
    assert got.shape == expected.shape == (4, loaded.segment)
    assert np.abs(got - expected).max() < PATH_TOLERANCE[family.output]
    # and the graph follows z, not only the constant part: what z changes stands well above float32 rounding
    # (it is small for an untrained 1D DCGAN, whose eval-mode BatchNorm shrinks it block after block)
    variation = expected - expected.mean(0)
    assert np.abs(variation).max() > 1000 * np.finfo(np.float32).eps * np.abs(expected).max()
    assert np.abs((got - got.mean(0)) - variation).max() < 0.02 * np.abs(variation).max()

    wav = tmp_path / "out.wav"
    assert ganstream(["render", str(bundle), "-o", str(wav), "--seconds", "1", "--no-progress"]) == 0
    audio, sr = sf.read(wav)
    assert audio.ndim == 1 and len(audio) == sr
    assert_audible(audio)


def _check_reconstruction_bundle(run: Path, bundle: Path) -> None:
    """A reconstruction bundle has no latent to render from: its graph reconstructs 1 s of piano
    from the spectrogram, against the PyTorch network."""
    network, cfg, _ = load_vocoder(run / "checkpoints" / "latest.pt", "ema")
    recon = load_reconstruction(bundle)
    params = recon.spectral.params
    frames = -(-params.sample_rate // params.hop)  # the frames that invert to at least 1 s
    (note,) = generate("piano", 1, params.samples(frames), params.sample_rate, seed=3)
    spectrogram = normalise(log_magnitude(note, params)[..., :frames], recon.spectral.norm)[None]  # (1, bins, frames)
    session = ort.InferenceSession(str(recon.graph.file), providers=["CPUExecutionProvider"])
    (audio,) = session.run(None, {session.get_inputs()[0].name: spectrogram})
    with torch.no_grad():
        expected = network.eval()(torch.from_numpy(spectrogram)).numpy()
    assert audio.shape == expected.shape == (1, params.samples(frames)) and audio.shape[1] >= params.sample_rate
    assert np.abs(audio - expected).max() < TOLERANCE["fp32"]
    assert_audible(audio[0])
