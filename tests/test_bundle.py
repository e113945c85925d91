"""The bundle loader and the generator runner against docs/bundle.md: valid bundles load and
play exactly what their graph computes, and every way a bundle can break gives one BundleError
that names the file and the field."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bundle_factory import generator_model, make_bundle, read_manifest, reference_audio, rehash, write_manifest, zip_bundle
from onnx import TensorProto, helper, numpy_helper

from ganstream.realtime import bundle as bundle_module
from ganstream.realtime.bundle import Bundle, BundleError, UnknownControlError, load_bundle
from ganstream.realtime.inference import CPU, Generator, ProviderError, create_session, default_threads

SEG, SR, D = 1024, 8000, 8


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base.gsb", segment=SEG, sample_rate=SR, latent_size=D)


@pytest.fixture
def copy(base, tmp_path):
    """A fresh copy of the valid bundle for a test to break."""

    def make() -> Path:
        return Path(shutil.copytree(base, tmp_path / "b.gsb"))

    return make


def edit(directory: Path, change) -> Path:
    manifest = read_manifest(directory)
    change(manifest)
    write_manifest(directory, manifest)
    return directory


def setf(dotted: str, value):
    def change(m):
        *parents, last = _keys(dotted)
        for k in parents:
            m = m[k]
        m[last] = value

    return change


def delf(dotted: str):
    def change(m):
        *parents, last = _keys(dotted)
        for k in parents:
            m = m[k]
        del m[last]

    return change


def _keys(dotted: str):
    return [int(k) if k.isdigit() else k for k in re.split(r"[.\[\]]+", dotted) if k]


def save_graph(directory: Path, nodes, inputs, outputs, inits=()) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, directory / "generator.onnx")
    rehash(directory)


def matmul_graph(directory: Path, z_shape, out_shape, out_len=SEG, extra_output=False) -> None:
    w = numpy_helper.from_array(np.zeros((D, out_len), np.float32), "W")
    nodes = [helper.make_node("MatMul", ["z", "W"], ["audio"])]
    outputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, out_shape)]
    if extra_output:
        nodes.append(helper.make_node("Identity", ["z"], ["z_copy"]))
        outputs.append(helper.make_tensor_value_info("z_copy", TensorProto.FLOAT, z_shape))
    save_graph(directory, nodes, [helper.make_tensor_value_info("z", TensorProto.FLOAT, z_shape)], outputs, [w])


# --- valid bundles ----------------------------------------------------------------------------


def test_valid_bundle_fields(base):
    b = load_bundle(base)
    assert isinstance(b, Bundle)
    assert (b.path, b.source, b.name, b.kind, b.architecture) == (base, base, "test", "waveform", "test-harmonic")
    assert (b.sample_rate, b.segment, b.latent_size, b.latent_distribution) == (SR, SEG, D, "uniform")
    assert b.manifest["format_version"] == 1 and b.provenance["weights"] == "ema"
    assert json.loads(json.dumps(b.manifest)) == read_manifest(base)
    g = b.graph("generator")
    assert g.file == base / "generator.onnx" and g.precision == "fp32" and g.opset == 17
    assert [(t.name, t.shape, t.dtype) for t in g.inputs] == [("z", ("batch", D), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in g.outputs] == [("audio", ("batch", SEG), "float32")]
    assert b.controls.shape == (5, D) and b.controls.dtype == np.float32 and not b.controls.flags.writeable
    assert b.control_names == ("pc1", "pc2", "pc3", "brightness", "loudness")
    item = b.control_items[3]
    assert (item.kind, item.row, item.extra["descriptor"]) == ("descriptor", 3, "spectral_centroid")
    direction, scale = b.control("brightness")
    np.testing.assert_array_equal(direction, b.controls[3])
    assert scale == pytest.approx(2 / np.sqrt(3), rel=1e-5)
    s = b.streaming
    assert (s.mode, s.crossfade, s.texture_overlap, s.latent_smoothing_s, s.walk_rate, s.walk_depth) == (
        "crossfade", SEG // 4, 4, 0.05, 0.2, 0.35,
    )


def test_unknown_control_and_role(base):
    b = load_bundle(base)
    with pytest.raises(UnknownControlError, match=r"manifest.json: no control named 'wobble'; known controls: pc1, pc2"):
        b.control("wobble")
    with pytest.raises(KeyError):
        b.control("wobble")
    with pytest.raises(BundleError, match=r"no graph with role 'fused'; it has generator"):
        b.graph("fused")


def test_no_controls(tmp_path):
    b = load_bundle(make_bundle(tmp_path / "b", controls=False, segment=SEG))
    assert b.controls is None and b.control_items == ()
    with pytest.raises(BundleError, match="known controls: none"):
        b.control("pc1")


def test_random_latents(tmp_path, base):
    rng = np.random.default_rng(0)
    u = load_bundle(base).random_latents(4000, rng)
    assert u.shape == (4000, D) and u.dtype == np.float32 and u.min() >= -1 and u.max() <= 1
    assert abs(u.std() - 1 / np.sqrt(3)) < 0.01
    n = load_bundle(make_bundle(tmp_path / "n", distribution="normal", segment=SEG)).random_latents(4000, rng)
    assert n.dtype == np.float32 and abs(n.std() - 1) < 0.02 and n.max() > 3


@pytest.mark.parametrize("folder", [False, True], ids=["flat", "folder"])
def test_zip_loads_once_into_cache(base, tmp_path, folder):
    z = zip_bundle(base, tmp_path / "b.gsb.zip", folder=folder)
    cache = tmp_path / "cache"
    b = load_bundle(z, cache_dir=cache)
    assert b.source == z and b.path != z and b.segment == SEG and b.controls.shape == (5, D)
    again = load_bundle(z, cache_dir=cache)
    assert again.path == b.path
    assert [p.name for p in (cache / "bundles").iterdir()] == [b.path.relative_to(cache / "bundles").parts[0]]


def test_default_bundle(monkeypatch, base, tmp_path):
    monkeypatch.setattr(bundle_module, "SHIPPED_BUNDLES", tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"nowhere/piano: no bundle was named and the default bundle 'piano' is not installed.*ganstream export"):
        load_bundle()
    shipped = tmp_path / "shipped"
    shutil.copytree(base, shipped / "piano")
    monkeypatch.setattr(bundle_module, "SHIPPED_BUNDLES", shipped)
    assert load_bundle(None).path == shipped / "piano"


def test_verify_false_skips_hashes(copy):
    d = copy()
    data = bytearray((d / "controls.npy").read_bytes())
    data[-1] ^= 0x01  # same size, different bytes
    (d / "controls.npy").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"controls.npy: sha256 mismatch: the manifest says [0-9a-f]{64}, the file has"):
        load_bundle(d)
    assert load_bundle(d, verify=False).segment == SEG


# --- the generator ----------------------------------------------------------------------------


def test_generator_matches_numpy_reference(base):
    g = Generator(load_bundle(base), warmup_batch_sizes=(1, 3))
    assert (g.sample_rate, g.segment, g.latent_size, g.provider) == (SR, SEG, D, CPU)
    z = np.random.default_rng(1).uniform(-1, 1, (3, D))  # float64 on purpose: cast to the graph dtype
    audio = g.generate(z)
    assert audio.shape == (3, SEG) and audio.dtype == np.float32
    np.testing.assert_allclose(audio, reference_audio(z, segment=SEG, sample_rate=SR), atol=1e-5)
    assert 0.05 < np.abs(audio).max() <= 0.9
    out = np.full((3, SEG), np.nan, np.float32)
    assert g.generate_into(z, out) is out
    np.testing.assert_array_equal(out, audio)
    # smooth in z: a tiny step in the latent is a tiny step in the audio
    step = np.abs(g.generate(z + 1e-3) - audio).max()
    assert 0 < step < 1e-2


def test_generator_rejects_bad_arrays(base):
    g = Generator(load_bundle(base))
    with pytest.raises(ValueError, match=rf"z must have shape \(B, {D}\)"):
        g.generate(np.zeros(D, np.float32))
    with pytest.raises(ValueError, match=rf"z must have shape \(B, {D}\)"):
        g.generate(np.zeros((1, D + 1), np.float32))
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
        g.generate_into(np.zeros((2, D), np.float32), np.zeros((2, SEG), np.float64))


def test_float16_bundle(tmp_path):
    b = load_bundle(make_bundle(tmp_path / "h", dtype="float16", segment=SEG, sample_rate=SR))
    assert b.graph("generator").precision == "fp16" and b.graph("generator").inputs[0].dtype == "float16"
    g = Generator(b)
    z = np.random.default_rng(2).uniform(-1, 1, (2, D)).astype(np.float32)
    audio = g.generate(z)
    assert audio.dtype == np.float32 and audio.shape == (2, SEG)
    np.testing.assert_allclose(audio, reference_audio(z, segment=SEG, sample_rate=SR, dtype="float16"), atol=2e-3)
    out = np.empty((2, SEG), np.float32)
    np.testing.assert_array_equal(g.generate_into(z, out), audio)


def test_generator_output_length_checked_at_warm_up(copy):
    """A graph whose output length only a run reveals: audio = (z @ W)[:, : 64 * D]."""
    d = copy()
    ints = {name: numpy_helper.from_array(np.array([v], np.int64), name) for name, v in
            [("zero", 0), ("one", 1), ("two", 2), ("k", SEG // 2 // D)]}  # fmt: skip
    w = numpy_helper.from_array(np.zeros((D, SEG), np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["full"]),
        helper.make_node("Shape", ["z"], ["zs"]),
        helper.make_node("Slice", ["zs", "one", "two"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["end"]),
        helper.make_node("Slice", ["full", "zero", "end", "one"], ["audio"]),
    ]
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", D])
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "n"])
    save_graph(d, nodes, [z], [audio], [w, *ints.values()])
    b = load_bundle(d)
    with pytest.raises(BundleError, match=rf"generator.onnx: the generator returned audio of shape \(1, {SEG // 2}\).*`model.segment` is {SEG}"):
        Generator(b)


def test_sessions(base):
    path = base / "generator.onnx"
    for name in ("cpu", "CPU", "CPUExecutionProvider"):
        session, used = create_session(path, name, threads=1)
        assert used == CPU and session.get_providers() == [CPU]
    session, _ = create_session(path, "cpu")
    options = session.get_session_options()
    assert options.intra_op_num_threads == default_threads() >= 1
    assert options.inter_op_num_threads == 1 and options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning, _ = create_session(path, "cpu", spinning=True)
    assert spinning.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="unknown provider 'tpu'; use auto, cpu, cuda"):
        create_session(path, "tpu")
    missing = next(p for p in ("CoreMLExecutionProvider", "DmlExecutionProvider") if p not in ort.get_available_providers())
    with pytest.raises(ProviderError, match=rf"\({missing}\) is not in this onnxruntime build; it offers: .*CPUExecutionProvider"):
        create_session(path, missing)


def test_forced_cuda_that_cannot_start_is_a_quiet_clear_error(base, capfd):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    _, auto = create_session(base / "generator.onnx", "auto")
    if auto == "CUDAExecutionProvider":
        pytest.skip("CUDA works here")
    capfd.readouterr()
    with pytest.raises(ProviderError, match=r"provider 'cuda' \(CUDAExecutionProvider\) is installed but did not start: .+"):
        create_session(base / "generator.onnx", "cuda")
    assert capfd.readouterr().err == ""


# --- broken bundles: each a BundleError naming the file and the field ---------------------------


def test_missing_path_and_manifest(tmp_path, copy):
    with pytest.raises(BundleError, match=r"nope.gsb: no such bundle"):
        load_bundle(tmp_path / "nope.gsb")
    d = copy()
    (d / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"b.gsb/manifest.json: missing"):
        load_bundle(d)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{\n  "format": "ganstream-bundle",\n  "name" "x"\n}', r"manifest.json: is not valid JSON: Expecting ':' delimiter at line 3, column 10"),
        ('{"format": "ganstream-bundle", "format": "x"}', r"manifest.json: is not valid JSON: duplicate key 'format'"),
        ('{"format": NaN}', r"manifest.json: is not valid JSON: NaN is not valid JSON"),
        ("[1, 2]", r"manifest.json: must hold a JSON object, got list"),
    ],
    ids=["syntax", "duplicate-key", "nan", "not-object"],
)
def test_manifest_not_json(copy, text, match):
    d = copy()
    (d / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=match):
        load_bundle(d)


MISSING = ["format", "format_version", "name", "model.segment", "model.latent.size", "model.latent", "spectral",
           "graphs.generator", "graphs.generator.outputs", "graphs.generator.inputs[0].dtype", "controls",
           "controls.items", "streaming.crossfade", "files", "files.generator.onnx.sha256", "provenance"]  # fmt: skip


@pytest.mark.parametrize("field", MISSING)
def test_missing_field(copy, field):
    change = delf(field)
    if field == "files.generator.onnx.sha256":  # the key has a dot in it

        def change(m):
            del m["files"]["generator.onnx"]["sha256"]

    d = edit(copy(), change)
    with pytest.raises(BundleError, match=rf"manifest.json: missing required field `{re.escape(field)}`") as info:
        load_bundle(d)
    assert info.value.field == field and info.value.file == str(d / "manifest.json")


BAD_VALUES = [
    ("format", "ganstream-model", r'`format` must be "ganstream-bundle", got "ganstream-model"'),
    ("format_version", 7, r"`format_version` is 7, but ganstream 0.1.0 reads format version 1, 2, 3, 4, 5, 6 only: upgrade ganstream"),
    ("format_version", True, r"`format_version` is true, but ganstream 0.1.0 reads format version 1, 2, 3, 4, 5, 6 only$"),
    ("name", "", r"`name` must be a non-empty string"),
    ("model.kind", "mel", r'`model.kind` must be one of "waveform", "spectral", "reconstruction", got "mel"'),
    ("model.kind", "spectral", r'`model.kind` is "spectral", which format version 1 does not have \(it came with version 2\)'),
    ("model.sample_rate", 0, r"`model.sample_rate` must be >= 1, got 0"),
    ("model.sample_rate", 16000.0, r"`model.sample_rate` must be an integer, got 16000.0"),
    ("model.segment", "1024", r'`model.segment` must be an integer, got "1024"'),
    ("model.latent.distribution", "cauchy", r'`model.latent.distribution` must be one of "uniform", "normal", got "cauchy"'),
    ("model.latent.size", 9, r'`graphs.generator.inputs\[0\].shape` is \["batch", 8\] but `model.latent.size` is 9: the latent sizes must agree'),
    ("model.segment", 2048, r"`graphs.generator.outputs\[0\].shape` is \[\"batch\", 1024\] but `model.segment` is 2048: the generator's output length"),
    ("spectral", {}, r"`spectral` must be null in a waveform bundle"),
    ("graphs.fused", {}, r"`graphs.fused` is not a graph role of a waveform bundle"),
    ("graphs.generator.precision", "int8", r'`graphs.generator.precision` must be one of "fp32", "fp16"'),
    ("graphs.generator.opset", 0, r"`graphs.generator.opset` must be >= 1"),
    ("graphs.generator.parity_max_abs_error", -1, r"`graphs.generator.parity_max_abs_error` must be >= 0.0"),
    ("graphs.generator.inputs", [], r"`graphs.generator.inputs` must be a non-empty list"),
    ("graphs.generator.inputs[0].dtype", "int8", r'`graphs.generator.inputs\[0\].dtype` must be one of "float32", "float16"'),
    ("graphs.generator.inputs[0].shape", [8, "batch"], r'`graphs.generator.inputs\[0\].shape` must be \["batch", D\]'),
    ("graphs.generator.inputs[0].shape", ["batch", 0], r'`graphs.generator.inputs\[0\].shape` must be a non-empty list of positive integers'),
    ("graphs.generator.file", "../generator.onnx", r"`graphs.generator.file` must be a relative path inside the bundle"),
    ("controls.items[0].kind", "random", r'`controls.items\[0\].kind` must be one of "principal", "descriptor"'),
    ("controls.items[0].scale", 0, r"`controls.items\[0\].scale` must be > 0"),
    ("controls.items[0].row", 7, r"`controls.items\[0\].row` is 7 but controls.npy has only 5 rows"),
    ("controls.items[1].name", "pc1", r"`controls.items\[1\].name` repeats the control name 'pc1'"),
    ("controls.items[3].descriptor", "pitch", r'`controls.items\[3\].descriptor` must be one of "loudness"'),
    ("controls", [], r"`controls` must be an object or null, got \[\]"),
    ("streaming.mode", "granular", r'`streaming.mode` must be one of "crossfade", "texture"'),
    ("streaming.crossfade", 513, r"`streaming.crossfade` is 513, more than half the segment \(1024 samples\)"),
    ("streaming.texture_overlap", 3, r"`streaming.texture_overlap` is 3, which does not divide the segment"),
    ("streaming.walk_rate", -0.1, r"`streaming.walk_rate` must be >= 0.0"),
    ("files.controls.npy", {"sha256": "abc", "bytes": 1}, r"`files.controls.npy.sha256` must be 64 lower-case hex digits"),
    ("files.manifest.json", {"sha256": "0" * 64, "bytes": 1}, r"`files.manifest.json` must not be listed"),
    ("files./etc/passwd", {"sha256": "0" * 64, "bytes": 1}, r"`files./etc/passwd` must be a relative path inside the bundle"),
]


@pytest.mark.parametrize("field, value, match", BAD_VALUES, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_VALUES])
def test_bad_value(copy, field, value, match):
    if field.startswith("files."):
        key = field[len("files."):]

        def change(m):
            m["files"][key] = value

    else:
        change = setf(field, value)
    d = edit(copy(), change)
    with pytest.raises(BundleError, match=r"b.gsb/manifest.json: " + match):
        load_bundle(d)


def test_listed_file_missing(copy):
    d = copy()
    (d / "controls.npy").unlink()
    with pytest.raises(BundleError, match=r"b.gsb/controls.npy: missing: it is listed in the manifest's `files`"):
        load_bundle(d)


def test_size_mismatch(copy):
    d = copy()
    with open(d / "generator.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"b.gsb/generator.onnx: size mismatch: the manifest says \d+ bytes, the file has \d+"):
        load_bundle(d, verify=False)


def test_graph_file_not_listed(copy):
    d = edit(copy(), lambda m: m["files"].pop("generator.onnx"))
    with pytest.raises(BundleError, match=r"manifest.json: `graphs.generator.file` names 'generator.onnx', which is not listed in `files`"):
        load_bundle(d)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_onnx(copy, damage):
    d = copy()
    data = (d / "generator.onnx").read_bytes()
    (d / "generator.onnx").write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not an onnx model\n" * 50, "empty": b""}[damage])
    rehash(d)  # the hashes match: only loading the graph can tell
    with pytest.raises(BundleError, match=r"b.gsb/generator.onnx: onnxruntime cannot load it: ") as info:
        load_bundle(d)
    assert "\n" not in str(info.value) and "[ONNXRuntimeError]" not in str(info.value)
    b = load_bundle(d, verify=False)
    with pytest.raises(BundleError, match=r"b.gsb/generator.onnx: onnxruntime cannot load it: "):
        Generator(b)


def test_graph_signature_mismatch(copy):
    cases = [
        (setf("graphs.generator.inputs[0].name", "latent"), r"input 0 is named 'z' in the graph but 'latent' in `graphs.generator.inputs\[0\].name`"),
        (setf("graphs.generator.outputs[0].dtype", "float16"), r"output 'audio' has dtype float32 in the graph but float16 in `graphs.generator.outputs\[0\].dtype`"),
    ]
    for change, match in cases:
        d = edit(copy(), change)
        with pytest.raises(BundleError, match=r"b.gsb/generator.onnx: " + match):
            load_bundle(d)
        shutil.rmtree(d)


@pytest.mark.parametrize(
    "z_shape, out_shape, extra, match",
    [
        (["batch", D], ["batch", SEG], True, r"the graph has 2 outputs \(audio, z_copy\), the manifest's `graphs.generator.outputs` lists 1 \(audio\)"),
        ([1, D], ["batch", SEG], False, r"axis 0 of input 'z' is fixed at 1 in the graph but `graphs.generator.inputs\[0\].shape\[0\]` is \"batch\""),
        (["batch", D], ["batch", SEG // 2], False, rf"axis 1 of output 'audio' is {SEG // 2} in the graph but {SEG} in `graphs.generator.outputs\[0\].shape\[1\]`"),
        (["batch", 1, D], ["batch", 1, SEG], False, r"input 'z' has rank 3 in the graph but 2 in `graphs.generator.inputs\[0\].shape`"),
    ],
    ids=["count", "fixed-batch", "fixed-length", "rank"],
)
def test_graph_signature_against_onnx(copy, z_shape, out_shape, extra, match):
    d = copy()
    matmul_graph(d, z_shape, out_shape, out_len=out_shape[-1], extra_output=extra)
    with pytest.raises(BundleError, match=r"b.gsb/generator.onnx: " + match):
        load_bundle(d)


def test_graph_latent_size_differs_from_manifest(copy, tmp_path):
    d = copy()
    onnx.save(generator_model(SEG, SR, D + 1), d / "generator.onnx")
    rehash(d)
    with pytest.raises(BundleError, match=rf"generator.onnx: axis 1 of input 'z' is {D + 1} in the graph but {D} in"):
        load_bundle(d)


@pytest.mark.parametrize(
    "array, match",
    [
        (b"garbage", r"cannot be read as a .npy array: "),
        (np.zeros((5, D + 1), np.float32), rf"must have shape \(n, {D}\) \(n directions of the latent\), got \(5, {D + 1}\)"),
        (np.zeros(5 * D, np.float32), rf"must have shape \(n, {D}\)"),
        (np.zeros((5, D), np.float64), r"must hold little-endian float32, got float64"),
        (np.full((5, D), np.nan, np.float32), r"holds NaN or infinite values"),
        (np.asfortranarray(np.ones((5, D), np.float32)), r"must be stored in C order"),
    ],
    ids=["garbage", "wrong-width", "1d", "float64", "nan", "fortran"],
)
def test_bad_controls_file(copy, array, match):
    d = copy()
    if isinstance(array, bytes):
        (d / "controls.npy").write_bytes(array)
    else:
        np.save(d / "controls.npy", array)
    rehash(d)
    with pytest.raises(BundleError, match=r"b.gsb/controls.npy: " + match):
        load_bundle(d)


def test_controls_file_not_listed(copy):
    d = edit(copy(), lambda m: m["files"].pop("controls.npy"))
    with pytest.raises(BundleError, match=r"manifest.json: `controls.file` names 'controls.npy', which is not listed in `files`"):
        load_bundle(d)


def test_bad_zips(base, tmp_path):
    cache = tmp_path / "cache"
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK but not really a zip" * 10)
    with pytest.raises(BundleError, match=r"junk.zip: is a file but not a zip archive"):
        load_bundle(junk, cache_dir=cache)

    good = zip_bundle(base, tmp_path / "good.zip").read_bytes()
    at = good.index(b"generator.onnx") + 200  # inside the deflated generator.onnx
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(good[:at] + bytes(b ^ 0x55 for b in good[at : at + 64]) + good[at + 64 :])
    with pytest.raises(BundleError, match=r"damaged.zip: is a damaged zip archive: "):
        load_bundle(damaged, cache_dir=cache)
    assert list((cache / "bundles").iterdir()) == []  # nothing half-extracted is left behind

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(BundleError, match=r"manifest.json in .*empty.zip: missing: the zip holds no manifest.json"):
        load_bundle(empty, cache_dir=cache)

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../manifest.json", "{}")
    with pytest.raises(BundleError, match=r"evil.zip: member '../manifest.json' points outside the archive"):
        load_bundle(evil, cache_dir=cache)


def test_errors_inside_a_zip_name_the_member(copy, tmp_path):
    d = edit(copy(), setf("model.sample_rate", -1))
    z = zip_bundle(d, tmp_path / "bad.zip")
    with pytest.raises(BundleError, match=r"^manifest.json in .*bad.zip: `model.sample_rate` must be >= 1"):
        load_bundle(z, cache_dir=tmp_path / "cache")


def test_every_manifest_field_in_the_doc_example_is_read(base):
    """The doc's example manifest must itself be a valid shape for the loader (same keys as the factory's)."""
    doc = (Path(__file__).parents[1] / "docs" / "bundle.md").read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1).replace("…", ""))
    ours = read_manifest(base)

    def keys(m, prefix=""):
        out = set()
        for k, v in m.items():
            if prefix == "files." or prefix.startswith("controls.items"):
                continue
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
        return out

    assert keys(example) == keys(ours)
