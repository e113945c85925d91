"""Load and check a ganstream bundle (docs/bundle.md, format versions 1 and 2).

`load_bundle(path)` reads a bundle directory or `.zip`, checks it against the
contract and returns a `Bundle`: a waveform or a spectral generator to play.
`load_reconstruction(path)` reads the reconstruction network of a spectral
bundle, or of a reconstruction bundle (a vocoder exported alone). Every problem raises one `BundleError` naming
the file and, where there is one, the manifest field: a host either plays what
the exporter made or says exactly why it will not.

Only numpy, onnxruntime and the standard library: this module is part of the
live engine and must load on a machine without torch or onnx.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, NoReturn

import numpy as np
import onnxruntime as ort

from ganstream.core.spectral import BinNorm, SpectralParams

FORMAT = "ganstream-bundle"
SUPPORTED_VERSIONS = (1, 2)
DEFAULT_BUNDLE = Path(__file__).parent / "default_bundle"
MANIFEST = "manifest.json"

KINDS = ("waveform", "spectral", "reconstruction")
# model.kind -> (graph roles it may have, roles it must have)
ROLES = {
    "waveform": (("generator",), ("generator",)),
    "spectral": (("generator", "reconstruction", "fused"), ("generator", "reconstruction")),
    "reconstruction": (("reconstruction",), ("reconstruction",)),
}
DISTRIBUTIONS = ("uniform", "normal")
DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}
PRECISIONS = ("fp32", "fp16")
STREAMING_MODES = ("crossfade", "texture")
CONTROL_KINDS = ("principal", "descriptor")
DESCRIPTORS = ("loudness", "spectral_centroid", "spectral_flatness")
BATCH = "batch"


class BundleError(ValueError):
    """A bundle that breaks the contract: `file` names the file, `field` the manifest field if any."""

    def __init__(self, file: str, problem: str, field: str | None = None):
        self.file = file
        self.field = field
        self.problem = problem
        super().__init__(f"{file}: {problem}")


class UnknownControlError(BundleError, KeyError):
    """`Bundle.control(name)` for a name the bundle does not have; both a BundleError and a KeyError."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest declares it; `shape` holds ints and "batch"."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # "float32" or "float16"

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class GraphSpec:
    role: str
    file: Path  # absolute path of the ONNX file
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str
    opset: int
    parity_max_abs_error: float
    label: str  # how errors name the file

    def check_session(self, session: ort.InferenceSession) -> None:
        """Raise BundleError unless the loaded graph's inputs and outputs match the manifest."""
        for side, declared, actual in (
            ("inputs", self.inputs, session.get_inputs()),
            ("outputs", self.outputs, session.get_outputs()),
        ):
            where = f"graphs.{self.role}.{side}"
            if len(actual) != len(declared):
                self._fail(
                    f"the graph has {len(actual)} {side} ({', '.join(a.name for a in actual)}), "
                    f"the manifest's `{where}` lists {len(declared)} ({', '.join(d.name for d in declared)})",
                    where,
                )
            for i, (spec, arg) in enumerate(zip(declared, actual)):
                path = f"{where}[{i}]"
                if arg.name != spec.name:
                    self._fail(
                        f"{side[:-1]} {i} is named {arg.name!r} in the graph but {spec.name!r} in `{path}.name`",
                        f"{path}.name",
                    )
                dtype = ORT_DTYPES.get(arg.type, arg.type)
                if dtype != spec.dtype:
                    self._fail(
                        f"{side[:-1]} {arg.name!r} has dtype {dtype} in the graph but {spec.dtype} in `{path}.dtype`",
                        f"{path}.dtype",
                    )
                shape = list(arg.shape) if arg.shape is not None else None
                if shape is None or len(shape) != len(spec.shape):
                    rank = "unknown" if shape is None else len(shape)
                    self._fail(
                        f"{side[:-1]} {arg.name!r} has rank {rank} in the graph but {len(spec.shape)} "
                        f"in `{path}.shape` {_js(list(spec.shape))}",
                        f"{path}.shape",
                    )
                for axis, (want, got) in enumerate(zip(spec.shape, shape)):
                    fixed = isinstance(got, int) and got >= 0
                    if want == BATCH and fixed:
                        self._fail(
                            f"axis {axis} of {side[:-1]} {arg.name!r} is fixed at {got} in the graph "
                            f'but `{path}.shape[{axis}]` is "batch" (a dynamic axis)',
                            f"{path}.shape[{axis}]",
                        )
                    # A symbolic graph axis where the manifest fixes a size is allowed: the graph
                    # does not know it statically. The Generator checks the real size on warm-up.
                    if want != BATCH and fixed and got != want:
                        self._fail(
                            f"axis {axis} of {side[:-1]} {arg.name!r} is {got} in the graph "
                            f"but {want} in `{path}.shape[{axis}]`",
                            f"{path}.shape[{axis}]",
                        )

    def _fail(self, problem: str, field_: str | None = None) -> NoReturn:
        raise BundleError(self.label, problem, field_)


@dataclass(frozen=True)
class ControlItem:
    """A named latent direction: a knob at value v adds v * scale * direction to the latent."""

    name: str
    kind: str  # "principal" or "descriptor"
    row: int
    scale: float
    extra: dict[str, Any] = field(default_factory=dict)  # explained_variance, or descriptor and r2


@dataclass(frozen=True)
class StreamingSettings:
    """The manifest's recommended streaming settings (docs/bundle.md, `streaming`)."""

    mode: str  # "crossfade" or "texture"
    crossfade: int  # samples of the equal-power crossfade between segments
    texture_overlap: int  # segments overlapping at each instant in texture mode
    latent_smoothing_s: float
    walk_rate: float  # Hz
    walk_depth: float  # latent units


@dataclass(frozen=True)
class SpectralSpec:
    """A spectral bundle's front end (docs/bundle.md, `spectral`): what its spectrograms are."""

    params: SpectralParams
    bins: int  # frequency rows of a spectrogram
    frames: int  # spectrogram columns per generated segment
    norm: BinNorm  # per-bin statistics the spectrograms are normalised with


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """A reconstruction network from a bundle: spectrogram (B, bins, frames) -> audio (B, samples)."""

    source: Path
    name: str
    sample_rate: int
    graph: GraphSpec
    spectral: SpectralSpec
    manifest: dict[str, Any]


@dataclass(frozen=True, eq=False, repr=False)
class Bundle:
    """A loaded, checked bundle. Treat its dicts as read-only (they are plain dicts, so json.dumps works)."""

    path: Path  # the directory the files are read from (for a .zip, its extraction in the cache)
    source: Path  # what was loaded: the directory or the .zip
    manifest: dict[str, Any]
    name: str
    kind: str
    architecture: str
    sample_rate: int
    segment: int
    latent_size: int
    latent_distribution: str
    graphs: dict[str, GraphSpec]
    controls: np.ndarray | None  # (n, D) float32, read-only
    control_items: tuple[ControlItem, ...]
    streaming: StreamingSettings
    provenance: dict[str, Any]
    spectral: SpectralSpec | None = None  # spectral bundles only

    def __repr__(self) -> str:
        return (
            f"Bundle({self.name!r}, {self.kind}, {self.sample_rate} Hz, segment={self.segment}, "
            f"latent={self.latent_size} {self.latent_distribution}, controls={len(self.control_items)}, path={str(self.path)!r})"
        )

    def graph(self, role: str) -> GraphSpec:
        try:
            return self.graphs[role]
        except KeyError:
            raise BundleError(
                _label(self.source, MANIFEST), f"no graph with role {role!r}; it has {', '.join(self.graphs)}"
            ) from None

    @property
    def control_names(self) -> tuple[str, ...]:
        return tuple(item.name for item in self.control_items)

    def control(self, name: str) -> tuple[np.ndarray, float]:
        """name -> (direction (D,) float32, scale): a knob at v adds v * scale * direction."""
        for item in self.control_items:
            if item.name == name:
                assert self.controls is not None
                return self.controls[item.row], item.scale
        known = ", ".join(self.control_names) or "none"
        raise UnknownControlError(_label(self.source, MANIFEST), f"no control named {name!r}; known controls: {known}")

    def random_latents(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, D) float32 latents drawn from the bundle's distribution."""
        shape = (int(n), self.latent_size)
        if self.latent_distribution == "normal":
            return rng.standard_normal(shape, dtype=np.float32)
        return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def load_bundle(
    path: str | os.PathLike | None = None, verify: bool = True, *, cache_dir: str | os.PathLike | None = None
) -> Bundle:
    """Load a bundle directory or .zip (None: the default bundle shipped with the package).

    verify=True also checks every file's sha256 and loads each ONNX graph on the CPU to
    compare its inputs and outputs with the manifest; verify=False skips those two (sizes
    and everything else are still checked) for a fast start on a bundle checked before.
    A .zip is extracted once into `cache_dir` (default: the user cache) under its sha256.
    """
    source, directory, manifest, f = _open(path, cache_dir)
    return _build(source, directory, manifest, f, verify)


def load_reconstruction(
    path: str | os.PathLike, verify: bool = True, *, cache_dir: str | os.PathLike | None = None
) -> Reconstruction:
    """The reconstruction network of a spectral or reconstruction bundle, checked like `load_bundle`."""
    source, directory, manifest, f = _open(path, cache_dir)
    version = _check_format(manifest, f)
    name = f.string(manifest, "name")
    model = f.section(manifest, "model")
    kind = f.string(model, "kind", "model", KINDS)
    if kind == "waveform":
        f.fail("model.kind", 'is "waveform": the bundle has no reconstruction network (its generator outputs audio)')
    _check_kind_version(kind, version, f)
    sample_rate = f.integer(model, "sample_rate", "model", minimum=1)
    segment = f.integer(model, "segment", "model", minimum=1)
    files = _files(manifest, f)
    graphs = _graphs(manifest, f, source, directory, files, kind)
    spectral_section = _spectral_fields(manifest, f, sample_rate, files)
    graph = graphs["reconstruction"]
    _check_reconstruction_shapes(graph, f, spectral_section, segment)
    for rel, entry in files.items():
        _check_file(directory / rel, _label(source, rel), entry, verify)
    if verify:
        graph.check_session(_open_for_check(graph))
    spectral = _spectral_norm(spectral_section, source, directory)
    return Reconstruction(source=source, name=name, sample_rate=sample_rate, graph=graph, spectral=spectral, manifest=manifest)


def _open(path: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> tuple[Path, Path, dict, "_Fields"]:
    """(what was named, the directory its files are in, the parsed manifest, field reader)."""
    if path is None:
        if not DEFAULT_BUNDLE.is_dir():
            raise BundleError(
                str(DEFAULT_BUNDLE),
                "no bundle was named and no default bundle is installed here; name one: "
                "a bundle directory or .zip made by `ganstream export`",
            )
        path = DEFAULT_BUNDLE
    source = Path(path).expanduser()
    if source.is_dir():
        directory = source
    elif source.is_file():
        directory = _extract_zip(source, Path(cache_dir) if cache_dir is not None else _user_cache())
    else:
        raise BundleError(str(source), "no such bundle (a bundle is a directory or a .zip holding manifest.json)")

    manifest_label = _label(source, MANIFEST)
    manifest_file = directory / MANIFEST
    if not manifest_file.is_file():
        raise BundleError(manifest_label, "missing: every bundle has a manifest.json at its top")
    manifest = _read_json(manifest_file, manifest_label)
    return source, directory, manifest, _Fields(manifest_label)


# ---------------------------------------------------------------------------------------------
# The manifest, field by field


class _Fields:
    """Typed reads from the parsed manifest; each failure names manifest.json and the JSON path."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, path: str, problem: str) -> NoReturn:
        raise BundleError(self.label, f"`{path}` {problem}", path)

    def get(self, obj: Mapping, key: str, prefix: str = "") -> Any:
        path = f"{prefix}.{key}" if prefix else key
        if key not in obj:
            raise BundleError(self.label, f"missing required field `{path}`", path)
        return obj[key]

    def section(self, obj: Mapping, key: str, prefix: str = "", nullable: bool = False) -> dict | None:
        value = self.get(obj, key, prefix)
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            self.fail(_join(prefix, key), f"must be an object{' or null' if nullable else ''}, got {_js(value)}")
        return value

    def string(self, obj: Mapping, key: str, prefix: str = "", choices: tuple[str, ...] | None = None) -> str:
        value = self.get(obj, key, prefix)
        if not isinstance(value, str) or not value:
            self.fail(_join(prefix, key), f"must be a non-empty string, got {_js(value)}")
        if choices is not None and value not in choices:
            self.fail(_join(prefix, key), f"must be one of {', '.join(map(_js, choices))}, got {_js(value)}")
        return value

    def integer(self, obj: Mapping, key: str, prefix: str = "", minimum: int | None = None) -> int:
        value = self.get(obj, key, prefix)
        if not _is_int(value):
            self.fail(_join(prefix, key), f"must be an integer, got {_js(value)}")
        if minimum is not None and value < minimum:
            self.fail(_join(prefix, key), f"must be >= {minimum}, got {value}")
        return value

    def number(self, obj: Mapping, key: str, prefix: str = "", minimum: float = -math.inf, positive: bool = False) -> float:
        value = self.get(obj, key, prefix)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(_join(prefix, key), f"must be a finite number, got {_js(value)}")
        if positive and value <= 0:
            self.fail(_join(prefix, key), f"must be > 0, got {value}")
        if value < minimum:
            self.fail(_join(prefix, key), f"must be >= {minimum}, got {value}")
        return float(value)


def _check_format(manifest: dict, f: _Fields) -> int:
    """The manifest's format version, after checking format and version: first, as a newer manifest may be shaped differently."""
    fmt = f.get(manifest, "format")
    if fmt != FORMAT:
        f.fail("format", f"must be {_js(FORMAT)}, got {_js(fmt)}: this is not a ganstream bundle manifest")
    version = f.get(manifest, "format_version")
    if not _is_int(version) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        hint = ": upgrade ganstream to play this bundle" if _is_int(version) and version > max(SUPPORTED_VERSIONS) else ""
        f.fail("format_version", f"is {_js(version)}, but ganstream {_version()} reads format version {supported} only{hint}")
    return version


def _check_kind_version(kind: str, version: int, f: _Fields) -> None:
    if kind != "waveform" and version < 2:
        f.fail("model.kind", f"is {_js(kind)}, which format version {version} does not have (it came with version 2)")


def _build(source: Path, directory: Path, manifest: dict, f: _Fields, verify: bool) -> Bundle:
    version = _check_format(manifest, f)
    name = f.string(manifest, "name")
    model = f.section(manifest, "model")
    kind = f.string(model, "kind", "model", KINDS)
    _check_kind_version(kind, version, f)
    if kind == "reconstruction":
        f.fail(
            "model.kind",
            'is "reconstruction": the bundle holds a reconstruction network and no generator, so there is nothing to play; '
            "use it with `ganstream eval-reconstruction --network`, or export a spectral GAN with it",
        )
    architecture = f.string(model, "architecture", "model")
    sample_rate = f.integer(model, "sample_rate", "model", minimum=1)
    segment = f.integer(model, "segment", "model", minimum=1)
    latent = f.section(model, "latent", "model")
    latent_size = f.integer(latent, "size", "model.latent", minimum=1)
    distribution = f.string(latent, "distribution", "model.latent", DISTRIBUTIONS)
    if kind == "waveform" and f.get(manifest, "spectral") is not None:
        f.fail("spectral", f"must be null in a waveform bundle, got {_js(manifest['spectral'])}")

    files = _files(manifest, f)
    graphs = _graphs(manifest, f, source, directory, files, kind)
    spectral_section = None
    if kind == "waveform":
        _check_generator_shapes(graphs["generator"], f, latent_size, segment)
    else:
        spectral_section = _spectral_fields(manifest, f, sample_rate, files)
        _check_spectral_generator_shapes(graphs["generator"], f, latent_size, spectral_section)
        _check_reconstruction_shapes(graphs["reconstruction"], f, spectral_section, segment)
        if "fused" in graphs:
            _check_generator_shapes(graphs["fused"], f, latent_size, segment, "fused")

    controls_section = f.section(manifest, "controls", nullable=True)
    streaming = _streaming(manifest, f, segment)
    provenance = f.section(manifest, "provenance")  # informational: its keys are not checked

    for rel, entry in files.items():
        _check_file(directory / rel, _label(source, rel), entry, verify)
    if verify:
        for spec in graphs.values():
            spec.check_session(_open_for_check(spec))

    controls, items = None, ()
    if controls_section is not None:
        controls, items = _controls(controls_section, f, source, directory, files, latent_size)
    spectral = _spectral_norm(spectral_section, source, directory) if spectral_section is not None else None

    return Bundle(
        path=directory,
        source=source,
        manifest=manifest,
        name=name,
        kind=kind,
        architecture=architecture,
        sample_rate=sample_rate,
        segment=segment,
        latent_size=latent_size,
        latent_distribution=distribution,
        graphs=graphs,
        controls=controls,
        control_items=items,
        streaming=streaming,
        provenance=provenance,
        spectral=spectral,
    )


def _files(manifest: dict, f: _Fields) -> dict[str, dict]:
    files = f.section(manifest, "files")
    for rel, entry in files.items():
        path = f"files.{rel}"
        _relative(rel, f, path)
        if rel == MANIFEST:
            f.fail(path, "must not be listed: `files` lists every file except manifest.json")
        if not isinstance(entry, dict):
            f.fail(path, f"must be an object with sha256 and bytes, got {_js(entry)}")
        digest = f.string(entry, "sha256", path)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            f.fail(f"{path}.sha256", f"must be 64 lower-case hex digits, got {_js(digest)}")
        f.integer(entry, "bytes", path, minimum=0)
    return files


def _check_file(file: Path, label: str, entry: dict, verify: bool) -> None:
    if not file.is_file():
        raise BundleError(label, "missing: it is listed in the manifest's `files` but not in the bundle")
    size = file.stat().st_size
    if size != entry["bytes"]:
        raise BundleError(label, f"size mismatch: the manifest says {entry['bytes']} bytes, the file has {size}")
    if verify:
        digest = _sha256(file)
        if digest != entry["sha256"]:
            raise BundleError(
                label,
                f"sha256 mismatch: the manifest says {entry['sha256']}, the file has {digest} "
                "(it was changed or corrupted after export)",
            )


def _graphs(manifest: dict, f: _Fields, source: Path, directory: Path, files: dict, kind: str) -> dict[str, GraphSpec]:
    section = f.section(manifest, "graphs")
    allowed, required = ROLES[kind]
    for role in required:
        f.section(section, role, "graphs")
    extra = [role for role in section if role not in allowed]
    if extra:
        only = ", ".join(f"`{role}`" for role in allowed)
        f.fail(f"graphs.{extra[0]}", f"is not a graph role of a {kind} bundle (only {only})")
    graphs = {}
    for role in section:
        prefix = f"graphs.{role}"
        g = section[role]
        rel = f.string(g, "file", prefix)
        _relative(rel, f, f"{prefix}.file")
        if rel not in files:
            f.fail(f"{prefix}.file", f"names {rel!r}, which is not listed in `files` (so its sha256 cannot be checked)")
        graphs[role] = GraphSpec(
            role=role,
            file=directory / rel,
            inputs=_tensors(g, "inputs", prefix, f),
            outputs=_tensors(g, "outputs", prefix, f),
            precision=f.string(g, "precision", prefix, PRECISIONS),
            opset=f.integer(g, "opset", prefix, minimum=1),
            parity_max_abs_error=f.number(g, "parity_max_abs_error", prefix, minimum=0.0),
            label=_label(source, rel),
        )
    return graphs


def _tensors(g: dict, key: str, prefix: str, f: _Fields) -> tuple[TensorSpec, ...]:
    value = f.get(g, key, prefix)
    path = f"{prefix}.{key}"
    if not isinstance(value, list) or not value:
        f.fail(path, f"must be a non-empty list of {{name, shape, dtype}}, got {_js(value)}")
    specs = []
    for i, t in enumerate(value):
        p = f"{path}[{i}]"
        if not isinstance(t, dict):
            f.fail(p, f"must be an object with name, shape and dtype, got {_js(t)}")
        name = f.string(t, "name", p)
        shape = f.get(t, "shape", p)
        if not isinstance(shape, list) or not shape or not all(
            (_is_int(d) and d >= 1) or d == BATCH for d in shape
        ):
            f.fail(f"{p}.shape", f'must be a non-empty list of positive integers and "batch", got {_js(shape)}')
        dtype = f.string(t, "dtype", p, tuple(DTYPES))
        specs.append(TensorSpec(name, tuple(shape), dtype))
    return tuple(specs)


def _check_generator_shapes(gen: GraphSpec, f: _Fields, latent_size: int, segment: int, role: str = "generator") -> None:
    p = f"graphs.{role}"
    if len(gen.inputs) != 1:
        f.fail(f"{p}.inputs", f"must list exactly one input (the latent), got {len(gen.inputs)}")
    if len(gen.outputs) != 1:
        f.fail(f"{p}.outputs", f"must list exactly one output (the audio), got {len(gen.outputs)}")
    z, audio = gen.inputs[0].shape, gen.outputs[0].shape
    if len(z) != 2 or z[0] != BATCH or not _is_int(z[1]):
        f.fail(f"{p}.inputs[0].shape", f'must be ["batch", D], got {_js(list(z))}')
    if z[1] != latent_size:
        f.fail(
            f"{p}.inputs[0].shape",
            f"is {_js(list(z))} but `model.latent.size` is {latent_size}: the latent sizes must agree",
        )
    if len(audio) != 2 or audio[0] != BATCH or not _is_int(audio[1]):
        f.fail(f"{p}.outputs[0].shape", f'must be ["batch", segment], got {_js(list(audio))}')
    if audio[1] != segment:
        f.fail(
            f"{p}.outputs[0].shape",
            f"is {_js(list(audio))} but `model.segment` is {segment}: the generator's output length must be the segment",
        )


def _check_one_tensor(graph: GraphSpec, f: _Fields, side: str, want: list, what: str) -> None:
    specs = graph.inputs if side == "inputs" else graph.outputs
    p = f"graphs.{graph.role}.{side}"
    if len(specs) != 1:
        f.fail(p, f"must list exactly one {side[:-1]} ({what}), got {len(specs)}")
    if list(specs[0].shape) != want:
        f.fail(f"{p}[0].shape", f"is {_js(list(specs[0].shape))} but must be {_js(want)}: {what}")


def _check_spectral_generator_shapes(gen: GraphSpec, f: _Fields, latent_size: int, spectral: dict) -> None:
    _check_one_tensor(gen, f, "inputs", [BATCH, latent_size], "the latent, of `model.latent.size`")
    frames = [BATCH, spectral["bins"], spectral["frames"]]
    _check_one_tensor(gen, f, "outputs", frames, "the spectrogram, `spectral.bins` by `spectral.frames`")


def _check_reconstruction_shapes(graph: GraphSpec, f: _Fields, spectral: dict, segment: int) -> None:
    frames = [BATCH, spectral["bins"], spectral["frames"]]
    _check_one_tensor(graph, f, "inputs", frames, "the spectrogram, `spectral.bins` by `spectral.frames`")
    _check_one_tensor(graph, f, "outputs", [BATCH, segment], "the audio, of `model.segment` samples")


def _spectral_fields(manifest: dict, f: _Fields, sample_rate: int, files: dict) -> dict[str, Any]:
    """The `spectral` section's values, checked against each other and the model; the norm files are read later."""
    s = f.section(manifest, "spectral")
    raw = f.section(s, "params", "spectral")
    try:
        params = SpectralParams.from_dict(raw, "spectral.params")
    except (TypeError, ValueError, KeyError) as e:
        f.fail("spectral.params", f"are not valid spectral parameters: {_one_line(str(e))}")
    if params.sample_rate != sample_rate:
        f.fail("spectral.params.sample_rate", f"is {params.sample_rate} but `model.sample_rate` is {sample_rate}")
    bins = f.integer(s, "bins", "spectral", minimum=1)
    if bins != params.bins:
        f.fail("spectral.bins", f"is {bins} but `spectral.params` make {params.bins} bins")
    fields = {"params": params, "bins": bins, "frames": f.integer(s, "frames", "spectral", minimum=1)}
    norm = f.section(s, "norm", "spectral")
    fields["clip"] = f.number(norm, "clip", "spectral.norm", positive=True)
    for key in ("mean", "std"):
        rel = f.string(norm, key, "spectral.norm")
        _relative(rel, f, f"spectral.norm.{key}")
        if rel not in files:
            f.fail(f"spectral.norm.{key}", f"names {rel!r}, which is not listed in `files` (so its sha256 cannot be checked)")
        fields[key] = rel
    return fields


def _spectral_norm(fields: dict, source: Path, directory: Path) -> SpectralSpec:
    """Reads the BinNorm side files: little-endian float32 (bins,), finite, std > 0."""
    arrays = {}
    for key in ("mean", "std"):
        rel = fields[key]
        label = _label(source, rel)
        try:
            array = np.load(directory / rel, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise BundleError(label, f"cannot be read as a .npy array: {_one_line(str(e))}") from None
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype("<f4") or array.shape != (fields["bins"],):
            got = f"{getattr(array, 'dtype', type(array))} {getattr(array, 'shape', '')}"
            raise BundleError(label, f"must hold little-endian float32 of shape ({fields['bins']},) (one value per bin), got {got}")
        if not np.all(np.isfinite(array)) or (key == "std" and not np.all(array > 0)):
            raise BundleError(label, "holds NaN or infinite values" + (", or a std that is not > 0" if key == "std" else ""))
        array.setflags(write=False)
        arrays[key] = array
    norm = BinNorm.from_arrays(arrays["mean"], arrays["std"], clip=fields["clip"])
    return SpectralSpec(params=fields["params"], bins=fields["bins"], frames=fields["frames"], norm=norm)


def _streaming(manifest: dict, f: _Fields, segment: int) -> StreamingSettings:
    s = f.section(manifest, "streaming")
    p = "streaming"
    mode = f.string(s, "mode", p, STREAMING_MODES)
    crossfade = f.integer(s, "crossfade", p, minimum=0)
    if crossfade > segment // 2:
        f.fail(f"{p}.crossfade", f"is {crossfade}, more than half the segment ({segment} samples)")
    overlap = f.integer(s, "texture_overlap", p, minimum=1)
    if segment % overlap:
        f.fail(f"{p}.texture_overlap", f"is {overlap}, which does not divide the segment ({segment} samples)")
    return StreamingSettings(
        mode=mode,
        crossfade=crossfade,
        texture_overlap=overlap,
        latent_smoothing_s=f.number(s, "latent_smoothing_s", p, minimum=0.0),
        walk_rate=f.number(s, "walk_rate", p, minimum=0.0),
        walk_depth=f.number(s, "walk_depth", p, minimum=0.0),
    )


def _controls(
    section: dict, f: _Fields, source: Path, directory: Path, files: dict, latent_size: int
) -> tuple[np.ndarray, tuple[ControlItem, ...]]:
    rel = f.string(section, "file", "controls")
    _relative(rel, f, "controls.file")
    if rel not in files:
        f.fail("controls.file", f"names {rel!r}, which is not listed in `files`")
    label = _label(source, rel)
    try:
        array = np.load(directory / rel, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BundleError(label, f"cannot be read as a .npy array: {_one_line(str(e))}") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype("<f4"):
        raise BundleError(label, f"must hold little-endian float32, got {getattr(array, 'dtype', type(array))}")
    if array.ndim != 2 or array.shape[1] != latent_size:
        raise BundleError(label, f"must have shape (n, {latent_size}) (n directions of the latent), got {array.shape}")
    if not array.flags.c_contiguous:
        raise BundleError(label, "must be stored in C order (np.save of a C-contiguous array)")
    if not np.all(np.isfinite(array)):
        raise BundleError(label, "holds NaN or infinite values")
    array.setflags(write=False)

    raw = f.get(section, "items", "controls")
    if not isinstance(raw, list):
        f.fail("controls.items", f"must be a list, got {_js(raw)}")
    items, seen = [], set()
    for i, it in enumerate(raw):
        p = f"controls.items[{i}]"
        if not isinstance(it, dict):
            f.fail(p, f"must be an object, got {_js(it)}")
        name = f.string(it, "name", p)
        if name in seen:
            f.fail(f"{p}.name", f"repeats the control name {name!r}; names must be unique")
        seen.add(name)
        kind = f.string(it, "kind", p, CONTROL_KINDS)
        row = f.integer(it, "row", p, minimum=0)
        if row >= array.shape[0]:
            f.fail(f"{p}.row", f"is {row} but {rel} has only {array.shape[0]} rows")
        scale = f.number(it, "scale", p, positive=True)
        if kind == "principal":
            f.number(it, "explained_variance", p, minimum=0.0)
        else:
            f.string(it, "descriptor", p, DESCRIPTORS)
            f.number(it, "r2", p)
        extra = {k: v for k, v in it.items() if k not in ("name", "kind", "row", "scale")}
        items.append(ControlItem(name, kind, row, scale, extra))
    return array, tuple(items)


# ---------------------------------------------------------------------------------------------
# Files, zips and ONNX


def _read_json(file: Path, label: str) -> dict:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    def no_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not valid JSON")

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(label, f"is not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise BundleError(label, f"is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except ValueError as e:
        raise BundleError(label, f"is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(label, f"must hold a JSON object, got {type(data).__name__}")
    return data


def _open_for_check(spec: GraphSpec) -> ort.InferenceSession:
    """A light CPU session (no graph optimisation, one thread) that only reads the graph's signature."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(spec.file), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise BundleError(spec.label, f"onnxruntime cannot load it: {ort_reason(e)}") from None


def ort_reason(error: BaseException) -> str:
    """onnxruntime's error message cut to its first line, without the status prefix and the file name."""
    text = _one_line(str(error))
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
    text = re.sub(r"Load model from .*? failed:", "", text)
    return text.strip()


def _extract_zip(zip_path: Path, cache: Path) -> Path:
    """Extract once into cache/bundles/<sha256 of the zip>, atomically, and return the bundle directory in it."""
    label = str(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise BundleError(label, "is a file but not a zip archive: a bundle is a directory or a .zip")
    root = cache / "bundles"
    target = root / _sha256(zip_path)
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=root))
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for member in zf.namelist():
                    p = PurePosixPath(member)
                    if p.is_absolute() or ".." in p.parts or "\\" in member:
                        raise BundleError(label, f"member {member!r} points outside the archive")
                zf.extractall(tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # another process finished first: use its copy
                    raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise BundleError(label, f"is a damaged zip archive: {_one_line(str(e))}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if (target / MANIFEST).is_file():
        return target
    subdirs = [d for d in target.iterdir() if d.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise BundleError(
        _label(zip_path, MANIFEST), "missing: the zip holds no manifest.json at its top or in its single top folder"
    )


def _user_cache() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ganstream"


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _relative(rel: str, f: _Fields, path: str) -> None:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or ":" in rel:
        f.fail(path, f"must be a relative path inside the bundle (forward slashes, no ..), got {_js(rel)}")


def _label(source: Path, rel: str) -> str:
    """How errors name a bundle file: its path, or 'member in archive.zip'."""
    return str(source / rel) if source.is_dir() else f"{rel} in {source}"


def _version() -> str:
    try:
        from ganstream import __version__

        return __version__
    except ImportError:
        return "this version"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _js(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
