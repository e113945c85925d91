"""`ganstream invert`: find the latent whose sound is nearest a sample, and save it as a preset.

    ganstream invert BUNDLE SAMPLE [--preset NAME] [--presets FILE] [--refine N] [--random N]
                     [--run RUN_DIR [--checkpoint latest|best]] [--seed S] [--provider P]

The search is `ganstream.realtime.inversion.Inverter`'s: the bundle's encoder, the best of --random
random latents, then --refine steps of refinement from the nearer of the two. Without --run the
refinement is CMA-ES on the bundle's ONNX generator; with --run (the training run the bundle was
exported from) it is Adam on the latent through the run's torch generator (`TorchRefiner`), on
`torch_spectral_distance`, the torch twin of `ganstream.core.distance.spectral_distance` (held to
1e-3 of it by tests/test_invert.py). Every distance printed is measured on the bundle, the sound a
host plays, whichever way the latent was found; a refinement that does not get nearer is dropped.

The result is saved as a preset in the presets file (default presets.json; one that exists keeps its
other presets, and the file is rewritten atomically by `realtime.control.write_presets`), in the
format `ganstream play --presets` and `ganstream render --presets` read: {"presets": {NAME:
{"latent": [...], "macros": {each bundle macro: 0.0}}}}. A pitch-conditioned bundle's estimated
pitch is printed, not stored: a preset holds only "latent", "seed" and "macros" (realtime/automation.py
refuses other keys), and the pitch is the note a performer plays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganstream.core.pitch import note_name
from ganstream.realtime.automation import AutomationError, load_presets
from ganstream.realtime.bundle import Bundle, BundleError, load_bundle
from ganstream.realtime.control import ControlError, check_preset_name, write_presets
from ganstream.realtime.inference import ProviderError
from ganstream.realtime.inversion import Inversion, InversionError, Inverter, latent_bound
from ganstream.realtime.latents import LatentSpace
from ganstream.training.checkpoint import CheckpointError
from ganstream.training.spectral import spectral_distance

from .onnx import ExportError

PROG = "ganstream invert"
LEARNING_RATE = 0.05  # Adam's, on latents in +-1 (uniform) or +-4 (normal)


def torch_spectral_distance(reference: Tensor, candidates: Tensor) -> Tensor:
    """reference (T,), candidates (B, T) -> (B,) float64: training/spectral.py's twin of
    `ganstream.core.distance.spectral_distance`, in float64 as the numpy one computes."""
    ref = reference.reshape(-1).double()
    return spectral_distance(ref, candidates.reshape(-1, ref.shape[0]).double())


class TorchRefiner:
    """Adam on the latent through a torch waveform generator (B, D [+ C]) -> (B, 1, segment), the condition
    fixed, the latent clamped into +-bound after each step -> (the nearest row seen, its torch distance).
    Deterministic, so `seed` is unused. An `Inverter.invert` refiner (realtime/inversion.py `Refiner`)."""

    name = "Adam through the run's torch generator"

    def __init__(self, generator: torch.nn.Module, latent_size: int, bound: float, lr: float = LEARNING_RATE):
        self.generator = generator.eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.latent_size, self.bound, self.lr = int(latent_size), float(bound), float(lr)

    def __call__(self, audio: np.ndarray, row: np.ndarray, steps: int, seed: int = 0) -> tuple[np.ndarray, float]:
        d = self.latent_size
        ref = torch.as_tensor(np.asarray(audio, np.float32))
        z = torch.tensor(np.asarray(row[:d], np.float32), requires_grad=True)
        condition = torch.as_tensor(np.asarray(row[d:], np.float32))
        opt = torch.optim.Adam([z], lr=self.lr)
        best, best_d = np.asarray(row, np.float32).copy(), float("inf")
        for step in range(int(steps) + 1):  # the last pass only scores the last step
            audio_out = self.generator(torch.cat([z, condition])[None]).reshape(1, -1)
            loss = torch_spectral_distance(ref, audio_out)[0]
            if loss.item() < best_d:
                best_d = loss.item()
                best = torch.cat([z.detach(), condition]).numpy().copy()
            if step == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(-self.bound, self.bound)
        return best, best_d


def run_refiner(run_dir: Path, checkpoint: str, bundle: Bundle) -> TorchRefiner:
    """The TorchRefiner of a waveform training run that matches `bundle` (sample rate, segment, latent
    size, condition columns); ValueError naming the run and the mismatch otherwise."""
    from ganstream.training.models import OutputKind, family

    from .bundle import load_run_generator, run_mismatch

    generator, cfg, _, path = load_run_generator(Path(run_dir), checkpoint)
    if family(cfg.model.kind).output is not OutputKind.WAVEFORM:
        raise ValueError(f"{run_dir}: --run: a {cfg.model.kind} run makes spectrograms, which this refinement cannot "
                         "differentiate through; leave out --run to refine with CMA-ES on the bundle")
    why = run_mismatch(cfg, bundle.spec)
    if why:
        raise ValueError(f"{path}: --run: {why}: name the run the bundle was exported from")
    return TorchRefiner(generator, bundle.latent_size, latent_bound(bundle.latent_distribution))


def save_preset(path: Path, name: str, result: Inversion, bundle: Bundle) -> None:
    """Add (or replace) preset `name` in the presets file `path`, keeping its other presets."""
    space = LatentSpace.from_bundle(bundle)
    presets = _read_presets(path, space)
    presets[name] = {"latent": result.latent.astype(np.float64), "macros": {m: 0.0 for m in space.controls}}
    write_presets(path, presets)


def _read_presets(path: Path, space: LatentSpace) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        return load_presets(path, space)
    except AutomationError as e:
        raise ValueError(f"--presets: {e} (fix or move it: the new preset is written beside the ones it holds)") from None


def describe(result: Inversion, bundle: Bundle) -> list[str]:
    """The lines `main` prints: each stage's distance and time, the pitch a conditioned bundle heard, the choice."""
    width = max(len(s.name) for s in result.stages)
    lines = [f"{s.name + ':':<{width + 1}} distance {s.distance:.4f}  ({s.seconds:.2f} s)" for s in result.stages]
    if result.condition is not None:
        pitch = float(result.condition[0])
        heard = f"estimated pitch: {note_name(pitch)} (MIDI {pitch:g})"
        if result.condition.shape[0] > 1:
            heard += f", velocity {float(result.condition[1]):.2f}"
        lines.append(heard + " (play the preset at this note; presets do not store it)")
    lines.append(f"chose: {result.method}, distance {result.distance:.4f} ({result.seconds:.2f} s in all)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Find the latent whose sound is nearest a sample (the bundle's encoder, a random search, then "
        "refinement) and save it as a preset that `ganstream play --presets` and `render --presets` recall.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle (a directory, a .zip or a shipped bundle's name); it needs an encoder")
    p.add_argument("sample", metavar="SAMPLE", help="the sound to match: any file soundfile reads; longer than a segment, it is cut from its onset")
    p.add_argument("--preset", metavar="NAME", help="the preset's name (default: the sample's file name without extension)")
    p.add_argument("--presets", metavar="FILE", default="presets.json", help="the presets file to add it to (default: presets.json)")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="refinement steps: CMA-ES generations on the bundle, or with --run Adam steps (default: 0, none)")
    p.add_argument("--random", type=int, default=1000, metavar="N", help="random latents to try (default: 1000; 0 skips)")
    p.add_argument("--run", metavar="RUN_DIR", help="the training run the bundle came from: refine by gradient through its torch generator")
    p.add_argument("--checkpoint", default=None, metavar="latest|best", help="the run's checkpoint (default: latest; needs --run)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random search and CMA-ES (default: 0)")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider (default: auto)")
    args = p.parse_args(argv)
    if args.refine < 0 or args.random < 0 or args.seed < 0:
        p.error("--refine, --random and --seed must be 0 or more")
    if args.checkpoint is not None and args.run is None:
        p.error("--checkpoint needs --run")
    try:
        name = check_preset_name(args.preset if args.preset is not None else Path(args.sample).stem)
        presets_path = Path(args.presets)
        bundle = load_bundle(args.bundle)
        _read_presets(presets_path, LatentSpace.from_bundle(bundle))  # a broken file fails now, not after the search
        inverter = Inverter(bundle, args.provider, threads=None)
        refiner = run_refiner(Path(args.run), args.checkpoint or "latest", bundle) if args.run else None
        audio, message = inverter.load(args.sample)
        if message:
            print(f"{args.sample}: {message}")
        result = inverter.invert(audio, args.refine, args.random, args.seed, message, refiner=refiner)
        for line in describe(result, bundle):
            print(line)
        save_preset(presets_path, name, result, bundle)
    except (BundleError, InversionError, ControlError, ProviderError, ValueError, CheckpointError, ExportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"saved preset {name!r} to {presets_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
