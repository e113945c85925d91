"""Pitch (and velocity) conditioning (training/models/condition.py) end to end at tiny size: the encoding,
conditioned generators and critics, the trainer, the labels a run reads from its data, resume, the
config hash, and export to a format-version-5 bundle that the realtime generator plays."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
import yaml

from ganstream.core.manifest import CONDITION_VERSION
from ganstream.export.bundle import export_run, load_run_generator
from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.inference import Generator
from ganstream.training.checkpoint import load_checkpoint
from ganstream.training.config import ConfigError, TrainConfig, load_config
from ganstream.training.gan import GANTrainer
from ganstream.training.loop import Run, run_dir_for
from ganstream.training.spectral_train import SpectralRun
from ganstream.training.models import FAMILIES, build_critic, build_generator, sample_latents
from ganstream.training.models.condition import (
    PITCHES,
    VELOCITY_BINS,
    ConditionedCritic,
    encode,
    encoded_size,
)

CPU = torch.device("cpu")
RATE = 16000
REFUSAL = "a conditioned model trains on labelled batches, an unconditioned one on plain batches"
# The labelled folder: (file name, MIDI pitch, MIDI velocity); five clips of C4 at velocity 100, three of G4 at 40.
CLIPS = [(f"{i:04d}_p60_v100.wav", 60, 100) for i in range(5)] + [(f"{i:04d}_p67_v40.wav", 67, 40) for i in range(5, 8)]


def tensors_equal(a, b):
    """Deep equality of nested state dicts: every tensor bit-identical."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def tone(note: int, seconds: float = 0.3, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    hz = 440.0 * 2.0 ** ((note - 69) / 12)
    return (amplitude * np.sin(2 * np.pi * hz * t) * np.exp(-3 * t)).astype(np.float32)


def write_clips(folder, clips) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, note, velocity in clips:
        sf.write(folder / name, tone(note, amplitude=velocity / 127), RATE)


def model_config(kind: str = "wavegan", *overrides: str) -> TrainConfig:
    return load_config(None, [f"model.kind={kind}", *FAMILIES[kind].tiny, *overrides])


def folder_config(tmp, folder, *overrides: str) -> TrainConfig:
    """A tiny WaveGAN run on `folder`, every clip in training (no holdout), so the label counts are exact."""
    return load_config(None, [
        *FAMILIES["wavegan"].tiny, f"data.source={folder}", "data.holdout=0", f"data.cache_dir={tmp / 'cache'}",
        f"run.out_dir={tmp / 'runs'}", "train.batch_size=4", "train.steps=2", "loss.critic_steps=2", "train.progress=false",
        "train.tensorboard=false", "train.preview_every=1000", "train.preview_count=2", "train.ckpt_every=1000",
        "train.device=cpu", *overrides,
    ])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled") / "notes"
    write_clips(folder, CLIPS)
    return folder


@pytest.fixture(scope="module")
def conditioned_run(labelled, tmp_path_factory):
    """A pitch+velocity WaveGAN trained two steps on the labelled folder."""
    tmp = tmp_path_factory.mktemp("cond-run")
    cfg = folder_config(tmp, labelled, "model.condition=pitch+velocity", "run.seed=3")
    run = Run(cfg, run_dir_for(cfg), CPU)
    run.train()
    return run


# ---- the encoding ----------------------------------------------------------------------------------


def test_encoded_sizes():
    assert (encoded_size(0), encoded_size(1), encoded_size(2)) == (0, PITCHES + 1, PITCHES + 1 + VELOCITY_BINS + 1) == (0, 129, 134)


def test_encode_pitch_one_hot_and_scalar():
    enc = encode(torch.tensor([[60.0], [60.4], [60.6], [84.0], [-1.0], [128.0], [0.0]]))
    assert enc.shape == (7, 129)
    one_hot, scalar = enc[:, :PITCHES], enc[:, PITCHES]
    for row, index in ((0, 60), (1, 60), (2, 61), (3, 84), (6, 0)):
        assert one_hot[row].sum() == 1.0 and one_hot[row, index] == 1.0, row
    assert one_hot[4].abs().sum() == 0.0 and scalar[4] == 0.0  # unknown: a zero row
    assert one_hot[5].abs().sum() == 0.0  # out of range: no one-hot, only the scalar height
    assert scalar[0] == 0.0 and scalar[3] == pytest.approx(1.0) and scalar[6] == pytest.approx(-2.5)
    assert scalar[2] == pytest.approx(0.6 / 24, abs=1e-6) and scalar[5] == pytest.approx(68 / 24)


def test_encode_velocity_bins():
    v = [0.0, 0.249, 0.25, 0.5, 0.74, 0.75, 1.0, -1.0]
    enc = encode(torch.tensor([[60.0, x] for x in v]))
    assert enc.shape == (len(v), 134)
    bins, scalar = enc[:, PITCHES + 1 : PITCHES + 1 + VELOCITY_BINS], enc[:, -1]
    for row, want in enumerate([0, 0, 1, 2, 2, 3, 3]):
        assert bins[row].tolist() == [1.0 if b == want else 0.0 for b in range(VELOCITY_BINS)], v[row]
    assert bins[-1].abs().sum() == 0.0 and scalar[-1] == 0.0  # unknown velocity
    assert scalar[:-1].tolist() == pytest.approx(v[:-1])
    assert (enc[:, 60] == 1.0).all()  # the pitch part is the same whatever the velocity


# ---- conditioned networks --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wavegan", "specgan"])
def test_conditioned_generator_takes_latent_and_condition(kind):
    torch.manual_seed(0)
    plain = build_generator(model_config(kind).model).eval()
    cfg = model_config(kind, "model.condition=pitch+velocity").model
    gen = build_generator(cfg).eval()
    d = cfg.latent_dim
    first = next(m for m in gen.inner.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == d + 134
    z = torch.rand(3, d) * 2 - 1
    with torch.no_grad():
        want = plain(z).shape
        at = lambda pitch, velocity=0.75: gen(torch.cat([z, torch.tensor([[pitch, velocity]]).expand(3, 2)], dim=1))  # noqa: E731
        c4, c5, c4_again, soft, unknown = at(60.0), at(72.0), at(60.0), at(60.0, 0.1), at(-1.0, -1.0)
    assert c4.shape == want and c4.shape[0] == 3
    assert torch.equal(c4, c4_again)
    for other in (c5, soft, unknown):
        assert (c4 - other).abs().max() > 1e-6


def test_projection_critic_scores_under_the_label():
    torch.manual_seed(0)
    cfg = model_config("wavegan", "model.condition=pitch+velocity", "model.condition_critic=projection").model
    critic = build_critic(cfg).eval()  # eval: no phase shuffle, the same features every pass
    assert isinstance(critic, ConditionedCritic) and critic.kind == "projection"
    with torch.no_grad():
        for e in (critic.pitch_embed, critic.velocity_embed):
            e.weight[: e.padding_idx].normal_(0, 1)  # trained-looking embeddings, so labels matter clearly
    x = torch.rand(2, 1, cfg.segment) * 2 - 1
    cond = lambda p, v: torch.tensor([[p, v]] * 2)  # noqa: E731
    with torch.no_grad():
        h = critic.features(x)
        plain = critic.inner.out(h).squeeze(1)
        s60, s72, s60_soft = critic(x, cond(60.0, 0.9)), critic(x, cond(72.0, 0.9)), critic(x, cond(60.0, 0.1))
        unknown, out_of_range = critic(x, cond(-1.0, -1.0)), critic(x, cond(200.0, -1.0))
        by_hand = plain + ((critic.pitch_embed.weight[60] + critic.velocity_embed.weight[3]) * h).sum(1)
    assert (s60 - s72).abs().min() > 1e-4 and (s60 - s60_soft).abs().min() > 1e-4
    assert torch.allclose(s60, by_hand, atol=1e-5)
    assert torch.equal(unknown, plain) and torch.equal(out_of_range, plain)  # the unconditioned score


def test_acgan_aux_loss():
    torch.manual_seed(0)
    cfg = model_config("wavegan", "model.condition=pitch+velocity", "model.condition_critic=acgan", "model.phase_shuffle=0").model
    critic = build_critic(cfg).train()
    x = torch.rand(4, 1, cfg.segment) * 2 - 1
    cond = torch.tensor([[48.0, 0.2], [60.0, 0.9], [72.0, 0.5], [60.0, -1.0]])
    critic.requires_grad_(False)
    heads = [*critic.pitch_head.parameters(), *critic.velocity_head.parameters()]
    for p in heads:
        p.requires_grad_(True)
    opt = torch.optim.Adam(heads, lr=0.05)
    losses = []
    for _ in range(8):
        critic(x, cond)
        loss = critic.aux_loss(cond, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[0] > math.log(PITCHES) * 0.5  # an untrained head: near chance, log 128 + log 4 ~ 6.2
    assert losses[-1] < 0.5 * losses[0]  # the trend: a head trained on fixed features learns them
    # It forgets the passes it classified, and refuses to classify passes it never kept.
    with pytest.raises(RuntimeError, match=r"aux_loss: 0 forward passes kept, 1 asked for \(acgan critics only\)"):
        critic.aux_loss(cond, 1)
    critic(x, cond)
    with pytest.raises(RuntimeError, match=r"aux_loss: 1 forward passes kept, 2 asked for"):
        critic.aux_loss(cond, 2)
    # Unknown labels are skipped: none known, no loss.
    critic(x, cond)
    assert critic.aux_loss(torch.full((4, 2), -1.0), 1).item() == 0.0
    # A critic in eval mode keeps nothing (scoring outside training), and a projection critic has no aux loss.
    critic.eval()
    critic(x, cond)
    with pytest.raises(RuntimeError, match="0 forward passes kept"):
        critic.aux_loss(cond, 1)
    projection = build_critic(model_config("wavegan", "model.condition=pitch").model).train()
    projection(x, cond[:, :1])
    with pytest.raises(RuntimeError, match="acgan critics only"):
        projection.aux_loss(cond[:, :1], 1)


# ---- the trainer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("critic_kind", ["projection", "acgan"])
def test_trainer_steps_on_labelled_batches(tiny_config, critic_kind):
    torch.manual_seed(0)
    cfg = tiny_config(*FAMILIES["wavegan"].tiny, "model.condition=pitch+velocity", f"model.condition_critic={critic_kind}")
    cfg.model.labels = {"pitch_counts": {"60": 3, "67": 1}, "velocity_counts": {"0.5000": 1}}
    trainer = GANTrainer(cfg, CPU)
    batches = [torch.rand(4, 1, cfg.model.segment) * 2 - 1 for _ in range(cfg.loss.critic_steps)]
    conds = [torch.tensor([[60.0, 0.5], [67.0, 0.5], [60.0, -1.0], [-1.0, -1.0]]) for _ in batches]
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    stats = [trainer.step(batches, conds) for _ in range(2)]
    assert all(GANTrainer.finite(s) for s in stats)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.generator.parameters()))
    if critic_kind == "acgan":
        for s in stats:
            assert math.isfinite(float(s["aux_d"])) and float(s["aux_d"]) > 0
            assert math.isfinite(float(s["aux_g"])) and float(s["aux_g"]) > 0
        assert trainer.critic._passes == []  # every kept pass classified and forgotten
    else:
        assert not any(k in s for s in stats for k in ("aux_d", "aux_g"))
    with pytest.raises(ValueError) as e:
        trainer.step(batches)
    assert str(e.value) == REFUSAL


def test_unconditioned_trainer_refuses_labels(tiny_config):
    cfg = tiny_config("loss.critic_steps=1")
    trainer = GANTrainer(cfg, CPU)
    with pytest.raises(ValueError) as e:
        trainer.step([torch.rand(4, 1, cfg.model.segment)], [torch.full((4, 1), 60.0)])
    assert str(e.value) == REFUSAL


# ---- labels from the data --------------------------------------------------------------------------


def test_run_records_the_labels_it_trains_on(conditioned_run):
    run = conditioned_run
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())["model"]
    labels = saved["labels"]
    assert saved["condition"] == "pitch+velocity"
    assert labels["pitch_counts"] == {"60": 5, "67": 3}
    assert labels["pitch_range"] == [60, 67] and labels["velocity_range"] == [40, 100]
    assert labels["velocity_counts"] == {f"{40 / 127:.4f}": 3, f"{100 / 127:.4f}": 5}
    assert labels["histogram"] == {"60": 5, "67": 3} and labels["labelled"] == 8 and labels["clips"] == 8
    assert labels["summary"] == "8 of 8 clips labelled: 8 from file name; pitch 60-67; velocity 40-100"
    # The segments' condition columns, in the dataset's clip order.
    by_name = {name: (p, v) for name, p, v in CLIPS}
    want = np.array([[by_name[run.data.clip_names[c]][0], by_name[run.data.clip_names[c]][1] / 127] for c in run.data.clips], np.float32)
    assert run.conditions.shape == (8, 2)
    np.testing.assert_allclose(run.conditions, want, rtol=1e-6)
    # The checkpoint's config holds them too: export reads them from there.
    assert load_checkpoint(run.run_dir / "checkpoints" / "latest.pt")["config"]["model"]["labels"]["pitch_counts"] == {"60": 5, "67": 3}


def test_conditioned_resume_is_exact(labelled, tmp_path):
    """Stopping at step 2 and resuming gives bit-identical weights, optimisers and EMA to a straight run of 4."""
    overrides = ("model.condition=pitch+velocity", "model.condition_critic=acgan", "train.steps=4")
    straight_cfg = folder_config(tmp_path / "a", labelled, *overrides)
    straight = Run(straight_cfg, run_dir_for(straight_cfg), CPU)
    straight.train()

    cfg = folder_config(tmp_path / "b", labelled, *overrides)
    first = Run(cfg, run_dir_for(cfg), CPU)
    first.train(callbacks=(lambda r: r.request_stop() if r.step == 2 else None,))
    assert first.step == 2
    resumed = Run(cfg, run_dir_for(cfg), CPU, resume=True)
    assert resumed.step == 2
    resumed.train()
    assert resumed.step == 4
    assert tensors_equal(straight.trainer.state(), resumed.trainer.state())
    assert straight.order.state() == resumed.order.state()

    # `train --resume` reads config.yaml, labels and all: the same data labels the same, and resumes.
    saved = load_config(run_dir_for(cfg) / "config.yaml")
    assert saved.model.labels["pitch_counts"] == {"60": 5, "67": 3}
    assert Run(saved, run_dir_for(cfg), CPU, resume=True).step == 4
    # A resumed run whose data labels differently now (its config.yaml's labels against the folder's) is refused.
    saved.model.labels["pitch_counts"] = {"60": 8}
    with pytest.raises(ConfigError, match="the data's pitch labels changed since the run began"):
        Run(saved, run_dir_for(cfg), CPU, resume=True)


def test_unlabelled_folder_is_refused(tmp_path):
    folder = tmp_path / "tones"
    write_clips(folder, [(f"tone_{i}.wav", 60, 100) for i in range(4)])
    cfg = folder_config(tmp_path, folder, "model.condition=pitch")
    with pytest.raises(ConfigError) as e:
        Run(cfg, run_dir_for(cfg), CPU)
    assert str(e.value) == (
        f"model.condition pitch: data.source {str(folder)!r}: no clip has a pitch label (0 of 4 clips labelled; no pitch; no velocity); "
        "name files by note (C4, A#3, _060-100), add a labels.csv, or set model.track_pitch"
    )


def test_synth_source_is_refused(tiny_config):
    cfg = tiny_config("model.condition=pitch", "data.source=synth:piano")
    with pytest.raises(ConfigError) as e:
        Run(cfg, run_dir_for(cfg), CPU)
    assert str(e.value) == ("model.condition pitch: data.source 'synth:piano': a conditioned model needs a folder of "
                            "labelled clips, not a synth set")


# ---- sampling and the config hash -----------------------------------------------------------------


def test_sample_latents_draws_conditions_as_the_labels_hold_them():
    cfg = model_config("wavegan", "model.condition=pitch+velocity").model
    cfg.labels = {"pitch_counts": {"48": 1, "60": 3}, "velocity_counts": {"0.2500": 1, "0.7500": 1}}
    n = 4000
    zc = sample_latents(cfg, n, torch.Generator().manual_seed(0))
    assert zc.shape == (n, cfg.latent_dim + 2)
    assert torch.equal(zc, sample_latents(cfg, n, torch.Generator().manual_seed(0)))
    z, pitch, velocity = zc[:, : cfg.latent_dim], zc[:, -2], zc[:, -1]
    assert z.min() >= -1 and z.max() <= 1 and z.std() > 0.5  # uniform in [-1, 1], as unconditioned
    assert set(pitch.tolist()) == {48.0, 60.0} and set(velocity.tolist()) == {0.25, 0.75}
    assert abs((pitch == 60).float().mean().item() - 0.75) < 0.03
    assert abs((velocity == 0.75).float().mean().item() - 0.5) < 0.03
    # No labels: every condition unknown.
    cfg.labels = None
    assert (sample_latents(cfg, 8, torch.Generator().manual_seed(0))[:, -2:] == -1).all()


def test_config_hash_of_unconditioned_runs_is_unchanged():
    assert TrainConfig().hash() == "9e93d6d0"  # the default config's hash before conditioning existed
    plain = load_config(None, [])
    plain.model.labels = {"pitch_counts": {"60": 1}}
    assert plain.hash() == "9e93d6d0"
    assert load_config(None, ["model.condition_critic=acgan", "model.track_pitch=true"]).hash() == "9e93d6d0"  # unused when off
    pitch = load_config(None, ["model.condition=pitch"])
    assert pitch.hash() != "9e93d6d0"
    assert load_config(None, ["model.condition=pitch", "model.condition_critic=acgan"]).hash() != pitch.hash()
    pitch.model.labels = {"pitch_counts": {"60": 1}}
    assert pitch.hash() == load_config(None, ["model.condition=pitch"]).hash()  # labels are derived: not hashed


# ---- export and realtime ---------------------------------------------------------------------------


def test_export_conditioned_bundle_plays_in_realtime(conditioned_run, tmp_path):
    out = export_run(conditioned_run.run_dir, tmp_path / "bundle", controls=2, log=lambda _: None)
    bundle = load_bundle(out)
    spec = bundle.spec
    assert spec.format_version == CONDITION_VERSION == 5
    assert spec.condition is not None and spec.condition.kind == "pitch+velocity" and spec.condition.columns == 2
    assert spec.condition.pitch_range == (60, 67) and spec.condition.histogram == {"60": 5, "67": 3}
    assert spec.streaming.root_note is None  # a conditioned bundle asks for notes, it does not transpose
    graph = onnx.load(str(out / spec.graphs["generator"].file)).graph
    dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]  # noqa: E731
    d = spec.model.latent.size
    assert [(i.name, dims(i)) for i in graph.input] == [("z", ["batch", d]), ("condition", ["batch", 2])]

    gen = Generator(bundle, threads=1)
    assert (gen.latent_size, gen.condition_size) == (d, 2)
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (4, d)).astype(np.float32)
    zc = np.concatenate([z, np.array([[60, 0.8], [67, 0.3], [64, 1.0], [-1, -1]], np.float32)], axis=1)
    audio = gen.generate(zc)
    torch_gen, _, _, _ = load_run_generator(conditioned_run.run_dir)
    with torch.no_grad():
        want = torch_gen(torch.from_numpy(zc)).squeeze(1).numpy()
    assert audio.shape == want.shape == (4, spec.model.segment)
    np.testing.assert_allclose(audio, want, atol=1e-4, rtol=0)
    assert np.abs(audio[0] - audio[1]).max() > 1e-6  # the notes asked for reach the graph

    for width in (d, d + 1, d + 3):
        with pytest.raises(ValueError) as e:
            gen.generate(np.zeros((1, width), np.float32))
        assert str(e.value) == f"z must have shape (B, {d + 2}) ({d} latent + 2 condition columns) with B >= 1, got (1, {width})"

    # What `ganstream eval BUNDLE` scores: rows with pitches as often as training held them (5:3).
    rows = bundle.random_rows(4000, np.random.default_rng(1))
    assert rows.shape == (4000, d + 2) and set(np.unique(rows[:, d])) == {60.0, 67.0}
    assert abs(np.mean(rows[:, d] == 60) - 5 / 8) < 0.03
    assert 0.25 <= rows[:, d + 1].min() and rows[:, d + 1].max() <= 1.0
    assert gen.generate(rows[:3]).shape == (3, spec.model.segment)


def test_conditioned_specgan_trains_exports_and_plays(labelled, tmp_path):
    """The spectral path: SpectralRun labels its data, export writes the condition input, the realtime
    generator feeds it and rebuilds the audio (Griffin-Lim, no network)."""
    cfg = folder_config(tmp_path, labelled, "model.kind=specgan", *FAMILIES["specgan"].tiny, "model.condition=pitch",
                        "model.condition_critic=acgan", "loss.critic_steps=1")
    run = SpectralRun(cfg, run_dir_for(cfg), CPU)
    run.train()
    assert cfg.model.labels["pitch_counts"] == {"60": 5, "67": 3}
    out = export_run(run.run_dir, tmp_path / "bundle", controls=0, reconstruction="griffin-lim:2", log=lambda _: None)
    bundle = load_bundle(out)
    assert bundle.spec.format_version == 5 and bundle.spec.condition.kind == "pitch"
    assert [(s.name, s.shape) for s in bundle.spec.graphs["generator"].inputs] == [("z", ("batch", 100)), ("condition", ("batch", 1))]
    gen = Generator(bundle, threads=1)
    z = np.random.default_rng(0).uniform(-1, 1, (1, 100)).astype(np.float32).repeat(2, axis=0)
    audio = gen.generate(np.concatenate([z, np.array([[60.0], [67.0]], np.float32)], axis=1))
    assert audio.shape == (2, bundle.segment) and np.isfinite(audio).all()
    assert np.abs(audio[0] - audio[1]).max() > 1e-6
    with pytest.raises(ValueError, match=r"z must have shape \(B, 101\) \(100 latent \+ 1 condition columns\)"):
        gen.generate(z)
