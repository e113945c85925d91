"""The encoder (training/models/encoder.py), its training (training/encoder_train.py) and `ganstream export --encoder`.

Tiny sizes: a WaveGAN of width 2 (conftest's tiny_run) and an encoder of a few channels trained a few
dozen steps. What is asserted are shapes, ranges, that training moves the encoder towards the latents
it should find (a trend, with a wide margin), parity of the exported graph and what the bundle says.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ganstream.core.manifest import PROPOSALS_VERSION
from ganstream.main import main as ganstream
from ganstream.realtime.bundle import load_bundle
from ganstream.training.checkpoint import load_generator
from ganstream.training.config import load_config
from ganstream.training.encoder_train import train_encoder
from ganstream.training.models import build_generator, sample_latents
from ganstream.training.models.encoder import Encoder, EncoderConfig, IterativeEncoder, Refiner
from ganstream.training.spectral import spectral_distance

TINY = dict(n_fft=256, hop=128, mels=16, width=8, depth=2, hidden=32, pool=64, batch=16, spectral_batch=4, iteration_steps=3)
TINY_PROPOSALS = EncoderConfig().hypotheses  # the default: the tests cover the encoder as export trains it


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_encoder_shapes_and_ranges():
    enc = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform").eval()
    z = enc(torch.randn(3, 4096) * 0.3)
    assert z.shape == (3, 8)
    assert float(z.detach().abs().max()) <= 1.0  # a uniform GAN's latents lie in [-1, 1]
    normal = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "normal").eval()
    torch.nn.init.constant_(normal.latent.bias, 5.0)
    assert float(normal(torch.randn(2, 4096)).min()) > 1.0  # no squashing for normal latents


def test_conditioned_encoder_estimates_pitch_and_velocity():
    enc = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform", condition_columns=2).eval()
    z, c = enc(torch.randn(4, 4096) * 0.3)
    assert z.shape == (4, 8) and c.shape == (4, 2)
    assert torch.all((c[:, 1] >= 0) & (c[:, 1] <= 1))  # velocity through a sigmoid
    assert torch.all((c[:, 0] > 20) & (c[:, 0] < 100))  # untrained, the pitch sits near C4


def test_too_deep_an_encoder_is_refused():
    with pytest.raises(ValueError, match="depth 8 leaves no frame"):
        Encoder(EncoderConfig(**{**TINY, "depth": 8}), 16000, 4096, 8, "uniform")
    with pytest.raises(ValueError, match="lr must be > 0"):
        EncoderConfig(lr=0).validate()


class Harmonics(torch.nn.Module):
    """(B, 8) -> (B, 4096): eight partials whose amplitudes are tanh of a fixed mix of the latent, a
    generator whose latent the audio determines (an untrained GAN's barely does)."""

    def __init__(self):
        super().__init__()
        t = torch.arange(4096) / 16000
        self.register_buffer("partials", torch.stack([torch.sin(2 * torch.pi * 250 * (k + 1) * t) for k in range(8)]))
        self.register_buffer("mix", torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0])

    def forward(self, z):
        return (0.5 + 0.4 * torch.tanh(z @ self.mix)) @ self.partials / 8


TOY = SimpleNamespace(latent_dim=8, latent_dist="uniform", segment=4096, condition="none")  # the toy generators' model config


def toy_clips(gen: torch.nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n latents of TOY drawn from their own seed (not the pool's: held out) and what `gen` makes of them."""
    rows = sample_latents(TOY, n, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return rows, gen(rows)


def test_training_moves_the_encoder_towards_the_latents():
    cfg, gen = TOY, Harmonics()
    rows, audio = toy_clips(gen, 64, 7)

    def latent_error(enc: Encoder) -> float:
        """The nearest proposal's: what winner-takes-all training brings nearer."""
        with torch.no_grad():
            proposals, _ = enc.propose(audio)
            return float(((proposals - rows[:, None]) ** 2).mean(dim=2).min(dim=1).values.mean())

    untrained = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform")
    untrained.set_statistics(audio)
    before = latent_error(untrained.eval())
    enc, summary = train_encoder(gen, cfg, 16000, EncoderConfig(**{**TINY, "pool": 512, "lr": 3e-3}, generated_steps=300, real_steps=0, spectral_every=50))
    after = latent_error(enc)
    assert after < 0.5 * before, (before, after)
    assert summary["generated"]["steps"] == 300 and summary["real"]["steps"] == 0
    assert all(p.requires_grad for p in gen.parameters())  # the generator is handed back as it came


class Mirrored(Harmonics):
    """(B, 8) -> (B, 4096): sixteen partials whose amplitudes are products of pairs of a fixed mix of the latent, so
    z and -z sound the same: every sound has two latents, which one regressed latent can only average."""

    def __init__(self):
        super().__init__()
        t = torch.arange(4096) / 16000
        self.register_buffer("partials", torch.stack([torch.sin(2 * torch.pi * 250 * (k + 1) * t) for k in range(16)]))

    def forward(self, z):
        u = z @ self.mix
        return (0.5 + 0.4 * torch.tanh(2 * torch.cat([u * u.roll(1, dims=1), u * u], dim=1))) @ self.partials / 16


def test_two_proposals_find_both_readings_of_an_ambiguous_sound_where_one_latent_averages_them():
    cfg, gen = TOY, Mirrored()
    rows, audio = toy_clips(gen, 64, 7)
    with torch.no_grad():
        assert torch.allclose(gen(-rows), audio, atol=1e-6)

    def nearest_error(hypotheses: int) -> float:
        enc_cfg = EncoderConfig(**{**TINY, "pool": 512, "lr": 3e-3}, generated_steps=300, real_steps=0, spectral_every=50, hypotheses=hypotheses)
        enc, _ = train_encoder(gen, cfg, 16000, enc_cfg)
        with torch.no_grad():
            proposals, _ = enc.propose(audio)
        return float(((proposals - rows[:, None]) ** 2).mean(dim=2).min(dim=1).values.mean())

    one, two = nearest_error(1), nearest_error(2)
    assert one > 0.3  # a uniform latent's variance, 1/3: the one latent sits at the mean of z and -z
    assert two < 0.8 * one, (one, two)  # measured 0.60-0.68 of it at three seeds


def test_one_proposal_trains_as_a_plain_regression_and_the_nearest_takes_the_weight():
    from ganstream.training.encoder_train import _nearest_proposal

    target = torch.rand(5, 3)
    single = torch.rand(5, 1, 3, requires_grad=True)
    loss, z = _nearest_proposal(single, target, 0.05)
    assert torch.allclose(loss, torch.nn.functional.mse_loss(single[:, 0], target)) and torch.equal(z, single[:, 0])
    near = target[:, None] + torch.tensor([0.5, 0.01, -0.3])[None, :, None]  # the second is nearest
    proposals = near.clone().requires_grad_(True)
    loss, z = _nearest_proposal(proposals, target, 0.05)
    assert torch.equal(z, proposals[:, 1])
    loss.backward()
    share = proposals.grad.abs().sum(dim=(0, 2))
    assert share[1] > 0 and share[0] > 0  # the others keep a share: no proposal is left untrained
    assert float(share[0] / 0.5) < float(share[1] / 0.01) / 5  # per unit of error, the nearest learns far more


def test_real_phase_uses_real_clips_and_keeps_the_generator_frozen():
    cfg = load_config(None, ["model.width=2", "model.latent_dim=8"])
    gen = build_generator(cfg.model).eval()
    before = [p.detach().clone() for p in gen.parameters()]
    real = np.random.default_rng(0).standard_normal((6, cfg.model.segment)).astype(np.float32) * 0.1
    _, summary = train_encoder(gen, cfg.model, cfg.data.sample_rate, EncoderConfig(**TINY, generated_steps=2, real_steps=3))
    assert summary["real"]["steps"] == 0  # no clips given: no real phase
    _, summary = train_encoder(gen, cfg.model, cfg.data.sample_rate, EncoderConfig(**TINY, generated_steps=2, real_steps=3), real)
    assert {k: summary["real"][k] for k in ("steps", "clips")} == {"steps": 3, "clips": 6}
    # The per-clip targets were visited and measured; the encoder's distance is reported beside them.
    assert 0.0 <= summary["real"]["target_distance"] < float("inf")
    assert np.isfinite(summary["real"]["spectral_distance"])
    assert all(torch.equal(a, b) for a, b in zip(before, gen.parameters()))


def test_torch_distance_is_zero_for_the_same_audio_and_grows_with_difference():
    x = torch.randn(1, 4096) * 0.3
    assert float(spectral_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    near, far = x + 0.01 * torch.randn(1, 4096), x + 0.3 * torch.randn(1, 4096)
    assert 0 < float(spectral_distance(x, near)) < float(spectral_distance(x, far))


def test_export_with_encoder_writes_a_checked_graph(tiny_run, tmp_path):
    out = tmp_path / "b.gsb"
    code = ganstream(["export", str(tiny_run), "-o", str(out), "--controls", "0", "--encoder", "--encoder-steps", "20"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    enc = manifest["encoder"]
    assert enc["file"] == "encoder.onnx" and "encoder.onnx" in manifest["files"]
    assert [t["name"] for t in enc["inputs"]] == ["audio"] and [t["name"] for t in enc["outputs"]] == ["latent", "proposals"]
    assert enc["outputs"][1]["shape"] == ["batch", TINY_PROPOSALS, manifest["model"]["latent"]["size"]] and enc["parity_max_abs_error"] <= 1e-4
    assert manifest["format_version"] == PROPOSALS_VERSION  # a reader that knew no proposals would refuse the extra output
    assert manifest["provenance"]["encoder"]["generated"]["steps"] == 20
    assert manifest["provenance"]["encoder"]["real"]["steps"] == 40  # the defaults' ratio: twice as many on real clips
    assert manifest["provenance"]["encoder"]["iterations"]["steps"] == 30  # and one and a half times as many for the refiner
    ref = manifest["refiner"]
    assert ref["iterations"] == EncoderConfig.iterations and ref["graph"]["file"] == "refiner.onnx" and "refiner.onnx" in manifest["files"]
    assert [t["name"] for t in ref["graph"]["inputs"]] == ["audio", "heard", "latent"]
    assert [t["name"] for t in ref["graph"]["outputs"]] == ["corrected", "distance"] and ref["graph"]["parity_max_abs_error"] <= 1e-4
    import onnx

    for name in ("encoder.onnx", "refiner.onnx"):  # neither holds a copy of the generator: the host runs the bundle's
        assert not {n.op_type for n in onnx.load(str(out / name)).graph.node} & {"ConvTranspose", "Resize"}
    # The STFT basis, traced for the sample and for what the generator made of the latent, is stored once
    # (export/onnx.py share_constants).
    graph = onnx.load(str(out / "refiner.onnx")).graph
    big = [n.attribute[0].t.raw_data for n in graph.node if n.op_type == "Constant" and len(n.attribute[0].t.raw_data) >= 1024]
    assert big and len(big) == len(set(big))
    bundle = load_bundle(out)  # verify=True: sha256 and the graphs' signatures against the manifest
    assert bundle.encoder is not None and bundle.encoder.inputs[0].shape == ("batch", bundle.segment)
    assert bundle.refiner is not None and bundle.refiner.inputs[1].shape == ("batch", bundle.segment)
    # The graph computes what the torch encoder computes: rerun it on generated audio through ONNX Runtime.
    import onnxruntime as ort

    gen, cfg, _ = load_generator(sorted((tiny_run / "checkpoints").glob("*.pt"))[-1])
    with torch.no_grad():
        audio = gen(sample_latents(cfg.model, 2, torch.Generator().manual_seed(0))).reshape(2, -1).numpy()
    z, proposals = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"]).run(None, {"audio": audio})
    assert z.shape == (2, bundle.latent_size) and np.all(np.abs(z) <= 1.0)
    assert proposals.shape == (2, TINY_PROPOSALS, bundle.latent_size) and np.array_equal(proposals[:, 0], z)
    assert not np.allclose(proposals[:, 0], proposals[:, 1], atol=1e-3)  # the proposals differ
    # The refiner reads its sample from the first row, which a host repeats on every row: one STFT of it a call.
    refiner = ort.InferenceSession(str(out / "refiner.onnx"), providers=["CPUExecutionProvider"])
    heard = np.stack([audio[0], audio[1]])
    repeated = refiner.run(None, {"audio": np.repeat(audio[:1], 2, axis=0), "heard": heard, "latent": z})
    first_only = refiner.run(None, {"audio": np.stack([audio[0], np.zeros_like(audio[0])]), "heard": heard, "latent": z})
    for a, b in zip(repeated, first_only):
        np.testing.assert_array_equal(a, b)
    distance = repeated[1]
    assert distance.shape == (2,) and distance[0] < 1e-3 < distance[1]  # row 0 heard the sample itself


def test_export_encoder_option_errors(tiny_run, tmp_path, capsys):
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "x"), "--encoder-steps", "5"]) == 2
    assert "--encoder-steps goes with --encoder" in capsys.readouterr().err
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "y"), "--encoder", "--encoder-steps", "-1"]) == 2
    assert "--encoder-steps: 0 or more" in capsys.readouterr().err
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "z"), "--encoder-iterations", "2"]) == 2
    assert "--encoder-iterations goes with --encoder" in capsys.readouterr().err
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "w"), "--encoder", "--encoder-iterations", "-2"]) == 2
    assert "--encoder-iterations: 0 or more, not -2" in capsys.readouterr().err
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "p"), "--encoder", "--encoder-proposals", "0"]) == 2
    assert "--encoder-proposals: 1 or more, not 0" in capsys.readouterr().err
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "q"), "--encoder", "--encoder-beam", "0"]) == 2
    assert "--encoder-beam: 1 or more, not 0" in capsys.readouterr().err
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "r"), "--encoder-beam", "2"]) == 2
    assert "--encoder-beam goes with --encoder" in capsys.readouterr().err


def test_encoder_into_an_exported_bundle_keeps_its_other_files(tiny_run, tmp_path, capsys):
    out = tmp_path / "plain.gsb"
    assert ganstream(["export", str(tiny_run), "-o", str(out), "--controls", "0"]) == 0
    before = json.loads((out / "manifest.json").read_text())
    assert "encoder" not in before and load_bundle(out).encoder is None
    assert ganstream(["export", str(tiny_run), "--into", str(out), "--encoder", "--encoder-steps", "10", "--encoder-iterations", "0",
                      "--encoder-proposals", "1"]) == 0
    after = json.loads((out / "manifest.json").read_text())
    assert after["encoder"]["file"] == "encoder.onnx"
    # One proposal: the one-latent encoder of format version 1, which hosts that know no proposals read.
    assert [t["name"] for t in after["encoder"]["outputs"]] == ["latent"] and after["format_version"] == before["format_version"] == 1
    for rel, entry in before["files"].items():
        assert after["files"][rel] == entry  # the generator and the rest, byte for byte
    assert after["provenance"]["encoder"]["generated"]["steps"] == 10
    # The encoder alone: no refiner trained, and no generator's copy in its graph.
    assert after["provenance"]["encoder"]["config"]["iterations"] == 0 and "iterations" not in after["provenance"]["encoder"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "encoder.onnx")).graph.node}
    assert not ops & {"ConvTranspose", "Resize"}  # WaveGAN's upsampling: the generator is not in the graph
    assert load_bundle(out).encoder is not None
    capsys.readouterr()
    assert ganstream(["export", str(tiny_run), "--into", str(out)]) == 2
    assert "give --encoder too" in capsys.readouterr().err


def test_encoder_into_a_bundle_of_another_run_is_refused(tiny_run, tmp_path, capsys):
    from bundle_factory import make_bundle

    other = make_bundle(tmp_path / "other.gsb", segment=4096, latent_size=8)
    assert ganstream(["export", str(tiny_run), "--into", str(other), "--encoder", "--encoder-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "name the run it was exported from" in err and "other.gsb" in err
    assert "encoder" not in json.loads((other / "manifest.json").read_text())


def test_the_search_finds_each_real_clips_twin_in_the_pool():
    from ganstream.training.encoder_train import coarse_distance, nearest_in_pool

    gen = Harmonics()
    rows = sample_latents(SimpleNamespace(latent_dim=8, latent_dist="uniform", condition="none"), 40, torch.Generator().manual_seed(1))
    with torch.no_grad():
        pool = gen(rows)
    enc = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform")
    enc.set_statistics(pool)
    picked = torch.tensor([3, 17, 29])
    found, dist = nearest_in_pool(enc, pool[picked] * 1.0, pool, rows, candidates=5, sample_rate=16000)
    assert torch.equal(found, rows[picked]) and float(dist.max()) < 1e-4
    x = pool[:2]
    assert torch.allclose(coarse_distance(enc, x, x), torch.zeros(2), atol=1e-6)
    assert float(coarse_distance(enc, x, pool[2:4]).min()) > 0.01


def test_per_clip_latents_move_their_targets_nearer_and_leave_unvisited_rows_alone():
    from ganstream.training.encoder_train import _Codes
    from ganstream.training.spectral import spectral_distance

    gen = Harmonics()
    truth = sample_latents(SimpleNamespace(latent_dim=8, latent_dist="uniform", condition="none"), 6, torch.Generator().manual_seed(2))
    with torch.no_grad():
        clips = gen(truth)
    start = (truth + 0.6 * torch.randn(6, 8, generator=torch.Generator().manual_seed(3))).clamp(-1, 1)
    codes = _Codes(start, 8, "uniform", lr=0.05)

    def distance(rows, target):
        return spectral_distance(target, gen(rows), 16000)

    with torch.no_grad():
        first = distance(start, clips)
    visited = torch.tensor([0, 1, 2, 2])  # a clip picked twice in a batch takes one step
    for _ in range(60):
        codes.step(visited, clips, distance)
    assert torch.equal(codes.t, torch.tensor([60.0, 60, 60, 0, 0, 0]))
    assert torch.equal(codes.rows[3:], start[3:]) and torch.equal(codes.best[3:], start[3:])
    assert float(codes.rows.abs().max()) <= 1.0
    # The best seen only falls, and ends well below where each visited clip's latent started.
    assert torch.all(codes.best_dist[:3] < 0.6 * first[:3])
    with torch.no_grad():
        assert torch.allclose(distance(codes.best[:3], clips[:3]), codes.best_dist[:3], atol=1e-4)
    kept = codes.best.clone()
    codes.offer(torch.tensor([0]), torch.ones(1, 8), torch.tensor([float(first[0]) * 2]))  # a worse answer: refused
    assert torch.equal(codes.best, kept)
    codes.offer(torch.tensor([4]), truth[4:5], torch.tensor([0.0]))  # the encoder's own, nearer: taken
    assert torch.equal(codes.best[4], truth[4]) and float(codes.best_dist[4]) == 0.0


class PitchedHarmonics(torch.nn.Module):
    """(B, 8 + 1) -> (B, 4096): the latent's eight amplitudes over harmonics of the MIDI pitch in the last column."""

    def forward(self, rows):
        z, pitch = rows[:, :8], rows[:, 8:]
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)  # (B, 1)
        t = torch.arange(4096) / 16000
        k = torch.arange(1, 9).view(1, 8, 1)
        partials = torch.sin(2 * torch.pi * f0.unsqueeze(-1) * k * t)  # (B, 8, T)
        return ((0.5 + 0.4 * torch.tanh(z)).unsqueeze(-1) * partials).sum(1) / 8


def test_a_conditioned_encoder_learns_the_pitch():
    pitches = {str(p): 1 for p in range(48, 73)}
    cfg = SimpleNamespace(latent_dim=8, latent_dist="uniform", segment=4096, condition="pitch", labels={"pitch_counts": pitches})
    gen = PitchedHarmonics()
    rows = sample_latents(cfg, 48, torch.Generator().manual_seed(5))
    with torch.no_grad():
        audio = gen(rows)

    def pitch_error(enc: Encoder) -> float:
        with torch.no_grad():
            return float(torch.mean(torch.abs(enc(audio)[1][:, 0] - rows[:, 8])))

    untrained = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform", condition_columns=1)
    untrained.set_statistics(audio)
    before = pitch_error(untrained.eval())
    enc, _ = train_encoder(gen, cfg, 16000, EncoderConfig(**{**TINY, "pool": 512, "lr": 3e-3}, generated_steps=300, real_steps=0, spectral_every=100))
    after = pitch_error(enc)
    assert after < 0.5 * before and after < 4.0, (before, after)  # semitones


def test_an_untrained_refiner_returns_its_latent_and_keeps_uniform_latents_inside_the_range():
    cfg = EncoderConfig(**TINY)
    sample, heard = torch.randn(3, 16, 32), torch.randn(3, 16, 32)
    z = torch.rand(3, 8) * 1.8 - 0.9
    for dist in ("uniform", "normal"):
        refiner = Refiner(cfg, 4096, 8, dist)
        assert torch.allclose(refiner(sample, heard, z), z, atol=1e-5)
    refiner = Refiner(cfg, 4096, 8, "uniform")
    with torch.no_grad():
        refiner.head[-1].bias.fill_(50.0)  # a correction far past the edge
    out = refiner(sample, heard, z)
    assert float(out.min()) > 0.99 and float(out.max()) <= 1.0


def test_the_refiner_brings_the_encoders_latents_nearer_and_leaves_the_encoder_and_generator_alone():
    cfg, gen = TOY, Harmonics()
    _, clips = toy_clips(gen, 48, 11)
    enc_cfg = EncoderConfig(**{**TINY, "pool": 256, "lr": 3e-3, "iteration_steps": 150, "iterations": 2},
                            generated_steps=60, real_steps=0, spectral_every=20)
    model, summary = train_encoder(gen, cfg, 16000, enc_cfg, clips.numpy())
    assert isinstance(model, IterativeEncoder) and model.iterations == 2
    assert summary["iterations"]["steps"] == 150 and np.isfinite(summary["iterations"]["last_distance"])
    with torch.no_grad():
        alone = spectral_distance(clips, gen(model.encoder(clips)), 16000).mean()
        refined = spectral_distance(clips, gen(model(clips)), 16000).mean()
    assert float(refined) < 0.9 * float(alone), (float(alone), float(refined))
    assert all(p.requires_grad for p in gen.parameters())
    # Without real clips there is nothing to refine on: the encoder alone comes back.
    plain, summary = train_encoder(gen, cfg, 16000, enc_cfg)
    assert isinstance(plain, Encoder) and "iterations" not in summary


def test_an_iterative_encoder_passes_a_conditioned_bundles_condition_through():
    pitches = {str(p): 1 for p in range(48, 73)}
    cfg = SimpleNamespace(latent_dim=8, latent_dist="uniform", segment=4096, condition="pitch", labels={"pitch_counts": pitches})
    gen = PitchedHarmonics()
    enc = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform", condition_columns=1).eval()
    refiner = Refiner(EncoderConfig(**TINY), 4096, 8, "uniform")
    with torch.no_grad():
        refiner.head[-1].bias.fill_(0.3)
    model = IterativeEncoder(enc, refiner, gen, 3).eval()
    audio = torch.randn(2, 4096) * 0.1
    with torch.no_grad():
        proposals, c0 = enc.propose(audio)
        z0 = model.nearest(audio, proposals, c0)
        z, c = model(audio)
        steps, distances = model.run(audio, z0, c0, 3)
    assert z.shape == (2, 8) and torch.equal(c, c0) and proposals.shape == (2, TINY_PROPOSALS, 8)
    assert len(steps) == 4 and distances == [] and torch.equal(steps[0], z0)
    assert all(any(torch.equal(z[b], step[b]) for step in steps) for b in range(2))  # one of its latents, for each clip


def test_an_iterative_encoder_returns_the_nearest_of_its_latents():
    gen = Harmonics()
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(**TINY), 16000, 4096, 8, "uniform").eval()
    refiner = Refiner(EncoderConfig(**TINY), 4096, 8, "uniform")
    with torch.no_grad():  # corrections that walk the latent about: nearer for some clips, farther for others
        refiner.head[-1].weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(4))
        refiner.head[-1].bias.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(104))
    model = IterativeEncoder(enc, refiner, gen, 4).eval()
    audio = gen(torch.rand(6, 8, generator=torch.Generator().manual_seed(4)) * 1.6 - 0.8)
    with torch.no_grad():
        z = model(audio)
        latents, distances = model.run(audio, model.nearest(audio, *enc.propose(audio)), None, 4, measure=True)
    table = torch.stack(distances, dim=1)  # (6, 5): the encoder's latent and each correction's
    assert table.shape == (6, 5) and len(latents) == 5
    picked = table.argmin(dim=1)
    assert len(set(picked.tolist())) > 1  # the test means something only if the choice differs by clip
    for b in range(6):
        assert torch.equal(z[b], latents[int(picked[b])][b])


@pytest.mark.parametrize("beam", [1, 2])
def test_the_inverter_runs_the_bundles_refiner_as_the_torch_iterative_encoder_does(tiny_run, tmp_path, beam):
    import shutil

    from ganstream.export.bundle import load_run_generator, write_bundle
    from ganstream.export.encoder import attach, write_graphs
    from ganstream.realtime.inversion import Inverter

    plain = tmp_path / "plain.gsb"
    assert ganstream(["export", str(tiny_run), "-o", str(plain), "--controls", "0"]) == 0
    gen, cfg, _, _ = load_run_generator(tiny_run)
    m = cfg.model
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(**TINY), cfg.data.sample_rate, m.segment, m.latent_dim, m.latent_dist).eval()
    refiner = Refiner(EncoderConfig(**TINY), m.segment, m.latent_dim, m.latent_dist)
    with torch.no_grad():  # an untrained refiner would return its latent: walk it about instead
        refiner.head[-1].weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(4))
        refiner.head[-1].bias.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(104))
    model = IterativeEncoder(enc, refiner, gen, 4, beam).eval()
    spec = load_bundle(plain).spec
    out = tmp_path / "b.gsb"

    def fill(tmp):
        for rel in spec.files:
            shutil.copy2(plain / rel, tmp / rel)
        graph, refinement = write_graphs(model, gen, cfg, tmp, out, {})
        return attach(spec, graph, refinement, spec.provenance)

    write_bundle(out, fill)
    inv = Inverter(load_bundle(out))
    assert (inv.corrections, inv.beam, inv.proposals) == (4, beam, TINY_PROPOSALS)
    assert json.loads((out / "manifest.json").read_text())["refiner"].get("beam", 1) == beam  # absent for one: as older bundles
    with torch.no_grad():
        audio = gen(sample_latents(m, 6, torch.Generator().manual_seed(5))).reshape(6, -1)
        want = model(audio).numpy()
        alone = enc(audio).numpy()
    got = np.stack([inv.encode(a) for a in audio.numpy()])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(got, alone, atol=1e-3)  # the corrections moved some latent
    if beam > 1:  # a second start wins some clips: the beam is not the nearest proposal's corrections alone
        inv.beam = model.beam = 1
        with torch.no_grad():
            np.testing.assert_allclose(np.stack([inv.encode(a) for a in audio.numpy()]), model(audio).numpy(), atol=1e-4)
            one = model(audio).numpy()
        assert not np.allclose(got, one, atol=1e-4)
