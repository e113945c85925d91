"""The reconstruction network: exportable (inverse) STFT, the vocoder, its training through `train`, and its export."""

import contextlib
import csv
import json

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from test_training import tensors_equal

from ganstream.export.bundle import export_run
from ganstream.export.cli import main as export_main
from ganstream.export.onnx import BATCH, TensorSpec, export_graph
from ganstream.realtime.bundle import BundleError, load_bundle, load_reconstruction
from ganstream.realtime.inference import Reconstructor
from ganstream.core import spectral as front_end
from ganstream.core.spectral import BinNorm, SpectralParams
from ganstream.training.checkpoint import load_checkpoint, load_vocoder
from ganstream.train import main as train_main
from ganstream.training.config import ConfigError, load_config
from ganstream.training.loop import run_dir_for
from ganstream.training.models.istft import STFT, InverseSTFT
from ganstream.training.models.vocoder import Vocoder, VocoderConfig
from ganstream.training.spectral import log_magnitude, stft
from ganstream.training.vocoder_train import VocoderRun, VocoderTrainer

CPU = torch.device("cpu")
TINY = ["model.kind=vocoder", "model.frames=16", "model.width=8", "model.depth=1", "model.expansion=2"]


def vocoder_config(tiny_config, *overrides):
    return tiny_config(*TINY, "optim.lr_g=3e-3", *overrides)


# ---- the exportable STFT pair -----------------------------------------------------------------


@pytest.mark.parametrize("n_fft, hop", [(256, 128), (256, 64), (512, 128), (1024, 128)])
def test_inverse_stft_matches_the_front_end_and_torch_istft(n_fft, hop):
    params = SpectralParams(n_fft=n_fft, hop=hop)
    gen = torch.Generator().manual_seed(n_fft + hop)
    spectrum = torch.randn(2, n_fft // 2 + 1, 37, dtype=torch.complex64, generator=gen)
    got = InverseSTFT(n_fft, hop)(spectrum.real, spectrum.imag)
    assert got.shape == (2, 37 * hop)
    assert np.abs(got.numpy() - front_end.istft(spectrum.numpy(), params)).max() < 1e-4
    # torch.istft divides by the bare window envelope; the front end floors it over the last hop's tail.
    expected = torch.istft(spectrum, n_fft, hop, window=torch.hann_window(n_fft), center=True, length=37 * hop)
    covered = torch.from_numpy(front_end.envelope(n_fft, hop, 37) >= front_end.ENVELOPE_FLOOR)
    assert covered[:-hop].all()  # floored, if anywhere, only within the last hop
    assert (got - expected)[:, covered].abs().max() < 1e-4
    # A gain computed once serves every spectrum of the same length.
    istft = InverseSTFT(n_fft, hop)
    assert torch.equal(istft(spectrum.real, spectrum.imag, istft.gain(spectrum.real)), got)
    # and it inverts the front end's analysis
    audio = torch.randn(2, 4000, generator=gen)
    spec = stft(audio, params)
    back = InverseSTFT(n_fft, hop)(spec.real, spec.imag)
    n = back.shape[1] - hop  # all but the last hop, which fades
    assert (back[:, :n] - audio[:, :n]).abs().max() < 1e-4


@pytest.mark.parametrize("n_fft, hop", [(256, 128), (512, 128), (256, 64)])
def test_forward_stft_matches_the_front_end(n_fft, hop):
    audio = torch.randn(3, 3000, generator=torch.Generator().manual_seed(1))
    params = SpectralParams(n_fft=n_fft, hop=hop)
    expected = front_end.stft(audio.numpy(), params)
    real, imag = STFT(n_fft, hop)(audio)
    assert real.shape == expected.shape == (3, n_fft // 2 + 1, 3000 // hop)
    scale = np.abs(expected).max()
    assert np.abs(real.numpy() - expected.real).max() / scale < 1e-5 and np.abs(imag.numpy() - expected.imag).max() / scale < 1e-5


class _Pair(torch.nn.Module):
    """InverseSTFT on one tensor, (B, 2F, T): real parts then imaginary ones."""

    def __init__(self, n_fft, hop):
        super().__init__()
        self.istft = InverseSTFT(n_fft, hop)

    def forward(self, spectrum):
        return self.istft(*spectrum.chunk(2, dim=1))


def test_inverse_stft_in_onnxruntime_matches_torch(tmp_path):
    module = _Pair(256, 128)
    x = torch.randn(4, 258, 20, generator=torch.Generator().manual_seed(2))
    entry = export_graph(
        module, (x,), [TensorSpec("spectrum", (BATCH, 258, 20), free=((2, "frames"),))],
        [TensorSpec("audio", (BATCH, 128 * 20), free=((1, "samples"),))], tmp_path / "istft.onnx",
    )
    assert entry["parity_max_abs_error"] <= 1e-4
    # The frames axis stays symbolic: another length runs through the same file.
    longer = torch.randn(1, 258, 333, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(tmp_path / "istft.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"spectrum": longer.numpy()})
    assert got.shape == (1, 128 * 333)
    assert np.abs(got - module(longer).numpy()).max() < 1e-4


# ---- the network ---------------------------------------------------------------------------------


def test_vocoder_maps_frames_to_audio_of_the_front_ends_length():
    cfg = VocoderConfig(frames=16, width=8, depth=1)
    vocoder = Vocoder(cfg).eval()
    params = cfg.spectral()
    frames = torch.rand(3, params.bins, 16) * 2 - 1
    audio = vocoder(frames)
    assert audio.shape == (3, params.samples(16)) == (3, cfg.segment)
    assert audio.abs().max() <= 1.0
    assert vocoder(torch.rand(1, params.bins, 40) * 2 - 1).shape == (1, params.samples(40))  # any length


def test_untrained_vocoder_starts_from_the_input_magnitude():
    """The magnitude head starts at a zero residual: the predicted magnitude is the denormalised input."""
    cfg = VocoderConfig(frames=16, width=8, depth=1, projections=0)  # a Griffin-Lim step would reshape noise frames
    vocoder = Vocoder(cfg).eval()
    params = cfg.spectral()
    mean = np.linspace(-6.0, -2.0, params.bins).astype(np.float32)
    std = np.linspace(0.5, 2.0, params.bins).astype(np.float32)
    vocoder.set_norm(BinNorm(mean, std, clip=3.0))
    frames = torch.rand(2, params.bins, 16) * 1.8 - 0.9  # inside the clip
    with torch.no_grad():
        real, imag = vocoder.spectrum(frames)
    magnitude = torch.sqrt(real**2 + imag**2)[:, : params.bins]
    expected = torch.exp(frames * 3.0 * torch.from_numpy(std)[:, None] + torch.from_numpy(mean)[:, None])
    ratio = magnitude / expected  # |(x, y)| / sqrt(x^2 + y^2 + eps): 1 but where the phase head outputs nearly (0, 0)
    assert ratio.max() <= 1 + 1e-5 and ratio.median() > 1 - 1e-4 and ratio.min() > 0.9


@pytest.mark.parametrize("projections", [0, 1])
@pytest.mark.parametrize("freq", [440.0, 1234.5])
def test_untrained_vocoder_is_a_phase_locked_vocoder(freq, projections):
    """Untrained, the phase comes from the magnitude's peaks: a steady tone between two bins' centres comes back
    nearly exact (measured -32 to -45 dB spectral convergence; a random phase under the same magnitude gives about -5 dB)."""
    cfg = VocoderConfig(frames=32, width=8, depth=1, projections=projections)
    vocoder = Vocoder(cfg).eval()
    params = cfg.spectral()
    t = np.arange(params.samples(32)) / params.sample_rate
    tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    log_mag = front_end.log_magnitude(tone, params)
    norm = BinNorm(log_mag.mean(axis=1), log_mag.std(axis=1) + 1.0, clip=3.0)  # wide enough that nothing clips
    vocoder.set_norm(norm)
    with torch.no_grad():
        audio = vocoder(torch.from_numpy(front_end.normalise(log_mag, norm))[None].float())[0].numpy()
    want, got = np.abs(front_end.stft(tone, params))[:, 2:-2], np.abs(front_end.stft(audio, params))[:, 2:-2]
    assert 20 * np.log10(np.linalg.norm(want - got) / np.linalg.norm(want)) < -30.0


def test_phase_heads_shapes_range_and_untrained_residual_is_the_prior():
    """model.phase: residual starts as the phase-locked prior (its head is zero); learned gives a phase
    through cosine and sine, a unit vector per bin, so |spectrum| is the magnitude head's output whatever
    the head says; an unknown mode is refused by name."""
    params = VocoderConfig().spectral()
    frames = torch.rand(2, params.bins, 16, generator=torch.Generator().manual_seed(3)) * 1.8 - 0.9
    spectra = {}
    for phase in ("locked", "residual", "learned"):
        torch.manual_seed(0)
        vocoder = Vocoder(VocoderConfig(frames=16, width=8, depth=1, projections=0, phase=phase)).eval()
        assert (vocoder.phase_head is None) == (phase == "locked") and (vocoder.lock is None) == (phase == "learned")
        if vocoder.phase_head is not None:
            assert vocoder.phase_head.out_features == params.n_fft // 2 + 1
            with torch.no_grad():  # any head output: the spectrum's magnitude does not depend on it
                vocoder.phase_head.bias.uniform_(-10.0, 10.0)
        with torch.no_grad():
            real, imag = vocoder.spectrum(frames)
            spectra[phase] = (real, imag, vocoder.phase_head.bias.zero_() if vocoder.phase_head is not None else None)
        assert real.shape == imag.shape == (2, params.n_fft // 2 + 1, 16)
        magnitude = torch.sqrt(real**2 + imag**2)
        base = vocoder.base_log_magnitude(front_end_denormalised(vocoder, frames)).exp()
        assert torch.allclose(magnitude, base, rtol=1e-4, atol=1e-7)
    # With its bias back at zero (as untrained), the residual head adds nothing to the prior.
    torch.manual_seed(0)
    residual = Vocoder(VocoderConfig(frames=16, width=8, depth=1, projections=0, phase="residual")).eval()
    locked = Vocoder(VocoderConfig(frames=16, width=8, depth=1, projections=0, phase="locked")).eval()
    locked.load_state_dict({k: v for k, v in residual.state_dict().items() if not k.startswith("phase_head")})
    with torch.no_grad():
        assert torch.equal(residual(frames), locked(frames))
    with pytest.raises(ValueError, match="phase: one of locked, residual, learned, not 'vocos'"):
        VocoderConfig(phase="vocos").validate()
    with pytest.raises(ValueError, match="critics: one or more of multiscale, period, stft"):
        VocoderConfig(adversarial=0.1, critics=["wave"]).validate()


def front_end_denormalised(vocoder, frames):
    from ganstream.training.spectral import denormalise

    return denormalise(frames, vocoder.input_mean, vocoder.input_std, vocoder.cfg.norm_clip)


@pytest.mark.parametrize("phase", ["residual", "learned"])
def test_phase_heads_export_with_parity(tiny_config, tmp_path, capsys, phase):
    cfg = vocoder_config(tiny_config, "train.steps=2", f"model.phase={phase}", f"run.out_dir={tmp_path / 'runs'}")
    run = VocoderRun(cfg, run_dir_for(cfg), CPU)
    run.train()
    out = tmp_path / "voc.gsb"
    assert export_main([str(run.run_dir), "-o", str(out)]) == 0
    capsys.readouterr()
    graph = json.loads((out / "manifest.json").read_text())["graphs"]["reconstruction"]
    assert 0 <= graph["parity_max_abs_error"] <= 1e-4
    frames = (torch.randn(2, 128, 40, generator=torch.Generator().manual_seed(5)) / 3).clamp(-1, 1)
    audio = Reconstructor(load_reconstruction(out), provider="cpu", threads=1).reconstruct(frames.numpy())
    vocoder, _, _ = load_vocoder(run.run_dir / "checkpoints" / "latest.pt")
    with torch.no_grad():  # 40 frames, over 2x the export's check: the prior's phase sums more float32 rounding
        assert np.abs(audio - vocoder(frames).numpy()).max() < 3e-4


def test_projection_momentum_is_fast_griffin_lim_and_zero_is_plain():
    """model.projection_momentum: 0 gives the plain Griffin-Lim steps; 0.99 gets nearer a vibrato's
    magnitudes in the same number of steps (measured -23.2 against -22.9 dB after 4 steps)."""
    params = VocoderConfig().spectral()
    t = np.arange(params.samples(64)) / params.sample_rate
    f = 300 + 40 * np.sin(2 * np.pi * 3 * t)  # vibrato: the phase-locked prior's steady partials are off
    tone = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / params.sample_rate)
            + 0.2 * np.sin(2 * np.pi * np.cumsum(2.7 * f) / params.sample_rate) * np.exp(-3 * t)).astype(np.float32)
    log_mag = front_end.log_magnitude(tone, params)
    norm = BinNorm(log_mag.mean(axis=1), log_mag.std(axis=1) + 1.0, clip=3.0)
    frames = torch.from_numpy(front_end.normalise(log_mag, norm))[None].float()
    want = np.abs(front_end.stft(tone, params))

    def convergence(momentum):
        vocoder = Vocoder(VocoderConfig(frames=64, width=8, depth=1, projections=4, projection_momentum=momentum)).eval()
        vocoder.set_norm(norm)
        with torch.no_grad():
            got = np.abs(front_end.stft(vocoder(frames)[0].numpy(), params))
        return 20 * np.log10(np.linalg.norm(want - got) / np.linalg.norm(want))

    assert convergence(0.99) < convergence(0.0) - 0.1
    with pytest.raises(ValueError, match="projection_momentum"):
        VocoderConfig(projection_momentum=-0.5).validate()


def test_learning_rate_decays_by_a_cosine_to_lr_final_at_the_last_step(tiny_config):
    cfg = vocoder_config(tiny_config, "model.lr_final=0.1", "train.steps=10")
    trainer = VocoderTrainer(cfg, CPU, BinNorm(np.zeros(128, np.float32), np.ones(128, np.float32), clip=3.0))
    lr = cfg.optim.lr_g
    assert trainer.learning_rate() == pytest.approx(lr)
    trainer.updates = 5
    assert trainer.learning_rate() == pytest.approx(lr * (0.1 + 0.9 * 0.5))
    trainer.updates = 10
    assert trainer.learning_rate() == pytest.approx(0.1 * lr)
    trainer.updates = 25  # past train.steps (a resumed run given more steps): held at the end
    assert trainer.learning_rate() == pytest.approx(0.1 * lr)
    trainer.halve_learning_rate()  # a NaN rollback halves the decayed rate
    assert trainer.opt.param_groups[0]["lr"] == pytest.approx(0.05 * lr)
    with pytest.raises(ConfigError, match=r"lr_final: a fraction of optim.lr_g in \(0, 1\], not 0"):
        vocoder_config(tiny_config, "model.lr_final=0")


def test_a_few_steps_reduce_the_loss_on_tones(tiny_config):
    """A trend over three seeds, with a margin, not the exact course of the steps.

    The course of 40 steps is not portable: the same code on an AMD EPYC (whose MKL takes another FFT path;
    MKL_CBWR=COMPATIBLE reproduces it on Intel) went 1.700, 1.735, 1.733, 1.708... and failed the old "lower
    at every 8th step" check, which Intel passed. With the loss floor at the front end's log_floor
    (vocoder_train.py), the last 5 steps' mean came to 0.889-0.936 of the first 5's (medians of three seeds
    0.909-0.916) over seeds 0-4, both FFT paths, oneDNN off, ATEN_CPU_CAPABILITY=default, 1 and 2 threads.
    With the old floor of 1e-7 it was 0.936-0.964; with optim.lr_g=0 it is 1.
    """
    cfg = vocoder_config(tiny_config)
    params = cfg.model.spectral()
    t = np.arange(cfg.model.segment) / params.sample_rate
    freqs = np.array([220.0, 330.0, 440.0, 587.0])
    tones = (0.5 * np.sin(2 * np.pi * freqs[:, None] * t) * np.exp(-2.0 * t)).astype(np.float32)
    log_mag = log_magnitude(stft(torch.from_numpy(tones), params), params)
    norm = BinNorm(log_mag.mean(dim=(0, 2)).numpy(), log_mag.std(dim=(0, 2)).clamp_min(1e-3).numpy(), clip=3.0)
    batch = [torch.from_numpy(tones).unsqueeze(1)]
    ratios = []
    with one_torch_thread():
        for seed in range(3):
            torch.manual_seed(seed)
            trainer = VocoderTrainer(cfg, CPU, norm)
            losses = [trainer.step(batch)["loss"] for _ in range(40)]
            assert all(np.isfinite(losses)), (seed, losses)
            # Adam's first step at 3e-3 lifts the loss 3-4 %, every seed and machine: bounded, not diverging.
            assert max(losses) < 1.1 * losses[0], (seed, losses)
            ratios.append(np.mean(losses[-5:]) / np.mean(losses[:5]))
    # Untrained, the phase-locked vocoder already rebuilds tones well; the magnitude head takes the rest off.
    assert max(ratios) < 0.96 and np.median(ratios) < 0.94, ratios


@contextlib.contextmanager
def one_torch_thread():
    """Small convolutions on one thread: on 2 cores shared with other jobs, two threads' OpenMP barriers took
    11-24 s for 40 steps against 0.8 s on one (measured at a load average of 4-6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---- training through `train` ------------------------------------------------------------------


def test_train_cli_trains_a_vocoder_with_metrics_and_previews(tiny_config, tmp_path):
    cfg = vocoder_config(tiny_config, "train.preview_every=2")
    overrides = [*TINY, "optim.lr_g=3e-3", "train.preview_every=2", "data.synth_items=24", f"data.cache_dir={tmp_path / 'cache'}",
                 "train.batch_size=4", "train.steps=4", "train.progress=false", "train.tensorboard=false", "train.log_every=1",
                 "train.preview_count=2", "train.device=cpu", "train.eval_every=0"]
    assert train_main([*overrides, "--out", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name == f"run-{load_config(None, overrides).hash()}"
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["step"] == 4 and set(state["trainer"]) == {"vocoder", "ema", "opt", "lr_scale", "updates"}
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3, 4]
    for key in ("loss", "spectral_convergence", "log_magnitude", "mel", "grad_norm", "lr"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    # Each preview clip, then its reconstruction, with the monitor's gaps between them.
    audio, sr = sf.read(run_dir / "previews" / "step_00000004.wav")
    segment = cfg.model.segment
    assert sr == 16000 and len(audio) == 4 * (segment + sr // 5)
    clips = audio.reshape(4, -1)[:, :segment]
    assert np.abs(clips[1]).max() > 0 and not np.allclose(clips[0], clips[1], atol=1e-3)
    assert (run_dir / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("extra", [
    [],
    ["model.adversarial=0.1", "loss.kind=hinge", "loss.feature_matching=2.0", "model.phase=residual",
     "loss.stft_ffts=[64,128]", "loss.stft_channels=4", "loss.period_periods=[2,3]", "loss.period_channels=4"],
], ids=["spectral", "adversarial"])
def test_vocoder_resume_is_exact(tiny_config, tmp_path, extra):
    """Stopping at step 3 and resuming gives bit-identical weights, optimisers, EMA (and critic) to a straight run."""
    straight_cfg = vocoder_config(tiny_config, "train.steps=6", f"run.out_dir={tmp_path / 'a'}", "data.synth_items=40", *extra)
    straight = VocoderRun(straight_cfg, run_dir_for(straight_cfg), CPU)
    straight.train()
    assert ("critics" in straight.trainer.state()) == bool(extra)
    if extra:  # both critics were trained, and feature matching was logged
        assert set(straight.trainer.critics) == {"period", "stft"}
        rows = list(csv.DictReader(open(straight.run_dir / "metrics.csv")))
        assert all(float(r["feature_matching"]) > 0 and np.isfinite(float(r["loss_g"])) for r in rows)

    cfg = vocoder_config(tiny_config, "train.steps=6", f"run.out_dir={tmp_path / 'b'}", "data.synth_items=40", *extra)
    first = VocoderRun(cfg, run_dir_for(cfg), CPU)
    first.train(callbacks=(lambda r: r.request_stop() if r.step == 3 else None,))
    assert first.step == 3
    resumed = VocoderRun(cfg, run_dir_for(cfg), CPU, resume=True)
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 6
    assert tensors_equal(straight.trainer.state(), resumed.trainer.state())
    assert straight.order.state() == resumed.order.state()
    # the norm buffers travelled with the checkpoint
    assert torch.equal(resumed.trainer.vocoder.norm_mean, straight.trainer.vocoder.norm_mean)
    assert resumed.trainer.vocoder.norm_std.min() > 0 and not torch.all(resumed.trainer.vocoder.norm_std == 1)


# ---- export -------------------------------------------------------------------------------------


@pytest.fixture
def vocoder_run(tiny_config):
    cfg = vocoder_config(tiny_config, "train.steps=2")
    run = VocoderRun(cfg, run_dir_for(cfg), CPU)
    run.train()
    return run.run_dir


def test_vocoder_exports_alone_with_parity(vocoder_run, tmp_path, capsys):
    out = tmp_path / "voc.gsb"
    assert export_main([str(vocoder_run), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction: fp32, opset 17, parity max abs error" in printed and "over 16 spectrograms" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["model"]["kind"] == "reconstruction"
    graph = manifest["graphs"]["reconstruction"]
    assert 0 <= graph["parity_max_abs_error"] <= 1e-4
    assert graph["inputs"][0]["shape"] == ["batch", 128, 16] and graph["outputs"][0]["shape"] == ["batch", 16 * 128]
    assert manifest["spectral"]["params"]["n_fft"] == 256 and manifest["spectral"]["norm"]["clip"] == 3.0

    network = load_reconstruction(out)
    vocoder, _, _ = load_vocoder(vocoder_run / "checkpoints" / "latest.pt")
    mean, std = network.spectral.norm.to_arrays()
    assert np.array_equal(mean, vocoder.norm_mean.numpy()) and np.array_equal(std, vocoder.norm_std.numpy())
    # The same file reconstructs any number of frames, as eval-reconstruction needs.
    frames = (torch.randn(2, 128, 50, generator=torch.Generator().manual_seed(5)) / 3).clamp(-1, 1)
    audio = Reconstructor(network, provider="cpu", threads=1).reconstruct(frames.numpy())
    assert audio.shape == (2, 50 * 128)
    with torch.no_grad():
        assert np.abs(audio - vocoder(frames).numpy()).max() < 1e-4

    with pytest.raises(BundleError, match=r'`model.kind` is "reconstruction": the bundle holds a reconstruction network and no generator'):
        load_bundle(out)


def test_vocoder_export_refuses_a_vocoder_for_a_vocoder(vocoder_run, tmp_path):
    from ganstream.export.onnx import ExportError

    with pytest.raises(ExportError, match="is a vocoder run; --vocoder goes with a spectral GAN run"):
        export_run(vocoder_run, tmp_path / "x.gsb", vocoder=vocoder_run)
