"""The bundle writer: a training run's checkpoint in, a verified bundle (docs/bundle.md) out.

`export_run` rebuilds the checkpoint's generator from the config stored in it,
exports it with `onnx.export_waveform_generator`, derives the musical controls
(`controls.compute_controls`), writes manifest.json and re-opens the result
before it takes the target's name: the bundle is built in a temporary
directory next to the target and renamed into place, so a failed export leaves
nothing half-written. It never imports the training loop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ganstream import __version__
from ganstream.training.checkpoint import load_generator, resolve_checkpoint

from .controls import DEFAULT_K, compute_controls, controls_matrix
from .onnx import BATCH, DEFAULT_OPSET, PARITY_ITEMS, TOLERANCE, ExportError, export_waveform_generator, ort_session

FORMAT = "ganstream-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GENERATOR_FILE = "generator.onnx"
CONTROLS_FILE = "controls.npy"

# Keys every manifest has (docs/bundle.md); nested dicts list their own required keys.
REQUIRED: dict[str, Any] = {
    "format": None,
    "format_version": None,
    "name": None,
    "model": {"kind": None, "architecture": None, "sample_rate": None, "segment": None, "latent": {"size": None, "distribution": None}},
    "graphs": None,
    "spectral": None,
    "controls": None,
    "streaming": {"mode": None, "crossfade": None, "texture_overlap": None, "latent_smoothing_s": None, "walk_rate": None, "walk_depth": None},
    "files": None,
    "provenance": {
        "run_name": None, "config_hash": None, "step": None, "checkpoint": None,
        "weights": None, "ganstream_version": None, "created": None, "command": None,
    },
}
GRAPH_KEYS = ("file", "inputs", "outputs", "precision", "opset", "parity_max_abs_error")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def streaming_settings(model_cfg: Any, sample_rate: int) -> dict[str, Any]:
    """Recommended streaming settings for a generator of `model_cfg` at `sample_rate`.

    The 1024-sample crossfade (64 ms at 16 kHz) is long enough to hide the seam between
    unrelated segments and short against WaveGAN's one-second segments; it scales with the
    rate so it lasts the same time, and is at most a quarter segment. Segments under
    a quarter second (the 1D DCGAN's 100 samples) are grains, not phrases: they play in
    texture mode, Hann-windowed and overlapped 4 times (or 2 or 1, whichever divides the
    segment, so that the hop is a whole number of samples). The random walk's depth is 0.6
    standard deviations of the latent distribution (0.35 for uniform latents, 0.6 for normal
    ones), a wander that changes the sound without leaving the region training covered.
    """
    segment = model_cfg.segment
    std = 1.0 if model_cfg.latent_dist == "normal" else 1.0 / np.sqrt(3.0)
    return {
        "mode": "crossfade" if segment >= 0.25 * sample_rate else "texture",
        "crossfade": int(min(round(1024 * sample_rate / 16000), segment // 4)),
        "texture_overlap": next(n for n in (4, 2, 1) if segment % n == 0),
        "latent_smoothing_s": 0.05,
        "walk_rate": 0.2,
        "walk_depth": round(0.6 * std, 2),
    }


def file_entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _hash_file(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def is_bundle(path: Path) -> bool:
    """Whether `path` is a bundle directory or zip (its manifest says so), which export may replace."""
    try:
        if path.is_dir():
            manifest = json.loads((path / MANIFEST).read_text())
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                manifest = json.loads(z.read(MANIFEST))
        else:
            return False
    except (OSError, KeyError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def zip_path_for(out: Path) -> Path:
    """BUNDLE -> BUNDLE.zip."""
    return out.with_name(out.name + ".zip")


# ---- export -------------------------------------------------------------------------------------


def load_run_generator(run_dir: Path, checkpoint: str = "latest") -> tuple[Any, Any, dict[str, Any], Path]:
    """A run's generator in eval mode, EMA weights when it kept them: (generator, TrainConfig, checkpoint state, file).

    checkpoint: "latest", "best", a path, or a file name in the run's checkpoints/.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    path = resolve_checkpoint(run_dir, checkpoint)
    if checkpoint not in ("latest", "best") and not path.is_file():
        path = run_dir / "checkpoints" / checkpoint
        if not path.is_file():
            raise ExportError(f"{checkpoint}: no such checkpoint, here or in {run_dir / 'checkpoints'}")
    generator, cfg, state = load_generator(path, "ema")
    return generator, cfg, state, path


def export_run(
    run_dir: Path | str,
    out: Path | str,
    checkpoint: str = "latest",
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    controls: int = DEFAULT_K,
    make_zip: bool = False,
    name: str | None = None,
    seed: int = 0,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Exports a run's checkpoint to the bundle directory `out` (and `out`.zip with `make_zip`); returns `out`.

    checkpoint: "latest", "best" or a path (also looked up in the run's checkpoints/).
    controls: how many principal directions; 0 writes no controls at all (`controls: null`).
    Raises ExportError (or training's CheckpointError / ConfigError) with the file and the problem.
    """
    say = log or (lambda _msg: None)
    run_dir, out = Path(run_dir), Path(out)
    zip_out = zip_path_for(out) if make_zip else None
    for target in (out, zip_out):
        if target is not None and target.exists() and not is_bundle(target):
            raise ExportError(f"{target}: exists and is not a ganstream bundle; refusing to overwrite it")
    generator, cfg, state, ckpt_path = load_run_generator(run_dir, checkpoint)
    weights = "ema" if state["trainer"].get("ema") is not None else "raw"
    say(f"checkpoint {ckpt_path}: step {state['step']}, {weights} weights, {cfg.model.kind}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the bundle gets ordinary permissions
    tmp_zip = tmp.with_name(tmp.name + ".zip")
    try:
        t0 = time.perf_counter()
        graph = export_waveform_generator(
            generator, cfg.model, tmp / GENERATOR_FILE, opset=opset, fp16=fp16, seed=seed, label=str(out / GENERATOR_FILE)
        )
        precision = graph["precision"]
        say(
            f"generator: {precision}, opset {opset}, parity max abs error {graph['parity_max_abs_error']:.3g} "
            f"over {PARITY_ITEMS} latents (limit {TOLERANCE[precision]:g}), {time.perf_counter() - t0:.1f} s"
        )
        controls_entry = None
        if controls > 0:
            t0 = time.perf_counter()
            try:
                found = compute_controls(generator, cfg.model, cfg.data.sample_rate, k=controls, seed=seed)
            except ValueError as e:
                raise ExportError(f"{e}; export with --controls 0") from None
            if found:
                np.save(tmp / CONTROLS_FILE, controls_matrix(found))
                controls_entry = {"file": CONTROLS_FILE, "items": [c.item(row) for row, c in enumerate(found)]}
            say(f"controls: {_describe_controls(controls_entry['items']) if found else 'none found'}, {time.perf_counter() - t0:.1f} s")

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name or cfg.run.name,
            "model": {
                "kind": "waveform",
                "architecture": cfg.model.kind,
                "sample_rate": cfg.data.sample_rate,
                "segment": cfg.model.segment,
                "latent": {"size": cfg.model.latent_dim, "distribution": cfg.model.latent_dist},
            },
            "graphs": {"generator": graph},
            "spectral": None,
            "controls": controls_entry,
            "streaming": streaming_settings(cfg.model, cfg.data.sample_rate),
            "files": {p.name: _hash_file(p) for p in sorted(tmp.iterdir())},
            "provenance": {
                "run_name": cfg.run.name,
                "config_hash": cfg.hash(),
                "step": int(state["step"]),
                "checkpoint": checkpoint,
                "weights": weights,
                "ganstream_version": __version__,
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "command": command if command is not None else f"ganstream export {run_dir} -o {out}",
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        verify(tmp)
        if zip_out is not None:
            write_zip(tmp, tmp_zip)
            verify(tmp_zip)
        _move_into_place(tmp, out)
        if zip_out is not None:
            os.replace(tmp_zip, zip_out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp_zip.unlink(missing_ok=True)
    sizes = ", ".join(f"{f} {e['bytes'] / 1e6:.2f} MB" for f, e in manifest["files"].items())
    say(f"wrote {out} ({sizes})" + (f" and {zip_out}" if zip_out else ""))
    return out


def _describe_controls(items: list[dict[str, Any]]) -> str:
    parts = []
    for item in items:
        if item["kind"] == "principal":
            parts.append(f"{item['name']} {100 * item['explained_variance']:.1f}%")
        else:
            parts.append(f"{item['name']} r2 {item['r2']:.2f}")
    return ", ".join(parts)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Renames the finished bundle onto `out`, replacing an earlier bundle there."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def write_zip(bundle_dir: Path, path: Path) -> None:
    """The bundle's files at the root of one zip, manifest first."""
    names = [MANIFEST] + sorted(p.name for p in bundle_dir.iterdir() if p.name != MANIFEST)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.write(bundle_dir / name, arcname=name)


# ---- verification -------------------------------------------------------------------------------


def verify(path: Path) -> None:
    """Re-opens a written bundle directory or zip with the live engine's loader, which checks it
    against docs/bundle.md (sha256s, ONNX signatures, every field). Where `ganstream.realtime`
    has no loader, `check_bundle` does the same checks here."""
    if importlib.util.find_spec("ganstream.realtime.bundle") is None:
        check_bundle(path)
        return
    from ganstream.realtime.bundle import BundleError, load_bundle

    with tempfile.TemporaryDirectory(prefix=".extract-", dir=path.parent) as cache:  # a zip is extracted here, not in the user's cache
        try:
            load_bundle(path, cache_dir=cache)
        except BundleError as e:
            raise ExportError(f"the bundle written does not load in ganstream.realtime: {e}") from None


def _read_bundle(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}
    try:
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
    except (OSError, zipfile.BadZipFile) as e:
        raise ExportError(f"{path}: neither a bundle directory nor a readable zip ({e})") from None


def _check_keys(d: Any, required: dict[str, Any], where: str, path: Path) -> None:
    if not isinstance(d, dict):
        raise ExportError(f"{path}: {MANIFEST}: {where or 'the top level'} is not an object")
    for key, sub in required.items():
        if key not in d:
            raise ExportError(f"{path}: {MANIFEST}: missing key {where + '.' if where else ''}{key}")
        if sub is not None:
            _check_keys(d[key], sub, f"{where + '.' if where else ''}{key}", path)


def check_bundle(path: Path) -> dict[str, Any]:
    """Checks a bundle directory or zip against docs/bundle.md; returns its manifest or raises ExportError.

    Required keys, checksums and sizes of every listed file, no unlisted files, each graph's
    ONNX Runtime inputs and outputs (names, ranks, fixed sizes, dtypes) and controls.npy's shape.
    """
    files = _read_bundle(path)
    if MANIFEST not in files:
        raise ExportError(f"{path}: no {MANIFEST}")
    try:
        manifest = json.loads(files.pop(MANIFEST))
    except ValueError as e:
        raise ExportError(f"{path}: {MANIFEST} is not valid JSON ({e})") from None
    _check_keys(manifest, REQUIRED, "", path)
    if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
        raise ExportError(f"{path}: {MANIFEST}: format {manifest['format']!r} version {manifest['format_version']!r} is not {FORMAT} {FORMAT_VERSION}")
    listed = manifest["files"]
    if sorted(listed) != sorted(files):
        raise ExportError(f"{path}: {MANIFEST}: files lists {sorted(listed)}, the bundle holds {sorted(files)}")
    for name, data in files.items():
        if file_entry(data) != listed[name]:
            raise ExportError(f"{path}: {name}: sha256 or size differs from {MANIFEST}")

    if "generator" not in manifest["graphs"]:
        raise ExportError(f"{path}: {MANIFEST}: graphs has no generator")
    for role, graph in manifest["graphs"].items():
        _check_keys(graph, dict.fromkeys(GRAPH_KEYS), f"graphs.{role}", path)
        if graph["file"] not in files:
            raise ExportError(f"{path}: graphs.{role}.file {graph['file']!r} is not in the bundle")
        try:
            session = ort_session(files[graph["file"]])
        except Exception as e:  # onnxruntime raises its own exception types for unparsable models
            raise ExportError(f"{path}: {graph['file']}: ONNX Runtime cannot open it ({e})") from None
        for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            declared = graph[kind]
            got = [{"name": a.name, "shape": [BATCH if not isinstance(d, int) else d for d in a.shape], "dtype": _ORT_DTYPES.get(a.type, a.type)} for a in actual]
            if got != declared:
                raise ExportError(f"{path}: {graph['file']}: graph {kind} are {got}, {MANIFEST} says {declared}")

    model = manifest["model"]
    audio = manifest["graphs"]["generator"]["outputs"][0]["shape"]
    z = manifest["graphs"]["generator"]["inputs"][0]["shape"]
    if model["kind"] == "waveform" and (audio != [BATCH, model["segment"]] or z != [BATCH, model["latent"]["size"]]):
        raise ExportError(f"{path}: generator shapes {z} -> {audio} do not match model.segment and model.latent.size")

    controls = manifest["controls"]
    if controls is not None:
        try:
            rows = np.load(io.BytesIO(files[controls["file"]]), allow_pickle=False)
        except (KeyError, ValueError) as e:
            raise ExportError(f"{path}: controls.file {controls.get('file')!r} is missing or not a .npy ({e})") from None
        if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != model["latent"]["size"]:
            raise ExportError(f"{path}: {controls['file']}: {rows.dtype} {rows.shape}, expected float32 (n, {model['latent']['size']})")
        names = [item["name"] for item in controls["items"]]
        if len(set(names)) != len(names) or any(not 0 <= item["row"] < len(rows) for item in controls["items"]):
            raise ExportError(f"{path}: controls.items: names must be unique and rows within {controls['file']}'s {len(rows)} rows")
    return manifest
