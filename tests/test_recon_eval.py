"""`ganstream eval-reconstruction`: its measures, the table on held-out clips with and without a network, and its errors."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ganstream.export.bundle import export_spectral
from ganstream.main import main as ganstream
from ganstream.export.bundle import RECONSTRUCTION_FILE
from ganstream.core.spectral import SpectralParams, log_magnitude, stft
from ganstream.training.models.specgan import SpecGANConfig, SpecGANGenerator
from ganstream.training.models.vocoder import Vocoder, VocoderConfig
from ganstream.training.spectral import dataset_moments
from ganstream.evaluation.recon_eval import log_spectral_distance_db, spectral_consistency, spectral_convergence_db


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """Eight one-second decaying harmonic tones: a tiny synthetic set, as a folder a musician might point at."""
    folder = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for i in range(8):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * np.exp(-3 * t)
        sf.write(folder / f"tone{i}.wav", (0.3 * x).astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def spectral_bundle(tones, tmp_path_factory):
    """A tiny SpecGAN and an untrained vocoder (which passes the input magnitude through) in one bundle,
    normalised with the tones' statistics as training would."""
    torch.manual_seed(0)
    cfg = SpecGANConfig(width=1, latent_dim=4, frames=64)
    generator = SpecGANGenerator(cfg).eval()
    vocoder = Vocoder(VocoderConfig(width=8, depth=1)).eval()
    stats = dataset_moments([sf.read(f, dtype="float32")[0] for f in sorted(tones.glob("*.wav"))], cfg.spectral())
    generator.set_norm(stats)
    vocoder.set_norm(stats)
    out = tmp_path_factory.mktemp("bundle") / "s.gsb"
    return export_spectral(generator, cfg, stats, vocoder, out, name="tiny", provenance={"run_name": "tiny"})


def run(args, tones, tmp_path):
    out = tmp_path / "recon.json"
    rc = ganstream(["eval-reconstruction", str(tones), "--holdout", "0.5", "--cache-dir", str(tmp_path / "cache"), "--json", str(out), *args])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_measures_are_the_textbook_ones():
    p = SpectralParams()
    x = np.sin(2 * np.pi * 440 * np.arange(8192) / 16000).astype(np.float32)
    ref = np.abs(stft(x, p))
    assert spectral_convergence_db(ref, ref) < -200
    assert spectral_convergence_db(ref, 0.5 * ref) == pytest.approx(20 * np.log10(0.5), abs=1e-6)
    assert spectral_convergence_db(ref, np.zeros_like(ref)) == pytest.approx(0.0, abs=1e-9)
    assert log_spectral_distance_db(ref, ref) == 0.0
    loud = np.full((4, 3), 1.0)
    assert log_spectral_distance_db(loud, 0.1 * loud) == pytest.approx(20.0)  # 10x too quiet everywhere: 20 dB


def test_consistency_separates_real_from_incoherent_spectrograms():
    p = SpectralParams()
    t = np.arange(16384) / 16000
    real = log_magnitude((0.5 * np.sin(2 * np.pi * 330 * t) * np.exp(-2 * t)).astype(np.float32), p)
    incoherent = np.random.default_rng(1).normal(-3, 2, real.shape)  # log-magnitudes no signal has
    scores = spectral_consistency(real, p), spectral_consistency(incoherent, p)
    assert scores[0] < -15.0 and scores[1] > -6.0, scores


def test_table_compares_the_baselines_on_held_out_audio(tones, tmp_path, capsys):
    rc, report = run(["--seconds", "1", "--segment", "8192"], tones, tmp_path)
    assert rc == 0
    table = capsys.readouterr().out
    assert all(name in table for name in ("GL-32 exact", "GL-100 exact", "PGHI exact", "GL-32 clip 3", "spectral convergence"))
    (one,) = report["sets"]
    rows = {r["method"]: r for r in one["rows"]}
    assert set(rows) == {"GL-32 exact", "GL-16 locked exact", "GL-32 locked exact", "GL-100 exact", "PGHI exact", "GL-32 clip 3"}  # the clip row: SpecGAN's 3 std
    assert all(r["clips"] == 2 for r in rows.values())  # 1 s at 8192 samples a clip
    for r in rows.values():
        assert all(np.isfinite(r[k]) for k in ("spectral_convergence_db", "log_spectral_distance_db", "compute_s_per_audio_s"))
        assert r["compute_s_per_audio_s"] > 0
    # More iterations: closer to the original, and slower.
    assert rows["GL-100 exact"]["spectral_convergence_db"] < rows["GL-32 exact"]["spectral_convergence_db"] - 3
    assert rows["GL-100 exact"]["compute_s_per_audio_s"] > rows["GL-32 exact"]["compute_s_per_audio_s"]
    # On these tones the locked phase is a far better start than a random one (measured: about 10 dB at 32).
    assert rows["GL-32 locked exact"]["spectral_convergence_db"] < rows["GL-32 exact"]["spectral_convergence_db"] - 3
    # Every method is far better than nothing (0 dB: an error as large as the signal).
    assert max(r["spectral_convergence_db"] for r in rows.values()) < -10
    assert report["spectral"]["n_fft"] == 256 and report["segment"] == 8192 and one["seconds"] == pytest.approx(8192 * 2 / 16000)


def test_a_spectral_bundle_joins_the_table_and_its_gan_is_measured(tones, spectral_bundle, tmp_path, capsys):
    rc, report = run(["--network", str(spectral_bundle), "--seconds", "1"], tones, tmp_path)
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    (one,) = report["sets"]
    rows = {r["method"]: r for r in one["rows"]}
    assert report["segment"] == 64 * 128  # the bundle's frames, inverted
    net = rows["network"]
    assert np.isfinite(net["spectral_convergence_db"]) and np.isfinite(net["log_spectral_distance_db"])
    # "GL-32 clip 3" gets the magnitudes clipped as the network's input clips them (the bundle's statistics),
    # which costs Griffin-Lim about 2 dB here (measured -21.8 against -23.8 dB).
    assert rows["GL-32 exact"]["spectral_convergence_db"] < rows["GL-32 clip 3"]["spectral_convergence_db"] - 1.0
    assert rows["GL-32 exact"]["input"] == "exact" and net["input"] == rows["GL-32 clip 3"]["input"] == "clip 3"
    assert one["statistics"] == "the network's statistics"
    # Untrained, the vocoder is a phase-locked vocoder with one Griffin-Lim step: on harmonic tones
    # it measured -19.9 dB, between PGHI and GL-32 (a random phase under the same magnitude: -7 dB).
    assert net["spectral_convergence_db"] < -15.0
    assert "the network's input is always clipped at its own norm_clip" in out
    c = one["consistency"]
    assert "spectral consistency" in out and c["items"] == 16
    for who in ("generated", "real"):
        assert all(np.isfinite(v) for v in c[who].values())
        assert all(v < 0 for v in c[who].values())  # nearer the spectrogram than nothing is
    assert c["real"]["network"] < -15.0  # the locked phase is nearly consistent for a real clip (measured -19.9 dB)


def test_a_bare_onnx_network_takes_its_statistics_from_the_training_split(tones, spectral_bundle, tmp_path, capsys):
    rc, report = run(["--network", str(spectral_bundle / RECONSTRUCTION_FILE), "--seconds", "1", "--segment", "8192"], tones, tmp_path)
    assert rc == 0, capsys.readouterr().err
    (one,) = report["sets"]
    rows = {r["method"]: r for r in one["rows"]}
    assert np.isfinite(rows["network"]["spectral_convergence_db"]) and "consistency" not in one
    assert one["statistics"] == f"{tones}'s training statistics"
    # A front end that does not fit the file is named before any statistics are computed.
    assert ganstream(["eval-reconstruction", str(tones), "--network", str(spectral_bundle / RECONSTRUCTION_FILE), "--n-fft", "512"]) == 2
    assert "(batch, 256, frames); check --n-fft and --mel-bins" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-fft", "255"], "--n-fft: must be even"),
        (["--hop", "200"], "--hop: must be 1 .. n_fft / 2"),
        (["--seconds", "0"], "--seconds: a positive number"),
        (["--network", "/nonexistent/bundle"], "--network /nonexistent/bundle: no such bundle or ONNX file"),
        (["--norm-clips", "2,x"], "--norm-clips: 'x' is neither a positive number of standard deviations nor 'none'"),
        (["--norm-clips", "0"], "--norm-clips: '0'"),
        (["--norm-clips", "3,,4"], "--norm-clips: ''"),
        (["--norm-clips", "inf"], "--norm-clips: 'inf'"),
        (["--max-clips", "0"], "--max-clips: at least 1"),
    ],
)
def test_errors_are_one_line_naming_the_problem(tones, tmp_path, capsys, args, message):
    rc = ganstream(["eval-reconstruction", str(tones), "--cache-dir", str(tmp_path / "cache"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("eval-reconstruction: error:") and message in err, err
    assert err.count("\n") == 1


def test_a_damaged_onnx_file_and_a_missing_folder_are_named(tones, tmp_path, capsys):
    broken = tmp_path / "net.onnx"
    broken.write_bytes(b"not a model")
    assert ganstream(["eval-reconstruction", str(tones), "--network", str(broken), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"--network {broken}: onnxruntime cannot load it" in err and err.count("\n") == 1
    assert ganstream(["eval-reconstruction", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
