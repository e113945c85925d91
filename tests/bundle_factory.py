"""Valid ganstream bundles for tests, made without torch (docs/bundle.md, format version 1), their
manifests built with the schema's own dataclasses (ganstream.core.manifest).

    from bundle_factory import make_bundle, reference_audio
    bundle_dir = make_bundle(tmp_path / "b.gsb", segment=4096, latent_size=8)
    audio = reference_audio(z, segment=4096, sample_rate=16000)   # what the graph computes

The generator is a smooth, periodic synthesiser: audio = tanh(z @ W) @ S, where W is a
fixed seeded (D, 2H) matrix and S holds H harmonics of about 110 Hz as sine and cosine
rows, each a whole number of cycles per segment and weighted 1/h. So the output depends
smoothly on z (amplitude and phase of each harmonic), every segment loops without a
click, and |audio| <= 0.9 always. Streaming and render tests can rely on a click only
ever coming from how segments are joined.

`encoder=True` adds the manifest's optional `encoder` (encoder.onnx, `encoder_model`): the exact
inverse of that generator. S's rows are orthogonal (sines and cosines of distinct whole numbers
of cycles, all below segment / 2), so the coefficients are c = audio @ S.T / diag(S S.T), and
z = atanh(c) @ pinv(W) recovers z exactly because W (D, 2H) has rank D: that needs D <= 2H = 16
(the default D = 8 is). A larger D gives the least-squares latent, not the one that made the audio.
`encoder_bias` is added to every latent it outputs: an imperfect encoder that refinement must beat.

The signature of make_bundle is stable: other test files call it; add keyword arguments
at the end, never reorder or rename.
"""

from __future__ import annotations

import json
from dataclasses import replace
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ganstream.core.manifest import (
    CONDITION_INPUT,
    ENCODER_PROPOSALS,
    PROPOSALS_VERSION,
    Condition,
    ControlItem,
    Controls,
    FileEntry,
    Graph,
    Latent,
    Manifest,
    Model,
    StreamingSettings,
    TensorSpec,
    lowest_version,
)

HARMONICS = 8
BASE_HZ = 110.0
PEAK = 0.9
OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime >= 1.10
ENCODER_FILE = "encoder.onnx"
CLIP = 0.999999  # the encoders clip a tanh's value here before atanh, so any audio gives a finite latent
CONTROL_ITEMS = (
    {"name": "pc1", "kind": "principal", "explained_variance": 0.31},
    {"name": "pc2", "kind": "principal", "explained_variance": 0.17},
    {"name": "pc3", "kind": "principal", "explained_variance": 0.08},
    {"name": "brightness", "kind": "descriptor", "descriptor": "spectral_centroid", "r2": 0.41},
    {"name": "loudness", "kind": "descriptor", "descriptor": "loudness", "r2": 0.52},
)


def make_bundle(
    directory: Path,
    *,
    segment: int = 4096,
    sample_rate: int = 16000,
    latent_size: int = 8,
    distribution: str = "uniform",
    controls: bool = True,
    dtype: str = "float32",
    name: str = "test",
    streaming: Mapping[str, Any] | None = None,
    encoder: bool = False,
    encoder_bias: float = 0.0,
    proposals: Sequence[float] = (),
) -> Path:
    """Write a valid bundle into `directory` (created) and return it.

    dtype "float16" makes an fp16 bundle: float16 weights, input and output.
    controls=True writes controls.npy with pc1, pc2, pc3, brightness and loudness;
    False writes `"controls": null`. streaming: fields to override in the manifest's
    `streaming` section (e.g. {"mode": "texture"}). encoder=True writes encoder.onnx (float32, whatever
    `dtype`), the generator's inverse plus `encoder_bias` (module docstring), and declares it. proposals:
    with encoder=True, offsets of the latents it also proposes (the exact latent plus each, on every
    component; the first is the `latent` output's), format version PROPOSALS_VERSION.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(generator_model(segment, sample_rate, latent_size, dtype), directory / "generator.onnx")
    if encoder:
        onnx.save(encoder_model(segment, sample_rate, latent_size, encoder_bias, proposals), directory / ENCODER_FILE)

    controls_entry = None
    if controls:
        rows = control_directions(latent_size)
        np.save(directory / "controls.npy", rows)
        # A knob at +-1 moves two standard deviations of random latents along a unit direction.
        scale = round(float(2.0 * (1.0 if distribution == "normal" else 1.0 / np.sqrt(3.0))), 6)
        items = tuple(ControlItem(**item, row=i, scale=scale) for i, item in enumerate(CONTROL_ITEMS))
        controls_entry = Controls("controls.npy", items)

    settings = StreamingSettings(
        mode="crossfade",
        crossfade=segment // 4,
        texture_overlap=4 if segment % 4 == 0 else 1,
        latent_smoothing_s=0.05,
        walk_rate=0.2,
        walk_depth=0.35,
    )
    manifest = Manifest(
        format_version=PROPOSALS_VERSION if encoder and proposals else 1,
        name=name,
        model=Model("waveform", "test-harmonic", sample_rate, segment, Latent(latent_size, distribution)),
        graphs={
            "generator": Graph(
                file="generator.onnx",
                inputs=(TensorSpec("z", ("batch", latent_size), dtype),),
                outputs=(TensorSpec("audio", ("batch", segment), dtype),),
                precision="fp16" if dtype == "float16" else "fp32",
                opset=OPSET,
                parity_max_abs_error=0.0,
            )
        },
        spectral=None,
        controls=controls_entry,
        streaming=replace(settings, **(streaming or {})),
        files={},
        encoder=encoder_graph(segment, latent_size, proposals=len(proposals)) if encoder else None,
        provenance={
            "run_name": name,
            "config_hash": "00000000",
            "step": 0,
            "checkpoint": "latest",
            "weights": "ema",
            "ganstream_version": "0.1.0",
            "created": "2026-01-01T00:00:00Z",
            "command": "tests/bundle_factory.py make_bundle",
        },
    )
    (directory / "manifest.json").write_text(manifest.dumps())
    return rehash(directory)


def weights(latent_size: int, segment: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (D, 2H), S (2H, segment)) float32, the same for the same arguments."""
    rng = np.random.default_rng(1234 + latent_size)
    w = (rng.standard_normal((latent_size, 2 * HARMONICS)) * 2.0 / np.sqrt(latent_size)).astype(np.float32)
    t = np.arange(segment) / sample_rate
    norm = PEAK / (np.sqrt(2.0) * sum(1.0 / h for h in range(1, HARMONICS + 1)))
    basis = np.empty((2 * HARMONICS, segment))
    for h in range(1, HARMONICS + 1):
        # A whole number of cycles per segment, so every segment loops seamlessly.
        cycles = min(max(1, round(BASE_HZ * h * segment / sample_rate)), segment // 2)
        phase = 2.0 * np.pi * cycles * sample_rate / segment * t
        basis[2 * h - 2] = np.sin(phase) * norm / h
        basis[2 * h - 1] = np.cos(phase) * norm / h
    return w, basis.astype(np.float32)


def reference_audio(z: np.ndarray, *, segment: int = 4096, sample_rate: int = 16000, dtype: str = "float32") -> np.ndarray:
    """The bundle graph in numpy: (B, D) latents -> (B, segment) float32 (float16 rounding when dtype is float16)."""
    w, basis = weights(z.shape[1], segment, sample_rate)
    if dtype == "float16":
        z, w, basis = (np.asarray(a, np.float16).astype(np.float32) for a in (z, w, basis))
        return (np.tanh(z @ w) @ basis).astype(np.float16).astype(np.float32)
    return (np.tanh(np.asarray(z, np.float32) @ w) @ basis).astype(np.float32)


def generator_model(segment: int, sample_rate: int, latent_size: int, dtype: str = "float32") -> onnx.ModelProto:
    """The ONNX graph: z (batch, D) -> audio (batch, segment), in float32 or float16 I/O and weights."""
    w, basis = weights(latent_size, segment, sample_rate)
    half = dtype == "float16"
    elem = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    store = np.float16 if half else np.float32
    inits = [numpy_helper.from_array(w.astype(store), "W"), numpy_helper.from_array(basis.astype(store), "S")]
    if half:  # fp16 weights and I/O, computed in float32 (portable: the CPU provider lacks some fp16 kernels)
        nodes = [
            helper.make_node("Cast", ["z"], ["z32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["W"], ["W32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["S"], ["S32"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["z32", "W32"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["coef"]),
            helper.make_node("MatMul", ["coef", "S32"], ["audio32"]),
            helper.make_node("Cast", ["audio32"], ["audio"], to=TensorProto.FLOAT16),
        ]
    else:
        nodes = [
            helper.make_node("MatMul", ["z", "W"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["coef"]),
            helper.make_node("MatMul", ["coef", "S"], ["audio"]),
        ]
    graph = helper.make_graph(
        nodes,
        "harmonic_generator",
        [helper.make_tensor_value_info("z", elem, ["batch", latent_size])],
        [helper.make_tensor_value_info("audio", elem, ["batch", segment])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ganstream-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _onnx_model(nodes: list, name: str, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ganstream-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def encoder_graph(segment: int, latent_size: int, condition_columns: int = 0, proposals: int = 0) -> Graph:
    """The manifest's `encoder` entry: audio (batch, segment) -> latent (batch, D) [, condition (batch, C)]
    [, proposals (batch, M, D)]."""
    outputs = (TensorSpec("latent", ("batch", latent_size)),)
    if condition_columns:
        outputs += (TensorSpec(CONDITION_INPUT, ("batch", condition_columns)),)
    if proposals:
        outputs += (TensorSpec(ENCODER_PROPOSALS, ("batch", proposals, latent_size)),)
    return Graph(ENCODER_FILE, (TensorSpec("audio", ("batch", segment)),), outputs, "fp32", OPSET, 0.0)


def encoder_model(segment: int, sample_rate: int, latent_size: int, bias: float = 0.0, proposals: Sequence[float] = ()) -> onnx.ModelProto:
    """The inverse of `generator_model` (float32): audio (batch, segment) -> latent (batch, D), plus `bias`.
    MatMul by S.T, Mul by 1 / diag(S S.T) (the coefficients), Clip, Atanh, MatMul by pinv(W), Add bias.
    With `proposals` (M offsets), the latent is the exact one plus the first, and a second output gives the
    exact latent plus each, (batch, M, D)."""
    if proposals:
        bias = float(proposals[0])
    w, basis = weights(latent_size, segment, sample_rate)
    s64 = basis.astype(np.float64)
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(basis.T), "St"),  # (segment, 2H)
        numpy_helper.from_array((1.0 / np.sum(s64 * s64, axis=1)).astype(np.float32)[None, :], "inv_energy"),
        numpy_helper.from_array(np.array(-CLIP, np.float32), "lo"),
        numpy_helper.from_array(np.array(CLIP, np.float32), "hi"),
        numpy_helper.from_array(np.linalg.pinv(w.astype(np.float64)).astype(np.float32), "Wpinv"),  # (2H, D)
        numpy_helper.from_array(np.full((1, latent_size), bias, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("MatMul", ["audio", "St"], ["dot"]),
        helper.make_node("Mul", ["dot", "inv_energy"], ["coef"]),
        helper.make_node("Clip", ["coef", "lo", "hi"], ["clipped"]),
        helper.make_node("Atanh", ["clipped"], ["pre"]),
        helper.make_node("MatMul", ["pre", "Wpinv"], ["z"]),
        helper.make_node("Add", ["z", "bias"], ["latent"]),
    ]
    outputs = [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", latent_size])]
    if proposals:
        inits += [numpy_helper.from_array(np.array([1], np.int64), "axis"),
                  numpy_helper.from_array(np.asarray(proposals, np.float32)[None, :, None], "offsets")]  # (1, M, 1)
        nodes += [helper.make_node("Unsqueeze", ["z", "axis"], ["z3"]), helper.make_node("Add", ["z3", "offsets"], [ENCODER_PROPOSALS])]
        outputs.append(helper.make_tensor_value_info(ENCODER_PROPOSALS, TensorProto.FLOAT, ["batch", len(proposals), latent_size]))
    return _onnx_model(
        nodes, "harmonic_encoder",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", segment])],
        outputs,
        inits,
    )


def control_directions(latent_size: int) -> np.ndarray:
    """(len(CONTROL_ITEMS), D) float32 unit rows, seeded."""
    rng = np.random.default_rng(99)
    rows = rng.standard_normal((len(CONTROL_ITEMS), latent_size))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def read_manifest(directory: Path) -> dict:
    return json.loads((Path(directory) / "manifest.json").read_text())


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    (Path(directory) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def rehash(directory: Path) -> Path:
    """Rewrite the manifest's `files` from what is on disk (after a test changed a file on purpose)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    manifest["files"] = {
        p.relative_to(directory).as_posix(): FileEntry.of(p).to_json()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    write_manifest(directory, manifest)
    return directory


def zip_bundle(directory: Path, zip_path: Path, *, folder: bool = False) -> Path:
    """Zip a bundle directory: files at the top of the archive, or (folder=True) inside one folder."""
    directory = Path(directory)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(directory.rglob("*")):
            if p.is_file():
                rel = p.relative_to(directory).as_posix()
                zf.write(p, f"{directory.name}/{rel}" if folder else rel)
    return Path(zip_path)


# -- a pitch-conditioned bundle (format version 5) ------------------------------------------------------------


def conditioned_audio(rows: np.ndarray, *, latent_size: int = 8, segment: int = 4096, sample_rate: int = 16000) -> np.ndarray:
    """What make_conditioned_bundle's graph computes, in numpy: (B, D + C) rows (the latent, then the
    condition: pitch [, velocity]) -> (B, segment) float32. A sine at the pitch's frequency,
    440 * 2 ** ((pitch - 69) / 12), phase 0 at sample 0, amplitude 0.4 + 0.1 * tanh(z0) (0.3 to 0.5);
    the velocity column is ignored (a voice's velocity gain is the stream's)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    hz = 440.0 * 2.0 ** ((rows[:, latent_size] - 69.0) / 12.0)
    amp = 0.4 + 0.1 * np.tanh(rows[:, 0])
    return (amp[:, None] * np.sin(2.0 * np.pi * hz[:, None] / sample_rate * np.arange(segment)[None, :])).astype(np.float32)


def conditioned_generator_model(segment: int, sample_rate: int, latent_size: int, columns: int) -> onnx.ModelProto:
    """The ONNX graph: z (batch, D) and condition (batch, C) -> audio (batch, segment), float32 (conditioned_audio)."""

    def f32(name: str, value) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    def i64(name: str, value) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)

    inits = [
        i64("zero", [0]), i64("one", [1]), i64("axis1", [1]),
        f32("a69", 69.0), f32("ln2_12", np.log(2.0) / 12.0), f32("rad_per_sample", 2.0 * np.pi * 440.0 / sample_rate),
        f32("n", np.arange(segment, dtype=np.float32)[None, :]), f32("a04", 0.4), f32("a01", 0.1),
    ]
    nodes = [
        helper.make_node("Slice", ["condition", "zero", "one", "axis1"], ["pitch"]),  # (B, 1)
        helper.make_node("Sub", ["pitch", "a69"], ["semis"]),
        helper.make_node("Mul", ["semis", "ln2_12"], ["log_ratio"]),
        helper.make_node("Exp", ["log_ratio"], ["ratio"]),  # hz / 440
        helper.make_node("Mul", ["ratio", "rad_per_sample"], ["w"]),  # radians per sample, (B, 1)
        helper.make_node("Mul", ["w", "n"], ["phase"]),  # (B, segment)
        helper.make_node("Sin", ["phase"], ["wave"]),
        helper.make_node("Slice", ["z", "zero", "one", "axis1"], ["z0"]),
        helper.make_node("Tanh", ["z0"], ["tz"]),
        helper.make_node("Mul", ["tz", "a01"], ["tz01"]),
        helper.make_node("Add", ["tz01", "a04"], ["amp"]),  # (B, 1)
        helper.make_node("Mul", ["wave", "amp"], ["audio"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conditioned_sine",
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_size]),
            helper.make_tensor_value_info(CONDITION_INPUT, TensorProto.FLOAT, ["batch", columns]),
        ],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", segment])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ganstream-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def make_conditioned_bundle(
    directory: Path,
    *,
    segment: int = 4096,
    latent_size: int = 8,
    sample_rate: int = 16000,
    pitch_range: tuple[int, int] = (48, 72),
    kind: str = "pitch+velocity",
    mode: str = "crossfade",
    encoder: bool = False,
    encoder_bias: float = 0.0,
) -> Path:
    """Write a valid pitch-conditioned bundle (format version 5, docs/bundle.md "Pitch-conditioned bundles")
    into `directory` (created) and return it. Its generator takes z (batch, D) and condition (batch, C), C = 1
    for kind "pitch" and 2 for "pitch+velocity", and makes a sine at the pitch (conditioned_audio): what a
    voice sounds at can be measured exactly. `condition.histogram` counts every note of `pitch_range` once;
    no controls; `streaming.mode` is `mode`, with make_bundle's other streaming settings. encoder=True
    writes and declares encoder.onnx (`conditioned_encoder_model`, its latent plus `encoder_bias`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    condition = Condition(
        kind,
        (int(pitch_range[0]), int(pitch_range[1])),
        {str(p): 1 for p in range(int(pitch_range[0]), int(pitch_range[1]) + 1)},
        f"test sines, pitch {pitch_range[0]}-{pitch_range[1]}",
    )
    onnx.save(conditioned_generator_model(segment, sample_rate, latent_size, condition.columns), directory / "generator.onnx")
    if encoder:
        model = conditioned_encoder_model(segment, sample_rate, latent_size, condition.columns, condition.pitch_range, encoder_bias)
        onnx.save(model, directory / ENCODER_FILE)
    manifest = Manifest(
        format_version=lowest_version("waveform", mode, conditioned=True),
        name="test-conditioned",
        model=Model("waveform", "test-sine", sample_rate, segment, Latent(latent_size, "uniform")),
        graphs={
            "generator": Graph(
                file="generator.onnx",
                inputs=(TensorSpec("z", ("batch", latent_size)), TensorSpec(CONDITION_INPUT, ("batch", condition.columns))),
                outputs=(TensorSpec("audio", ("batch", segment)),),
                precision="fp32",
                opset=OPSET,
                parity_max_abs_error=0.0,
            )
        },
        spectral=None,
        controls=None,
        streaming=StreamingSettings(
            mode=mode,
            crossfade=segment // 4,
            texture_overlap=4 if segment % 4 == 0 else 1,
            latent_smoothing_s=0.05,
            walk_rate=0.2,
            walk_depth=0.35,
        ),
        files={},
        provenance={
            "run_name": "test-conditioned",
            "config_hash": "00000000",
            "step": 0,
            "checkpoint": "latest",
            "weights": "ema",
            "ganstream_version": "0.1.0",
            "created": "2026-01-01T00:00:00Z",
            "command": "tests/bundle_factory.py make_conditioned_bundle",
        },
        condition=condition,
        encoder=encoder_graph(segment, latent_size, condition.columns) if encoder else None,
    )
    (directory / "manifest.json").write_text(manifest.dumps())
    return rehash(directory)


def conditioned_encoder_model(
    segment: int, sample_rate: int, latent_size: int, columns: int, pitch_range: tuple[int, int], bias: float = 0.0
) -> onnx.ModelProto:
    """The inverse of `conditioned_generator_model` for whole notes of `pitch_range`: audio (batch, segment) ->
    latent (batch, D), condition (batch, C). Each note's sine (phase 0) normalised by its energy gives, by
    MatMul, the amplitude of that note in the audio; the pitch is the ArgMax (plus the range's low note), the
    amplitude its value, z0 = atanh((amplitude - 0.4) / 0.1) and the other latent columns 0 (the generator
    ignores them), all plus `bias`; velocity is 1 (the generator ignores it too)."""
    low, high = int(pitch_range[0]), int(pitch_range[1])
    n = np.arange(segment)
    hz = 440.0 * 2.0 ** ((np.arange(low, high + 1) - 69.0) / 12.0)
    sines = np.sin(2.0 * np.pi * hz[None, :] / sample_rate * n[:, None])  # (segment, notes)
    bank = (sines / np.sum(sines * sines, axis=0, keepdims=True)).astype(np.float32)
    first = np.zeros((1, latent_size), np.float32)
    first[0, 0] = 1.0
    f32 = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)  # noqa: E731
    inits = [
        f32("bank", bank), f32("a04", 0.4), f32("inv01", 10.0), f32("lo", -CLIP), f32("hi", CLIP), f32("first", first),
        f32("bias", np.full((1, latent_size), bias)), f32("low", float(low)),
        f32("pitch_col", [[1.0, 0.0][:columns]]), f32("velocity_col", [[0.0, 1.0][:columns]]),
    ]
    nodes = [
        helper.make_node("MatMul", ["audio", "bank"], ["amps"]),  # (B, notes)
        helper.make_node("ArgMax", ["amps"], ["index"], axis=1, keepdims=1),  # (B, 1) int64
        helper.make_node("Cast", ["index"], ["index_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["index_f", "low"], ["pitch"]),
        helper.make_node("ReduceMax", ["amps"], ["amp"], axes=[1], keepdims=1),  # (B, 1)
        helper.make_node("Sub", ["amp", "a04"], ["amp_off"]),
        helper.make_node("Mul", ["amp_off", "inv01"], ["t"]),
        helper.make_node("Clip", ["t", "lo", "hi"], ["t_clipped"]),
        helper.make_node("Atanh", ["t_clipped"], ["z0"]),
        helper.make_node("Mul", ["z0", "first"], ["z"]),  # (B, D): z0, then zeros
        helper.make_node("Add", ["z", "bias"], ["latent"]),
        helper.make_node("Mul", ["pitch", "pitch_col"], ["pitch_cols"]),  # (B, C)
        helper.make_node("Add", ["pitch_cols", "velocity_col"], [CONDITION_INPUT]),
    ]
    return _onnx_model(
        nodes, "conditioned_sine_encoder",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", segment])],
        [
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", latent_size]),
            helper.make_tensor_value_info(CONDITION_INPUT, TensorProto.FLOAT, ["batch", columns]),
        ],
        inits,
    )
