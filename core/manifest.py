"""The bundle's manifest.json (docs/bundle.md, format versions 1 to 6), as typed dataclasses: the schema's one home.

The writer (`ganstream.export.bundle`) builds a `Manifest`, with the `format_version` that
`lowest_version` gives, and writes `Manifest.dumps()`;
the reader (`ganstream.realtime.bundle`) parses with `Manifest.from_json` and adds only what
needs the bundle's files and ONNX Runtime (sizes, sha256s, .npy contents, graph signatures).

`from_json` is strict: every rule of docs/bundle.md that the manifest alone can break is
checked here, and each failure is one `BundleError` naming the file and the JSON path of the
field (`graphs.generator.inputs[0].shape`). Constructing a dataclass directly checks nothing:
the writer re-reads every bundle it writes. `to_json` gives back the JSON object, keys in the
documented order, so `from_json(to_json(m)) == m` and a manifest read from a file writes the
same file again. Keys the page does not describe are ignored on reading, so they are not
written back.

numpy and the standard library only (no torch, no onnxruntime): both sides import it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, NoReturn

import numpy as np

from .phase import GRIFFIN_LIM, INITIAL_PHASES, LOCKED, PGHI, RANDOM
from .spectral import SpectralParams

FORMAT = "ganstream-bundle"
MANIFEST = "manifest.json"
WAVEFORM_VERSION = 1  # waveform bundles
SPECTRAL_VERSION = 2  # adds spectral and reconstruction bundles
TRIGGER_VERSION = 3  # adds streaming.mode "trigger"
FALLBACK_VERSION = 4  # adds spectral.reconstruction: spectral bundles without a reconstruction network
CONDITION_VERSION = 5  # adds `condition`: pitch-conditioned generators, with a second input
PROPOSALS_VERSION = 6  # adds the encoder's optional `proposals` output: several latents for the host to hear and choose among
VERSIONS = (WAVEFORM_VERSION, SPECTRAL_VERSION, TRIGGER_VERSION, FALLBACK_VERSION, CONDITION_VERSION, PROPOSALS_VERSION)
# model.kind -> the format version it came with: the lowest a writer may write for it, so hosts
# that read only version 1 (ganstream 0.1.0) keep playing waveform bundles.
FIRST_VERSION = {"waveform": WAVEFORM_VERSION, "spectral": SPECTRAL_VERSION, "reconstruction": SPECTRAL_VERSION}
KINDS = tuple(FIRST_VERSION)
# streaming.mode -> the format version it came with, likewise: a reader of versions 1 and 2
# refuses "trigger" (its mode list has no such value), so a trigger bundle says version 3 and
# that reader asks for an upgrade instead.
MODE_FIRST_VERSION = {"crossfade": WAVEFORM_VERSION, "texture": WAVEFORM_VERSION, "trigger": TRIGGER_VERSION}
STREAMING_MODES = tuple(MODE_FIRST_VERSION)  # the live engine's modes (realtime/stream.py MODES)
# spectral.reconstruction.method -> the format version it came with, likewise: a spectral bundle
# without a network has no `graphs.reconstruction`, which a reader of versions 2 and 3 requires, so it
# says version 4 and that reader asks for an upgrade instead of missing a graph. A spectral bundle
# with a network has no `spectral.reconstruction` and keeps version 2 (or 3).
RECONSTRUCTION_FIRST_VERSION = {GRIFFIN_LIM: FALLBACK_VERSION, PGHI: FALLBACK_VERSION}
RECONSTRUCTION_METHODS = tuple(RECONSTRUCTION_FIRST_VERSION)  # what core/phase.py's PhaseReconstructor runs
# `streaming.root_note` (the pitch a bundle's segments sound at, which notes transpose from) is optional in
# every version and has none of its own: a reader that does not know it ignores it, as it ignores every
# key docs/bundle.md does not describe, and plays the bundle untransposed, which is what ganstream did
# before it and does with --no-transpose. A version for it would only make those readers refuse bundles
# they play well, so `lowest_version` does not look at it.
ROOT_NOTE_RANGE = (0.0, 127.0)  # MIDI note numbers; fractions are cents between notes
# `streaming.kit` (a kit file in the bundle: notes -> pads, realtime/kit.py) is optional and version-free
# for the same reason: a reader that ignores it plays every note with the current latent, as before kits.
# A conditioned generator (`condition`) takes a second input that an older reader would not feed, so
# it says CONDITION_VERSION and such a reader asks for an upgrade.
CONDITION_KINDS = {"pitch": 1, "pitch+velocity": 2}  # condition.kind -> the columns of its input
CONDITION_INPUT = "condition"  # the generator graph's second input: (batch, C) MIDI pitch [, velocity in 0..1]
# `encoder` (an ONNX graph from a segment of audio to the latent that regenerates it: `ganstream invert`,
# /ganstream/invert) is optional and version-free like `streaming.kit`: a reader that ignores it plays the
# bundle as before, and checks the file's sha256 with the others.
ENCODER_INPUT = "audio"  # (batch, model.segment) samples at model.sample_rate
ENCODER_OUTPUTS = ("latent", CONDITION_INPUT)  # (batch, D), then for a conditioned bundle (batch, C) its estimated condition
# Last, optionally, (batch, M, D) latents the encoder proposes, M >= 2, "latent" the first of them: a host hears each
# through the generator and starts from the nearest (realtime/inversion.py). A reader that knew encoders but not
# proposals would refuse the graph's extra output, so an encoder with proposals says PROPOSALS_VERSION.
ENCODER_PROPOSALS = "proposals"
# `refiner` (optional, beside `encoder`, version-free for the same reason): one correction of the encoder's latent,
# {"graph": ..., "iterations": K[, "beam": B]}. A host runs it K times, the bundle's generator between
# (realtime/inversion.py), on the B proposals the first call found nearest side by side (B 1 where absent, so a
# host that does not know `beam` corrects the nearest alone, as before it), and keeps the latent whose audio was
# nearest the sample by the graph's own distance output.
# A host repeats its one sample on every row of "audio", and a graph may read the first row alone (ganstream's own
# do, so the sample's STFT is taken once a call): either graph gives the same answer for what every host feeds it.
REFINER_INPUTS = (ENCODER_INPUT, "heard", "latent")  # the sample, what the generator makes of the latent (batch, segment) each; (batch, D)
REFINER_OUTPUTS = ("corrected", "distance")  # (batch, D) the corrected latent; (batch,) how far `heard` is from the sample
# model.kind -> (graph roles it may have, roles it must have)
ROLES = {
    "waveform": (("generator",), ("generator",)),
    "spectral": (("generator", "reconstruction", "fused"), ("generator", "reconstruction")),
    "reconstruction": (("reconstruction",), ("reconstruction",)),
}
FALLBACK_ROLES = (("generator",), ("generator",))  # a spectral bundle with `spectral.reconstruction`: no network
# Why a caller that cannot use a kind refuses it (Manifest.from_json's `kinds`).
UNUSABLE = {
    "waveform": "the bundle has no reconstruction network (its generator outputs audio)",
    "reconstruction": (
        "the bundle holds a reconstruction network and no generator, so there is nothing to play; "
        "use it with `ganstream eval-reconstruction --network`, or export a spectral GAN with it"
    ),
}
BATCH = "batch"  # the dynamic batch axis in a tensor's shape
DISTRIBUTIONS = ("uniform", "normal")
# The largest |component| an inverted or optimised latent of each distribution may take. Uniform latents are
# drawn from [-1, 1]. Normal ones: a standard normal component lies within +-4 but for 6 in 100,000, so the
# generator has hardly seen more; it stays well inside realtime.control.LATENT_LIMIT (8), so presets and
# /latent accept it.
LATENT_BOUNDS = {"uniform": 1.0, "normal": 4.0}
DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}  # ONNX Runtime's type names -> DTYPES keys
PRECISIONS = ("fp32", "fp16")
CONTROL_KINDS = ("principal", "descriptor")
DESCRIPTORS = ("loudness", "spectral_centroid", "spectral_flatness")


def lowest_version(kind: str, mode: str | None, reconstruction: str | None = None, conditioned: bool = False) -> int:
    """The format version a writer writes: the lowest that describes a bundle of `model.kind` kind,
    `streaming.mode` mode (None: no streaming section), `spectral.reconstruction.method`
    reconstruction (None: none, the bundle's network if it has one) and a `condition` (conditioned),
    so older hosts keep playing it."""
    return max(
        FIRST_VERSION[kind],
        MODE_FIRST_VERSION[mode] if mode is not None else WAVEFORM_VERSION,
        RECONSTRUCTION_FIRST_VERSION[reconstruction] if reconstruction is not None else WAVEFORM_VERSION,
        CONDITION_VERSION if conditioned else WAVEFORM_VERSION,
    )


class BundleError(ValueError):
    """A bundle that breaks the contract: `file` names the file, `field` the manifest field if any."""

    def __init__(self, file: str, problem: str, field: str | None = None):
        self.file = file
        self.field = field
        self.problem = problem
        super().__init__(f"{file}: {problem}")


def sha256_file(path: Path) -> str:
    """The lower-case hex sha256 of a file, read in 1 MiB blocks (ONNX graphs run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The sections, innermost first


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest declares it; `shape` holds ints and "batch"."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"  # a DTYPES key

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "tensor") -> TensorSpec:
        f = _section(data, file, path, "an object with name, shape and dtype")
        name = f.string(data, "name", path)
        shape = f.get(data, "shape", path)
        if not isinstance(shape, list) or not shape or not all((_is_int(d) and d >= 1) or d == BATCH for d in shape):
            f.fail(f"{path}.shape", f'must be a non-empty list of positive integers and "batch", got {json_brief(shape)}')
        return cls(name, tuple(shape), f.string(data, "dtype", path, tuple(DTYPES)))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Graph:
    """`graphs.<role>`: an ONNX file, its signature in graph order, and how it was exported."""

    file: str  # relative to the bundle
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str  # of the weights: "fp32" or "fp16"
    opset: int
    parity_max_abs_error: float

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "graphs.generator") -> Graph:
        f = _section(data, file, path)
        return cls(
            file=f.relative(data, "file", path),
            inputs=_tensors(data, "inputs", path, f),
            outputs=_tensors(data, "outputs", path, f),
            precision=f.string(data, "precision", path, PRECISIONS),
            opset=f.integer(data, "opset", path, minimum=1),
            parity_max_abs_error=f.number(data, "parity_max_abs_error", path, minimum=0.0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "precision": self.precision,
            "opset": self.opset,
            "parity_max_abs_error": self.parity_max_abs_error,
        }


@dataclass(frozen=True)
class Refinement:
    """`refiner`: the graph of one correction of the encoder's latent, how many corrections a host runs, and
    how many of the nearest proposals it corrects side by side (`beam`, optional: 1 where absent)."""

    graph: Graph
    iterations: int
    beam: int = 1

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "refiner") -> Refinement:
        f = _section(data, file, path)
        beam = f.integer(data, "beam", path, minimum=1) if "beam" in data else 1
        return cls(graph=Graph.from_json(f.get(data, "graph", path), file, f"{path}.graph"),
                   iterations=f.integer(data, "iterations", path, minimum=1), beam=beam)

    def to_json(self) -> dict[str, Any]:
        return {"graph": self.graph.to_json(), "iterations": self.iterations, **({"beam": self.beam} if self.beam > 1 else {})}


def _tensors(g: dict, key: str, prefix: str, f: _Fields) -> tuple[TensorSpec, ...]:
    value = f.get(g, key, prefix)
    path = f"{prefix}.{key}"
    if not isinstance(value, list) or not value:
        f.fail(path, f"must be a non-empty list of {{name, shape, dtype}}, got {json_brief(value)}")
    return tuple(TensorSpec.from_json(t, f.label, f"{path}[{i}]") for i, t in enumerate(value))


@dataclass(frozen=True)
class Latent:
    size: int  # D
    distribution: str  # "uniform" (each component in [-1, 1]) or "normal"

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "distribution": self.distribution}


@dataclass(frozen=True)
class Model:
    """`model`: what the bundle generates. A reconstruction bundle has no latent."""

    kind: str  # a KINDS entry
    architecture: str  # the training config's model.kind; informational
    sample_rate: int
    segment: int  # samples per generated segment
    latent: Latent | None

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "model") -> Model:
        f = _section(data, file, path)
        kind = f.string(data, "kind", path, KINDS)
        architecture = f.string(data, "architecture", path)
        sample_rate = f.integer(data, "sample_rate", path, minimum=1)
        segment = f.integer(data, "segment", path, minimum=1)
        latent = None
        if kind != "reconstruction":
            section = f.section(data, "latent", path)
            p = f"{path}.latent"
            latent = Latent(f.integer(section, "size", p, minimum=1), f.string(section, "distribution", p, DISTRIBUTIONS))
        return cls(kind, architecture, sample_rate, segment, latent)

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "architecture": self.architecture, "sample_rate": self.sample_rate, "segment": self.segment}
        if self.latent is not None:
            out["latent"] = self.latent.to_json()
        return out


@dataclass(frozen=True)
class NormFiles:
    """`spectral.norm`: the per-bin statistics' side files and the clip they were applied with."""

    mean: str  # relative path of a little-endian float32 (bins,) .npy
    std: str
    clip: float

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "clip": self.clip}


@dataclass(frozen=True)
class PhaseReconstruction:
    """`spectral.reconstruction` (version 4): a spectral bundle without a reconstruction network, whose host
    rebuilds each generated spectrogram's audio by `method`: fast Griffin-Lim, `iterations` per segment, or PGHI."""

    method: str  # a RECONSTRUCTION_METHODS value
    iterations: int | None = None  # griffin-lim only
    # griffin-lim only: where the phase starts (core/phase.py INITIAL_PHASES). Optional and version-free: absent
    # is "random", what version-4 hosts did; a host that does not know it starts from random and plays the
    # bundle a little less faithfully, never wrongly.
    initial_phase: str = RANDOM

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "spectral.reconstruction") -> PhaseReconstruction:
        f = _section(data, file, path, "an object with method (and iterations for griffin-lim)")
        method = f.string(data, "method", path, RECONSTRUCTION_METHODS)
        if method == GRIFFIN_LIM:
            initial = f.string(data, "initial_phase", path, INITIAL_PHASES) if data.get("initial_phase") is not None else RANDOM
            return cls(method, f.integer(data, "iterations", path, minimum=1), initial)
        return cls(method)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == GRIFFIN_LIM:
            out["iterations"] = self.iterations
            if self.initial_phase != RANDOM:  # bundles from before the field write the bytes they wrote
                out["initial_phase"] = self.initial_phase
        return out

    def describe(self) -> str:
        """The method in words: `griffin-lim, 32 iterations` (`... from the locked phase`) or `pghi`."""
        if self.method != GRIFFIN_LIM:
            return self.method
        return f"{self.method}, {self.iterations} iterations" + (" from the locked phase" if self.initial_phase == LOCKED else "")


@dataclass(frozen=True)
class Spectral:
    """`spectral`: the front end of a spectral or reconstruction bundle."""

    params: SpectralParams
    bins: int  # frequency rows of a spectrogram (what `params` make)
    frames: int  # spectrogram columns per generated segment
    norm: NormFiles
    reconstruction: PhaseReconstruction | None = None  # None: the bundle's `reconstruction` graph (version 4 optional key)

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "spectral") -> Spectral:
        f = _section(data, file, path)
        raw = f.section(data, "params", path)
        try:
            params = SpectralParams.from_dict(raw, f"{path}.params")
        except (TypeError, ValueError, KeyError) as e:
            f.fail(f"{path}.params", f"are not valid spectral parameters: {one_line(str(e))}")
        bins = f.integer(data, "bins", path, minimum=1)
        if bins != params.bins:
            f.fail(f"{path}.bins", f"is {bins} but `{path}.params` make {params.bins} bins")
        frames = f.integer(data, "frames", path, minimum=1)
        norm = f.section(data, "norm", path)
        p = f"{path}.norm"
        clip = f.number(norm, "clip", p, positive=True)
        raw = data.get("reconstruction")  # optional: absent (or null) in a bundle with a reconstruction network
        reconstruction = None if raw is None else PhaseReconstruction.from_json(raw, file, f"{path}.reconstruction")
        return cls(params, bins, frames, NormFiles(f.relative(norm, "mean", p), f.relative(norm, "std", p), clip), reconstruction)

    def to_json(self) -> dict[str, Any]:
        out = {"params": self.params.to_dict(), "bins": self.bins, "frames": self.frames, "norm": self.norm.to_json()}
        if self.reconstruction is not None:
            out["reconstruction"] = self.reconstruction.to_json()
        return out


@dataclass(frozen=True)
class ControlItem:
    """A named latent direction: a knob at value v adds v * scale * controls[row] to the latent.

    Principal items carry explained_variance; descriptor items carry descriptor and r2."""

    name: str
    kind: str  # "principal" or "descriptor"
    row: int
    scale: float
    explained_variance: float | None = None
    descriptor: str | None = None  # a DESCRIPTORS entry
    r2: float | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """The kind's own fields: explained_variance, or descriptor and r2."""
        return {k: v for k, v in self.to_json().items() if k not in ("name", "kind", "row", "scale")}

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "controls.items[0]") -> ControlItem:
        f = _section(data, file, path)
        name = f.string(data, "name", path)
        kind = f.string(data, "kind", path, CONTROL_KINDS)
        row = f.integer(data, "row", path, minimum=0)
        scale = f.number(data, "scale", path, positive=True)
        if kind == "principal":
            return cls(name, kind, row, scale, explained_variance=f.number(data, "explained_variance", path, minimum=0.0))
        return cls(name, kind, row, scale, descriptor=f.string(data, "descriptor", path, DESCRIPTORS), r2=f.number(data, "r2", path))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "row": self.row, "scale": self.scale}
        if self.kind == "principal":
            out["explained_variance"] = self.explained_variance
        else:
            out["descriptor"] = self.descriptor
            out["r2"] = self.r2
        return out


@dataclass(frozen=True)
class Controls:
    """`controls`: a float32 (n, D) .npy of latent directions and the named items pointing at its rows."""

    file: str
    items: tuple[ControlItem, ...]

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "controls") -> Controls:
        f = _section(data, file, path, "an object or null")
        rel = f.relative(data, "file", path)
        raw = f.get(data, "items", path)
        if not isinstance(raw, list):
            f.fail(f"{path}.items", f"must be a list, got {json_brief(raw)}")
        items, seen = [], set()
        for i, it in enumerate(raw):
            item = ControlItem.from_json(it, file, f"{path}.items[{i}]")
            if item.name in seen:
                f.fail(f"{path}.items[{i}].name", f"repeats the control name {item.name!r}; names must be unique")
            seen.add(item.name)
            items.append(item)
        return cls(rel, tuple(items))

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "items": [item.to_json() for item in self.items]}


@dataclass(frozen=True)
class StreamingSettings:
    """`streaming`: the recommended streaming settings for hosts."""

    mode: str  # a STREAMING_MODES value: "crossfade", "texture" or "trigger"
    crossfade: int  # samples of the equal-power crossfade between segments
    texture_overlap: int  # segments overlapping at each instant in texture mode
    latent_smoothing_s: float
    walk_rate: float  # Hz
    walk_depth: float  # latent units
    root_note: float | None = None  # MIDI note the segments sound at (optional in every version); None: unknown
    kit: str | None = None  # a kit file in the bundle (realtime/kit.py), trigger mode's default pads; optional in every version

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "streaming", *, segment: int) -> StreamingSettings:
        """segment: model.segment, which bounds the crossfade and which the overlap must divide."""
        f = _section(data, file, path)
        mode = f.string(data, "mode", path, STREAMING_MODES)
        crossfade = f.integer(data, "crossfade", path, minimum=0)
        if crossfade > segment // 2:
            f.fail(f"{path}.crossfade", f"is {crossfade}, more than half the segment ({segment} samples)")
        overlap = f.integer(data, "texture_overlap", path, minimum=1)
        if segment % overlap:
            f.fail(f"{path}.texture_overlap", f"is {overlap}, which does not divide the segment ({segment} samples)")
        root = None
        if data.get("root_note") is not None:  # optional: absent (or null) where export found no clear pitch
            low, high = ROOT_NOTE_RANGE
            root = f.number(data, "root_note", path)
            if not low <= root <= high:
                f.fail(f"{path}.root_note", f"must be a MIDI note within [{low:g}, {high:g}], got {root:g}")
        return cls(
            mode=mode,
            crossfade=crossfade,
            texture_overlap=overlap,
            latent_smoothing_s=f.number(data, "latent_smoothing_s", path, minimum=0.0),
            walk_rate=f.number(data, "walk_rate", path, minimum=0.0),
            walk_depth=f.number(data, "walk_depth", path, minimum=0.0),
            root_note=root,
            kit=f.relative(data, "kit", path) if data.get("kit") is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        out = {
            "mode": self.mode,
            "crossfade": self.crossfade,
            "texture_overlap": self.texture_overlap,
            "latent_smoothing_s": self.latent_smoothing_s,
            "walk_rate": self.walk_rate,
            "walk_depth": self.walk_depth,
        }
        if self.root_note is not None:
            out["root_note"] = self.root_note
        if self.kit is not None:
            out["kit"] = self.kit
        return out


@dataclass(frozen=True)
class Condition:
    """`condition`: what the generator's second input, "condition" (batch, columns), asks for.

    Column 0 is a MIDI pitch, column 1 (pitch+velocity) a velocity in [0, 1]. `pitch_range` is the
    lowest and highest pitch the training labels held: hosts fold other notes into it by octaves (or
    refuse them). `histogram` counts the training segments per pitch, `labels` says where they came from."""

    kind: str  # a CONDITION_KINDS key
    pitch_range: tuple[int, int]
    histogram: dict[str, int]  # MIDI pitch (as a string, a JSON key) -> training segments
    labels: str = ""

    @property
    def columns(self) -> int:
        return CONDITION_KINDS[self.kind]

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "condition") -> Condition:
        f = _section(data, file, path)
        kind = f.string(data, "kind", path, tuple(CONDITION_KINDS))
        span = f.get(data, "pitch_range", path)
        if not (isinstance(span, list) and len(span) == 2 and all(_is_int(v) and 0 <= v <= 127 for v in span) and span[0] <= span[1]):
            f.fail(f"{path}.pitch_range", f"must be [lowest, highest], MIDI notes 0..127, lowest first, got {json_brief(span)}")
        hist = f.get(data, "histogram", path)
        if not isinstance(hist, dict) or not all(
            isinstance(k, str) and k.isdigit() and span[0] <= int(k) <= span[1] and _is_int(v) and v >= 0 for k, v in hist.items()
        ):
            f.fail(f"{path}.histogram", f"must map MIDI pitches within pitch_range (as strings) to counts, got {json_brief(hist)}")
        labels = data.get("labels", "")
        if not isinstance(labels, str):
            f.fail(f"{path}.labels", f"must be a string, got {json_brief(labels)}")
        return cls(kind, (span[0], span[1]), dict(hist), labels)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "pitch_range": list(self.pitch_range), "histogram": self.histogram, "labels": self.labels}


@dataclass(frozen=True)
class FileEntry:
    """`files.<path>`: a bundle file's sha256 (lower-case hex) and size in bytes."""

    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        """The entry of a file on disk."""
        return cls(sha256_file(path), Path(path).stat().st_size)

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, path: str = "files") -> FileEntry:
        f = _section(data, file, path, "an object with sha256 and bytes")
        digest = f.string(data, "sha256", path)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            f.fail(f"{path}.sha256", f"must be 64 lower-case hex digits, got {json_brief(digest)}")
        return cls(digest, f.integer(data, "bytes", path, minimum=0))

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


# ---------------------------------------------------------------------------------------------
# The whole manifest


@dataclass(frozen=True)
class Manifest:
    """manifest.json. `provenance` stays a plain object: it is informational, and a loader only
    requires it to be one (docs/bundle.md), so its keys are neither typed nor checked."""

    format_version: int
    name: str
    model: Model
    graphs: dict[str, Graph]  # role -> graph, in the file's order
    spectral: Spectral | None  # None for waveform bundles
    controls: Controls | None
    streaming: StreamingSettings | None  # None for reconstruction bundles
    files: dict[str, FileEntry]  # every file but manifest.json
    provenance: dict[str, Any]
    condition: Condition | None = None  # a conditioned generator's (format version 5)
    encoder: Graph | None = None  # audio -> latent (and condition), any version
    refiner: Refinement | None = None  # a correction of the encoder's latent, any version; only with `encoder`

    @property
    def kind(self) -> str:
        return self.model.kind

    @classmethod
    def from_json(cls, data: Any, file: str = MANIFEST, kinds: tuple[str, ...] = KINDS) -> Manifest:
        """A parsed JSON manifest, checked field by field and against itself; raises BundleError.

        file: how errors name the manifest. kinds: the model kinds the caller can use; another
        is refused right after format and version, saying why (UNUSABLE)."""
        f = _Fields(file)
        if not isinstance(data, dict):
            raise BundleError(file, f"must hold a JSON object, got {type(data).__name__}")
        # Format and version first: a newer manifest may be shaped differently.
        version = _format_version(data, f)
        name = f.string(data, "name")
        model = Model.from_json(f.get(data, "model"), file)
        if version < FIRST_VERSION[model.kind]:
            f.fail(
                "model.kind",
                f"is {json_brief(model.kind)}, which format version {version} does not have (it came with version {FIRST_VERSION[model.kind]})",
            )
        if model.kind not in kinds:
            f.fail("model.kind", f"is {json_brief(model.kind)}: {UNUSABLE.get(model.kind, 'this reader does not take it')}")
        if model.kind == "waveform" and f.get(data, "spectral") is not None:
            f.fail("spectral", f"must be null in a waveform bundle, got {json_brief(data['spectral'])}")

        files = _files(data, f)
        spectral = None
        if model.kind != "waveform":
            spectral = Spectral.from_json(f.get(data, "spectral"), file)
            if spectral.params.sample_rate != model.sample_rate:
                f.fail("spectral.params.sample_rate", f"is {spectral.params.sample_rate} but `model.sample_rate` is {model.sample_rate}")
            for key in ("mean", "std"):
                _listed(getattr(spectral.norm, key), files, f, f"spectral.norm.{key}", " (so its sha256 cannot be checked)")
            _check_phase_reconstruction(spectral, model, version, f)
        graphs = _graphs(data, f, model.kind, files, spectral.reconstruction if spectral is not None else None)
        condition = None
        if data.get("condition") is not None:
            if version < CONDITION_VERSION:
                f.fail("condition", f"is set, which format version {version} does not have: a conditioned generator needs format version {CONDITION_VERSION}")
            if model.kind == "reconstruction":
                f.fail("condition", "must be null in a reconstruction bundle (it has no generator)")
            condition = Condition.from_json(data["condition"], file)
        _check_signatures(graphs, model, spectral, f, condition)

        if model.kind == "reconstruction":
            for key in ("controls", "streaming"):
                if f.get(data, key) is not None:
                    f.fail(key, f"must be null in a reconstruction bundle, got {json_brief(data[key])}")
            controls, streaming = None, None
        else:
            raw = f.section(data, "controls", nullable=True)
            controls = None if raw is None else Controls.from_json(raw, file)
            if controls is not None:
                _listed(controls.file, files, f, "controls.file")
            streaming = StreamingSettings.from_json(f.get(data, "streaming"), file, segment=model.segment)
            if streaming.kit is not None:
                _listed(streaming.kit, files, f, "streaming.kit")
            if condition is not None and streaming.root_note is not None:
                f.fail("streaming.root_note", "must be absent in a pitch-conditioned bundle: it plays each note's pitch, "
                                              "it does not transpose from a root")
            needs = MODE_FIRST_VERSION[streaming.mode]
            if version < needs:
                mode = streaming.mode
                f.fail("streaming.mode", f"is {json_brief(mode)}, which format version {version} does not have: {mode} needs format version {needs}")
        encoder = None
        if data.get("encoder") is not None:
            if model.kind == "reconstruction":
                f.fail("encoder", "must be null in a reconstruction bundle (it has no generator to invert)")
            encoder = Graph.from_json(data["encoder"], file, "encoder")
            _listed(encoder.file, files, f, "encoder.file", " (so its sha256 cannot be checked)")
            _check_encoder(encoder, model, f, condition)
            if encoder_version(encoder) > version:
                f.fail("format_version", f"is {version}, but the encoder's {ENCODER_PROPOSALS!r} output needs format version {PROPOSALS_VERSION}")
        refiner = None
        if data.get("refiner") is not None:
            if encoder is None:
                f.fail("refiner", "is a correction of the encoder's latent, but the manifest has no `encoder`")
            refiner = Refinement.from_json(data["refiner"], file)
            _listed(refiner.graph.file, files, f, "refiner.graph.file", " (so its sha256 cannot be checked)")
            _check_refiner(refiner.graph, model, f)
        provenance = f.section(data, "provenance")
        return cls(version, name, model, graphs, spectral, controls, streaming, files, provenance, condition, encoder, refiner)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "name": self.name,
            "model": self.model.to_json(),
            "graphs": {role: graph.to_json() for role, graph in self.graphs.items()},
            "spectral": None if self.spectral is None else self.spectral.to_json(),
            "controls": None if self.controls is None else self.controls.to_json(),
            "streaming": None if self.streaming is None else self.streaming.to_json(),
            "files": {rel: entry.to_json() for rel, entry in self.files.items()},
            "provenance": self.provenance,
            # Only where there is one: bundles of versions 1 to 4 write the bytes they wrote before it existed.
            **({"condition": self.condition.to_json()} if self.condition is not None else {}),
            **({"encoder": self.encoder.to_json()} if self.encoder is not None else {}),
            **({"refiner": self.refiner.to_json()} if self.refiner is not None else {}),
        }

    def dumps(self) -> str:
        """manifest.json's text, as the writer writes it."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path, label: str | None = None, kinds: tuple[str, ...] = KINDS) -> Manifest:
        """Reads and checks a manifest.json file; label: how errors name it (default: its path)."""
        label = label or str(path)
        return cls.from_json(read_json(path, label), label, kinds)


def read_json(path: Path, label: str) -> Any:
    """A manifest file's JSON, refusing what json.loads lets by: non-UTF-8 text, duplicate keys, NaN and Infinity."""

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
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(label, f"is not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise BundleError(label, f"is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except ValueError as e:
        raise BundleError(label, f"is not valid JSON: {e}") from None


def _format_version(manifest: dict, f: _Fields) -> int:
    fmt = f.get(manifest, "format")
    if fmt != FORMAT:
        f.fail("format", f"must be {json_brief(FORMAT)}, got {json_brief(fmt)}: this is not a ganstream bundle manifest")
    version = f.get(manifest, "format_version")
    if not _is_int(version) or version not in VERSIONS:
        supported = ", ".join(map(str, VERSIONS))
        hint = ": upgrade ganstream to play this bundle" if _is_int(version) and version > max(VERSIONS) else ""
        f.fail("format_version", f"is {json_brief(version)}, but ganstream {_version()} reads format version {supported} only{hint}")
    return version


def _files(manifest: dict, f: _Fields) -> dict[str, FileEntry]:
    files = f.section(manifest, "files")
    out = {}
    for rel, entry in files.items():
        path = f"files.{rel}"
        _relative(rel, f, path)
        if rel == MANIFEST:
            f.fail(path, "must not be listed: `files` lists every file except manifest.json")
        out[rel] = FileEntry.from_json(entry, f.label, path)
    return out


def _check_phase_reconstruction(spectral: Spectral, model: Model, version: int, f: _Fields) -> None:
    """`spectral.reconstruction` against the version, the kind and the segment (docs/bundle.md, Checks (version 4))."""
    phase = spectral.reconstruction
    if phase is None:
        return
    path = "spectral.reconstruction"
    if model.kind != "spectral":
        f.fail(path, f"must be absent in a {model.kind} bundle: only a spectral bundle without a reconstruction network has one")
    needs = RECONSTRUCTION_FIRST_VERSION[phase.method]
    if version < needs:
        f.fail(f"{path}.method", f"is {json_brief(phase.method)}, which format version {version} does not have: "
               f"a spectral bundle without a reconstruction network needs format version {needs}")
    samples = spectral.params.samples(spectral.frames)
    if model.segment != samples:
        f.fail("model.segment", f"is {model.segment} but {phase.method} rebuilds `spectral.frames` ({spectral.frames}) "
               f"frames of `spectral.params.hop` ({spectral.params.hop}) into {samples} samples")


def _graphs(manifest: dict, f: _Fields, kind: str, files: dict[str, FileEntry], phase: PhaseReconstruction | None = None) -> dict[str, Graph]:
    """`graphs`, their roles checked against the kind; `phase`: the bundle's `spectral.reconstruction`, with
    which a spectral bundle has its generator alone."""
    section = f.section(manifest, "graphs")
    allowed, required = ROLES[kind] if phase is None else FALLBACK_ROLES
    for role in required:
        f.section(section, role, "graphs")
    extra = [role for role in section if role not in allowed]
    if extra:
        only = ", ".join(f"`{role}`" for role in allowed)
        what = f"a {kind} bundle" if phase is None else f"a spectral bundle that rebuilds its audio by {phase.method} (`spectral.reconstruction`)"
        f.fail(f"graphs.{extra[0]}", f"is not a graph role of {what} (only {only})")
    graphs = {}
    for role, entry in section.items():
        graphs[role] = Graph.from_json(entry, f.label, f"graphs.{role}")
        _listed(graphs[role].file, files, f, f"graphs.{role}.file", " (so its sha256 cannot be checked)")
    return graphs


def _listed(rel: str, files: Mapping[str, FileEntry], f: _Fields, path: str, why: str = "") -> None:
    if rel not in files:
        f.fail(path, f"names {rel!r}, which is not listed in `files`{why}")


def _check_signatures(graphs: dict[str, Graph], model: Model, spectral: Spectral | None, f: _Fields, condition: Condition | None = None) -> None:
    """Each graph's declared signature against the model, the front end and the condition (docs/bundle.md, Checks)."""
    for role in ("generator", "fused"):
        if role in graphs:
            _condition_input(graphs[role], role, f, condition)
    if spectral is not None:
        frames = [BATCH, spectral.bins, spectral.frames]
        what = "the spectrogram, `spectral.bins` by `spectral.frames`"
        if "generator" in graphs:
            _one_tensor(graphs["generator"], "generator", f, "inputs", [BATCH, model.latent.size], "the latent, of `model.latent.size`", condition)
            _one_tensor(graphs["generator"], "generator", f, "outputs", frames, what)
        if "reconstruction" in graphs:  # absent where `spectral.reconstruction` rebuilds the audio (_check_phase_reconstruction)
            _one_tensor(graphs["reconstruction"], "reconstruction", f, "inputs", frames, what)
            _one_tensor(graphs["reconstruction"], "reconstruction", f, "outputs", [BATCH, model.segment], "the audio, of `model.segment` samples")
    for role in ("fused",) if spectral is not None else ("generator",):
        if role in graphs:
            _latent_to_audio(graphs[role], role, f, model, condition)


def encoder_version(encoder: Graph) -> int:
    """The lowest format version that describes `encoder`: PROPOSALS_VERSION where it proposes several latents."""
    return PROPOSALS_VERSION if encoder.outputs and encoder.outputs[-1].name == ENCODER_PROPOSALS else WAVEFORM_VERSION


def _check_encoder(enc: Graph, model: Model, f: _Fields, condition: Condition | None) -> None:
    """`encoder`: one input, "audio" (batch, segment); outputs "latent" (batch, D), and "condition" (batch, C)
    exactly when the bundle is conditioned, then optionally "proposals" (batch, M, D) with M >= 2."""
    if len(enc.inputs) != 1 or enc.inputs[0].name != ENCODER_INPUT:
        f.fail("encoder.inputs", f"must list one input, {ENCODER_INPUT!r}, got {json_brief([s.name for s in enc.inputs])}")
    if list(enc.inputs[0].shape) != [BATCH, model.segment]:
        f.fail("encoder.inputs[0].shape", f"is {json_brief(list(enc.inputs[0].shape))} but must be {json_brief([BATCH, model.segment])}: "
                                          "a segment of audio, of `model.segment` samples")
    want = ENCODER_OUTPUTS[: 2 if condition is not None else 1]
    if encoder_version(enc) == PROPOSALS_VERSION:
        want += (ENCODER_PROPOSALS,)
        shape = list(enc.outputs[-1].shape)
        if len(shape) != 3 or shape[0] != BATCH or not _is_int(shape[1]) or shape[1] < 2 or shape[2] != model.latent.size:
            f.fail(f"encoder.outputs[{len(want) - 1}].shape", f"is {json_brief(shape)} but must be {json_brief([BATCH, 'M', model.latent.size])}, "
                                                           "M a whole number of 2 or more: the latents the encoder proposes")
    if tuple(s.name for s in enc.outputs) != want:
        why = " (the manifest has a `condition`)" if condition is not None else ""
        f.fail("encoder.outputs", f"must list {json_brief(list(want))}{why}, got {json_brief([s.name for s in enc.outputs])}")
    shapes = [[BATCH, model.latent.size]] + ([[BATCH, condition.columns]] if condition is not None else [])
    for i, (spec, shape) in enumerate(zip(enc.outputs, shapes)):
        if list(spec.shape) != shape:
            f.fail(f"encoder.outputs[{i}].shape", f"is {json_brief(list(spec.shape))} but must be {json_brief(shape)}")


def _check_refiner(ref: Graph, model: Model, f: _Fields) -> None:
    """`refiner.graph`: inputs "audio" and "heard" (batch, segment) and "latent" (batch, D); outputs "corrected"
    (batch, D) and "distance" (batch,). A conditioned bundle's condition does not pass through it."""
    audio, latent = [BATCH, model.segment], [BATCH, model.latent.size]
    for side, specs, want in (("inputs", ref.inputs, (audio, audio, latent)), ("outputs", ref.outputs, (latent, [BATCH]))):
        names = REFINER_INPUTS if side == "inputs" else REFINER_OUTPUTS
        if tuple(s.name for s in specs) != names:
            f.fail(f"refiner.graph.{side}", f"must list {json_brief(list(names))}, got {json_brief([s.name for s in specs])}")
        for i, (spec, shape) in enumerate(zip(specs, want)):
            if list(spec.shape) != shape:
                f.fail(f"refiner.graph.{side}[{i}].shape", f"is {json_brief(list(spec.shape))} but must be {json_brief(shape)}")


def _condition_input(gen: Graph, role: str, f: _Fields, condition: Condition | None) -> None:
    """A conditioned generator's second input is "condition" (batch, columns); an unconditioned one has none."""
    p = f"graphs.{role}.inputs"
    if condition is None:
        if len(gen.inputs) > 1 and any(s.name == CONDITION_INPUT for s in gen.inputs):
            f.fail(p, f"has a {CONDITION_INPUT!r} input but the manifest has no `condition` section")
        return
    if len(gen.inputs) != 2 or gen.inputs[1].name != CONDITION_INPUT:
        f.fail(p, f"must list two inputs, the latent then {CONDITION_INPUT!r} (the manifest has a `condition`), got "
                  f"{json_brief([s.name for s in gen.inputs])}")
    want = [BATCH, condition.columns]
    if list(gen.inputs[1].shape) != want:
        f.fail(f"{p}[1].shape", f"is {json_brief(list(gen.inputs[1].shape))} but must be {json_brief(want)}: "
                                f"`condition.kind` {json_brief(condition.kind)} has {condition.columns} column(s)")


def _latent_to_audio(gen: Graph, role: str, f: _Fields, model: Model, condition: Condition | None = None) -> None:
    p = f"graphs.{role}"
    if len(gen.inputs) != (2 if condition is not None else 1):
        what = "two inputs (the latent, then the condition)" if condition is not None else "exactly one input (the latent)"
        f.fail(f"{p}.inputs", f"must list {what}, got {len(gen.inputs)}")
    if len(gen.outputs) != 1:
        f.fail(f"{p}.outputs", f"must list exactly one output (the audio), got {len(gen.outputs)}")
    z, audio = gen.inputs[0].shape, gen.outputs[0].shape
    if len(z) != 2 or z[0] != BATCH or not _is_int(z[1]):
        f.fail(f"{p}.inputs[0].shape", f'must be ["batch", D], got {json_brief(list(z))}')
    if z[1] != model.latent.size:
        f.fail(
            f"{p}.inputs[0].shape",
            f"is {json_brief(list(z))} but `model.latent.size` is {model.latent.size}: the latent sizes must agree",
        )
    if len(audio) != 2 or audio[0] != BATCH or not _is_int(audio[1]):
        f.fail(f"{p}.outputs[0].shape", f'must be ["batch", segment], got {json_brief(list(audio))}')
    if audio[1] != model.segment:
        f.fail(
            f"{p}.outputs[0].shape",
            f"is {json_brief(list(audio))} but `model.segment` is {model.segment}: the generator's output length must be the segment",
        )


def _one_tensor(graph: Graph, role: str, f: _Fields, side: str, want: list, what: str, condition: Condition | None = None) -> None:
    """The graph's one input or output (a conditioned generator's second input is checked by `_condition_input`)."""
    specs = graph.inputs if side == "inputs" else graph.outputs
    p = f"graphs.{role}.{side}"
    if condition is not None and side == "inputs":
        specs = specs[:1]
    if len(specs) != 1:
        f.fail(p, f"must list exactly one {side[:-1]} ({what}), got {len(specs)}")
    if list(specs[0].shape) != want:
        f.fail(f"{p}[0].shape", f"is {json_brief(list(specs[0].shape))} but must be {json_brief(want)}: {what}")


# ---------------------------------------------------------------------------------------------
# Typed reads


def _section(data: Any, file: str, path: str, what: str = "an object") -> _Fields:
    """The typed reader of a section, once the section is known to be a JSON object."""
    f = _Fields(file)
    if not isinstance(data, dict):
        f.fail(path, f"must be {what}, got {json_brief(data)}")
    return f


class _Fields:
    """Typed reads from a parsed manifest; each failure names the file and the JSON path."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, path: str, problem: str) -> NoReturn:
        raise BundleError(self.label, f"`{path}` {problem}", path)

    def get(self, obj: Mapping, key: str, prefix: str = "") -> Any:
        path = _join(prefix, key)
        if key not in obj:
            raise BundleError(self.label, f"missing required field `{path}`", path)
        return obj[key]

    def section(self, obj: Mapping, key: str, prefix: str = "", nullable: bool = False) -> dict | None:
        value = self.get(obj, key, prefix)
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            self.fail(_join(prefix, key), f"must be an object{' or null' if nullable else ''}, got {json_brief(value)}")
        return value

    def string(self, obj: Mapping, key: str, prefix: str = "", choices: tuple[str, ...] | None = None) -> str:
        value = self.get(obj, key, prefix)
        if not isinstance(value, str) or not value:
            self.fail(_join(prefix, key), f"must be a non-empty string, got {json_brief(value)}")
        if choices is not None and value not in choices:
            self.fail(_join(prefix, key), f"must be one of {', '.join(map(json_brief, choices))}, got {json_brief(value)}")
        return value

    def relative(self, obj: Mapping, key: str, prefix: str = "") -> str:
        """A path inside the bundle."""
        value = self.string(obj, key, prefix)
        _relative(value, self, _join(prefix, key))
        return value

    def integer(self, obj: Mapping, key: str, prefix: str = "", minimum: int | None = None) -> int:
        value = self.get(obj, key, prefix)
        if not _is_int(value):
            self.fail(_join(prefix, key), f"must be an integer, got {json_brief(value)}")
        if minimum is not None and value < minimum:
            self.fail(_join(prefix, key), f"must be >= {minimum}, got {value}")
        return value

    def number(self, obj: Mapping, key: str, prefix: str = "", minimum: float = -math.inf, positive: bool = False) -> float:
        value = self.get(obj, key, prefix)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(_join(prefix, key), f"must be a finite number, got {json_brief(value)}")
        if positive and value <= 0:
            self.fail(_join(prefix, key), f"must be > 0, got {value}")
        if value < minimum:
            self.fail(_join(prefix, key), f"must be >= {minimum}, got {value}")
        return float(value)


def _relative(rel: str, f: _Fields, path: str) -> None:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or ":" in rel:
        f.fail(path, f"must be a relative path inside the bundle (forward slashes, no ..), got {json_brief(rel)}")


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


def json_brief(value: Any) -> str:
    """A JSON value for an error message, cut at 80 characters."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def one_line(text: str) -> str:
    """The first non-blank line of a (library's) message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
