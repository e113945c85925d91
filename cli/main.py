"""The `ganstream` command: routes a subcommand to the package that owns it.

Each entry names a module and a function; the module is imported only when its
subcommand runs, so `ganstream play` never loads torch.

Exit codes, the same for every command: 0 done, 2 a user error (a bad option, a
missing or unreadable file: the command names it), 1 an internal failure (an
export that fails its parity check, a diverged run, an audio device that dies, or a
bug: the traceback, then one line saying so).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Callable

from . import __version__

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("ganstream.train", "main", "train a GAN on a folder of audio or a built-in set"),
    "eval": ("ganstream.evaluation.evaluate", "main", "score a run or bundle against real audio, beside a floor and a ceiling"),
    "train-classifier": ("ganstream.evaluation.classifier", "main", "train the audio classifier behind classifier FD and the Inception Score"),
    "eval-reconstruction": ("ganstream.evaluation.recon_eval", "main", "compare Griffin-Lim, PGHI and a reconstruction network on held-out audio"),
    "export": ("ganstream.export.cli", "main", "export a training run to an ONNX bundle"),
    "kit": ("ganstream.export.kit", "main", "pick a General MIDI drum kit from a bundle's sounds by audio descriptors"),
    "invert": ("ganstream.export.invert", "main", "find the latent whose sound is nearest a sample, and save it as a preset"),
    "render": ("ganstream.realtime.cli", "render_main", "render endless audio from a bundle to a WAV or FLAC file"),
    "play": ("ganstream.realtime.cli", "play_main", "play a bundle live on a sound device, controlled by OSC and MIDI"),
    "devices": ("ganstream.realtime.cli", "devices_main", "list the audio output devices"),
    "bench": ("ganstream.realtime.cli", "bench_main", "measure the live engine's real-time factor and control latency"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: ganstream COMMAND [ARGS...]   (ganstream {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'ganstream COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ganstream: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return run_command(f"ganstream {name}", lambda: getattr(importlib.import_module(module), func)(rest))


def run_command(prog: str, command: Callable[[], int | None]) -> int:
    """Runs a command's main and returns its exit code; an exception that escapes it is a bug (each
    command turns the user's errors into exit 2 itself): the traceback, one line saying so, exit 1."""
    try:
        return int(command() or 0)
    except Exception:
        traceback.print_exc()
        print(f"{prog}: internal error (the traceback above); please report it with the command line", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
