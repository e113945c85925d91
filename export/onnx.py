"""ONNX export of a network, checked against PyTorch: one function for every graph a bundle holds.

`export_graph` takes a module, example inputs and the names and shapes of its
inputs and outputs, and returns the graph's manifest entry (`graphs.<role>` in
docs/bundle.md) after the ONNX checker and a parity run on ONNX Runtime have
passed. `export_waveform_generator` wraps a waveform generator for it; spectral
generators and a reconstruction network add their own wrappers and call the
same function.

It uses the TorchScript exporter (`dynamo=False`): in torch 2.13 the dynamo
exporter produced wrong WaveGAN graphs (max error 0.149), the TorchScript one
2e-8.

fp16 stores every weight matrix and kernel (initialisers and constants of two
or more dimensions) as float16 and casts it back to float32 inside the graph; ONNX
Runtime folds those casts when it opens the session. The file is about half
the size, inputs, outputs and arithmetic stay float32, and the graph runs on
every execution provider: ONNX Runtime's CPU provider has no float16 kernels
for some ops (ConvTranspose among them). Vectors (biases, normalisation
statistics) stay float32: they are tiny, and small variances lose precision as
fp16 subnormals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from ganstream.core import manifest
from ganstream.core.manifest import BATCH  # the dynamic batch axis, in the manifest and in the ONNX graph
from ganstream.training.models import condition_size, sample_latents

DEFAULT_OPSET = 17
OPSETS = range(11, 21)  # what the TorchScript exporter writes for these graphs (tested: 11, 13, 17, 20)
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # the largest parity error export accepts, by precision
PARITY_ITEMS = 16  # inputs compared between ONNX Runtime and PyTorch
_FP16_MAX = float(np.finfo(np.float16).max)
_DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


class ExportError(RuntimeError):
    """An export that cannot be completed or verified, with the file and the reason in the message."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree by more than the precision's tolerance."""


@dataclass(frozen=True)
class TensorSpec(manifest.TensorSpec):
    """The manifest's TensorSpec (name, shape with ints and BATCH, dtype) and what export alone needs:

    `free` names axes that the manifest fixes but the graph leaves symbolic, as (axis, name)
    pairs: a fully convolutional network (the reconstruction network) then also runs on
    other lengths, while a bundle's host still reads the size it plays from the manifest.
    """

    free: tuple[tuple[int, str], ...] = ()

    def symbolic_axes(self) -> dict[int, str]:
        """Axis -> the name of its dimension parameter in the graph."""
        return {**{i: BATCH for i, d in enumerate(self.shape) if d == BATCH}, **dict(self.free)}


def export_graph(
    module: nn.Module,
    example_inputs: tuple[Tensor, ...],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    path: Path,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    parity_inputs: tuple[Tensor, ...] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Exports `module` (in eval mode) to `path` and returns its manifest entry.

    `example_inputs` are traced; `parity_inputs` (default: `example_inputs`) are
    run through PyTorch and ONNX Runtime, and a difference above TOLERANCE
    raises ParityError. Every input and output must have the shape its spec
    gives, with any size on BATCH axes. Errors name the file as `label` (default: `path`).
    """
    label = label or str(path)
    if opset not in OPSETS:
        raise ExportError(f"{label}: opset {opset} is not supported; use {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    module = module.eval()
    precision = "fp16" if fp16 else "fp32"
    dynamic_axes = {s.name: s.symbolic_axes() for s in (*inputs, *outputs)}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch 2.9+, but it is the one that exports these graphs correctly.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        try:
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    tuple(example_inputs),
                    str(path),
                    input_names=[s.name for s in inputs],
                    output_names=[s.name for s in outputs],
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        except Exception as e:  # the exporter raises many types (unsupported opset or op, tracing errors)
            raise ExportError(f"{label}: torch.onnx.export failed at opset {opset}: {type(e).__name__}: {e}") from None
    model = onnx.load(str(path))
    declare_io(model, inputs, outputs, label)
    share_constants(model)
    if fp16:
        store_weights_fp16(model, label)
    model.producer_name = "ganstream"
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{label}: the ONNX checker rejects the exported graph: {e}") from None

    error = parity_error(module, path, parity_inputs if parity_inputs is not None else example_inputs, outputs, label)
    if not error <= TOLERANCE[precision]:  # also catches NaN
        raise ParityError(
            f"{label}: ONNX Runtime and PyTorch disagree by up to {error:.3g} (the {precision} limit is "
            f"{TOLERANCE[precision]:g}); the exported graph does not compute what the model does"
        )
    return {
        "file": path.name,
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "precision": precision,
        "opset": opset,
        "parity_max_abs_error": float(f"{error:.3g}"),
    }


def declare_io(model: onnx.ModelProto, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], label: str) -> None:
    """Writes the specs' shapes and dtypes into the graph's inputs and outputs, so the file says what the manifest says."""
    for kind, values, specs in (("inputs", model.graph.input, inputs), ("outputs", model.graph.output, outputs)):
        names = [v.name for v in values]
        if names != [s.name for s in specs]:
            raise ExportError(f"{label}: graph {kind} are {names}, expected {[s.name for s in specs]}")
        for value, spec in zip(values, specs):
            tensor_type = value.type.tensor_type
            tensor_type.elem_type = _DTYPES[spec.dtype]
            tensor_type.shape.ClearField("dim")
            symbolic = spec.symbolic_axes()
            for axis, d in enumerate(spec.shape):
                dim = tensor_type.shape.dim.add()
                if axis in symbolic:
                    dim.dim_param = symbolic[axis]
                else:
                    dim.dim_value = int(d)


SHARED_CONSTANT_BYTES = 1024  # smaller constants (shapes, scalars) are not worth a lookup


def share_constants(model: onnx.ModelProto) -> None:
    """Constant nodes holding the same tensor -> one, whose output feeds every user. The exporter writes a
    constant for each use of a module's non-persistent buffer, so a module called several times (the STFT
    basis of IterativeEncoder, once per correction) would store its tensor as often."""
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    alias: dict[str, str] = {}
    kept = []
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        value = _constant_value(node, graph_outputs)
        if value is not None and len(value.raw_data) >= SHARED_CONSTANT_BYTES:
            key = (value.data_type, tuple(value.dims), value.raw_data)
            if key in first:
                alias[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        kept.append(node)
    if not alias:
        return
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def store_weights_fp16(model: onnx.ModelProto, label: str) -> None:
    """Stores float32 initialisers of rank >= 2, and Constant nodes of rank >= 2 (a module's non-persistent
    buffers: an STFT basis, a mel matrix), as float16, each followed by a Cast back to float32."""
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue
        name, weights = init.name, _fp16_range(numpy_helper.to_array(init), init.name, label)
        init.CopyFrom(numpy_helper.from_array(weights.astype(np.float16), f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [init.name], [name], name=f"{name}__to_fp32", to=TensorProto.FLOAT))
    graph_outputs = {o.name for o in graph.output}
    nodes = list(casts)
    for node in graph.node:
        nodes.append(node)
        value = _constant_value(node, graph_outputs)
        if value is None or value.data_type != TensorProto.FLOAT or len(value.dims) < 2:
            continue
        name = node.output[0]
        value.CopyFrom(numpy_helper.from_array(_fp16_range(numpy_helper.to_array(value), name, label).astype(np.float16)))
        node.output[0] = f"{name}__fp16"
        nodes.append(helper.make_node("Cast", [node.output[0]], [name], name=f"{name}__to_fp32", to=TensorProto.FLOAT))
    graph.ClearField("node")
    graph.node.extend(nodes)


def _constant_value(node: onnx.NodeProto, graph_outputs: set[str]) -> onnx.TensorProto | None:
    """The tensor of a Constant node (its `value` attribute), None for any other node or one that is a graph output."""
    if node.op_type != "Constant" or len(node.attribute) != 1 or node.attribute[0].name != "value" or node.output[0] in graph_outputs:
        return None
    return node.attribute[0].t


def _fp16_range(weights: np.ndarray, name: str, label: str) -> np.ndarray:
    if np.abs(weights).max(initial=0.0) > _FP16_MAX:
        raise ExportError(f"{label}: weight {name} exceeds the float16 range ({np.abs(weights).max():.3g}); export it in fp32")
    return weights


def ort_session(path: Path | str | bytes) -> Any:
    """An ONNX Runtime session on the CPU provider (the one every host has)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path) if isinstance(path, Path) else path, options, providers=["CPUExecutionProvider"])


def parity_error(module: nn.Module, path: Path, inputs: tuple[Tensor, ...], outputs: Sequence[TensorSpec], label: str = "") -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime on `inputs`, over every output."""
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    session = ort_session(path)
    feeds = {i.name: t.detach().cpu().numpy().astype(np.float32) for i, t in zip(session.get_inputs(), inputs)}
    got = session.run([s.name for s in outputs], feeds)
    error = 0.0
    for spec, e, g in zip(outputs, expected, got):
        e = e.detach().cpu().numpy()
        if g.shape != e.shape:
            raise ParityError(f"{label or path}: output {spec.name} has shape {g.shape} in ONNX Runtime and {e.shape} in PyTorch")
        diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
        error = max(error, float(diff.max()) if np.isfinite(diff).all() else float("nan"))
        if np.isnan(error):
            break
    return error


# ---- waveform generators ------------------------------------------------------------------------


class WaveformGraph(nn.Module):
    """A mono waveform generator as the bundle runs it: z (B, D) -> audio (B, segment)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, segment) audio in [-1, 1]."""
        return self.generator(z).squeeze(1)


def export_waveform_generator(
    generator: nn.Module, model_cfg: Any, path: Path, opset: int = DEFAULT_OPSET, fp16: bool = False, seed: int = 0, label: str | None = None
) -> dict[str, Any]:
    """Exports a waveform generator (any `training.models` family) with inputs "z" and outputs "audio"."""
    if getattr(model_cfg, "channels", 1) != 1:
        raise ExportError(f"model.channels is {model_cfg.channels}: bundle format 1 holds mono generators only")
    return export_latent_graph(WaveformGraph(generator), model_cfg, TensorSpec("audio", (BATCH, model_cfg.segment)), path, opset, fp16, seed, label)


def export_latent_graph(
    module: nn.Module, model_cfg: Any, output: TensorSpec, path: Path, opset: int = DEFAULT_OPSET, fp16: bool = False, seed: int = 0, label: str | None = None
) -> dict[str, Any]:
    """Exports a graph of one latent input "z" (B, latent_dim), checked on PARITY_ITEMS seeded latents.

    A conditioned model's graph takes a second input, "condition" (B, C): MIDI pitch, then velocity in
    [0, 1] for pitch+velocity (training/models/condition.py), checked on conditions drawn as its
    training labels hold them."""
    latents = sample_latents(model_cfg, PARITY_ITEMS, torch.Generator().manual_seed(seed))
    d, c = model_cfg.latent_dim, condition_size(model_cfg)
    specs = [TensorSpec("z", (BATCH, d))]
    if c:
        module = ConditionInput(module, d)
        specs.append(TensorSpec(manifest.CONDITION_INPUT, (BATCH, c)))
    split = (latents[:, :d], latents[:, d:]) if c else (latents,)
    return export_graph(
        module,
        tuple(t[:2] for t in split),
        specs,
        [output],
        path,
        opset=opset,
        fp16=fp16,
        parity_inputs=split,
        label=label,
    )


class ConditionInput(nn.Module):
    """A conditioned generator graph with the bundle's two inputs: z (B, D) and condition (B, C)."""

    def __init__(self, module: nn.Module, latent_dim: int):
        super().__init__()
        self.module, self.latent_dim = module, latent_dim

    def forward(self, z: Tensor, condition: Tensor) -> Tensor:
        return self.module(torch.cat([z, condition], dim=1))


# ---- spectral generators and the reconstruction network -----------------------------------------

SPECTROGRAM = "spectrogram"  # the name of the tensor between a spectral generator and its reconstruction


class SpectrogramGraph(nn.Module):
    """A spectral generator as the bundle runs it: z (B, D) -> spectrogram (B, bins, frames)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, bins, frames) normalised log-magnitude; a 2-D generator's channel axis is dropped."""
        x = self.generator(z)
        return x[:, 0] if x.dim() == 4 else x


class SpectralAudio(nn.Module):
    """The fused graph: a spectral generator, then the reconstruction network: z (B, D) -> audio (B, segment)."""

    def __init__(self, generator: nn.Module, reconstruction: nn.Module):
        super().__init__()
        self.generator = SpectrogramGraph(generator)
        self.reconstruction = reconstruction

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, segment) audio."""
        return self.reconstruction(self.generator(z))


def spectrogram_spec(bins: int, frames: int, free: bool = False) -> TensorSpec:
    """The (batch, bins, frames) spectrogram; `free` leaves the frames axis symbolic in the graph."""
    return TensorSpec(SPECTROGRAM, (BATCH, bins, frames), free=((2, "frames"),) if free else ())


def export_reconstruction(
    network: nn.Module,
    bins: int,
    frames: int,
    path: Path,
    parity_inputs: Tensor,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    label: str | None = None,
) -> dict[str, Any]:
    """Exports a reconstruction network, spectrogram (B, bins, frames) -> audio (B, samples).

    The frames and samples axes stay symbolic in the graph (the network is convolutional
    over time), so the same file reconstructs audio of any length; the manifest records
    `frames` and the matching number of samples. parity_inputs: (N, bins, frames).
    """
    with torch.no_grad():
        samples = network.eval()(parity_inputs[:1]).shape[-1]
    return export_graph(
        network,
        (parity_inputs[:2],),
        [spectrogram_spec(bins, frames, free=True)],
        [TensorSpec("audio", (BATCH, samples), free=((1, "samples"),))],
        path,
        opset=opset,
        fp16=fp16,
        parity_inputs=(parity_inputs,),
        label=label,
    )


def export_spectral_generator(
    generator: nn.Module, model_cfg: Any, bins: int, frames: int, path: Path, opset: int = DEFAULT_OPSET, fp16: bool = False, seed: int = 0, label: str | None = None
) -> dict[str, Any]:
    """Exports a spectral generator with input "z" and output "spectrogram" (B, bins, frames)."""
    return export_latent_graph(SpectrogramGraph(generator), model_cfg, spectrogram_spec(bins, frames), path, opset, fp16, seed, label)


def export_fused(
    generator: nn.Module, reconstruction: nn.Module, model_cfg: Any, segment: int, path: Path, opset: int = DEFAULT_OPSET, fp16: bool = False, seed: int = 0, label: str | None = None
) -> dict[str, Any]:
    """Exports generator and reconstruction as one graph, "z" -> "audio" (B, segment)."""
    module = SpectralAudio(generator, reconstruction)
    return export_latent_graph(module, model_cfg, TensorSpec("audio", (BATCH, segment)), path, opset, fp16, seed, label)
