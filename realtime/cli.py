"""Command-line entry points of the live engine: `ganstream render` (and, later, play, devices, bench).

`cli/main.py` routes `ganstream render ...` to `render_main(argv)`. Every
command here returns an exit status instead of raising: 0 on success, 2 with
one line `ganstream COMMAND: error: ...` on stderr for anything the user can
fix (a bad bundle, file, option or automation).

render: the same streaming core as the live engine (`SegmentStream`), pulled
at the model rate, resampled to the output rate (default 48000 Hz) with a
streaming resampler, and written to a temporary file beside the output that
is renamed into place when complete. Identical inputs give a bit-identical
file on the same machine and execution provider.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from .automation import AutomationError, load_automation, load_presets
from .bundle import BundleError, load_bundle
from .latents import FixedLatent, Keyframes, LatentSpace, RandomWalk, Walk
from .resample import ResampledStream
from .stream import MODES, SegmentStream, StreamSettings

DEFAULT_SAMPLE_RATE = 48000
FORMATS = {".wav": "WAV", ".flac": "FLAC"}
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}
PROGRESS_MIN_SECONDS = 30.0  # shorter renders finish too fast for a bar to help
BLOCK_SECONDS = 0.5


class CommandError(Exception):
    """A problem the user can fix; the command prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit
        raise CommandError(message)


def _render_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ganstream render",
        description="Render endless audio from a bundle to a WAV or FLAC file, through the same streaming "
        "core as the live engine. The same inputs give a bit-identical file.",
    )
    p.add_argument("bundle", nargs="?", help="bundle directory or .zip (default: the bundle shipped with ganstream)")
    p.add_argument("-o", "--output", required=True, help="output file; .wav or .flac")
    p.add_argument("--seconds", type=float, required=True, help="length of the render in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latent and of the walk (default 0)")
    p.add_argument("--automation", help="keyframes file, .json or .csv (docs/automation.md)")
    p.add_argument("--presets", help="a JSON file whose \"presets\" a CSV automation file may name")
    p.add_argument("--mode", choices=MODES, help="how segments are joined (default: the bundle's)")
    p.add_argument(
        "--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help=f"output rate in Hz (default {DEFAULT_SAMPLE_RATE})"
    )
    p.add_argument(
        "--subtype", choices=tuple(SUBTYPES), default="24", help="16- or 24-bit PCM, or 32-bit float (WAV only); default 24"
    )
    p.add_argument("--walk-rate", type=float, help="random-walk knots per second (default: the bundle's)")
    p.add_argument(
        "--walk-depth", type=float,
        help="random-walk depth in latent units (default: the bundle's; 0 with --automation)",
    )
    p.add_argument("--no-walk", action="store_true", help="a fixed latent: no random walk")
    p.add_argument(
        "--crossfade", type=int, help="crossfade between segments in model-rate samples (default: the bundle's)"
    )
    p.add_argument("--texture-overlap", type=int, help="segments overlapping in texture mode (default: the bundle's)")
    p.add_argument("--smoothing", type=float, help="latent smoothing time constant in seconds (default: the bundle's)")
    p.add_argument("--batch", type=int, default=8, help="segments per generator call (default 8)")
    p.add_argument("--provider", default="auto", help="onnxruntime provider: auto, cpu, cuda, coreml, directml")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores but one)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a progress bar"
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    return p


def render_main(argv: list[str] | None = None) -> int:
    """`ganstream render [BUNDLE] -o OUT --seconds S ...`; returns the exit status."""
    return _run("render", _render, argv)


def _run(name: str, command: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    parser = PARSERS[name]()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        return command(args)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except (CommandError, BundleError, AutomationError) as e:
        print(f"ganstream {name}: error: {e}", file=sys.stderr)
        return 2


def _render(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise CommandError(f"cannot tell the format of {out}: name a .wav or .flac file")
    subtype = SUBTYPES[args.subtype]
    if not sf.check_format(fmt, subtype):
        raise CommandError(f"{fmt} cannot hold {args.subtype} samples; use --subtype 16 or 24")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise CommandError(f"--seconds must be a positive number, got {args.seconds}")
    if args.sample_rate <= 0:
        raise CommandError(f"--sample-rate must be positive, got {args.sample_rate}")
    if args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    if args.batch < 1:
        raise CommandError(f"--batch must be >= 1, got {args.batch}")
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be >= 1, got {args.threads}")
    if not out.parent.is_dir():
        raise CommandError(f"cannot write {out}: no such directory {out.parent}")

    bundle = load_bundle(args.bundle)
    space = LatentSpace.from_bundle(bundle)
    presets = load_presets(args.presets, space) if args.presets else None
    keyframes = load_automation(args.automation, space, bundle.sample_rate, presets) if args.automation else None
    path = _latent_path(args, bundle, space, keyframes)
    try:
        settings = StreamSettings.from_bundle(
            bundle,
            mode=args.mode,
            crossfade=args.crossfade,
            texture_overlap=args.texture_overlap,
            latent_smoothing_s=args.smoothing,
            batch=args.batch,
        )
        from .inference import Generator, ProviderError  # onnxruntime session set-up, only when rendering

        try:
            generator = Generator(bundle, provider=args.provider, threads=args.threads)
        except ProviderError as e:
            raise CommandError(str(e)) from None
        stream = SegmentStream(generator, path, settings)
    except ValueError as e:
        if isinstance(e, BundleError):
            raise
        raise CommandError(str(e)) from None

    resampled = ResampledStream(stream, bundle.sample_rate, args.sample_rate)
    total = round(args.seconds * args.sample_rate)
    show = args.progress
    if show is None:
        show = sys.stderr.isatty() and args.seconds >= PROGRESS_MIN_SECONDS
    started = time.perf_counter()
    try:
        write_audio(out, resampled, total, args.sample_rate, fmt, subtype, progress=show)
    except (OSError, sf.SoundFileError) as e:
        raise CommandError(f"cannot write {out}: {getattr(e, 'strerror', None) or e}") from None
    took = time.perf_counter() - started
    speed = f", {args.seconds / took:.1f}x real time" if took > 0 else ""
    print(
        f"wrote {out}: {total / args.sample_rate:g} s at {args.sample_rate} Hz, {args.subtype}"
        f"{'' if args.subtype == 'float' else '-bit'} {fmt} ({stream.settings.mode}{speed})",
        file=sys.stderr,
    )
    return 0


def _latent_path(args: argparse.Namespace, bundle, space: LatentSpace, keyframes):
    """The latent path the options ask for: keyframes (with an optional walk), a walk, or a fixed seed."""
    rate = bundle.streaming.walk_rate if args.walk_rate is None else args.walk_rate
    depth = args.walk_depth
    if depth is None:
        depth = 0.0 if keyframes is not None else bundle.streaming.walk_depth
    if args.no_walk:
        depth = 0.0
    if depth < 0 or not math.isfinite(depth):
        raise CommandError(f"--walk-depth must be >= 0, got {depth}")
    walking = depth > 0
    if walking and not (rate > 0 and math.isfinite(rate)):
        raise CommandError(f"--walk-rate must be > 0 for a walk, got {rate}")
    if keyframes is not None:
        walk = Walk(space.size, args.seed, rate, depth, bundle.sample_rate) if walking else None
        try:
            return Keyframes(space, keyframes, base=space.seed_latent(args.seed), walk=walk)
        except ValueError as e:
            raise CommandError(f"{args.automation}: {e}") from None
    if walking:
        return RandomWalk(space, args.seed, rate, depth, bundle.sample_rate)
    return FixedLatent(space, args.seed)


def write_audio(
    path: Path, stream: ResampledStream, total: int, sample_rate: int, fmt: str, subtype: str, progress: bool = False
) -> None:
    """Pull `total` samples from `stream` into `path` (mono), through a temporary file renamed into place.

    PCM subtypes are clipped to [-1, 1] first (libsndfile would otherwise wrap
    out-of-range floats); float files keep the samples as they are.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    block = max(1, round(BLOCK_SECONDS * sample_rate))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total / sample_rate, desc="render", file=sys.stderr, leave=False,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]",
        )
    try:
        with sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=1, format=fmt, subtype=subtype) as f:
            done = 0
            while done < total:
                n = min(block, total - done)
                x = stream.read(n)
                if subtype != "FLOAT":
                    np.clip(x, -1.0, 1.0, out=x)
                f.write(x)
                done += n
                if bar is not None:
                    bar.update(n / sample_rate)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()


# Subcommands of the live engine: name -> parser factory, and name -> entry point.
# `play`, `devices` and `bench` join these tables.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {"render": _render_parser}
COMMANDS: dict[str, Callable[[list[str] | None], int]] = {"render": render_main}


def main(argv: list[str] | None = None) -> int:
    """`python -m ganstream.realtime.cli COMMAND ...`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ganstream.realtime.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
