"""`ganstream export RUN_DIR -o BUNDLE`: a training run's generator as a bundle the live engine plays.

`ganstream export GAN_RUN --vocoder VOCODER_RUN -o BUNDLE` writes a spectral bundle (a spectral GAN
and its reconstruction network), `ganstream export GAN_RUN --reconstruction griffin-lim -o BUNDLE` one
without a network, whose audio hosts rebuild by Griffin-Lim (or `pghi`) in numpy;
`ganstream export VOCODER_RUN -o voc.gsb` the reconstruction network alone.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from ganstream.core.manifest import STREAMING_MODES, BundleError
from ganstream.core.pitch import parse_note
from ganstream.training.checkpoint import CheckpointError
from ganstream.training.config import ConfigError
from ganstream.training.models import UnknownModelKind
from ganstream.training.models.encoder import EncoderConfig

from .bundle import DEFAULT_GL_ITERATIONS, export_run
from .controls import DEFAULT_K
from .onnx import DEFAULT_OPSET, TOLERANCE, ExportError, ParityError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganstream export",
        description=(
            "Export a run's generator (its EMA weights when it kept them) to ONNX, check it against PyTorch, "
            "derive musical controls and write a bundle (docs/bundle.md). A spectral GAN needs --vocoder or --reconstruction; "
            "a vocoder run alone gives a reconstruction bundle (for eval-reconstruction)."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the training run directory (runs/NAME-HASH)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--out", metavar="BUNDLE", help="the bundle directory to write (an earlier bundle there is replaced)")
    where.add_argument("--into", metavar="BUNDLE", help="with --encoder: add the encoder to BUNDLE, a waveform bundle exported from RUN_DIR, keeping its other files")
    p.add_argument("--checkpoint", default="latest", metavar="latest|best|PATH", help="which checkpoint (default: latest)")
    p.add_argument("--fp16", action="store_true", help=f"store weights as float16: half the file, parity limit {TOLERANCE['fp16']:g} instead of {TOLERANCE['fp32']:g}")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--zip", action="store_true", help="also write BUNDLE.zip with the same files")
    p.add_argument("--controls", type=int, default=DEFAULT_K, metavar="K", help=f"principal (GANSpace) controls (default: {DEFAULT_K}); 0 writes no controls")
    p.add_argument("--name", help="the bundle's display name (default: the run's name)")
    p.add_argument(
        "--mode", choices=STREAMING_MODES,
        help="the streaming mode hosts start in (the manifest's streaming.mode; play and render take it unless given --mode); "
        "default: crossfade for segments of a quarter second or more, texture for shorter ones",
    )
    p.add_argument(
        "--root-note", metavar="N",
        help="the note the generated sounds play at (streaming.root_note; trigger mode transposes notes from it), "
        "a MIDI number or a name (C4, A#3); default: estimated from generated clips, none when they have no clear pitch",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the parity, control and root-note latents (default: 0)")
    p.add_argument("--vocoder", metavar="VOCODER_RUN", help="a vocoder run (train configs/vocoder.yaml) turning a spectral GAN's spectrograms into audio")
    p.add_argument(
        "--reconstruction", metavar="griffin-lim[:N][:random]|pghi",
        help="spectral GANs without a vocoder run: hosts rebuild the audio in numpy by fast Griffin-Lim, N iterations per "
        f"segment (default {DEFAULT_GL_ITERATIONS}), or by PGHI",
    )
    p.add_argument("--vocoder-checkpoint", default="latest", metavar="latest|PATH", help="which checkpoint of the vocoder run (default: latest)")
    p.add_argument(
        "--encoder", action="store_true",
        help="also train an encoder (audio -> latent) for `ganstream invert` and /ganstream/invert, and ship it in the bundle (waveform GANs; about half a CPU-hour)",
    )
    p.add_argument("--encoder-steps", type=int, default=None, metavar="N",
                   help="the encoder's training steps on generated audio (default 1000); twice as many follow on the run's real clips, "
                        "then one and a half times as many for its refiner")
    p.add_argument("--encoder-iterations", type=int, default=None, metavar="K",
                   help=f"corrections the encoder's refiner makes, each running the generator once (default {EncoderConfig.iterations}; it trains "
                        f"with {EncoderConfig.trained_iterations}); "
                        "the nearest of the latents found is kept; 0: the encoder alone, faster but nearer less often")
    p.add_argument("--encoder-proposals", type=int, default=None, metavar="M",
                   help="latents the encoder proposes for a sample, which a host hears through the generator to start from the nearest "
                        f"(default {EncoderConfig.hypotheses}); 1: one latent, a bundle that hosts older than format version 6 read")
    p.add_argument("--encoder-beam", type=int, default=None, metavar="B",
                   help="proposals a host corrects side by side, the nearest B, each correction one generator call on B latents "
                        f"(default {EncoderConfig.beam}); 1: the nearest alone")
    p.add_argument("--fused", action="store_true", help="spectral bundles: also write generator and vocoder as one graph (not faster; for hosts that run one graph)")
    return p


def _encoder_into(args: argparse.Namespace, argv: list[str], start: float) -> int:
    """`--encoder --into BUNDLE`: an encoder for RUN_DIR written into the bundle exported from it."""
    from .encoder import add_encoder

    try:
        if not args.encoder:
            raise ExportError("--into adds an encoder to a bundle: give --encoder too")
        options = {"opset": args.opset, "fp16": args.fp16, "seed": args.seed}
        enc = _encoder_option(args)
        out = add_encoder(Path(args.into), Path(args.run_dir), args.checkpoint, options, print, None if enc is True else enc,
                          shlex.join(["ganstream", "export", *argv]))
    except ParityError as e:
        print(f"ganstream export: error: {e}", file=sys.stderr)
        return 1
    except (ExportError, CheckpointError, ConfigError, UnknownModelKind, BundleError) as e:
        print(f"ganstream export: error: {e}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - start:.1f} s: {out}")
    return 0


def _encoder_option(args: argparse.Namespace) -> bool | EncoderConfig:
    given = {k: v for k, v in (("--encoder-steps", args.encoder_steps), ("--encoder-iterations", args.encoder_iterations),
                               ("--encoder-proposals", args.encoder_proposals), ("--encoder-beam", args.encoder_beam)) if v is not None}
    if not args.encoder:
        if given:
            raise ExportError(f"{next(iter(given))} goes with --encoder")
        return False
    if not given:
        return True
    for flag, value in given.items():
        if value < 0:
            raise ExportError(f"{flag}: 0 or more, not {value}")
    for flag, value in (("--encoder-proposals", args.encoder_proposals), ("--encoder-beam", args.encoder_beam)):
        if value == 0:
            raise ExportError(f"{flag}: 1 or more, not 0")
    cfg = EncoderConfig(seed=args.seed)
    if args.encoder_steps is not None:
        n = args.encoder_steps
        cfg = replace(cfg, generated_steps=n, real_steps=2 * n, iteration_steps=3 * n // 2)
    if args.encoder_iterations is not None:
        cfg = replace(cfg, iterations=args.encoder_iterations)
    if args.encoder_proposals is not None:
        cfg = replace(cfg, hypotheses=args.encoder_proposals)
    if args.encoder_beam is not None:
        cfg = replace(cfg, beam=args.encoder_beam)
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.controls < 0:
        print("ganstream export: error: --controls must be 0 or more", file=sys.stderr)
        return 2
    try:
        root_note = None if args.root_note is None else parse_note(args.root_note)
    except ValueError as e:
        print(f"ganstream export: error: --root-note: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args.into is not None:
        return _encoder_into(args, argv, start)
    try:
        out = export_run(
            args.run_dir,
            args.out,
            checkpoint=args.checkpoint,
            fp16=args.fp16,
            opset=args.opset,
            controls=args.controls,
            make_zip=args.zip,
            name=args.name,
            seed=args.seed,
            command=shlex.join(["ganstream", "export", *argv]),
            log=print,
            vocoder=args.vocoder,
            vocoder_checkpoint=args.vocoder_checkpoint,
            fused=args.fused,
            mode=args.mode,
            reconstruction=args.reconstruction,
            root_note=root_note,
            encoder=_encoder_option(args),
        )
    except ParityError as e:
        # The graph written computes something else than the generator: the export failed, not the user's input (exit 1).
        print(f"ganstream export: error: {e}", file=sys.stderr)
        return 1
    except (ExportError, CheckpointError, ConfigError, UnknownModelKind) as e:
        # A run, checkpoint, option or target the user named that cannot be exported: exit 2, as every command.
        print(f"ganstream export: error: {e}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - start:.1f} s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
