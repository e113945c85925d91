"""The manifest schema (ganstream.core.manifest) on its own: manifests of every kind round-trip,
the shipped default bundle reads and writes back to the byte, and each rule the manifest alone
can break is one BundleError naming the file and the field. tests/test_bundle.py covers the
same rules through load_bundle, with the files."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace

import onnxruntime as ort
import pytest
from bundle_factory import make_bundle, read_manifest

from ganstream.core.manifest import (
    FIRST_VERSION,
    MANIFEST,
    MODE_FIRST_VERSION,
    ORT_DTYPES,
    STREAMING_MODES,
    VERSIONS,
    BundleError,
    ControlItem,
    Controls,
    FileEntry,
    Graph,
    Latent,
    Manifest,
    Model,
    NormFiles,
    Spectral,
    StreamingSettings,
    TensorSpec,
    lowest_version,
    sha256_file,
)
from ganstream.core.spectral import SpectralParams
from ganstream.realtime.bundle import load_bundle, resolve_bundle

DIGEST = "0123456789abcdef" * 4
PARAMS = SpectralParams()  # 16 kHz, n_fft 256, hop 128: 128 bins
FRAMES = 32
SEGMENT = PARAMS.samples(FRAMES)
DEFAULT_BUNDLE = resolve_bundle(None)  # the shipped default bundle, realtime/bundles/piano/


def graph(file: str, inputs: tuple, outputs: tuple) -> Graph:
    return Graph(file, tuple(TensorSpec(n, s) for n, s in inputs), tuple(TensorSpec(n, s) for n, s in outputs), "fp32", 17, 3e-7)


def spectral_manifest(fused: bool = True) -> Manifest:
    """A format-2 spectral manifest built in code, every section filled."""
    spectrogram = ("spectrogram", ("batch", PARAMS.bins, FRAMES))
    graphs = {
        "generator": graph("generator.onnx", (("z", ("batch", 8)),), (spectrogram,)),
        "reconstruction": graph("vocoder.onnx", (spectrogram,), (("audio", ("batch", SEGMENT)),)),
    }
    if fused:
        graphs["fused"] = graph("fused.onnx", (("z", ("batch", 8)),), (("audio", ("batch", SEGMENT)),))
    items = (
        ControlItem("pc1", "principal", 0, 1.2, explained_variance=0.2),
        ControlItem("brightness", "descriptor", 1, 0.9, descriptor="spectral_centroid", r2=-0.05),
    )
    files = ["controls.npy", "norm_mean.npy", "norm_std.npy", *(g.file for g in graphs.values())]
    return Manifest(
        format_version=FIRST_VERSION["spectral"],
        name="spectral",
        model=Model("spectral", "specgan", PARAMS.sample_rate, SEGMENT, Latent(8, "normal")),
        graphs=graphs,
        spectral=Spectral(PARAMS, PARAMS.bins, FRAMES, NormFiles("norm_mean.npy", "norm_std.npy", 3.0)),
        controls=Controls("controls.npy", items),
        streaming=StreamingSettings("texture", 0, 4, 0.05, 0.2, 0.6),
        files={name: FileEntry(DIGEST, 10) for name in sorted(files)},
        provenance={"run_name": "spectral", "reconstruction": {"run_name": "vocoder"}},
    )


def waveform_manifest() -> Manifest:
    """A format-1 waveform manifest in crossfade mode: the shipped default bundle's without its pitch condition
    (the piano is pitch-conditioned, format 5)."""
    m = Manifest.read(DEFAULT_BUNDLE / MANIFEST)
    gen = m.graphs["generator"]
    return replace(m, format_version=1, condition=None, graphs={**m.graphs, "generator": replace(gen, inputs=gen.inputs[:1])})


def in_trigger_mode(m: Manifest, version: int) -> dict:
    """m's JSON with `streaming.mode` "trigger", saying `format_version` version."""
    data = m.to_json()
    return {**data, "format_version": version, "streaming": {**data["streaming"], "mode": "trigger"}}


def reconstruction_manifest() -> Manifest:
    m = spectral_manifest(fused=False)
    return replace(
        m,
        model=replace(m.model, kind="reconstruction", latent=None),
        graphs={"reconstruction": m.graphs["reconstruction"]},
        controls=None,
        streaming=None,
        files={k: v for k, v in m.files.items() if k in ("vocoder.onnx", "norm_mean.npy", "norm_std.npy")},
    )


# ---- round trips --------------------------------------------------------------------------------


def test_the_default_bundle_loads_and_writes_back_to_the_byte():
    text = (DEFAULT_BUNDLE / MANIFEST).read_text()
    m = Manifest.read(DEFAULT_BUNDLE / MANIFEST)
    assert (m.format_version, m.kind, m.model.segment, m.model.latent) == (5, "waveform", 16384, Latent(100, "uniform"))
    assert m.condition is not None and (m.condition.kind, m.condition.pitch_range) == ("pitch+velocity", (36, 96))
    assert m.to_json() == json.loads(text)
    assert m.dumps() == text
    assert Manifest.from_json(m.to_json()) == m
    # negative control: the comparison sees a change anywhere, deep ones included
    moved = replace(m, controls=replace(m.controls, items=(replace(m.controls.items[0], scale=1.5), *m.controls.items[1:])))
    assert moved.dumps() != text and moved != m
    b = load_bundle(None)  # verify=True: every sha256 and the graph's signature
    assert b.source == DEFAULT_BUNDLE and b.spec == m and b.control_names[:2] == ("pc1", "pc2")


@pytest.mark.parametrize("make", [spectral_manifest, reconstruction_manifest, lambda: spectral_manifest(fused=False)],
                         ids=["spectral", "reconstruction", "spectral-unfused"])
def test_manifests_of_format_2_round_trip(make):
    m = make()
    data = m.to_json()
    assert Manifest.from_json(data) == m
    assert Manifest.from_json(json.loads(m.dumps())) == m  # through the text too
    assert data["format"] == "ganstream-bundle" and data["format_version"] == 2
    assert list(data) == ["format", "format_version", "name", "model", "graphs", "spectral", "controls", "streaming", "files", "provenance"]


def test_a_factory_bundle_round_trips_and_is_built_by_the_schema(tmp_path):
    d = make_bundle(tmp_path / "b.gsb", segment=1024, latent_size=4, dtype="float16")
    raw = read_manifest(d)
    m = Manifest.from_json(raw)
    assert m.to_json() == raw
    assert m.graphs["generator"].inputs == (TensorSpec("z", ("batch", 4), "float16"),)
    assert m.controls.items[3] == ControlItem("brightness", "descriptor", 3, m.controls.items[3].scale, descriptor="spectral_centroid", r2=0.41)
    assert m.controls.items[3].extra == {"descriptor": "spectral_centroid", "r2": 0.41}
    assert m.files["generator.onnx"] == FileEntry.of(d / "generator.onnx")


def test_undescribed_keys_are_ignored_and_not_written_back():
    data = spectral_manifest().to_json()
    data["comment"] = "hello"
    data["controls"]["items"][0]["colour"] = "red"
    assert Manifest.from_json(data).to_json() == spectral_manifest().to_json()


def test_dataclasses_are_frozen():
    with pytest.raises(FrozenInstanceError):
        spectral_manifest().name = "x"


# ---- versions ----------------------------------------------------------------------------------


def test_versions():
    assert VERSIONS == (1, 2, 3, 4, 5, 6)
    assert FIRST_VERSION == {"waveform": 1, "spectral": 2, "reconstruction": 2}
    assert MODE_FIRST_VERSION == {"crossfade": 1, "texture": 1, "trigger": 3} and STREAMING_MODES == tuple(MODE_FIRST_VERSION)
    # a waveform bundle may say version 2 or 3 (a reader of that version reads it), a spectral one not 1
    data = waveform_manifest().to_json()
    assert Manifest.from_json({**data, "format_version": 2}).format_version == 2
    assert Manifest.from_json({**data, "format_version": 3}).format_version == 3
    assert Manifest.from_json({**spectral_manifest().to_json(), "format_version": 3}).format_version == 3
    with pytest.raises(BundleError, match=r'`model.kind` is "spectral", which format version 1 does not have \(it came with version 2\)'):
        Manifest.from_json({**spectral_manifest().to_json(), "format_version": 1})


WRITTEN = [
    ("waveform", "crossfade", 1), ("waveform", "texture", 1), ("spectral", "crossfade", 2), ("spectral", "texture", 2),
    ("reconstruction", None, 2), ("waveform", "trigger", 3), ("spectral", "trigger", 3),
]


@pytest.mark.parametrize("kind, mode, version", WRITTEN, ids=[f"{k}-{m}" for k, m, _ in WRITTEN])
def test_a_writer_writes_the_lowest_version_that_describes_the_bundle(kind, mode, version):
    assert lowest_version(kind, mode) == version


@pytest.mark.parametrize("make", [waveform_manifest, spectral_manifest], ids=["waveform", "spectral"])
def test_trigger_manifests_are_version_3_and_round_trip(make):
    m = make()
    t = replace(m, format_version=lowest_version(m.kind, "trigger"), streaming=replace(m.streaming, mode="trigger"))
    assert t.format_version == 3 and t.to_json() == in_trigger_mode(m, 3)
    assert Manifest.from_json(t.to_json()) == t
    assert Manifest.from_json(json.loads(t.dumps())) == t


@pytest.mark.parametrize("make, version", [(waveform_manifest, 1), (waveform_manifest, 2), (spectral_manifest, 2)],
                         ids=["waveform-1", "waveform-2", "spectral-2"])
def test_trigger_in_a_version_1_or_2_manifest_is_refused_naming_streaming_mode(make, version):
    data = in_trigger_mode(make(), version)
    problem = rf'`streaming.mode` is "trigger", which format version {version} does not have: trigger needs format version 3'
    with pytest.raises(BundleError, match=rf"^x/manifest.json: {problem}$") as info:
        Manifest.from_json(data, "x/manifest.json")
    assert info.value.field == "streaming.mode" and info.value.file == "x/manifest.json"
    # negative control: the same manifest saying version 3 reads
    assert Manifest.from_json({**data, "format_version": 3}).streaming.mode == "trigger"


def test_the_loader_refuses_a_trigger_bundle_that_says_version_1(tmp_path):
    d = make_bundle(tmp_path / "b.gsb", segment=1024, latent_size=4, streaming={"mode": "trigger"})  # the factory writes version 1
    with pytest.raises(BundleError, match=r"manifest.json: `streaming.mode` is \"trigger\", .*: trigger needs format version 3$") as info:
        load_bundle(d)
    assert info.value.file == str(d / MANIFEST) and info.value.field == "streaming.mode"
    (d / MANIFEST).write_text(json.dumps({**read_manifest(d), "format_version": 3}))  # not in `files`: no rehash
    assert load_bundle(d).streaming.mode == "trigger"


@pytest.mark.parametrize("mode", ["crossfade", "trigger"])
def test_a_newer_version_asks_for_an_upgrade(mode):
    data = waveform_manifest().to_json()
    data = {**data, "format_version": 7, "streaming": {**data["streaming"], "mode": mode}}  # the version is read first
    with pytest.raises(BundleError, match=r"`format_version` is 7, but ganstream \S+ reads format version 1, 2, 3, 4, 5, 6 only: upgrade ganstream to play this bundle$") as info:
        Manifest.from_json(data)
    assert info.value.field == "format_version"


# ---- strict reading: the file and the field ----------------------------------------------------


def broken(change) -> dict:
    data = copy.deepcopy(spectral_manifest().to_json())
    change(data)
    return data


BROKEN = [
    (lambda m: m["model"].pop("latent"), "model.latent", r"missing required field `model.latent`"),
    (lambda m: m["spectral"].update(bins=129), "spectral.bins", r"`spectral.bins` is 129 but `spectral.params` make 128 bins"),
    (lambda m: m["spectral"]["norm"].update(clip=0), "spectral.norm.clip", r"`spectral.norm.clip` must be > 0, got 0"),
    (lambda m: m["spectral"]["norm"].update(std="../std.npy"), "spectral.norm.std", r"must be a relative path inside the bundle"),
    (lambda m: m["spectral"]["params"].update(hop=0), "spectral.params", r"`spectral.params` are not valid spectral parameters: spectral.params.hop"),
    (lambda m: m["graphs"]["fused"]["outputs"][0].update(shape=["batch", 10]), "graphs.fused.outputs[0].shape",
     r"is \[\"batch\", 10\] but `model.segment` is 4096"),
    (lambda m: m["graphs"]["reconstruction"]["inputs"].append(m["graphs"]["reconstruction"]["inputs"][0]), "graphs.reconstruction.inputs",
     r"must list exactly one input \(the spectrogram"),
    (lambda m: m["graphs"]["generator"]["outputs"][0].update(dtype="int8"), "graphs.generator.outputs[0].dtype", r'must be one of "float32", "float16"'),
    (lambda m: m["files"].pop("fused.onnx"), "graphs.fused.file", r"names 'fused.onnx', which is not listed in `files`"),
    (lambda m: m["files"].pop("controls.npy"), "controls.file", r"names 'controls.npy', which is not listed in `files`"),
    (lambda m: m["files"]["norm_std.npy"].update(bytes=-1), "files.norm_std.npy.bytes", r"must be >= 0, got -1"),
    (lambda m: m["controls"]["items"][1].pop("r2"), "controls.items[1].r2", r"missing required field `controls.items\[1\].r2`"),
    (lambda m: m["controls"]["items"][0].update(explained_variance=float("inf")), "controls.items[0].explained_variance",
     r"must be a finite number, got Infinity"),
    (lambda m: m["streaming"].update(texture_overlap=3), "streaming.texture_overlap", r"is 3, which does not divide the segment \(4096 samples\)"),
    (lambda m: m.update(provenance=None), "provenance", r"`provenance` must be an object, got null"),
]


@pytest.mark.parametrize("change, field, match", BROKEN, ids=[b[1] for b in BROKEN])
def test_each_broken_field_is_named(change, field, match):
    with pytest.raises(BundleError, match=r"^x/manifest.json: .*" + match) as info:
        Manifest.from_json(broken(change), "x/manifest.json")
    assert info.value.field == field and info.value.file == "x/manifest.json"


def test_reconstruction_manifests_have_no_controls_or_streaming():
    data = reconstruction_manifest().to_json()
    with pytest.raises(BundleError, match=r"`streaming` must be null in a reconstruction bundle"):
        Manifest.from_json({**data, "streaming": spectral_manifest().streaming.to_json()})
    assert Manifest.from_json({**data, "model": {**data["model"], "latent": {"size": 3}}}).model.latent is None  # not read


def test_a_caller_refuses_the_kinds_it_cannot_use_and_says_why():
    recon, wave = reconstruction_manifest().to_json(), Manifest.read(DEFAULT_BUNDLE / MANIFEST).to_json()
    with pytest.raises(BundleError, match=r'`model.kind` is "reconstruction": .* nothing to play') as info:
        Manifest.from_json(recon, kinds=("waveform", "spectral"))
    assert info.value.field == "model.kind"
    with pytest.raises(BundleError, match=r'`model.kind` is "waveform": the bundle has no reconstruction network'):
        Manifest.from_json(wave, kinds=("spectral", "reconstruction"))
    assert Manifest.from_json(recon, kinds=("spectral", "reconstruction")).kind == "reconstruction"


@pytest.mark.parametrize(
    "text, match",
    [('{"a": 1, "a": 2}', r"is not valid JSON: duplicate key 'a'"), ('{"a": Infinity}', r"is not valid JSON: Infinity is not valid JSON"),
     ("[]", r"must hold a JSON object, got list")],
    ids=["duplicate", "infinity", "list"],
)
def test_read_refuses_what_json_loads_lets_by(tmp_path, text, match):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=rf"^{re.escape(str(tmp_path / MANIFEST))}: {match}"):
        Manifest.read(tmp_path / MANIFEST)


# ---- the one sha256 and dtype map --------------------------------------------------------------


def test_sha256_in_blocks_equals_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # 2.3 MB: more than two 1 MiB blocks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert FileEntry.of(tmp_path / "f") == FileEntry(hashlib.sha256(data).hexdigest(), len(data))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ort_type_names_map_to_manifest_dtypes(tmp_path, dtype):
    d = make_bundle(tmp_path / "b", segment=256, latent_size=4, dtype=dtype)
    session = ort.InferenceSession(str(d / "generator.onnx"), providers=["CPUExecutionProvider"])
    assert [ORT_DTYPES[t.type] for t in (*session.get_inputs(), *session.get_outputs())] == [dtype, dtype]
    assert TensorSpec("z", ("batch", 4), dtype).np_dtype.name == dtype


def test_the_schema_needs_neither_torch_nor_onnxruntime(tmp_path):
    code = (
        "import sys\n"
        "for m in ('torch', 'onnxruntime', 'onnx'): sys.modules[m] = None\n"
        "import ganstream.core.manifest as m\n"
        "print(m.Manifest.read(m.Path(sys.argv[1])).name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(DEFAULT_BUNDLE / MANIFEST)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "piano"
