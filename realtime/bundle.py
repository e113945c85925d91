"""Load and check a ganstream bundle (docs/bundle.md, format versions 1 to 4).

`load_bundle(path)` reads a bundle directory or `.zip`, checks it against the
contract and returns a `Bundle`: a waveform or a spectral generator to play.
`path` may also be the name of a bundle shipped with the package (`piano`), and
None means the default one: `resolve_bundle` says what an argument names, for
every command that takes a bundle.
`load_reconstruction(path)` reads the reconstruction network of a spectral
bundle, or of a reconstruction bundle (a vocoder exported alone); a spectral bundle without a network
(`spectral.reconstruction`, format version 4) has none to give. Every problem raises one `BundleError` naming
the file and, where there is one, the manifest field: a host either plays what
the exporter made or says exactly why it will not.

The manifest's fields and the rules between them live in `ganstream.core.manifest`
(`Manifest.from_json`); this module adds what needs the files and ONNX Runtime: every
listed file's size and sha256, the .npy side files' contents, and each graph's real
signature against the manifest's.

Only numpy, onnxruntime and the standard library: this module is part of the
live engine and must load on a machine without torch or onnx.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import numpy as np
import onnxruntime as ort

from ganstream.core.manifest import (
    BATCH,
    FORMAT,
    MANIFEST,
    ORT_DTYPES,
    BundleError,
    ControlItem,
    Graph,
    Manifest,
    PhaseReconstruction,
    StreamingSettings,
    TensorSpec,
    json_brief,
    one_line,
    read_json,
    sha256_file,
)
from ganstream.core.spectral import BinNorm, SpectralParams

# The reader's public names; the schema's classes are re-exported from ganstream.core.manifest.
__all__ = [
    "BATCH", "DEFAULT_NAME", "FORMAT", "MANIFEST", "SHIPPED_BUNDLES", "Bundle", "BundleError", "ControlItem",
    "GraphSpec", "Manifest", "Reconstruction", "SpectralSpec", "StreamingSettings", "TensorSpec", "UnknownControlError",
    "load_bundle", "load_reconstruction", "ort_reason", "resolve_bundle", "shipped_bundles",
]

SHIPPED_BUNDLES = Path(__file__).parent / "bundles"  # one folder per bundle shipped with the package, named by it
DEFAULT_NAME = "piano"  # the shipped bundle that play, render and bench use when none is named
PLAYABLE = ("waveform", "spectral")  # what load_bundle accepts
RECONSTRUCTING = ("spectral", "reconstruction")  # what load_reconstruction accepts


class UnknownControlError(BundleError, KeyError):
    """`Bundle.control(name)` for a name the bundle does not have; both a BundleError and a KeyError."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class GraphSpec:
    """One graph of a loaded bundle: the manifest's entry, where its file is, and how errors name it."""

    role: str
    file: Path  # absolute path of the ONNX file
    entry: Graph  # graphs.<role> as the manifest declares it
    label: str  # how errors name the file
    where: str = ""  # the manifest's field that declares it: graphs.<role>, "encoder" or "refiner.graph"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.entry.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.entry.outputs

    @property
    def precision(self) -> str:
        return self.entry.precision

    @property
    def opset(self) -> int:
        return self.entry.opset

    @property
    def parity_max_abs_error(self) -> float:
        return self.entry.parity_max_abs_error

    def check_session(self, session: ort.InferenceSession) -> None:
        """Raise BundleError unless the loaded graph's inputs and outputs match the manifest."""
        for side, declared, actual in (
            ("inputs", self.inputs, session.get_inputs()),
            ("outputs", self.outputs, session.get_outputs()),
        ):
            where = f"{self.where or f'graphs.{self.role}'}.{side}"
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
                        f"in `{path}.shape` {json_brief(list(spec.shape))}",
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
class SpectralSpec:
    """A spectral bundle's front end (docs/bundle.md, `spectral`) with its statistics read from their files."""

    params: SpectralParams
    bins: int  # frequency rows of a spectrogram
    frames: int  # spectrogram columns per generated segment
    norm: BinNorm  # per-bin statistics the spectrograms are normalised with
    reconstruction: PhaseReconstruction | None = None  # how the host rebuilds audio when the bundle has no network


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """A reconstruction network from a bundle: spectrogram (B, bins, frames) -> audio (B, samples)."""

    source: Path
    graph: GraphSpec
    spectral: SpectralSpec
    manifest: dict[str, Any]  # as read from manifest.json
    spec: Manifest  # the same, parsed and checked

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def sample_rate(self) -> int:
        return self.spec.model.sample_rate


@dataclass(frozen=True, eq=False, repr=False)
class Bundle:
    """A loaded, checked bundle. `manifest` is the file's JSON (a plain dict, so json.dumps works;
    treat it as read-only); `spec` is the same parsed (`ganstream.core.manifest.Manifest`)."""

    path: Path  # the directory the files are read from (for a .zip, its extraction in the cache)
    source: Path  # what was loaded: the directory or the .zip
    manifest: dict[str, Any]
    spec: Manifest
    graphs: dict[str, GraphSpec]
    controls: np.ndarray | None  # (n, D) float32, read-only
    spectral: SpectralSpec | None = None  # spectral bundles only
    encoder: GraphSpec | None = None  # audio -> latent (manifest `encoder`), where the bundle has one
    refiner: GraphSpec | None = None  # one correction of the encoder's latent (manifest `refiner.graph`), where it has one

    def __repr__(self) -> str:
        return (
            f"Bundle({self.name!r}, {self.kind}, {self.sample_rate} Hz, segment={self.segment}, "
            f"latent={self.latent_size} {self.latent_distribution}, controls={len(self.control_items)}, path={str(self.path)!r})"
        )

    # The manifest's values under the names hosts use.
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.model.kind

    @property
    def architecture(self) -> str:
        return self.spec.model.architecture

    @property
    def sample_rate(self) -> int:
        return self.spec.model.sample_rate

    @property
    def segment(self) -> int:
        return self.spec.model.segment

    @property
    def latent_size(self) -> int:
        return self.spec.model.latent.size

    @property
    def latent_distribution(self) -> str:
        return self.spec.model.latent.distribution

    @property
    def control_items(self) -> tuple[ControlItem, ...]:
        return () if self.spec.controls is None else self.spec.controls.items

    @property
    def streaming(self) -> StreamingSettings:
        return self.spec.streaming

    @property
    def provenance(self) -> dict[str, Any]:
        return self.spec.provenance

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

    def random_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, D [+ C]) float32: `random_latents`, and for a pitch-conditioned bundle its condition columns:
        pitches drawn as often as its training held them (`condition.histogram`), velocities uniform in
        [0.25, 1] (the manifest keeps no velocity histogram)."""
        z = self.random_latents(n, rng)
        condition = self.spec.condition
        if condition is None:
            return z
        pitches = np.array([int(p) for p in condition.histogram], dtype=np.float32)
        counts = np.array(list(condition.histogram.values()), dtype=np.float64)
        cond = rng.choice(pitches, size=(int(n), 1), p=counts / counts.sum())
        if condition.columns > 1:
            cond = np.concatenate([cond, rng.uniform(0.25, 1.0, (int(n), 1))], axis=1)
        return np.concatenate([z, cond.astype(np.float32)], axis=1)


def shipped_bundles() -> tuple[str, ...]:
    """The names of the bundles shipped with the package, sorted: the folders of SHIPPED_BUNDLES with a manifest."""
    if not SHIPPED_BUNDLES.is_dir():
        return ()
    return tuple(sorted(d.name for d in SHIPPED_BUNDLES.iterdir() if (d / MANIFEST).is_file()))


def resolve_bundle(arg: str | os.PathLike | None) -> Path:
    """What a bundle argument names: an existing path (directory or .zip) first, else a shipped bundle's
    name (`ganstream play drums`); None: the default shipped bundle. Raises one BundleError otherwise,
    saying that the path does not exist and listing the shipped names."""
    names = shipped_bundles()
    shipped = f"the bundles shipped with ganstream: {', '.join(names)}" if names else "no bundles are shipped with this installation"
    if arg is None:
        if DEFAULT_NAME not in names:
            raise BundleError(
                str(SHIPPED_BUNDLES / DEFAULT_NAME),
                f"no bundle was named and the default bundle {DEFAULT_NAME!r} is not installed here ({shipped}); "
                "name one: a bundle directory or .zip made by `ganstream export`",
            )
        return SHIPPED_BUNDLES / DEFAULT_NAME
    path = Path(arg).expanduser()
    if path.exists():
        return path
    if str(arg) in names:
        return SHIPPED_BUNDLES / str(arg)
    raise BundleError(
        str(path),
        f"no such bundle: nothing at this path (a bundle is a directory or a .zip holding manifest.json), "
        f"and it is not the name of a shipped bundle ({shipped})",
    )


def load_bundle(
    path: str | os.PathLike | None = None, verify: bool = True, *, cache_dir: str | os.PathLike | None = None
) -> Bundle:
    """Load a bundle directory or .zip, or a shipped bundle by name (None: the default one); see `resolve_bundle`.

    verify=True also checks every file's sha256 and loads each ONNX graph on the CPU to
    compare its inputs and outputs with the manifest; verify=False skips those two (sizes
    and everything else are still checked) for a fast start on a bundle checked before.
    A .zip is extracted once into `cache_dir` (default: the user cache) under its sha256.
    """
    source, directory, raw, spec = _open(resolve_bundle(path), cache_dir, PLAYABLE)
    graphs = _check_files(source, directory, spec, verify)
    encoder = refiner = None
    if spec.encoder is not None:
        encoder = GraphSpec(role="encoder", file=directory / spec.encoder.file, entry=spec.encoder,
                            label=_label(source, spec.encoder.file), where="encoder")
        if verify:
            encoder.check_session(_open_for_check(encoder))
    if spec.refiner is not None:
        graph = spec.refiner.graph
        refiner = GraphSpec(role="refiner", file=directory / graph.file, entry=graph, label=_label(source, graph.file), where="refiner.graph")
        if verify:
            refiner.check_session(_open_for_check(refiner))
    controls = None
    if spec.controls is not None:
        controls = _controls(spec, source, directory)
    spectral = _spectral_norm(spec, source, directory) if spec.spectral is not None else None
    return Bundle(path=directory, source=source, manifest=raw, spec=spec, graphs=graphs, controls=controls, spectral=spectral, encoder=encoder, refiner=refiner)


def load_reconstruction(
    path: str | os.PathLike, verify: bool = True, *, cache_dir: str | os.PathLike | None = None
) -> Reconstruction:
    """The reconstruction network of a spectral or reconstruction bundle, checked like `load_bundle`."""
    source, directory, raw, spec = _open(path, cache_dir, RECONSTRUCTING)
    if spec.spectral.reconstruction is not None:
        field_ = "spectral.reconstruction"
        raise BundleError(
            _label(source, MANIFEST),
            f"`{field_}` says the bundle has no reconstruction network: its host rebuilds the audio by "
            f"{spec.spectral.reconstruction.describe()} (export the GAN with --vocoder for a bundle with one)",
            field_,
        )
    graph = _check_files(source, directory, spec, verify, ("reconstruction",))["reconstruction"]
    return Reconstruction(source=source, graph=graph, spectral=_spectral_norm(spec, source, directory), manifest=raw, spec=spec)


def _open(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None, kinds: tuple[str, ...]
) -> tuple[Path, Path, dict, Manifest]:
    """(what was named, the directory its files are in, the manifest's JSON, the manifest parsed)."""
    source = Path(path).expanduser()
    if source.is_dir():
        directory = source
    elif source.is_file():
        directory = _extract_zip(source, Path(cache_dir) if cache_dir is not None else _user_cache())
    else:
        raise BundleError(str(source), "no such bundle (a bundle is a directory or a .zip holding manifest.json)")

    label = _label(source, MANIFEST)
    manifest_file = directory / MANIFEST
    if not manifest_file.is_file():
        raise BundleError(label, "missing: every bundle has a manifest.json at its top")
    raw = read_json(manifest_file, label)
    return source, directory, raw, Manifest.from_json(raw, label, kinds)


# ---------------------------------------------------------------------------------------------
# What the manifest says against the files


def _check_files(
    source: Path, directory: Path, spec: Manifest, verify: bool, roles: tuple[str, ...] | None = None
) -> dict[str, GraphSpec]:
    """Every listed file's size (and with verify its sha256), then each graph of `roles` (default:
    all) against its ONNX file; returns those graphs."""
    for rel, entry in spec.files.items():
        file, label = directory / rel, _label(source, rel)
        if not file.is_file():
            raise BundleError(label, "missing: it is listed in the manifest's `files` but not in the bundle")
        size = file.stat().st_size
        if size != entry.bytes:
            raise BundleError(label, f"size mismatch: the manifest says {entry.bytes} bytes, the file has {size}")
        if verify:
            digest = sha256_file(file)
            if digest != entry.sha256:
                raise BundleError(
                    label,
                    f"sha256 mismatch: the manifest says {entry.sha256}, the file has {digest} "
                    "(it was changed or corrupted after export)",
                )
    graphs = {
        role: GraphSpec(role=role, file=directory / g.file, entry=g, label=_label(source, g.file))
        for role, g in spec.graphs.items()
        if roles is None or role in roles
    }
    if verify:
        for graph in graphs.values():
            graph.check_session(_open_for_check(graph))
    return graphs


def _read_npy(source: Path, directory: Path, rel: str) -> np.ndarray:
    try:
        return np.load(directory / rel, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BundleError(_label(source, rel), f"cannot be read as a .npy array: {one_line(str(e))}") from None


def _controls(spec: Manifest, source: Path, directory: Path) -> np.ndarray:
    """controls.npy: little-endian float32 (n, D) in C order, finite, with a row for every item."""
    rel = spec.controls.file
    label, latent_size = _label(source, rel), spec.model.latent.size
    array = _read_npy(source, directory, rel)
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype("<f4"):
        raise BundleError(label, f"must hold little-endian float32, got {getattr(array, 'dtype', type(array))}")
    if array.ndim != 2 or array.shape[1] != latent_size:
        raise BundleError(label, f"must have shape (n, {latent_size}) (n directions of the latent), got {array.shape}")
    if not array.flags.c_contiguous:
        raise BundleError(label, "must be stored in C order (np.save of a C-contiguous array)")
    if not np.all(np.isfinite(array)):
        raise BundleError(label, "holds NaN or infinite values")
    for i, item in enumerate(spec.controls.items):
        if item.row >= array.shape[0]:
            path = f"controls.items[{i}].row"
            raise BundleError(_label(source, MANIFEST), f"`{path}` is {item.row} but {rel} has only {array.shape[0]} rows", path)
    array.setflags(write=False)
    return array


def _spectral_norm(spec: Manifest, source: Path, directory: Path) -> SpectralSpec:
    """Reads the BinNorm side files: little-endian float32 (bins,), finite, std > 0."""
    s = spec.spectral
    arrays = {}
    for key in ("mean", "std"):
        rel = getattr(s.norm, key)
        label = _label(source, rel)
        array = _read_npy(source, directory, rel)
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype("<f4") or array.shape != (s.bins,):
            got = f"{getattr(array, 'dtype', type(array))} {getattr(array, 'shape', '')}"
            raise BundleError(label, f"must hold little-endian float32 of shape ({s.bins},) (one value per bin), got {got}")
        if not np.all(np.isfinite(array)) or (key == "std" and not np.all(array > 0)):
            raise BundleError(label, "holds NaN or infinite values" + (", or a std that is not > 0" if key == "std" else ""))
        array.setflags(write=False)
        arrays[key] = array
    norm = BinNorm.from_arrays(arrays["mean"], arrays["std"], clip=s.norm.clip)
    return SpectralSpec(params=s.params, bins=s.bins, frames=s.frames, norm=norm, reconstruction=s.reconstruction)


# ---------------------------------------------------------------------------------------------
# Zips and ONNX


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
    text = one_line(str(error))
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
    text = re.sub(r"Load model from .*? failed:", "", text)
    return text.strip()


def _extract_zip(zip_path: Path, cache: Path) -> Path:
    """Extract once into cache/bundles/<sha256 of the zip>, atomically, and return the bundle directory in it."""
    label = str(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise BundleError(label, "is a file but not a zip archive: a bundle is a directory or a .zip")
    root = cache / "bundles"
    target = root / sha256_file(zip_path)
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
            raise BundleError(label, f"is a damaged zip archive: {one_line(str(e))}") from None
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


def _label(source: Path, rel: str) -> str:
    """How errors name a bundle file: its path, or 'member in archive.zip'."""
    return str(source / rel) if source.is_dir() else f"{rel} in {source}"
