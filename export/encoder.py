"""`ganstream export RUN --encoder`: trains an encoder for the run's generator and writes it into the bundle.

The encoder (training/models/encoder.py, trained by training/encoder_train.py) maps a segment of audio to
the latent, and for a conditioned GAN the condition, that regenerates it; `ganstream invert` and
/ganstream/invert start from it. It is exported like the generator: traced to ONNX, checked against
PyTorch on the generator's own samples (ParityError above the precision's limit), and declared in the
manifest's optional `encoder` section (core/manifest.py), which readers without it ignore. Its refiner
(EncoderConfig.iterations, on by default) is a second graph, one correction (models/encoder.py
`RefinerStep`), declared in `refiner` with the number of corrections; the host runs the bundle's generator
between corrections (realtime/inversion.py), so the bundle keeps one copy of the generator.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ganstream.core.manifest import (
    CONDITION_INPUT, ENCODER_INPUT, ENCODER_OUTPUTS, ENCODER_PROPOSALS, REFINER_INPUTS, REFINER_OUTPUTS, Graph, Manifest, Refinement, encoder_version,
)
from ganstream.training.data.dataset import load_dataset
from ganstream.training.encoder_train import train_encoder
from ganstream.training.models import condition_size, sample_latents
from ganstream.training.models.encoder import Encoder, EncoderConfig, IterativeEncoder, RefinerStep, generator_rows

from .onnx import DEFAULT_OPSET, PARITY_ITEMS, TensorSpec, export_graph

ENCODER_FILE = "encoder.onnx"
REFINER_FILE = "refiner.onnx"
MAX_REAL_CLIPS = 2048  # real training segments phase 2 draws from (memory: 2048 one-second clips are 134 MB)


def real_clips(cfg: Any, say: Callable[[str], None]) -> np.ndarray | None:
    """(N, segment) of the run's training segments, evenly spread; None where the data is not at hand."""
    try:
        segs = load_dataset(cfg.data, cfg.model.segment, cfg.run.seed, "train", progress=False)
    except Exception as e:  # the run's folder moved, or a set not built here: phase 2 is skipped, not the export
        say(f"encoder: the run's training audio is not at hand ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "training on generated segments only")
        return None
    n = min(len(segs), MAX_REAL_CLIPS)
    if n == 0:
        return None
    return segs.batch(np.linspace(0, len(segs) - 1, n).astype(np.int64), 0)


def encoder_graph(
    generator: nn.Module, cfg: Any, tmp: Path, out: Path, options: dict[str, Any], say: Callable[[str], None],
    encoder_cfg: EncoderConfig | None = None, real: np.ndarray | None | bool = True,
) -> tuple[Graph, Refinement | None, dict[str, Any]]:
    """Trains the encoder of `generator` ((B, D [+ C]) -> (B, segment) audio) and writes tmp/encoder.onnx, and
    tmp/refiner.onnx where it has a refiner; returns their manifest entries and a summary for the provenance.
    real: True loads the run's training clips, an array gives them, None or False trains on generated segments only."""
    enc_cfg = encoder_cfg or EncoderConfig(seed=options.get("seed", 0))
    clips = real_clips(cfg, say) if real is True else (real if isinstance(real, np.ndarray) else None)
    model, summary = train_encoder(generator, cfg.model, cfg.data.sample_rate, enc_cfg, clips, say)
    t0 = time.perf_counter()
    graph, refinement = write_graphs(model, generator, cfg, tmp, out, options)
    say(f"encoder: {graph.precision}, parity max abs error {graph.parity_max_abs_error:.3g} over {PARITY_ITEMS} generated segments, "
        f"trained in {summary['seconds']:.0f} s, exported in {time.perf_counter() - t0:.1f} s"
        + (f"; {enc_cfg.hypotheses} proposals per sample, the nearest taken" if enc_cfg.hypotheses > 1 else ""))
    if refinement is not None:
        say(f"refiner: {refinement.graph.precision}, parity max abs error {refinement.graph.parity_max_abs_error:.3g}, "
            f"{refinement.iterations} corrections, each running the bundle's generator once"
            + (f", from the {refinement.beam} nearest proposals side by side" if refinement.beam > 1 else ""))
    summary["config"] = asdict(enc_cfg)
    return graph, refinement, summary


def write_graphs(model: nn.Module, generator: nn.Module, cfg: Any, tmp: Path, out: Path, options: dict[str, Any]) -> tuple[Graph, Refinement | None]:
    """A trained `Encoder` or `IterativeEncoder` -> tmp/encoder.onnx (and tmp/refiner.onnx, one correction),
    each checked against PyTorch on the generator's samples; their manifest entries."""
    encoder = model.encoder if isinstance(model, IterativeEncoder) else model
    with torch.no_grad():
        rows = sample_latents(cfg.model, PARITY_ITEMS, torch.Generator().manual_seed(options.get("seed", 0) + 1))
        audio = generator.eval()(rows).reshape(PARITY_ITEMS, -1)
    d, c, n = cfg.model.latent_dim, condition_size(cfg.model), cfg.model.segment
    opset, fp16 = options.get("opset", DEFAULT_OPSET), options.get("fp16", False)
    outputs = [TensorSpec(ENCODER_OUTPUTS[0], ("batch", d))] + ([TensorSpec(CONDITION_INPUT, ("batch", c))] if c else [])
    m = encoder.cfg.hypotheses
    if m > 1:
        outputs.append(TensorSpec(ENCODER_PROPOSALS, ("batch", m, d)))
    entry = export_graph(
        _EncoderGraph(encoder), (audio[:2],), [TensorSpec(ENCODER_INPUT, ("batch", n))], outputs, tmp / ENCODER_FILE,
        opset=opset, fp16=fp16, parity_inputs=(audio,), label=str(out / ENCODER_FILE),
    )
    graph = Graph.from_json(entry, str(out / "manifest.json"), "encoder")
    if not isinstance(model, IterativeEncoder):
        return graph, None
    # Checked on the generator's samples beside what it makes of the encoder's latents for them: the pairs a host feeds it.
    with torch.no_grad():
        encoded = encoder(audio)
        z, estimate = encoded if isinstance(encoded, tuple) else (encoded, None)
        heard = generator(generator_rows(z, estimate)).reshape(PARITY_ITEMS, -1)
    specs = [TensorSpec(name, ("batch", n)) for name in REFINER_INPUTS[:2]] + [TensorSpec(REFINER_INPUTS[2], ("batch", d))]
    entry = export_graph(
        _RefinerGraph(model.step), (audio[:2], heard[:2], z[:2]), specs, [TensorSpec(REFINER_OUTPUTS[0], ("batch", d)), TensorSpec(REFINER_OUTPUTS[1], ("batch",))],
        tmp / REFINER_FILE, opset=opset, fp16=fp16, parity_inputs=(audio, heard, z), label=str(out / REFINER_FILE),
    )
    return graph, Refinement(Graph.from_json(entry, str(out / "manifest.json"), "refiner.graph"), model.iterations, model.beam)


class _RefinerGraph(nn.Module):
    """What the refiner graph computes: `RefinerStep` on the first row of `audio` for every row. A host repeats
    its one sample on every row (core/manifest.py REFINER_INPUTS), so the graph takes that sample's STFT once
    instead of once a row: the first call, on all M proposals, costs M + 1 STFTs, not 2M."""

    def __init__(self, step: RefinerStep):
        super().__init__()
        self.step = step

    def forward(self, audio: torch.Tensor, heard: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(audio[:1], heard, z)


class _EncoderGraph(nn.Module):
    """What the encoder graph computes: (B, segment) audio -> the first proposal (B, D) [, the condition (B, C)]
    [, all M proposals (B, M, D) where the encoder makes more than one]."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z, c = self.encoder.propose(audio)
        return (z[:, 0], *(() if c is None else (c,)), *((z,) if self.encoder.cfg.hypotheses > 1 else ()))


def attach(manifest: Manifest, graph: Graph, refinement: Refinement | None, provenance: dict[str, Any]) -> Manifest:
    """`manifest` with the encoder `graph` and its refiner declared, and the format version the encoder needs."""
    return replace(manifest, encoder=graph, refiner=refinement, provenance=provenance,
                   format_version=max(manifest.format_version, encoder_version(graph)))


def add_encoder(
    bundle_dir: Path, run_dir: Path, checkpoint: str, options: dict[str, Any], say: Callable[[str], None], encoder_cfg: EncoderConfig | None = None,
    command: str = "",
) -> Path:
    """Trains an encoder for the run a waveform bundle was exported from and writes it into that bundle
    (`ganstream export RUN --encoder --into BUNDLE`), every other file kept; refuses a run whose generator
    does not make the bundle's sound (ExportError naming both)."""
    from ganstream.realtime.bundle import load_bundle
    from ganstream.realtime.inference import Generator

    from .bundle import load_run_generator, run_mismatch, write_bundle
    from .onnx import TOLERANCE, ExportError

    out = Path(bundle_dir)
    bundle = load_bundle(out)
    spec = bundle.spec
    if spec.kind != "waveform":
        raise ExportError(f"{out}: --encoder --into: encoders are trained for waveform bundles so far, this one is {spec.kind}")
    generator, cfg, _, path = load_run_generator(Path(run_dir), checkpoint)
    why = run_mismatch(cfg, spec)
    if why:
        raise ExportError(f"{path}: {why} ({out}): name the run it was exported from")
    with torch.no_grad():
        rows = sample_latents(cfg.model, 4, torch.Generator().manual_seed(3))
        audio = generator.eval()(rows).reshape(4, -1).numpy()
    heard = Generator(bundle, provider="cpu", threads=1).generate(rows.numpy())
    error = float(np.max(np.abs(heard - audio)))
    if not error <= 10 * TOLERANCE[spec.graphs["generator"].precision]:
        raise ExportError(f"{path}: its generator differs from {out}'s by up to {error:.3g}: name the run and checkpoint the bundle was exported from")
    options = {**options, "fp16": options.get("fp16") or spec.graphs["generator"].precision == "fp16"}

    def fill(tmp: Path) -> Manifest:
        for rel in spec.files:
            if rel not in (ENCODER_FILE, REFINER_FILE):
                shutil.copy2(out / rel, tmp / rel)
        graph, refinement, summary = encoder_graph(generator, cfg, tmp, out, options, say, encoder_cfg)
        return attach(spec, graph, refinement, {**spec.provenance, "encoder": {**summary, "command": command, "run_checkpoint": str(path)}})

    return write_bundle(out, fill, None, say)
