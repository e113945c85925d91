"""The bundle writer: a training run's checkpoint in, a verified bundle (docs/bundle.md) out.

`export_run` rebuilds the checkpoint's generator from the config stored in it,
exports it with `onnx.export_waveform_generator`, derives the musical controls
(`controls.compute_controls`), writes manifest.json (a `ganstream.core.manifest.Manifest`,
the schema's one home) and re-opens the result with the live engine's loader
before it takes the target's name: the bundle is built in a temporary
directory next to the target and renamed into place (`write_bundle`), so a
failed export leaves nothing half-written. It never imports the training loop.

A spectral GAN's run goes out with a vocoder run (`export_spectral`): the
generator, the reconstruction network taking the generator's normalisation
(`Vocoder.with_input_norm`), the front end and its statistics. Without one it
goes out with `--reconstruction griffin-lim[:N]` or `pghi`: the generator, the
front end, its statistics and the method (`spectral.reconstruction`, format
version 4), by which the host rebuilds the audio in numpy. A vocoder run
alone becomes a reconstruction bundle, for `ganstream eval-reconstruction`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ganstream import __version__
from ganstream.core.phase import GRIFFIN_LIM, INITIAL_PHASES, LOCKED, PGHI, PhaseReconstructor
from ganstream.core.pitch import estimate_root, note_name
from ganstream.core.manifest import (
    FORMAT,
    MANIFEST,
    STREAMING_MODES,
    BundleError,
    Condition,
    ControlItem,
    Controls,
    FileEntry,
    Graph,
    Latent,
    Manifest,
    Model,
    NormFiles,
    PhaseReconstruction,
    Spectral,
    StreamingSettings,
    lowest_version,
)
from ganstream.training.checkpoint import load_checkpoint, load_generator, load_vocoder, resolve_checkpoint
from ganstream.training.models import OutputKind, condition_size, family, sample_latents

from .controls import DEFAULT_K, compute_controls, controls_matrix, generate_audio
from .onnx import (
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
)

# The manifest's schema and format versions live in ganstream.core.manifest; these are the
# file names this writer chooses (a host reads them from the manifest).
GENERATOR_FILE = "generator.onnx"
RECONSTRUCTION_FILE = "vocoder.onnx"
FUSED_FILE = "fused.onnx"
CONTROLS_FILE = "controls.npy"
NORM_MEAN_FILE = "norm_mean.npy"
NORM_STD_FILE = "norm_std.npy"
# `--reconstruction griffin-lim` without a count: iterations per segment. Chosen with `ganstream bench BUNDLE
# --null --modes crossfade` on bundles of a SpecGAN d=16 (configs/specgan-laptop.yaml, one training step: the
# generator costs what a trained one does) at its front end (n_fft 256, hop 128, 128 frames: 1.024 s at 16 kHz),
# generator and Griffin-Lim on one core of this project's 2-core machine while other jobs kept both cores busy
# (the shipped waveform bundle made 28-33x alone and 4.6-6.0x with 100 control changes/s there, 62x and 9.9x
# idle). Alone / with 100 control changes/s, which regenerate two segments every 20 ms, two runs each:
# 8 iterations 23-33x / 2.8-3.0x, 16: 30x / 1.9-2.1x, 24: 19-20x / 1.7-1.9x, 32: 16-27x / 0.8-1.3x, PGHI
# 12-15x / 0.6-0.7x. 16 is the most that keeps about twice real time while a knob turns, at 6-9 ms a segment;
# against 32 it gives up about 3 dB of spectral convergence (-20.9 against -24.0 dB on a synth:piano clip):
# griffin-lim:32 buys it back on a quieter machine. Bundles start from the locked phase (core/phase.py), with
# which 16 iterations beat 32 from a random phase on the piano set by 6 dB and come within 2 dB of them on drums
# and speech.
DEFAULT_GL_ITERATIONS = 16
# Generated clips the root note is estimated from (core/pitch.estimate_root: the median pitch of those with a
# clear one, if half of them have one, so a median of 16 or more); a sixteenth of what the controls generate.
ROOT_CLIPS = 32
# The provenance keys export writes itself (docs/bundle.md); a caller's extra keys may not replace them.
PROVENANCE_KEYS = ("run_name", "config_hash", "step", "checkpoint", "weights", "ganstream_version", "created", "command", "reconstruction")


def streaming_settings(
    segment: int, latent_dist: str, sample_rate: int, mode: str | None = None, root_note: float | None = None
) -> StreamingSettings:
    """Recommended streaming settings for a generator of `segment` samples and latents from `latent_dist`;
    `mode` (a STREAMING_MODES value) replaces the mode chosen here; `root_note` is the generated
    segments' pitch (`estimate_root_note`), None where they have no clear one.

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
    return StreamingSettings(
        mode=mode or ("crossfade" if segment >= 0.25 * sample_rate else "texture"),
        crossfade=int(min(round(1024 * sample_rate / 16000), segment // 4)),
        texture_overlap=next(n for n in (4, 2, 1) if segment % n == 0),
        latent_smoothing_s=0.05,
        walk_rate=0.2,
        walk_depth=round(0.6 * std, 2),
        root_note=root_note,
    )


def estimate_root_note(
    audio: Callable[[Any], Any], model_cfg: Any, sample_rate: int, seed: int, say: Callable[[str], None], given: float | None = None
) -> float | None:
    """The bundle's `streaming.root_note`: `given` (export's --root-note), else the median pitch of ROOT_CLIPS
    clips of `audio` (latents (B, D) -> (B, 1, T)) that have a clear one; None when too few do."""
    if given is not None:
        say(f"root note: {given:g} ({note_name(given)}), given")
        return given
    t0 = time.perf_counter()
    z = sample_latents(model_cfg, ROOT_CLIPS, torch.Generator().manual_seed(seed))
    found = estimate_root(generate_audio(audio, z), sample_rate)
    hint = "" if found.note is not None else "; hosts play notes untransposed unless given --root-note"
    say(f"root note: {found.describe()}{hint}, {time.perf_counter() - t0:.1f} s")
    return found.note


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


def parse_reconstruction(text: str) -> PhaseReconstruction:
    """`--reconstruction`: "griffin-lim[:N][:random|locked]" (N iterations per segment, default
    DEFAULT_GL_ITERATIONS, from the locked phase unless `random`) or "pghi" -> the manifest's
    `spectral.reconstruction`; anything else is one ExportError naming the option."""
    method, colon, rest = text.partition(":")
    if method == GRIFFIN_LIM:
        parts = rest.split(":") if colon else []
        initial = parts.pop() if parts and parts[-1] in INITIAL_PHASES else LOCKED
        if len(parts) > 1 or (parts and not (parts[0].isdecimal() and int(parts[0]) >= 1)):
            raise ExportError(f"--reconstruction {text}: griffin-lim:N takes N, the iterations per segment, as a whole number of at least 1 "
                              f"(griffin-lim alone: {DEFAULT_GL_ITERATIONS}), then :random to start from a random phase instead of the locked one")
        return PhaseReconstruction(GRIFFIN_LIM, int(parts[0]) if parts else DEFAULT_GL_ITERATIONS, initial)
    if method == PGHI:
        if colon:
            raise ExportError(f"--reconstruction {text}: pghi has no iterations to count; use {PGHI}")
        return PhaseReconstruction(PGHI)
    raise ExportError(f"--reconstruction {text}: unknown; use {GRIFFIN_LIM} ({DEFAULT_GL_ITERATIONS} iterations per segment), "
                      f"{GRIFFIN_LIM}:N (N iterations) or {PGHI}")


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


def run_mismatch(cfg: Any, spec: Manifest) -> str | None:
    """How the generator of a run (its TrainConfig) is shaped otherwise than a bundle's (its manifest), as
    "its segment is 16384 but the bundle's is 4096"; None where sample rate, segment, latent size and
    condition columns all agree."""
    from ganstream.training.models import condition_size

    columns = spec.condition.columns if spec.condition is not None else 0
    for what, ours, theirs in (
        ("sample rate", cfg.data.sample_rate, spec.model.sample_rate),
        ("segment", cfg.model.segment, spec.model.segment),
        ("latent size", cfg.model.latent_dim, spec.model.latent.size),
        ("condition columns", condition_size(cfg.model), columns),
    ):
        if ours != theirs:
            return f"its {what} is {ours} but the bundle's is {theirs}"
    return None


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
    mode: str | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
    reconstruction: str | None = None,
    root_note: float | None = None,
    encoder: bool | Any = False,
) -> Path:
    """Exports a run's checkpoint to the bundle directory `out` (and `out`.zip with `make_zip`); returns `out`.

    A waveform GAN run gives a waveform bundle. A spectral GAN run needs `vocoder`, a vocoder
    run, or `reconstruction` (the `--reconstruction` option: "griffin-lim", "griffin-lim:N" or
    "pghi", which hosts then run in numpy), and gives a spectral bundle (docs/bundle.md). A vocoder
    run alone gives a reconstruction bundle: its network and front end, for `ganstream eval-reconstruction`.
    fused: a spectral bundle also gets the fused latent -> audio graph (docs/bundle.md: not faster, twice the size).
    checkpoint: "latest", "best" or a path (also looked up in the run's checkpoints/).
    controls: how many principal directions; 0 writes no controls at all (`controls: null`).
    mode: the bundle's default streaming mode (`streaming.mode`, a STREAMING_MODES value); None: crossfade
    for segments of a quarter second or more, texture for shorter ones.
    extra_provenance: informational keys added to the manifest's `provenance` (JSON values; not PROVENANCE_KEYS).
    root_note: the bundle's `streaming.root_note` (a MIDI note); None: estimated from generated clips.
    encoder: True (or an EncoderConfig) trains an encoder for `ganstream invert` and writes it into the bundle
    (export/encoder.py; waveform GANs).
    Raises ExportError (or training's CheckpointError / ConfigError) with the file and the problem.
    """
    say = log or (lambda _msg: None)
    run_dir, out = Path(run_dir), Path(out)
    zip_out = zip_path_for(out) if make_zip else None
    for target in (out, zip_out):
        if target is not None and target.exists() and not is_bundle(target):
            raise ExportError(f"{target}: exists and is not a ganstream bundle; refusing to overwrite it")
    if mode is not None and mode not in STREAMING_MODES:
        raise ExportError(f"mode {mode!r}: unknown streaming mode (modes: {', '.join(STREAMING_MODES)})")
    phase = parse_reconstruction(reconstruction) if reconstruction is not None else None
    clash = sorted(set(extra_provenance or {}) & set(PROVENANCE_KEYS))
    if clash:
        raise ExportError(f"extra provenance: {', '.join(clash)} written by export itself; name the extra keys otherwise")
    ckpt_path = run_checkpoint(run_dir, checkpoint)
    kind = _model_kind(ckpt_path)
    command = command if command is not None else f"ganstream export {run_dir} -o {out}"
    provenance = {"checkpoint": checkpoint, "command": command, "extra": dict(extra_provenance or {})}
    options = {"opset": opset, "fp16": fp16, "seed": seed}

    if family(kind).output is OutputKind.VOCODER:
        if vocoder is not None or phase is not None:
            option = "--vocoder" if vocoder is not None else "--reconstruction"
            raise ExportError(f"{run_dir}: is a vocoder run; {option} goes with a spectral GAN run")
        if mode is not None:
            raise ExportError(f"{run_dir}: is a vocoder run, whose bundle has no streaming settings; --mode goes with a GAN run")
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
    if family(cfg.model.kind).output is not OutputKind.SPECTRAL:
        if vocoder is not None or phase is not None:
            option = "--vocoder" if vocoder is not None else "--reconstruction"
            raise ExportError(f"{run_dir}: {cfg.model.kind} generates audio; {option} is for spectral GAN runs")
        fill = lambda tmp: waveform_manifest(generator, cfg, state, tmp, out, name, provenance, options, controls, say, mode, root_note)  # noqa: E731
        if encoder:
            fill = with_encoder(fill, generator, cfg, out, options, say, None if encoder is True else encoder)
        return write_bundle(out, fill, zip_out, say)

    if encoder:
        raise ExportError(f"{run_dir}: --encoder: encoders are trained for waveform GANs so far ({cfg.model.kind} generates spectrograms)")
    if vocoder is None and phase is None:
        raise ExportError(
            f"{run_dir}: {cfg.model.kind} generates spectrograms; name the reconstruction network with --vocoder VOCODER_RUN, "
            f"or rebuild the audio without one with --reconstruction {GRIFFIN_LIM}[:N] or {PGHI}"
        )
    if vocoder is not None and phase is not None:
        raise ExportError(f"--vocoder and --reconstruction {reconstruction}: a bundle's audio comes from a network or from "
                          "Griffin-Lim or PGHI, not both; give one")
    spectral_options = {"controls": controls, "zip_out": zip_out, "log": say, "fused": fused, "mode": mode, "root_note": root_note, **options}
    if phase is not None:
        return export_spectral(
            generator, cfg.model, spectral_norm(generator, cfg), phase, out,
            name=name or cfg.run.name, provenance=_provenance(cfg, state, provenance), **spectral_options,
        )
    voc_path = run_checkpoint(Path(vocoder), vocoder_checkpoint)
    if family(_model_kind(voc_path)).output is not OutputKind.VOCODER:
        raise ExportError(f"{vocoder}: --vocoder needs a vocoder run, this is a {_model_kind(voc_path)} run")
    network, voc_cfg, voc_state = load_vocoder(voc_path, "ema")
    say(f"vocoder {voc_path}: step {voc_state['step']}, {_weights(voc_state)} weights")
    voc_provenance = _provenance(voc_cfg, voc_state, {"checkpoint": vocoder_checkpoint, "command": command})
    return export_spectral(
        generator, cfg.model, spectral_norm(generator, cfg), network, out,
        name=name or cfg.run.name, provenance={**_provenance(cfg, state, provenance), "reconstruction": voc_provenance}, **spectral_options,
    )


def _model_kind(path: Path) -> str:
    return str(load_checkpoint(path)["config"].get("model", {}).get("kind", "wavegan"))


def _weights(state: dict[str, Any]) -> str:
    return "ema" if state["trainer"].get("ema") is not None else "raw"


def _provenance(cfg: Any, state: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The manifest's provenance of a run's checkpoint; `given` holds checkpoint, command and optionally
    `extra`, keys added after export's own."""
    return {
        "run_name": cfg.run.name,
        "config_hash": cfg.hash(),
        "step": int(state["step"]),
        "checkpoint": given["checkpoint"],
        "weights": _weights(state),
        "ganstream_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": given["command"],
        **given.get("extra", {}),
    }


def with_encoder(
    fill: Callable[[Path], Manifest], generator: Any, cfg: Any, out: Path, options: dict[str, Any], say: Callable[[str], None], encoder_cfg: Any = None,
) -> Callable[[Path], Manifest]:
    """`fill`, then an encoder trained for `generator` (export/encoder.py) in the same bundle, declared in `encoder`
    (and its refiner in `refiner`) with its training summary in `provenance.encoder`."""
    from .encoder import attach, encoder_graph

    def fill_with_encoder(tmp: Path) -> Manifest:
        manifest = fill(tmp)
        graph, refinement, summary = encoder_graph(generator, cfg, tmp, out, options, say, encoder_cfg)
        return attach(manifest, graph, refinement, {**manifest.provenance, "encoder": summary})

    return fill_with_encoder


def write_bundle(out: Path, fill: Callable[[Path], Manifest], zip_out: Path | None = None, say: Callable[[str], None] = lambda _m: None) -> Path:
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
        manifest = replace(fill(tmp), files={p.name: FileEntry.of(p) for p in sorted(tmp.iterdir())})
        (tmp / MANIFEST).write_text(manifest.dumps())
        reconstruction = manifest.kind == "reconstruction"
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
    sizes = ", ".join(f"{f} {e.bytes / 1e6:.2f} MB" for f, e in manifest.files.items())
    say(f"wrote {out} ({sizes})" + (f" and {zip_out}" if zip_out else ""))
    return out


def _graph(entry: dict[str, Any], out: Path, role: str) -> Graph:
    """An exported graph's manifest entry (export.onnx writes it as JSON), read by the schema's strict reader."""
    return Graph.from_json(entry, str(out / MANIFEST), f"graphs.{role}")


def _say_graph(say: Callable[[str], None], role: str, graph: Graph, seconds: float, items: str = "latents") -> None:
    precision = graph.precision
    say(
        f"{role}: {precision}, opset {graph.opset}, parity max abs error {graph.parity_max_abs_error:.3g} "
        f"over {PARITY_ITEMS} {items} (limit {TOLERANCE[precision]:g}), {seconds:.1f} s"
    )


def _controls_entry(
    generator: Any, model_cfg: Any, sample_rate: int, tmp: Path, k: int, seed: int, say: Callable[[str], None], audio: Any = None
) -> Controls | None:
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
        # Control.item() gives the JSON entry; reading it strictly checks what controls.py computed.
        items = tuple(ControlItem.from_json(c.item(row), MANIFEST, f"controls.items[{row}]") for row, c in enumerate(found))
        entry = Controls(CONTROLS_FILE, items)
    say(f"controls: {_describe_controls(entry.items) if entry else 'none found'}, {time.perf_counter() - t0:.1f} s")
    return entry


def waveform_manifest(
    generator: Any, cfg: Any, state: dict[str, Any], tmp: Path, out: Path, name: str | None,
    provenance: dict[str, Any], options: dict[str, Any], controls: int, say: Callable[[str], None], mode: str | None = None,
    root_note: float | None = None,
) -> Manifest:
    """Writes a waveform generator's files into tmp; returns its manifest (format version 1, or 3 in trigger mode),
    `files` left to write_bundle. mode: `streaming.mode`, None for the one streaming_settings picks.
    root_note: `streaming.root_note`, None to estimate it from generated clips."""
    t0 = time.perf_counter()
    entry = export_waveform_generator(generator, cfg.model, tmp / GENERATOR_FILE, label=str(out / GENERATOR_FILE), **options)
    graph = _graph(entry, out, "generator")
    _say_graph(say, "generator", graph, time.perf_counter() - t0)
    condition = condition_entry(cfg.model, say, root_note)
    # A conditioned bundle plays each note at its pitch by asking for it: nothing to transpose from.
    root = None if condition else estimate_root_note(generator.eval(), cfg.model, cfg.data.sample_rate, options["seed"], say, root_note)
    streaming = streaming_settings(cfg.model.segment, cfg.model.latent_dist, cfg.data.sample_rate, mode, root)
    return Manifest(
        format_version=lowest_version("waveform", streaming.mode, conditioned=condition is not None),
        name=name or cfg.run.name,
        model=Model("waveform", cfg.model.kind, cfg.data.sample_rate, cfg.model.segment, Latent(cfg.model.latent_dim, cfg.model.latent_dist)),
        graphs={"generator": graph},
        spectral=None,
        controls=_controls_entry(generator, cfg.model, cfg.data.sample_rate, tmp, controls, options["seed"], say),
        streaming=streaming,
        files={},
        provenance=_provenance(cfg, state, provenance),
        condition=condition,
    )


def condition_entry(model_cfg: Any, say: Callable[[str], None], root_note: float | None = None) -> Condition | None:
    """The manifest's `condition` for a conditioned model (its training labels, `model.labels`), else None.
    A root note is refused for one: it plays each note's own pitch."""
    if not condition_size(model_cfg):
        return None
    if root_note is not None:
        raise ExportError(f"--root-note {root_note:g}: the run is pitch-conditioned ({model_cfg.condition}); its bundle "
                          "asks the generator for each note's pitch and has no root to transpose from")
    labels = model_cfg.labels or {}
    span, counts = labels.get("pitch_range"), labels.get("pitch_counts") or {}
    if not span or not counts:
        raise ExportError(f"model.condition {model_cfg.condition}: the run's config holds no pitch labels (model.labels); "
                          "was it trained before conditioning recorded them?")
    entry = Condition(model_cfg.condition, (int(span[0]), int(span[1])), {str(k): int(v) for k, v in counts.items()}, labels.get("summary", ""))
    say(f"condition: {entry.kind}, pitches {note_name(span[0])}..{note_name(span[1])} ({entry.labels})")
    return entry


# ---- spectral and reconstruction bundles ---------------------------------------------------------


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
    if norm.clip != vocoder_model.norm_clip:
        raise ExportError(f"model.norm_clip: the GAN clips its spectrograms at {norm.clip} std, the vocoder at {vocoder_model.norm_clip}; "
                          "train the vocoder with the GAN's model.norm_clip")
    return vocoder.with_input_norm(norm)


def spectral_section(params: Any, frames: int, norm: Any, tmp: Path, phase: PhaseReconstruction | None = None) -> Spectral:
    """Writes the BinNorm side files into tmp; returns the manifest's `spectral` section (`phase`: its
    `reconstruction`, for a bundle without a network)."""
    mean, std = norm.to_arrays()
    np.save(tmp / NORM_MEAN_FILE, np.ascontiguousarray(mean, dtype="<f4"))
    np.save(tmp / NORM_STD_FILE, np.ascontiguousarray(std, dtype="<f4"))
    return Spectral(params, params.bins, int(frames), NormFiles(NORM_MEAN_FILE, NORM_STD_FILE, float(norm.clip)), phase)


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
) -> Manifest:
    """Writes a vocoder's files into tmp (network and front end); returns its manifest (format version 2), `files` left to write_bundle."""
    params, frames = cfg.model.spectral(), cfg.model.frames
    inputs = torch.from_numpy(parity_spectrograms(params, network.norm(), frames, options["seed"]))
    t0 = time.perf_counter()
    entry = export_reconstruction(
        network, params.bins, frames, tmp / RECONSTRUCTION_FILE, inputs, options["opset"], options["fp16"], str(out / RECONSTRUCTION_FILE)
    )
    graph = _graph(entry, out, "reconstruction")
    _say_graph(say, "reconstruction", graph, time.perf_counter() - t0, "spectrograms")
    return Manifest(
        format_version=lowest_version("reconstruction", None),
        name=name or cfg.run.name,
        model=Model("reconstruction", cfg.model.kind, params.sample_rate, graph.outputs[0].shape[1], latent=None),
        graphs={"reconstruction": graph},
        spectral=spectral_section(params, frames, network.norm(), tmp),
        controls=None,
        streaming=None,
        files={},
        provenance=_provenance(cfg, state, provenance),
    )


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
    mode: str | None = None,
    root_note: float | None = None,
) -> Path:
    """Writes the spectral bundle of a generator (z -> (B, [1,] bins, frames) normalised with `norm`,
    its model config describing its front end with `spectral()`) and a vocoder (models.vocoder.Vocoder),
    or a PhaseReconstruction in its place: a bundle without a network, whose hosts rebuild the audio.
    provenance: the manifest's `provenance`, with the vocoder's under `reconstruction`.
    mode: `streaming.mode`, None for the one streaming_settings picks.
    root_note: `streaming.root_note`, None to estimate it from generated clips."""
    say = log or (lambda _msg: None)
    out = Path(out)
    params = model_cfg.spectral()
    if isinstance(vocoder, PhaseReconstruction):
        if fused:
            raise ExportError(f"--fused: a bundle rebuilt by {vocoder.method} has no reconstruction network to fuse with its generator; "
                              "leave --fused out, or export with --vocoder")
        recon = vocoder
    else:
        recon = matched_reconstruction(vocoder, vocoder.cfg, params, norm)
    options = {"opset": opset, "fp16": fp16, "seed": seed}
    fill = lambda tmp: spectral_bundle_manifest(  # noqa: E731
        generator, model_cfg, params, norm, recon, tmp, out, options, controls, say,
        name=name, sample_rate=params.sample_rate, provenance=provenance, fused=fused, mode=mode, root_note=root_note,
    )
    return write_bundle(out, fill, zip_out, say)


def spectral_bundle_manifest(
    generator: Any, model_cfg: Any, params: Any, norm: Any, reconstruction: Any, tmp: Path, out: Path,
    options: dict[str, Any], controls: int, say: Callable[[str], None], *, name: str, sample_rate: int, provenance: dict[str, Any],
    fused: bool = False, mode: str | None = None, root_note: float | None = None,
) -> Manifest:
    """The spectral bundle of any generator z -> (B, [1,] bins, frames) and a reconstruction network taking its output,
    or a PhaseReconstruction (no network: format version 4); writes its files into tmp and returns its manifest
    (format version 2, or 3 in trigger mode), `files` left to write_bundle."""
    seed = options["seed"]
    with torch.no_grad():
        z = sample_latents(model_cfg, PARITY_ITEMS, torch.Generator().manual_seed(seed))
        spectrogram = SpectrogramGraph(generator).eval()(z)
    bins, frames = spectrogram.shape[1:]
    if bins != params.bins:
        raise ExportError(f"the generator outputs {bins} bins, its front end has {params.bins}")
    t0 = time.perf_counter()
    gen = _graph(export_spectral_generator(generator, model_cfg, bins, frames, tmp / GENERATOR_FILE, label=str(out / GENERATOR_FILE), **options), out, "generator")
    _say_graph(say, "generator", gen, time.perf_counter() - t0)
    if isinstance(reconstruction, PhaseReconstruction):
        phase, segment, graphs = reconstruction, params.samples(frames), {"generator": gen}
        audio = phase_audio(generator, params, norm, frames, phase)
        say(f"reconstruction: no network; hosts rebuild the audio by {phase.describe()}, in numpy")
    else:
        phase = None
        graphs = {"generator": gen, **_network_graphs(generator, model_cfg, reconstruction, spectrogram, tmp, out, options, say, fused)}
        segment = graphs["reconstruction"].outputs[0].shape[1]
        audio = SpectralAudio(generator, reconstruction).eval()
    clips = lambda z: audio(z).unsqueeze(1)  # noqa: E731  (B, D) -> (B, 1, T), as the controls take it
    condition = condition_entry(model_cfg, say, root_note)
    root = None if condition else estimate_root_note(clips, model_cfg, sample_rate, seed, say, root_note)
    streaming = streaming_settings(segment, model_cfg.latent_dist, sample_rate, mode, root)
    return Manifest(
        format_version=lowest_version("spectral", streaming.mode, phase.method if phase is not None else None, condition is not None),
        name=name,
        model=Model("spectral", model_cfg.kind, sample_rate, segment, Latent(model_cfg.latent_dim, model_cfg.latent_dist)),
        graphs=graphs,
        spectral=spectral_section(params, frames, norm, tmp, phase),
        controls=_controls_entry(generator, model_cfg, sample_rate, tmp, controls, seed, say, audio=clips),
        streaming=streaming,
        files={},
        provenance=provenance,
        condition=condition,
    )


def _network_graphs(
    generator: Any, model_cfg: Any, reconstruction: Any, spectrogram: Any, tmp: Path, out: Path,
    options: dict[str, Any], say: Callable[[str], None], fused: bool,
) -> dict[str, Graph]:
    """Exports the reconstruction network (and with `fused` the fused graph) into tmp; returns their manifest entries by role."""
    t0 = time.perf_counter()
    bins, frames = spectrogram.shape[1:]
    # The generator's own spectrograms are the parity inputs: what the reconstruction will really see.
    entry = export_reconstruction(
        reconstruction, bins, frames, tmp / RECONSTRUCTION_FILE, spectrogram, options["opset"], options["fp16"], str(out / RECONSTRUCTION_FILE)
    )
    graphs = {"reconstruction": _graph(entry, out, "reconstruction")}
    _say_graph(say, "reconstruction", graphs["reconstruction"], time.perf_counter() - t0, "generated spectrograms")
    if fused:
        t0 = time.perf_counter()
        segment = graphs["reconstruction"].outputs[0].shape[1]
        entry = export_fused(generator, reconstruction, model_cfg, segment, tmp / FUSED_FILE, label=str(out / FUSED_FILE), **options)
        graphs["fused"] = _graph(entry, out, "fused")
        _say_graph(say, "fused", graphs["fused"], time.perf_counter() - t0)
    return graphs


def phase_audio(generator: Any, params: Any, norm: Any, frames: int, phase: PhaseReconstruction) -> Callable[[Any], Any]:
    """z (B, D) -> audio (B, frames * hop) tensor: the generator's spectrograms rebuilt as a host rebuilds them
    (core/phase.py's PhaseReconstructor), for the controls' audio descriptors."""
    spectrograms = SpectrogramGraph(generator).eval()
    rebuild = PhaseReconstructor(params, norm, frames, phase.method, phase.iterations, phase.initial_phase)
    return lambda z: torch.from_numpy(rebuild.reconstruct(spectrograms(z).numpy()))


def _describe_controls(items: tuple[ControlItem, ...]) -> str:
    parts = []
    for item in items:
        if item.kind == "principal":
            parts.append(f"{item.name} {100 * item.explained_variance:.1f}%")
        else:
            parts.append(f"{item.name} r2 {item.r2:.2f}")
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
    against docs/bundle.md (every field through ganstream.core.manifest, sha256s, ONNX signatures).
    reconstruction: the bundle holds a reconstruction network alone (model.kind "reconstruction"),
    which the engine cannot play."""
    from ganstream.realtime.bundle import load_bundle, load_reconstruction

    with tempfile.TemporaryDirectory(prefix=".extract-", dir=path.parent) as cache:  # a zip is extracted here, not in the user's cache
        try:
            (load_reconstruction if reconstruction else load_bundle)(path, cache_dir=cache)
        except BundleError as e:
            raise ExportError(f"the bundle written does not load in ganstream.realtime: {e}") from None
