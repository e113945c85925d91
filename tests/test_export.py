"""Export end to end at tiny size: every generator to ONNX with parity, the bundle contract, controls, errors."""

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import ganstream.export.onnx as export_onnx
from ganstream.export.bundle import export_run
from ganstream.export.cli import main as export_main
from ganstream.export.controls import descriptor_controls, principal_controls, top_components
from ganstream.export.onnx import TOLERANCE, ExportError, ParityError
from ganstream.realtime.bundle import load_bundle
from ganstream.training.checkpoint import CheckpointError, load_checkpoint, load_generator
from ganstream.training.loop import Run, run_dir_for
from ganstream.training.models import build_generator, sample_latents
from ganstream.training.models.wavegan import WaveGANConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "bundle.md"
CPU = torch.device("cpu")

# run.seed picks initialisations whose output depends on z (a width-2 WaveGAN can start with every ReLU dead).
MODELS = {
    "wavegan": ["run.seed=1"],
    "wavegan-nearest-postfilter-bn": ["run.seed=2", "model.upsample=nearest", "model.post_filter=16", "model.batchnorm=true"],
    "dcgan1d-100": ["model.kind=dcgan1d", "model.ngf=16", "model.ndf=16", "model.segment=100", "data.source=synth:gaussian", "train.ema_decay=0"],
    "dcgan1d-16384": ["model.kind=dcgan1d", "model.ngf=16", "model.ndf=16", "model.segment=16384"],
}


def train_tiny(tiny_config, *overrides):
    """A run trained for one step by the real training loop (hinge loss: no gradient penalty to pay for)."""
    cfg = tiny_config("train.steps=1", "loss.critic_steps=1", "loss.kind=hinge", *overrides)
    run = Run(cfg, run_dir_for(cfg), CPU)
    run.train()
    return run.run_dir


def doc_example():
    """The manifest example of docs/bundle.md: the keys every manifest has."""
    text = DOC.read_text()
    return json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))


def assert_manifest_follows_doc(bundle: Path, manifest: dict) -> None:
    example = doc_example()

    def same_keys(ours, theirs, where):
        assert isinstance(ours, dict), where
        assert set(theirs) <= set(ours), f"{where}: missing {set(theirs) - set(ours)}"
        for key, value in theirs.items():
            # files and graphs are keyed by file name and role; controls may be null
            if isinstance(value, dict) and key not in ("files", "graphs") and not (key == "controls" and ours[key] is None):
                same_keys(ours[key], value, f"{where}.{key}")

    same_keys(manifest, example, "manifest")
    if manifest["controls"] is not None:
        by_kind = {item["kind"]: item for item in example["controls"]["items"]}
        for item in manifest["controls"]["items"]:
            assert set(item) == set(by_kind[item["kind"]]), item
    assert manifest["format"] == "ganstream-bundle" and manifest["format_version"] == 1
    model = manifest["model"]
    assert model["kind"] == "waveform" and model["latent"]["distribution"] in ("uniform", "normal")
    assert set(manifest["graphs"]) == {"generator"} and manifest["spectral"] is None
    graph = manifest["graphs"]["generator"]
    same_keys(graph, example["graphs"]["generator"], "graphs.generator")
    assert graph["inputs"] == [{"name": "z", "shape": ["batch", model["latent"]["size"]], "dtype": "float32"}]
    assert graph["outputs"] == [{"name": "audio", "shape": ["batch", model["segment"]], "dtype": "float32"}]
    assert graph["precision"] in ("fp32", "fp16") and isinstance(graph["opset"], int)
    assert 0 <= graph["parity_max_abs_error"] <= TOLERANCE[graph["precision"]]

    # files: every file but the manifest, with its sha256 and size
    on_disk = sorted(p.name for p in bundle.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        data = (bundle / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, name
    assert graph["file"] in manifest["files"]

    # the ONNX graph says what the manifest says
    session = ort.InferenceSession(str(bundle / graph["file"]), providers=["CPUExecutionProvider"])
    for spec, actual in zip(graph["inputs"] + graph["outputs"], session.get_inputs() + session.get_outputs()):
        assert actual.name == spec["name"] and actual.type == "tensor(float)"
        assert list(actual.shape) == spec["shape"]

    streaming = manifest["streaming"]
    assert streaming["mode"] in ("crossfade", "texture")
    assert 0 <= streaming["crossfade"] <= model["segment"] // 2
    assert model["segment"] % streaming["texture_overlap"] == 0

    prov = manifest["provenance"]
    assert set(prov) >= set(example["provenance"])
    assert prov["weights"] in ("ema", "raw")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["created"])


def onnx_audio(bundle: Path, z: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(bundle / "generator.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["audio"], {"z": z.astype(np.float32)})[0]


# ---- every generator, fp32 and fp16 ------------------------------------------------------------


@pytest.mark.parametrize("overrides", list(MODELS.values()), ids=list(MODELS))
def test_every_generator_exports_with_parity(tiny_config, tmp_path, overrides):
    run_dir = train_tiny(tiny_config, *overrides)
    generator, cfg, state = load_generator(run_dir / "checkpoints" / "latest.pt")
    z = sample_latents(cfg.model, 16, torch.Generator().manual_seed(99))
    with torch.no_grad():
        expected = generator(z)[:, 0].numpy()
    variation = expected - expected.mean(0)  # what z changes; tiny for the untrained 1D DCGAN's eval-mode BatchNorm
    assert np.abs(variation).max() > 1e-6

    sizes = {}
    for fp16 in (False, True):
        out = export_run(run_dir, tmp_path / f"b{int(fp16)}.gsb", fp16=fp16, controls=0)
        manifest = json.loads((out / "manifest.json").read_text())
        assert_manifest_follows_doc(out, manifest)
        graph = manifest["graphs"]["generator"]
        assert graph["precision"] == ("fp16" if fp16 else "fp32")
        got = onnx_audio(out, z.numpy())
        error = float(np.abs(got - expected).max())
        assert error < TOLERANCE[graph["precision"]], error
        # and the graph follows z, not only the constant part: its variation matches within 2 %
        assert np.abs((got - got.mean(0)) - variation).max() < 0.02 * np.abs(variation).max()
        assert manifest["model"]["architecture"] == cfg.model.kind
        assert manifest["provenance"]["weights"] == ("raw" if cfg.train.ema_decay == 0 else "ema")
        assert manifest["controls"] is None
        load_bundle(out)
        sizes[fp16] = manifest["files"]["generator.onnx"]["bytes"]
        weights = [t for t in onnx.load(out / "generator.onnx").graph.initializer if len(t.dims) >= 2]
        assert {t.data_type for t in weights} == {onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT}
    assert sizes[True] < 0.7 * sizes[False]  # about 0.5 for real sizes; vectors and graph overhead stay fp32


# ---- the CLI and the whole bundle --------------------------------------------------------------


def test_cli_writes_bundle_zip_and_controls(tiny_config, tmp_path, capsys):
    run_dir = train_tiny(tiny_config, *MODELS["wavegan-nearest-postfilter-bn"])
    out = tmp_path / "piano.gsb"
    argv = [str(run_dir), "-o", str(out), "--zip", "--controls", "3"]
    assert export_main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"max abs error \d", printed), printed

    manifest = json.loads((out / "manifest.json").read_text())
    assert_manifest_follows_doc(out, manifest)
    assert load_bundle(out).spec.to_json() == manifest  # the writer writes the schema: nothing more, nothing less
    prov = manifest["provenance"]
    assert prov["step"] == load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 1
    assert prov["checkpoint"] == "latest" and prov["weights"] == "ema"
    assert prov["command"] == "ganstream export " + " ".join(argv)
    assert prov["config_hash"] == run_dir.name.rsplit("-", 1)[1]

    # the zip holds the same files at its root
    with zipfile.ZipFile(tmp_path / "piano.gsb.zip") as z:
        assert sorted(z.namelist()) == sorted(p.name for p in out.iterdir())
        for name in z.namelist():
            assert z.read(name) == (out / name).read_bytes(), name
    assert load_bundle(tmp_path / "piano.gsb.zip", cache_dir=tmp_path / "cache").control_names == load_bundle(out).control_names

    # controls: unit rows, the documented names, each item pointing at its row
    rows = np.load(out / "controls.npy")
    items = manifest["controls"]["items"]
    d = manifest["model"]["latent"]["size"]
    assert rows.dtype == np.float32 and rows.shape == (len(items), d)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert [i["name"] for i in items] == ["pc1", "pc2", "pc3", "loudness", "brightness", "noisiness"]
    assert [i["row"] for i in items] == list(range(len(items)))
    assert all(i["scale"] > 0 for i in items)
    principal = [i for i in items if i["kind"] == "principal"]
    assert [i["explained_variance"] for i in principal] == sorted((i["explained_variance"] for i in principal), reverse=True)
    assert {i["descriptor"] for i in items if i["kind"] == "descriptor"} == {"loudness", "spectral_centroid", "spectral_flatness"}

    # moving along "loudness" by +scale is louder than by -scale, on average, in the exported graph
    loud = items[[i["name"] for i in items].index("loudness")]
    z = np.random.default_rng(5).uniform(-1, 1, (64, d)).astype(np.float32)
    step = loud["scale"] * rows[loud["row"]]
    rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2, axis=1))  # noqa: E731
    assert np.mean(rms(onnx_audio(out, z + step)) > rms(onnx_audio(out, z - step))) > 0.75

    # exporting again replaces the bundle
    assert export_main([str(run_dir), "-o", str(out), "--controls", "0", "--fp16"]) == 0
    assert json.loads((out / "manifest.json").read_text())["graphs"]["generator"]["precision"] == "fp16"
    assert not (out / "controls.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_export_errors_are_clear(tiny_config, tmp_path, capsys, monkeypatch):
    # no checkpoint at all
    empty = tmp_path / "runs" / "empty-00000000"
    empty.mkdir(parents=True)
    assert export_main([str(empty), "-o", str(tmp_path / "x.gsb")]) == 2  # a user error, as in every command
    err = capsys.readouterr().err
    assert "no latest checkpoint" in err and str(empty / "checkpoints") in err
    assert export_main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.gsb")]) == 2
    assert "no such run directory" in capsys.readouterr().err

    run_dir = train_tiny(tiny_config, *MODELS["wavegan"])
    assert export_main([str(run_dir), "--checkpoint", "best", "-o", str(tmp_path / "x.gsb")]) == 2
    assert "no best checkpoint" in capsys.readouterr().err
    with pytest.raises(ExportError, match="missing.pt: no such checkpoint, here or in .*checkpoints"):
        export_run(run_dir, tmp_path / "x.gsb", checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="step_00000000.pt: not a readable checkpoint"):
        (run_dir / "checkpoints" / "step_00000000.pt").write_bytes(b"truncated")
        export_run(run_dir, tmp_path / "x.gsb", checkpoint="step_00000000.pt")  # a file name in the run's checkpoints/

    # a directory that is not a bundle is never overwritten
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert export_main([str(run_dir), "-o", str(precious)]) == 2
    assert "not a ganstream bundle" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"

    # a graph that computes something else fails parity, and nothing is left behind
    declare = export_onnx.declare_io

    def corrupting(model, *args):
        declare(model, *args)
        weight = next(t for t in model.graph.initializer if len(t.dims) >= 2)
        array = export_onnx.numpy_helper.to_array(weight) + 0.5
        weight.CopyFrom(export_onnx.numpy_helper.from_array(array, weight.name))

    monkeypatch.setattr(export_onnx, "declare_io", corrupting)
    with pytest.raises(ParityError, match=r"bad.gsb/generator.onnx: ONNX Runtime and PyTorch disagree by up to .* \(the fp32 limit is 0.0001\)"):
        export_run(run_dir, tmp_path / "bad.gsb", controls=0)
    assert export_main([str(run_dir), "-o", str(tmp_path / "bad.gsb"), "--fp16", "--controls", "0"]) == 1  # failed, not misused
    assert "fp16 limit is 0.01" in capsys.readouterr().err
    assert not (tmp_path / "bad.gsb").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_never_imports_the_training_loop():
    code = (
        "import sys; import ganstream.export.cli, ganstream.export.bundle, ganstream.export.controls; "
        "bad = [m for m in ('ganstream.training.loop', 'ganstream.training.gan') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- controls ---------------------------------------------------------------------------------


def activation_share(acts: np.ndarray, t: np.ndarray) -> float:
    """Fraction of the activations' total variance explained linearly by the scalar t (N,)."""
    a = acts - acts.mean(0)
    t = t - t.mean()
    slopes = t @ a / (t @ t)  # least squares of every activation on t
    return float((t @ t) * (slopes**2).sum() / (a**2).sum())


def test_ganspace_pc1_captures_more_activation_variance_than_random_directions():
    torch.manual_seed(0)
    cfg = WaveGANConfig(width=2, latent_dim=32)
    g = build_generator(cfg).eval()
    early = g.early_features
    z = sample_latents(cfg, 2048, torch.Generator().manual_seed(1))
    pcs = principal_controls(early, z, k=3)
    assert [c.name for c in pcs] == ["pc1", "pc2", "pc3"]
    with torch.no_grad():
        acts = early(z).double().numpy()
    zn = z.double().numpy()
    pc1 = activation_share(acts, zn @ pcs[0].direction)
    rng = np.random.default_rng(0)
    random = [activation_share(acts, zn @ (v / np.linalg.norm(v))) for v in rng.standard_normal((8, cfg.latent_dim))]
    assert pc1 > 1.3 * np.mean(random) and pc1 > max(random)  # 0.038 against 0.025 on average
    assert pcs[0].explained_variance >= pcs[1].explained_variance >= pcs[2].explained_variance > 0

    # the randomised PCA finds the leading variances of an exact SVD
    centred = torch.from_numpy(acts - acts.mean(0))
    exact = torch.linalg.svdvals(centred)[:3] ** 2 / centred.square().sum()
    _, variances, total = top_components(torch.from_numpy(acts).float(), 3, torch.Generator().manual_seed(0))
    np.testing.assert_allclose((variances / total).numpy(), exact.numpy(), rtol=0.02)


def test_descriptor_directions_recover_a_known_linear_generator():
    """Audio whose level (dB) and pitch (octaves) are linear in z: the regressions find those directions."""
    rng = np.random.default_rng(0)
    n, d, sr, length = 256, 8, 16000, 4096
    z = rng.uniform(-1, 1, (n, d))
    level_dir, pitch_dir = np.eye(d)[0] + 0.5 * np.eye(d)[3], np.eye(d)[1] - np.eye(d)[5]
    gain = 10 ** ((-20 + 6 * z @ level_dir) / 20)
    freq = 500 * 2 ** (z @ pitch_dir)
    t = np.arange(length) / sr
    audio = (gain[:, None] * np.sin(2 * np.pi * freq[:, None] * t)).astype(np.float32)
    controls = {c.name: c for c in descriptor_controls(audio, z, sr)}
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cos(controls["loudness"].direction, level_dir) > 0.999 and controls["loudness"].r2 > 0.99
    assert cos(controls["brightness"].direction, pitch_dir) > 0.98 and controls["brightness"].r2 > 0.9
    for c in controls.values():
        assert abs(np.linalg.norm(c.direction) - 1) < 1e-9
        assert c.scale == pytest.approx(2 * np.std(z @ c.direction))


def test_fp16_stores_large_constants_as_float16_too(tmp_path):
    """A module's non-persistent buffer (an STFT basis, a mel matrix) is traced as a Constant node, not an
    initialiser: with --fp16 it is halved like the weights, and the graph still passes its parity check."""
    from ganstream.export.onnx import TensorSpec, export_graph

    class Basis(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("basis", torch.randn(128, 64, generator=torch.Generator().manual_seed(0)), persistent=False)
            self.proj = torch.nn.Linear(64, 8)

        def forward(self, x):
            return self.proj(x @ self.basis)

    module, x = Basis().eval(), torch.randn(4, 128, generator=torch.Generator().manual_seed(1))
    sizes = {}
    for fp16 in (False, True):
        path = tmp_path / f"g{int(fp16)}.onnx"
        entry = export_graph(module, (x,), [TensorSpec("x", ("batch", 128))], [TensorSpec("y", ("batch", 8))], path, fp16=fp16)
        assert entry["parity_max_abs_error"] <= (1e-2 if fp16 else 1e-4)
        graph = onnx.load(str(path)).graph
        big = [n.attribute[0].t for n in graph.node if n.op_type == "Constant" and len(n.attribute[0].t.dims) >= 2]
        assert len(big) == 1 and big[0].data_type == (onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT)
        sizes[fp16] = path.stat().st_size
    assert sizes[True] < 0.6 * sizes[False]
