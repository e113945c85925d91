"""The bundle writer: a training run's checkpoint in, a verified bundle (docs/bundle.md) out.

`export_run` rebuilds the checkpoint's generator from the config stored in it,
exports it with `onnx.export_waveform_generator`, derives the musical controls
(`controls.compute_controls`), writes manifest.json and re-opens the result
before it takes the target's name: the bundle is built in a temporary
directory next to the target and renamed into place (`write_bundle`), so a
failed export leaves nothing half-written. It never imports the training loop.

A spectral GAN's run goes out with a vocoder run (`export_spectral`): the
generator, the reconstruction network taking the generator's normalisation
(`Vocoder.with_input_norm`), the front end and its statistics. A vocoder run
alone becomes a reconstruction bundle, for `ganstream eval-reconstruction`.
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
import torch

from ganstream import __version__
from ganstream.training.checkpoint import load_checkpoint, load_generator, load_vocoder, resolve_checkpoint
from ganstream.training.models import VOCODER_KIND, sample_latents

from .controls import DEFAULT_K, compute_controls, controls_matrix
from .onnx import (
    BATCH,
    DEFAULT_OPSET,
    PARITY_ITEMS,
    TOLERANCE,
    ExportError,
    SpectralAudio,
    SpectrogramGraph,
    export_fused,
    export_reconstruction,
    export_spectral_generator,
    export_waveform_generator,
    ort_session,
)

FORMAT = "ganstream-bundle"
FORMAT_VERSION = 2  # the newest version written: spectral and reconstruction bundles
# Waveform bundles are still written as version 1, which they fully describe, so hosts that
# read only version 1 (ganstream 0.1.0) keep playing them.
WAVEFORM_VERSION = 1
VERSIONS = (1, 2)
MANIFEST = "manifest.json"
GENERATOR_FILE = "generator.onnx"
RECONSTRUCTION_FILE = "vocoder.onnx"
FUSED_FILE = "fused.onnx"
CONTROLS_FILE = "controls.npy"
NORM_MEAN_FILE = "norm_mean.npy"
NORM_STD_FILE = "norm_std.npy"
MANIFEST_ORDER = ("format", "format_version", "name", "model", "graphs", "spectral", "controls", "streaming", "files", "provenance")

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
RECONSTRUCTION_REQUIRED = {**REQUIRED, "model": {k: v for k, v in REQUIRED["model"].items() if k != "latent"}, "streaming": None}
GRAPH_KEYS = ("file", "inputs", "outputs", "precision", "opset", "parity_max_abs_error")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def streaming_settings(segment: int, latent_dist: str, sample_rate: int) -> dict[str, Any]:
    """Recommended streaming settings for a generator of `segment` samples and latents from `latent_dist`.

    The 1024-sample crossfade (64 ms at 16 kHz) is long enough to hide the seam between
    unrelated segments and short against WaveGAN's one-second segments; it scales with the
    rate so it lasts the same time, and is at most a quarter segment. Segments under
    a quarter second (the 1D DCGAN's 100 samples) are grains, not phrases: they play in
    texture mode, Hann-windowed and overlapped 4 times (or 2 or 1, whichever divides the
    segment, so that the hop is a whole number of samples). The random walk's depth is 0.6
    standard deviations of the latent distribution (0.35 for uniform latents, 0.6 for normal
    ones), a wander that changes the sound without leaving the region training covered.
    """
    std = 1.0 if latent_dist == "normal" else 1.0 / np.sqrt(3.0)
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


def run_checkpoint(run_dir: Path, checkpoint: str = "latest") -> Path:
    """A run's checkpoint file. checkpoint: "latest", "best", a path, or a file name in the run's checkpoints/."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    path = resolve_checkpoint(run_dir, checkpoint)
    if checkpoint not in ("latest", "best") and not path.is_file():
        path = run_dir / "checkpoints" / checkpoint
        if not path.is_file():
            raise ExportError(f"{checkpoint}: no such checkpoint, here or in {run_dir / 'checkpoints'}")
    return path


def load_run_generator(run_dir: Path, checkpoint: str = "latest") -> tuple[Any, Any, dict[str, Any], Path]:
    """A run's generator in eval mode, EMA weights when it kept them: (generator, TrainConfig, checkpoint state, file)."""
    path = run_checkpoint(run_dir, checkpoint)
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
    vocoder: Path | str | None = None,
    vocoder_checkpoint: str = "latest",
    fused: bool = False,
) -> Path:
    """Exports a run's checkpoint to the bundle directory `out` (and `out`.zip with `make_zip`); returns `out`.

    A waveform GAN run gives a waveform bundle. A spectral GAN run needs `vocoder`, a vocoder
    run, and gives a spectral bundle (docs/bundle.md). A vocoder run alone gives a
    reconstruction bundle: its network and front end, for `ganstream eval-reconstruction`.
    fused: a spectral bundle also gets the fused latent -> audio graph (docs/bundle.md: not faster, twice the size).
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
    ckpt_path = run_checkpoint(run_dir, checkpoint)
    kind = _model_kind(ckpt_path)
    provenance = {"checkpoint": checkpoint, "command": command if command is not None else f"ganstream export {run_dir} -o {out}"}
    options = {"opset": opset, "fp16": fp16, "seed": seed}

    if kind == VOCODER_KIND:
        if vocoder is not None:
            raise ExportError(f"{run_dir}: is a vocoder run; --vocoder goes with a spectral GAN run")
        network, cfg, state = load_vocoder(ckpt_path, "ema")
        say(f"checkpoint {ckpt_path}: step {state['step']}, {_weights(state)} weights, vocoder")
        fill = lambda tmp: reconstruction_manifest(network, cfg, state, tmp, out, name, provenance, options, say)  # noqa: E731
        return write_bundle(out, fill, zip_out, say)

    generator, cfg, state = load_generator(ckpt_path, "ema")
    say(f"checkpoint {ckpt_path}: step {state['step']}, {_weights(state)} weights, {cfg.model.kind}")
    stages = getattr(cfg.model, "stages", None)
    if stages is not None and state["trainer"].get("stage", stages - 1) < stages - 1:
        # The exported network always runs at full size: its top blocks would be untrained.
        raise ExportError(
            f"{ckpt_path}: this progressive run is at stage {state['trainer']['stage'] + 1} of {stages}; "
            "export it once it has reached its last stage (train it longer, or pick a later checkpoint)"
        )
    if not is_spectral_model(cfg.model):
        if vocoder is not None:
            raise ExportError(f"{run_dir}: {cfg.model.kind} generates audio; --vocoder is for spectral GAN runs")
        fill = lambda tmp: waveform_manifest(generator, cfg, state, tmp, out, name, provenance, options, controls, say)  # noqa: E731
        return write_bundle(out, fill, zip_out, say)

    if vocoder is None:
        raise ExportError(f"{run_dir}: {cfg.model.kind} generates spectrograms; name the reconstruction network with --vocoder VOCODER_RUN")
    voc_path = run_checkpoint(Path(vocoder), vocoder_checkpoint)
    if _model_kind(voc_path) != VOCODER_KIND:
        raise ExportError(f"{vocoder}: --vocoder needs a vocoder run, this is a {_model_kind(voc_path)} run")
    network, voc_cfg, voc_state = load_vocoder(voc_path, "ema")
    say(f"vocoder {voc_path}: step {voc_state['step']}, {_weights(voc_state)} weights")
    voc_provenance = _provenance(voc_cfg, voc_state, {**provenance, "checkpoint": vocoder_checkpoint})
    return export_spectral(
        generator, cfg.model, spectral_norm(generator, cfg), network, out,
        name=name or cfg.run.name, provenance={**_provenance(cfg, state, provenance), "reconstruction": voc_provenance},
        controls=controls, zip_out=zip_out, log=say, fused=fused, **options,
    )


def _model_kind(path: Path) -> str:
    return str(load_checkpoint(path)["config"].get("model", {}).get("kind", "wavegan"))


def _weights(state: dict[str, Any]) -> str:
    return "ema" if state["trainer"].get("ema") is not None else "raw"


def _provenance(cfg: Any, state: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The manifest's provenance of a run's checkpoint; `given` holds checkpoint and command."""
    return {
        "run_name": cfg.run.name,
        "config_hash": cfg.hash(),
        "step": int(state["step"]),
        "checkpoint": given["checkpoint"],
        "weights": _weights(state),
        "ganstream_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": given["command"],
    }


def write_bundle(out: Path, fill: Callable[[Path], dict[str, Any]], zip_out: Path | None = None, say: Callable[[str], None] = lambda _m: None) -> Path:
    """Builds a bundle in a temporary directory beside `out`, verifies it and renames it onto `out`.

    fill(tmp) writes the bundle's files into tmp and returns its manifest without `files`,
    which is computed here from what it wrote. A failure leaves nothing half-written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the bundle gets ordinary permissions
    tmp_zip = tmp.with_name(tmp.name + ".zip")
    try:
        manifest = fill(tmp)
        manifest["files"] = {p.name: _hash_file(p) for p in sorted(tmp.iterdir())}
        manifest = {key: manifest[key] for key in MANIFEST_ORDER if key in manifest}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        reconstruction = manifest["model"]["kind"] == "reconstruction"
        verify(tmp, reconstruction)
        if zip_out is not None:
            write_zip(tmp, tmp_zip)
            verify(tmp_zip, reconstruction)
        _move_into_place(tmp, out)
        if zip_out is not None:
            os.replace(tmp_zip, zip_out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp_zip.unlink(missing_ok=True)
    sizes = ", ".join(f"{f} {e['bytes'] / 1e6:.2f} MB" for f, e in manifest["files"].items())
    say(f"wrote {out} ({sizes})" + (f" and {zip_out}" if zip_out else ""))
    return out


def _say_graph(say: Callable[[str], None], role: str, graph: dict[str, Any], seconds: float, items: str = "latents") -> None:
    precision = graph["precision"]
    say(
        f"{role}: {precision}, opset {graph['opset']}, parity max abs error {graph['parity_max_abs_error']:.3g} "
        f"over {PARITY_ITEMS} {items} (limit {TOLERANCE[precision]:g}), {seconds:.1f} s"
    )


def _controls_entry(
    generator: Any, model_cfg: Any, sample_rate: int, tmp: Path, k: int, seed: int, say: Callable[[str], None], audio: Any = None
) -> dict[str, Any] | None:
    """Writes controls.npy for k principal directions and the descriptor macros; None when k is 0 or none were found."""
    if k <= 0:
        return None
    t0 = time.perf_counter()
    try:
        found = compute_controls(generator, model_cfg, sample_rate, k=k, seed=seed, audio=audio)
    except ValueError as e:
        raise ExportError(f"{e}; export with --controls 0") from None
    entry = None
    if found:
        np.save(tmp / CONTROLS_FILE, controls_matrix(found))
        entry = {"file": CONTROLS_FILE, "items": [c.item(row) for row, c in enumerate(found)]}
    say(f"controls: {_describe_controls(entry['items']) if entry else 'none found'}, {time.perf_counter() - t0:.1f} s")
    return entry


def waveform_manifest(
    generator: Any, cfg: Any, state: dict[str, Any], tmp: Path, out: Path, name: str | None,
    provenance: dict[str, Any], options: dict[str, Any], controls: int, say: Callable[[str], None],
) -> dict[str, Any]:
    """Writes a waveform generator's files into tmp; returns its manifest (format version 1)."""
    t0 = time.perf_counter()
    graph = export_waveform_generator(generator, cfg.model, tmp / GENERATOR_FILE, label=str(out / GENERATOR_FILE), **options)
    _say_graph(say, "generator", graph, time.perf_counter() - t0)
    return {
        "format": FORMAT,
        "format_version": WAVEFORM_VERSION,
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
        "controls": _controls_entry(generator, cfg.model, cfg.data.sample_rate, tmp, controls, options["seed"], say),
        "streaming": streaming_settings(cfg.model.segment, cfg.model.latent_dist, cfg.data.sample_rate),
        "provenance": _provenance(cfg, state, provenance),
    }


# ---- spectral and reconstruction bundles ---------------------------------------------------------


def is_spectral_model(model_cfg: Any) -> bool:
    """Whether a GAN's model config generates spectrograms: it describes its front end with `spectral()`."""
    return model_cfg.kind != VOCODER_KIND and callable(getattr(model_cfg, "spectral", None))


def spectral_norm(generator: Any, cfg: Any) -> Any:
    """The BinNorm a spectral GAN's spectrograms are normalised with: the generator holds it."""
    norm = getattr(generator, "norm", None)
    if not callable(norm):
        raise ExportError(f"{cfg.model.kind}: the generator does not say which BinNorm its spectrograms use (no norm())")
    return norm()


def matched_reconstruction(vocoder: Any, vocoder_model: Any, params: Any, norm: Any) -> Any:
    """The vocoder, taking input normalised with `norm` (the GAN's); its front end must be the GAN's."""
    theirs, ours = params.to_dict(), vocoder_model.spectral().to_dict()
    if theirs != ours:
        diff = ", ".join(f"{k}: GAN {theirs.get(k)!r}, vocoder {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise ExportError(f"the GAN and the vocoder use different spectral front ends ({diff}); train the vocoder with the GAN's")
    return vocoder.with_input_norm(norm)


def spectral_section(params: Any, frames: int, norm: Any, tmp: Path) -> dict[str, Any]:
    """Writes the BinNorm side files into tmp; returns the manifest's `spectral` section."""
    mean, std = norm.to_arrays()
    np.save(tmp / NORM_MEAN_FILE, np.ascontiguousarray(mean, dtype="<f4"))
    np.save(tmp / NORM_STD_FILE, np.ascontiguousarray(std, dtype="<f4"))
    return {
        "params": params.to_dict(),
        "bins": params.bins,
        "frames": int(frames),
        "norm": {"mean": NORM_MEAN_FILE, "std": NORM_STD_FILE, "clip": float(norm.clip)},
    }


def parity_spectrograms(params: Any, norm: Any, frames: int, seed: int) -> np.ndarray:
    """(PARITY_ITEMS, bins, frames) normalised spectrograms of signals like those a reconstruction network meets.

    Notes of the procedural `synth:piano` set, made on the spot (no data set needed). Frames of
    independent noise in every bin would make any trained network's output a saturated roar,
    where float32 rounding alone exceeds the parity limit.
    """
    from ganstream.core.spectral import log_magnitude, normalise
    from ganstream.training.data.synth import generate

    notes = generate("piano", PARITY_ITEMS, params.samples(frames), params.sample_rate, seed)
    return np.stack([normalise(log_magnitude(note, params), norm) for note in notes]).astype(np.float32)


def reconstruction_manifest(
    network: Any, cfg: Any, state: dict[str, Any], tmp: Path, out: Path, name: str | None,
    provenance: dict[str, Any], options: dict[str, Any], say: Callable[[str], None],
) -> dict[str, Any]:
    """Writes a vocoder's files into tmp (network and front end); returns its manifest (format version 2)."""
    params, frames = cfg.model.spectral(), cfg.model.frames
    inputs = torch.from_numpy(parity_spectrograms(params, network.norm(), frames, options["seed"]))
    t0 = time.perf_counter()
    graph = export_reconstruction(
        network, params.bins, frames, tmp / RECONSTRUCTION_FILE, inputs, options["opset"], options["fp16"], str(out / RECONSTRUCTION_FILE)
    )
    _say_graph(say, "reconstruction", graph, time.perf_counter() - t0, "spectrograms")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or cfg.run.name,
        "model": {"kind": "reconstruction", "architecture": cfg.model.kind, "sample_rate": params.sample_rate, "segment": graph["outputs"][0]["shape"][1]},
        "graphs": {"reconstruction": graph},
        "spectral": spectral_section(params, frames, network.norm(), tmp),
        "controls": None,
        "streaming": None,
        "provenance": _provenance(cfg, state, provenance),
    }


def export_spectral(
    generator: Any,
    model_cfg: Any,
    norm: Any,
    vocoder: Any,
    out: Path | str,
    *,
    name: str,
    provenance: dict[str, Any],
    controls: int = 0,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    zip_out: Path | None = None,
    log: Callable[[str], None] | None = None,
    fused: bool = False,
) -> Path:
    """Writes the spectral bundle of a generator (z -> (B, [1,] bins, frames) normalised with `norm`,
    its model config describing its front end with `spectral()`) and a vocoder (models.vocoder.Vocoder).
    provenance: the manifest's `provenance`, with the vocoder's under `reconstruction`."""
    say = log or (lambda _msg: None)
    out = Path(out)
    params = model_cfg.spectral()
    recon = matched_reconstruction(vocoder, vocoder.cfg, params, norm)
    options = {"opset": opset, "fp16": fp16, "seed": seed}
    fill = lambda tmp: spectral_bundle_manifest(  # noqa: E731
        generator, model_cfg, params, norm, recon, tmp, out, options, controls, say,
        name=name, sample_rate=params.sample_rate, provenance=provenance, fused=fused,
    )
    return write_bundle(out, fill, zip_out, say)


def spectral_bundle_manifest(
    generator: Any, model_cfg: Any, params: Any, norm: Any, reconstruction: Any, tmp: Path, out: Path,
    options: dict[str, Any], controls: int, say: Callable[[str], None], *, name: str, sample_rate: int, provenance: dict[str, Any],
    fused: bool = False,
) -> dict[str, Any]:
    """The spectral bundle of any generator z -> (B, [1,] bins, frames) and a reconstruction network taking its output."""
    seed = options["seed"]
    with torch.no_grad():
        z = sample_latents(model_cfg, PARITY_ITEMS, torch.Generator().manual_seed(seed))
        spectrogram = SpectrogramGraph(generator).eval()(z)
    bins, frames = spectrogram.shape[1:]
    if bins != params.bins:
        raise ExportError(f"the generator outputs {bins} bins, its front end has {params.bins}")
    t0 = time.perf_counter()
    gen = export_spectral_generator(generator, model_cfg, bins, frames, tmp / GENERATOR_FILE, label=str(out / GENERATOR_FILE), **options)
    _say_graph(say, "generator", gen, time.perf_counter() - t0)
    t0 = time.perf_counter()
    # The generator's own spectrograms are the parity inputs: what the reconstruction will really see.
    recon = export_reconstruction(
        reconstruction, bins, frames, tmp / RECONSTRUCTION_FILE, spectrogram, options["opset"], options["fp16"], str(out / RECONSTRUCTION_FILE)
    )
    _say_graph(say, "reconstruction", recon, time.perf_counter() - t0, "generated spectrograms")
    segment = recon["outputs"][0]["shape"][1]
    graphs = {"generator": gen, "reconstruction": recon}
    if fused:
        t0 = time.perf_counter()
        graphs["fused"] = export_fused(generator, reconstruction, model_cfg, segment, tmp / FUSED_FILE, label=str(out / FUSED_FILE), **options)
        _say_graph(say, "fused", graphs["fused"], time.perf_counter() - t0)
    audio = SpectralAudio(generator, reconstruction).eval()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": {
            "kind": "spectral",
            "architecture": model_cfg.kind,
            "sample_rate": sample_rate,
            "segment": segment,
            "latent": {"size": model_cfg.latent_dim, "distribution": model_cfg.latent_dist},
        },
        "graphs": graphs,
        "spectral": spectral_section(params, frames, norm, tmp),
        "controls": _controls_entry(generator, model_cfg, sample_rate, tmp, controls, seed, say, audio=lambda z: audio(z).unsqueeze(1)),
        "streaming": streaming_settings(segment, model_cfg.latent_dist, sample_rate),
        "provenance": provenance,
    }


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


def verify(path: Path, reconstruction: bool = False) -> None:
    """Re-opens a written bundle directory or zip with the live engine's loader, which checks it
    against docs/bundle.md (sha256s, ONNX signatures, every field). Where `ganstream.realtime`
    has no loader, `check_bundle` does the same checks here. reconstruction: the bundle holds
    a reconstruction network alone (model.kind "reconstruction"), which the engine cannot play."""
    if importlib.util.find_spec("ganstream.realtime.bundle") is None:
        check_bundle(path)
        return
    from ganstream.realtime.bundle import BundleError, load_bundle, load_reconstruction

    with tempfile.TemporaryDirectory(prefix=".extract-", dir=path.parent) as cache:  # a zip is extracted here, not in the user's cache
        try:
            (load_reconstruction if reconstruction else load_bundle)(path, cache_dir=cache)
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


def _graph_shape(shape: list[Any], declared: list[Any]) -> list[Any]:
    """A graph's shape as the manifest writes it: a symbolic axis matches "batch" or a size the manifest fixes."""
    if len(shape) != len(declared):
        return [d if isinstance(d, int) else BATCH for d in shape]
    return [d if isinstance(d, int) else want for d, want in zip(shape, declared)]


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
    reconstruction = isinstance(manifest.get("model"), dict) and manifest["model"].get("kind") == "reconstruction"
    _check_keys(manifest, RECONSTRUCTION_REQUIRED if reconstruction else REQUIRED, "", path)
    if manifest["format"] != FORMAT or manifest["format_version"] not in VERSIONS:
        raise ExportError(f"{path}: {MANIFEST}: format {manifest['format']!r} version {manifest['format_version']!r} is not {FORMAT} {VERSIONS}")
    listed = manifest["files"]
    if sorted(listed) != sorted(files):
        raise ExportError(f"{path}: {MANIFEST}: files lists {sorted(listed)}, the bundle holds {sorted(files)}")
    for name, data in files.items():
        if file_entry(data) != listed[name]:
            raise ExportError(f"{path}: {name}: sha256 or size differs from {MANIFEST}")

    if not reconstruction and "generator" not in manifest["graphs"]:
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
            shapes = [d["shape"] for d in declared] + [[]] * len(actual)
            got = [{"name": a.name, "shape": _graph_shape(a.shape, want), "dtype": _ORT_DTYPES.get(a.type, a.type)} for a, want in zip(actual, shapes)]
            if got != declared:
                raise ExportError(f"{path}: {graph['file']}: graph {kind} are {got}, {MANIFEST} says {declared}")

    model = manifest["model"]
    if reconstruction:
        return manifest
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
