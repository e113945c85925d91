"""Command-line entry points of the live engine: `ganstream render`, `play`, `devices` and `bench`.

`cli/main.py` routes `ganstream render ...` to `render_main(argv)`. Every
command here returns an exit status instead of raising: 0 on success, 2 with
one line `ganstream COMMAND: error: ...` on stderr for anything the user can
fix (a bad bundle, file, option or automation), and 1 with the traceback for
an internal failure (a bug, a failing library, `play`'s engine failing).

BUNDLE, in render, play and bench: a bundle directory or .zip, or the name of a
bundle shipped with ganstream (`ganstream play drums`); without one, the default
shipped bundle (`piano`). `bundle.resolve_bundle` decides, for every command.

render: the same streaming core as the live engine (`SegmentStream`), pulled
at the model rate, resampled to the output rate (default 48000 Hz) with a
streaming resampler, and written to a temporary file beside the output that
is renamed into place when complete. Identical inputs give a bit-identical
file on the same machine and execution provider.

play: checks its options, builds the live engine (`engine.Engine`) and hands
it to a `session.Session`, which runs it on a sound device with OSC and MIDI,
a one-line status until Ctrl-C, and a bounded shutdown. Exit status 1 (not 2)
when the engine fails by itself. A bundle with an encoder also gets an
inversion worker (realtime/invert_live.py) behind OSC's /ganstream/invert and
/ganstream/invert/input, recording from --input-device. devices: the output devices.
bench: the real-time factor of one generator call, of each mode and the control-to-sound latency.
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
from .bundle import DEFAULT_NAME, BundleError, load_bundle, shipped_bundles
from .latents import ControlPath, LatentSpace
from ganstream.core.pitch import note_name, parse_note
from ganstream.core.resample import QUALITIES, ResampledStream
from .stream import MODES, SegmentStream, StreamSettings

DEFAULT_SAMPLE_RATE = 48000
FORMATS = {".wav": "WAV", ".flac": "FLAC"}
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}
PROGRESS_MIN_SECONDS = 30.0  # shorter renders finish too fast for a bar to help
BLOCK_SECONDS = 0.5
MAX_VELOCITY_EXPONENT = 10.0


class CommandError(Exception):
    """A problem the user can fix; the command prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit
        raise CommandError(message)


def _bundle_argument(p: argparse.ArgumentParser) -> None:
    """BUNDLE of render, play and bench; load_bundle resolves it (bundle.resolve_bundle)."""
    p.add_argument(
        "bundle", nargs="?", metavar="BUNDLE",
        help=f"bundle directory or .zip, or the name of a bundle shipped with ganstream ({', '.join(shipped_bundles()) or 'none here'}); "
        f"default: {DEFAULT_NAME}",
    )


def _root_note(text: str) -> float:
    """`--root-note`: a MIDI number or a note name (core/pitch.parse_note)."""
    try:
        return parse_note(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_velocity_curve(text: str) -> float:
    """`--velocity-curve`: "linear" or "exp:G" -> the exponent G of gain = velocity ** G (linear: 1)."""
    if text == "linear":
        return 1.0
    kind, colon, value = text.partition(":")
    try:
        g = float(value) if kind == "exp" and colon else math.nan
    except ValueError:
        g = math.nan
    if not (math.isfinite(g) and 0 < g <= MAX_VELOCITY_EXPONENT):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use linear, or exp:G for gain = velocity ** G with G in (0, {MAX_VELOCITY_EXPONENT:g}] (e.g. exp:2)"
        )
    return g


def _note_options(p: argparse.ArgumentParser) -> None:
    """How trigger mode plays notes (render, play and bench)."""
    p.add_argument("--polyphony", type=int, default=8, help="trigger mode: voices at once (default 8)")
    p.add_argument("--note-off", action="store_true", help="trigger mode: a note-off fades its voice out (default: one-shots)")
    root = p.add_mutually_exclusive_group()
    root.add_argument(
        "--root-note", type=_root_note, metavar="N",
        help="trigger mode: the note a voice sounds as generated, a MIDI number or a name (C4, A#3); a note plays "
        "note - N semitones away, within +-24 (default: the bundle's root note; a bundle without one plays every note as generated)",
    )
    root.add_argument("--no-transpose", action="store_true", help="trigger mode: every note plays the voice as generated")
    p.add_argument(
        "--velocity-curve", type=parse_velocity_curve, default=1.0, metavar="linear|exp:G",
        help="trigger mode: a voice's gain is velocity (linear, the default) or velocity ** G (exp:G; exp:2 is the usual curve)",
    )
    kit = p.add_mutually_exclusive_group()
    kit.add_argument("--kit", metavar="FILE", help="trigger mode: a kit file mapping notes to pads (docs/live.md; default: the bundle's kit, if it ships one)")
    kit.add_argument("--no-kit", action="store_true", help="trigger mode: ignore the bundle's kit; every note plays the current latent")
    p.add_argument(
        "--out-of-range", choices=("fold", "refuse"), default="fold",
        help="a pitch-conditioned bundle: a note outside its trained range is folded in by octaves (default) or refused "
        "(OSC answers on /ganstream/error)",
    )


def note_settings(args: argparse.Namespace, bundle, mode: str, command: str, space: LatentSpace | None = None) -> dict:
    """The StreamSettings fields of the note options: polyphony, note_off, root_note, velocity_exponent,
    and pitch_range (a conditioned bundle) and kit (trigger mode).

    The root is --root-note, else the bundle's (`streaming.root_note`, estimated at export). A bundle
    without one plays notes as generated, as before notes transposed (a kit's pads would otherwise
    sound two octaves down from a guessed root), and trigger mode says so; --no-transpose: None.
    A pitch-conditioned bundle asks its generator for each note instead: it never transposes.
    The kit is --kit, else the bundle's (`streaming.kit`) unless --no-kit, in trigger mode only."""
    if args.polyphony < 1:
        raise CommandError(f"--polyphony must be >= 1, got {args.polyphony}")
    kit = _kit(args, bundle, mode, command, space)
    condition = bundle.spec.condition
    if condition is not None:
        if args.root_note is not None:
            raise CommandError(f"--root-note: {bundle.name} is pitch-conditioned ({condition.kind}, notes "
                               f"{condition.pitch_range[0]}..{condition.pitch_range[1]}): it plays each note's pitch without transposing")
        return {"polyphony": args.polyphony, "note_off": args.note_off, "root_note": None,
                "velocity_exponent": args.velocity_curve, "pitch_range": condition.pitch_range, "kit": kit}
    root = args.root_note
    if args.no_transpose or kit is not None:
        root = None
    elif root is None:
        root = bundle.streaming.root_note
        if root is None and mode == "trigger":
            print(
                f"ganstream {command}: {bundle.name} has no root note (export found no clear pitch): notes play "
                "their voices as generated; --root-note N transposes them from N",
                file=sys.stderr,
            )
    return {"polyphony": args.polyphony, "note_off": args.note_off, "root_note": root, "velocity_exponent": args.velocity_curve, "kit": kit}


def _check_notes(notes, bundle, args: argparse.Namespace, source: str) -> None:
    """render: --out-of-range refuse refuses an automation file's note outside a conditioned bundle's trained
    range, as play refuses it live; pitch entries on a bundle without a condition are pointed out."""
    condition = bundle.spec.condition
    if condition is None:
        if any(n.pitch is not None for n in notes):
            print(f"ganstream render: warning: {source}: {bundle.name} is not pitch-conditioned; its pitch entries do nothing",
                  file=sys.stderr)
        return
    if args.out_of_range != "refuse":
        return
    lo, hi = condition.pitch_range
    for n in notes:
        value = n.pitch if n.pitch is not None else n.note
        if value is not None and not n.off and not lo <= value <= hi:
            raise CommandError(f"{source}: note at {n.sample / bundle.sample_rate:g} s: {value:g} ({note_name(value)}) is outside "
                               f"the notes {bundle.name} was trained on, {lo} ({note_name(lo)}) to {hi} ({note_name(hi)}) "
                               "(--out-of-range refuse; fold plays it folded in by octaves)")


def _kit(args: argparse.Namespace, bundle, mode: str, command: str, space: LatentSpace | None):
    """The kit trigger mode plays: --kit FILE, else the bundle's own (`streaming.kit`); None without one or with --no-kit."""
    from .kit import KitError, load_kit

    path = getattr(args, "kit", None)
    if path is None and not getattr(args, "no_kit", False) and bundle.streaming.kit is not None:
        path = bundle.path / bundle.streaming.kit
    if path is None:
        return None
    if mode != "trigger":
        if getattr(args, "kit", None) is not None:
            print(f"ganstream {command}: warning: --kit plays in trigger mode only (--mode trigger); {mode} mode ignores it", file=sys.stderr)
        return None
    if args.root_note is not None:
        raise CommandError(f"--root-note: the kit {path} plays each pad as generated; give --no-kit to transpose notes instead")
    space = space if space is not None else LatentSpace.from_bundle(bundle)
    try:
        # Pads may name presets: those of --presets, whose latents and macros the kit plays.
        presets = load_presets(args.presets, space) if getattr(args, "presets", None) and Path(args.presets).is_file() else None
        return load_kit(path, space, presets=presets)
    except (KitError, AutomationError) as e:
        raise CommandError(str(e)) from None


def _render_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ganstream render",
        description="Render endless audio from a bundle to a WAV or FLAC file, through the same streaming "
        "core as the live engine. The same inputs give a bit-identical file.",
    )
    _bundle_argument(p)
    p.add_argument("-o", "--output", required=True, help="output file; .wav or .flac")
    p.add_argument("--seconds", type=float, required=True, help="length of the render in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latent and of the walk (default 0)")
    p.add_argument("--automation", help="keyframes file, .json or .csv, and notes for trigger mode (.json) (docs/automation.md)")
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
    _note_options(p)
    p.add_argument("--batch", type=int, default=8, help="segments per generator call (default 8)")
    p.add_argument(
        "--resample-quality", choices=QUALITIES, default="HQ",
        help="resampler: soxr HQ (default), VHQ, MQ, LQ, or live (what `ganstream play` uses)",
    )
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
    except Exception:  # a bug or a failing library, not the user's to fix: the traceback, and 1
        import traceback

        traceback.print_exc()
        print(f"ganstream {name}: internal error (the traceback is above)", file=sys.stderr)
        return 1


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
    automation = load_automation(args.automation, space, bundle.sample_rate, presets) if args.automation else None
    path = _latent_path(args, bundle, space, automation.keyframes if automation else None)
    mode = args.mode or bundle.streaming.mode
    notes = automation.notes if automation else []
    _check_notes(notes, bundle, args, str(args.automation))
    if notes and mode != "trigger" and bundle.spec.condition is None:
        print(f"ganstream render: warning: the notes of {args.automation} play in trigger mode only (--mode trigger); "
              f"{mode} mode ignores them", file=sys.stderr)
    try:
        settings = StreamSettings.from_bundle(
            bundle,
            mode=args.mode,
            crossfade=args.crossfade,
            texture_overlap=args.texture_overlap,
            latent_smoothing_s=args.smoothing,
            batch=args.batch,
            **note_settings(args, bundle, mode, "render", space),  # root_note None (--no-transpose) is the default
        )
        from .inference import Generator, ProviderError  # onnxruntime session set-up, only when rendering

        try:
            generator = Generator(bundle, provider=args.provider, threads=args.threads)
        except ProviderError as e:
            raise CommandError(str(e)) from None
        stream = SegmentStream(generator, path, settings, triggers=notes)
    except ValueError as e:
        if isinstance(e, BundleError):
            raise
        raise CommandError(str(e)) from None

    resampled = ResampledStream(stream, bundle.sample_rate, args.sample_rate, quality=args.resample_quality)
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
        try:
            return ControlPath.from_keyframes(
                space, keyframes, base=space.seed_latent(args.seed), seed=args.seed, walk_rate=rate,
                walk_depth=depth, sample_rate=bundle.sample_rate,
            )
        except ValueError as e:
            raise CommandError(f"{args.automation}: {e}") from None
    if walking:
        return ControlPath.random_walk(space, args.seed, rate, depth, bundle.sample_rate)
    return ControlPath.fixed(space, args.seed)


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


# -- play ------------------------------------------------------------------------------------------


def _stream_options(p: argparse.ArgumentParser) -> None:
    """Options that choose the bundle, the generator and how the stream is made (play and bench)."""
    _bundle_argument(p)
    p.add_argument("--provider", default="auto", help="onnxruntime provider: auto (default), cpu, cuda, coreml, directml")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores but one)")
    p.add_argument("--device", help="output device: index, name or part of it (`ganstream devices` lists them)")
    p.add_argument("--blocksize", type=int, default=256, help="frames per audio callback (default 256)")
    p.add_argument(
        "--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help=f"output rate in Hz (default {DEFAULT_SAMPLE_RATE})"
    )
    p.add_argument("--crossfade", type=int, help="crossfade between segments in model-rate samples (default: the bundle's)")
    p.add_argument("--texture-overlap", type=int, help="segments overlapping in texture mode (default: the bundle's)")
    p.add_argument("--smoothing", type=float, help="latent smoothing time constant in seconds (default: the bundle's)")
    _note_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latent and of the walk (default 0)")
    p.add_argument("--walk-rate", type=float, help="random-walk knots per second (default: the bundle's)")
    p.add_argument("--walk-depth", type=float, help="random-walk depth in latent units (default: the bundle's)")
    p.add_argument("--no-walk", action="store_true", help="start with the walk off (depth 0)")
    p.add_argument(
        "--resample-quality", choices=QUALITIES, default="live",
        help="resampler to the output rate: live (default, 2 ms delay), or soxr HQ/MQ/LQ (20-50 ms more latency)",
    )
    p.add_argument(
        "--no-realtime", action="store_true",
        help="do not ask for real-time scheduling (SCHED_FIFO 1) for the engine's threads",
    )
    from .engine import low_latency_help

    p.add_argument("--low-latency", action="store_true", help=low_latency_help())


def _play_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ganstream play",
        description="Play a bundle live on a sound device, controlled over OSC and MIDI. Ctrl-C stops.",
    )
    _stream_options(p)
    p.add_argument("--mode", choices=MODES, help="crossfade, texture or trigger (default: the bundle's)")
    p.add_argument("--gain", type=float, default=1.0, help="master gain, linear 0..2 (default 1)")
    p.add_argument("--presets", help="presets JSON file, read at start and written by preset saves")
    p.add_argument("--osc-port", type=int, default=9000, help="OSC UDP port (default 9000; 0: any free port)")
    p.add_argument("--osc-host", default="127.0.0.1", help="address OSC listens on (default 127.0.0.1)")
    p.add_argument("--no-osc", action="store_true", help="no OSC server")
    p.add_argument(
        "--osc-reply-port", type=int,
        help="send OSC replies (/ganstream/status, /ganstream/error) to this port on the sender's host "
        "(default: the port each message came from)",
    )
    p.add_argument("--midi-map", help="MIDI map YAML (default: the built-in map; with --learn it may not exist yet)")
    p.add_argument(
        "--learn", action="store_true",
        help="MIDI learn on the terminal: type a target, move a control; bindings are saved to --midi-map",
    )
    midi = p.add_mutually_exclusive_group()
    midi.add_argument("--midi-in", help="MIDI input port to open (name, part of it, or index)")
    midi.add_argument("--midi-virtual", help="create a virtual MIDI input port with this name")
    p.add_argument("--midi-api", default="auto", help="MIDI API: auto, alsa, jack, coremidi, winmm (default auto)")
    p.add_argument(
        "--invert-refine", type=int, default=0, metavar="N",
        help="live inversions (/ganstream/invert) also run N generations of CMA-ES from the encoder's latent: nearer, "
        "about 50 ms a generation on one core while the sound plays on (default: 0, the encoder alone, a few ms)",
    )
    p.add_argument(
        "--input-device",
        help="input device that OSC /ganstream/invert/input records from (a bundle with an encoder): index, name or part "
        "of it (default: the --device, or the default input)",
    )
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--record", help="write the session's control timeline here (JSON) when it stops")
    p.add_argument("--stats", help="write the final status here (JSON) when it stops")
    p.add_argument("--quiet", action="store_true", help="no status line")
    return p


def play_main(argv: list[str] | None = None) -> int:
    """`ganstream play [BUNDLE] ...`; returns the exit status."""
    return _run("play", _play, argv)


def engine_settings(args: argparse.Namespace):
    """The `EngineSettings` the play/bench options ask for (`--low-latency`: engine.LOW_LATENCY)."""
    from .engine import LOW_LATENCY, EngineSettings

    extra = dict(LOW_LATENCY) if args.low_latency else {}
    return EngineSettings(
        sample_rate=args.sample_rate, blocksize=args.blocksize, resample_quality=args.resample_quality,
        realtime_priority=not args.no_realtime, **extra,
    )


def _engine_from_args(
    args: argparse.Namespace, mode: str | None, *, gain: float = 1.0, presets=None, record: bool = False, command: str = "play",
):
    """Load the bundle, start the generator and build an Engine from play/bench options."""
    from .engine import Engine
    from .inference import Generator, ProviderError

    if args.blocksize < 1 or args.blocksize > 8192:
        raise CommandError(f"--blocksize must be 1..8192, got {args.blocksize}")
    if args.sample_rate <= 0:
        raise CommandError(f"--sample-rate must be positive, got {args.sample_rate}")
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be >= 1, got {args.threads}")
    bundle = load_bundle(args.bundle)
    space = LatentSpace.from_bundle(bundle)
    rate = bundle.streaming.walk_rate if args.walk_rate is None else args.walk_rate
    depth = bundle.streaming.walk_depth if args.walk_depth is None else args.walk_depth
    if args.no_walk:
        depth = 0.0
    try:
        stream_settings = StreamSettings.from_bundle(
            bundle, mode=mode, crossfade=args.crossfade, texture_overlap=args.texture_overlap,
            latent_smoothing_s=args.smoothing, **note_settings(args, bundle, mode or bundle.streaming.mode, command, space),
        )
        settings = engine_settings(args)
        try:
            generator = Generator(bundle, provider=args.provider, threads=args.threads, warmup_batch_sizes=(1, 2))
        except ProviderError as e:
            raise CommandError(str(e)) from None
        from .control import ControlError

        try:
            engine = Engine(
                generator, space, stream_settings, settings, seed=args.seed, walk_rate=rate, walk_depth=depth,
                gain=gain, presets_path=presets, record=record, out_of_range=args.out_of_range,
            )
        except ControlError as e:
            raise CommandError(str(e)) from None
    except ValueError as e:
        if isinstance(e, BundleError):
            raise
        raise CommandError(str(e)) from None
    return bundle, engine


def _play(args: argparse.Namespace) -> int:
    from .session import MidiOptions, OscOptions, Session, SessionError, SessionFailed

    launched = time.monotonic()
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise CommandError(f"--seconds must be a positive number, got {args.seconds}")
    if not (0.0 <= args.gain <= 2.0):
        raise CommandError(f"--gain must be within 0..2, got {args.gain}")
    if args.learn and not args.midi_map:
        raise CommandError("--learn needs --midi-map PATH: the file the learned bindings are saved to")
    if args.invert_refine < 0:
        raise CommandError(f"--invert-refine must be 0 or more generations, got {args.invert_refine}")
    midi = None
    if args.learn or args.midi_in is not None or args.midi_virtual is not None or args.midi_map is not None:
        midi = MidiOptions(
            port=args.midi_in, virtual=args.midi_virtual, api=args.midi_api, map_path=args.midi_map, learn=args.learn,
            # --learn may start a new map: a file that does not exist yet is where it will be saved.
            fresh_map=args.learn and not Path(args.midi_map).exists(),
        )
    osc = None if args.no_osc else OscOptions(args.osc_host, args.osc_port, args.osc_reply_port)
    if not args.no_realtime:
        from .engine import raise_priority

        raise_priority()  # before any thread starts, so that they all inherit it
    bundle, engine = _engine_from_args(args, args.mode, gain=args.gain, presets=args.presets, record=bool(args.record))
    # The watchdog: each of the three parts may take its 5 s; past 20 s something holds the GIL.
    session = Session(
        engine, invert=_invert_worker(args, bundle, engine, osc), label=bundle.name, osc=osc, midi=midi,
        device=args.device, quiet=args.quiet, launched=launched, exit_after_s=20.0,
    )
    failure = None
    try:
        reason = session.play(args.seconds)
    except SessionError as e:
        raise CommandError(str(e)) from None
    except SessionFailed as e:  # not the user's to fix: report what played, then exit 1
        failure, reason = e, "failed"
    session.report(reason)
    if args.record:
        session.write_record(args.record)
    if args.stats:
        session.write_stats(args.stats)
    if failure is not None:
        print(f"ganstream play: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _invert_worker(args: argparse.Namespace, bundle, engine, osc):
    """The inversion worker behind /ganstream/invert (not started), or None: a bundle without an encoder,
    or no OSC to ask it through. --input-device, else play's --device, names the input it records from."""
    if bundle.encoder is None or osc is None:
        if args.input_device is not None:
            why = "has no encoder" if bundle.encoder is None else "has no OSC (--no-osc) to ask for an inversion"
            print(f"ganstream play: warning: --input-device is unused: {bundle.name} {why}", file=sys.stderr)
        return None
    from .invert_live import InvertWorker

    spec, option = (args.input_device, "--input-device") if args.input_device is not None else (args.device, "--device")
    return InvertWorker(bundle, engine.controls, input_device=spec, input_option=option, refine=args.invert_refine)


# -- devices ---------------------------------------------------------------------------------------


def _devices_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ganstream devices",
        description="List the audio output devices `ganstream play --device` takes, and the MIDI inputs for --midi-in.",
    )
    p.add_argument("--midi-api", default="auto", help="MIDI API to list: auto, alsa, jack, coremidi, winmm (default auto)")
    return p


def devices_main(argv: list[str] | None = None) -> int:
    return _run("devices", _devices, argv)


def _devices(args: argparse.Namespace) -> int:
    from .audio import AudioError, describe_devices

    try:
        print(describe_devices())
    except AudioError as e:
        raise CommandError(str(e)) from None
    try:
        from .midi import describe_midi_inputs
    except ImportError as e:  # python-rtmidi missing: audio devices are still worth listing
        print(f"\nMIDI inputs: unavailable ({e})")
    else:
        print("\n" + describe_midi_inputs(args.midi_api))
    return 0


# -- bench -----------------------------------------------------------------------------------------


def _bench_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ganstream bench",
        description="Measure the real-time factor of one generator call (for a spectral bundle without a network, "
        "its Griffin-Lim or PGHI in numpy with it) and of each streaming mode, and the control-to-sound latency on "
        "a sound device (or, with --null, without one).",
    )
    _stream_options(p)
    p.add_argument("--modes", default="crossfade,texture,trigger", help="modes to measure (default: all three)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of audio per measurement (default 5)")
    p.add_argument("--rate", type=float, default=100.0, help="control changes per second while measuring (default 100)")
    p.add_argument("--null", action="store_true", help="measure latency without a sound device (ring and resampler only)")
    p.add_argument("--json", help="also write the results here")
    return p


def bench_main(argv: list[str] | None = None) -> int:
    return _run("bench", _bench, argv)


def _bench(args: argparse.Namespace) -> int:
    import json

    from .audio import AudioError
    from .bench import measure_generator, measure_latency, measure_rtf
    from .session import jsonable

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise CommandError(f"--modes: unknown mode {bad[0] if bad else '(none)'} (modes: {', '.join(MODES)})")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise CommandError(f"--seconds must be a positive number, got {args.seconds}")
    results: dict = {"generator": None, "rtf": {}, "latency": None}
    for mode in modes:
        bundle, engine = _engine_from_args(args, mode, command="bench")
        if results["generator"] is None:
            g = results["generator"] = measure_generator(engine.generator)
            how = f", {g['reconstruction']}" if g["reconstruction"] else ""
            print(
                f"generator  real-time factor {g['rtf']:7.1f}x: {1000 * g['seconds']:.1f} ms per {g['segment_s']:.3f} s segment "
                f"({engine.provider}{how})",
                file=sys.stderr,
            )
        r = measure_rtf(engine, args.seconds, args.rate)
        results["rtf"][mode] = r
        results["provider"] = engine.provider
        print(
            f"{mode:9s}  real-time factor {r['rtf']:7.1f}x alone, {r['rtf_controls']:7.1f}x with {args.rate:g} "
            f"control changes/s ({engine.provider})",
            file=sys.stderr,
        )
    bundle, engine = _engine_from_args(args, None, command="bench")
    try:
        lat = measure_latency(engine, args.seconds, args.rate, output="null" if args.null else "device", device=args.device)
    except AudioError as e:
        raise CommandError(f"{e} (or measure without a device: --null)") from None
    results["latency"] = lat
    print(
        f"control-to-sound latency ({lat['output']}, {args.blocksize}-frame blocks): p50 {lat['p50']:.1f} ms, "
        f"p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms over {lat['count']} changes; "
        f"{lat['underruns']} underruns; producer cpu {100 * lat['cpu']:.0f}%",
        file=sys.stderr,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(jsonable(results), indent=2) + "\n")
    return 0


# Subcommands of the live engine: name -> parser factory, and name -> entry point.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "render": _render_parser,
    "play": _play_parser,
    "devices": _devices_parser,
    "bench": _bench_parser,
}
COMMANDS: dict[str, Callable[[list[str] | None], int]] = {
    "render": render_main,
    "play": play_main,
    "devices": devices_main,
    "bench": bench_main,
}


def main(argv: list[str] | None = None) -> int:
    """`python -m ganstream.realtime.cli COMMAND ...`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ganstream.realtime.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
