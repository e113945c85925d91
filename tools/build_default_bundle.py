"""Builds a bundle that ships with ganstream, realtime/bundles/NAME/, by name: train then export, or export a run.

    python tools/build_default_bundle.py piano|drums [--steps N] [--runs DIR] [--resume] [--checkpoint best] [--fp16]
    python tools/build_default_bundle.py piano|drums --from-run RUN_DIR --trained-by "COMMAND" [--checkpoint best] [--fp16]

Without --from-run it builds the bundle's real set (tools/build_sets.py, which apt-installs the
packages it needs and reuses a set already built), trains the bundle's config on it with `train`,
and exports the run. With --from-run it exports a run trained elsewhere on the same set (a
benchmark run, say); --trained-by is the command that trained it.

The manifest's provenance says how the bundle was made and from what: `command` holds every
command, joined by &&; `built_by` this tool's own command line; `data` the set's source, the
licence names of its sources and the set's whole stamp.json (packages and their versions,
licences, clip counts). All shipped bundles together must stay within 10 MB: --fp16 halves a
generator (a WaveGAN d=16 is 6 MB in fp32).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "realtime" / "bundles"  # the shipped bundles, one folder each (ganstream.realtime.bundle.SHIPPED_BUNDLES)
LIMIT_BYTES = 10_000_000  # every shipped bundle together: they are in every wheel


@dataclass(frozen=True)
class Shipped:
    """What one shipped bundle is made from, and how hosts start it."""

    config: str  # the training config, relative to the checkout
    set: str  # the real set it trains on: data.source is set:SET
    title: str  # the bundle's display name (the manifest's `name`)
    mode: str  # the streaming mode hosts start in (the manifest's streaming.mode)


SHIPPED = {
    "piano": Shipped("configs/default-bundle.yaml", "notes", "piano", "crossfade"),
    "drums": Shipped("configs/default-bundle-drums.yaml", "drums", "drums", "trigger"),
}


class BuildError(Exception):
    """A problem the caller can fix; printed as one line, exit 2."""


def data_provenance(source: str, stamp: dict[str, Any], stamp_file: Path) -> dict[str, Any]:
    """provenance.data of a bundle trained on a real set: its source, the licence names of what the set
    was made from (the set's summary line, and the DEP-5 names in each package's copyright file), its stamp."""
    missing = [key for key in ("packages", "licences", "licence", "counts") if key not in stamp]
    if missing:
        raise BuildError(f"{stamp_file}: has no {', '.join(missing)}; rebuild the set (python tools/build_sets.py {stamp.get('set', 'NAME')} --force)")
    licences = {package: entry.get("licenses", []) for package, entry in stamp["licences"].items()}
    return {"source": source, "licence": stamp["licence"], "licences": licences, "stamp": stamp}


def read_set_stamp(root: Path, name: str) -> tuple[dict[str, Any], Path]:
    """(stamp.json of set `name` under the data cache `root`, its path)."""
    from ganstream.training.data import real_sets

    folder = root / "sets" / name
    stamp = real_sets.read_stamp(folder)
    if stamp is None:
        raise BuildError(f"{folder / real_sets.STAMP}: missing or unreadable, so the {name} set's provenance is unknown; "
                         f"build it with python tools/build_sets.py {name}")
    return stamp, folder / real_sets.STAMP


def run_data(run_dir: Path) -> tuple[str, Path]:
    """(data.source, the data cache it was resolved in) of a run, from its config.yaml."""
    from ganstream.training.config import load_config
    from ganstream.training.data import real_sets

    if not (run_dir / "config.yaml").is_file():
        raise BuildError(f"{run_dir}: no config.yaml, not a training run directory")
    data = load_config(run_dir / "config.yaml").data
    return data.source, Path(data.cache_dir).expanduser() if data.cache_dir else real_sets.default_root()


def check_source(source: str, spec: Shipped, name: str, where: str) -> None:
    if source != f"set:{spec.set}":
        raise BuildError(f"{where}: data.source is {source!r}, but the {name} bundle is made from set:{spec.set} "
                         f"(its provenance records that set's stamp and licences)")


def shown(path: Path) -> str:
    """A path as commands record it: relative to the checkout when inside it."""
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def train_commands(spec: Shipped, root: Path | None, steps: int, runs: Path, resume_dir: Path | None) -> list[list[str]]:
    """Build the set (a no-op when it is up to date), then train: as run from the checkout.
    root: the config's data.cache_dir, None for the default; resume_dir: the run to continue."""
    build = ["python", "tools/build_sets.py", spec.set, *(["--root", str(root)] if root is not None else [])]
    if resume_dir is not None:
        return [build, ["train", "--resume", shown(resume_dir), f"train.steps={steps}"]]
    return [build, ["train", spec.config, f"train.steps={steps}", "--out", shown(runs)]]


def export_shipped(
    name: str, run_dir: Path, checkpoint: str, fp16: bool, commands: list[str], data: dict[str, Any], built_by: str, encoder: bool = False
) -> Path:
    """Exports `run_dir` into TARGET/name with the bundle's name and mode; provenance.command is `commands`
    followed by the export's own, joined by &&."""
    from ganstream.export.bundle import export_run

    spec, out = SHIPPED[name], TARGET / name
    export = ["ganstream", "export", shown(run_dir), "-o", shown(out), "--name", spec.title, "--mode", spec.mode, "--checkpoint", checkpoint]
    export += ["--fp16"] if fp16 else []
    export += ["--encoder"] if encoder else []  # with its refiner: about 2.4 MB at fp16 for a one-second WaveGAN
    print("$", shlex.join(export))
    return export_run(
        run_dir, out, checkpoint=checkpoint, fp16=fp16, name=spec.title, mode=spec.mode, log=print, encoder=encoder,
        command=" && ".join([*commands, shlex.join(export)]), extra_provenance={"built_by": built_by, "data": data},
    )


def shipped_bytes() -> int:
    """The size of every shipped bundle's files together."""
    return sum(f.stat().st_size for f in TARGET.glob("*/*") if f.is_file() and not f.parent.name.startswith("."))


def over_limit() -> str | None:
    """Why the shipped bundles are too big for the wheel, or None."""
    total = shipped_bytes()
    if total <= LIMIT_BYTES:
        return None
    return f"{shown(TARGET)} holds {total / 1e6:.2f} MB, more than the {LIMIT_BYTES / 1e6:g} MB the shipped bundles may take: rebuild with --fp16"


def build(args: argparse.Namespace, argv: list[str]) -> Path:
    """Trains (or takes --from-run) and exports the bundle `args.name`; returns the bundle directory."""
    from ganstream.training.config import load_config
    from ganstream.training.data import real_sets
    from ganstream.training.loop import run_dir_for

    spec = SHIPPED[args.name]
    if args.from_run is not None:
        run_dir = args.from_run.expanduser()
        source, root = run_data(run_dir)
        check_source(source, spec, args.name, str(run_dir / "config.yaml"))
        commands = [args.trained_by]
    else:
        steps = 4000 if args.steps is None else args.steps
        cfg = load_config(ROOT / spec.config, [f"train.steps={steps}", f"run.out_dir={args.runs}"])
        source, cache_dir = cfg.data.source, Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else None
        check_source(source, spec, args.name, spec.config)
        run_dir = run_dir_for(cfg)
        resume = run_dir if args.resume and (run_dir / "checkpoints").is_dir() else None
        calls = train_commands(spec, cache_dir, steps, args.runs, resume)
        for call in calls:
            print("$", shlex.join(call))
            subprocess.run([sys.executable, *call[1:]] if call[0] == "python" else call, cwd=ROOT, check=True)
        commands = [shlex.join(call) for call in calls]
        root = cache_dir or real_sets.default_root()
    stamp, stamp_file = read_set_stamp(root, spec.set)  # read after training: the set the run read
    data = data_provenance(source, stamp, stamp_file)
    built_by = shlex.join(["python", "tools/build_default_bundle.py", *argv])
    return export_shipped(args.name, run_dir, args.checkpoint, args.fp16, commands, data, built_by, args.encoder)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(SHIPPED), help="the shipped bundle to build")
    p.add_argument("--from-run", type=Path, metavar="RUN_DIR", help="export this run (trained on the bundle's set) instead of training one")
    p.add_argument("--trained-by", metavar="COMMAND", help="with --from-run: the command that trained it, recorded in the provenance")
    p.add_argument("--checkpoint", default="best", metavar="best|latest|PATH", help="which checkpoint to export (default: best)")
    p.add_argument("--fp16", action="store_true", help="store the weights as float16: half the size")
    p.add_argument("--encoder", action="store_true", help="also train and ship an encoder and its refiner for `ganstream invert` (about twenty-five CPU-minutes; the shipped drums have one)")
    p.add_argument("--steps", type=int, help="training steps (default 4000)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the training run goes (default: runs/)")
    p.add_argument("--resume", action="store_true", help="continue the run of an earlier build instead of starting over")
    args = p.parse_args(argv)
    if args.from_run is not None and not args.trained_by:
        p.error("--from-run needs --trained-by COMMAND: the command that trained the run, for the bundle's provenance")
    if args.from_run is None and args.trained_by is not None:
        p.error("--trained-by goes with --from-run (without it, the commands this tool runs are recorded)")
    if args.from_run is not None and (args.steps is not None or args.resume):
        p.error("--steps and --resume train a run; --from-run exports one that is already trained")

    from ganstream.export.onnx import ExportError, ParityError
    from ganstream.training.checkpoint import CheckpointError
    from ganstream.training.config import ConfigError
    from ganstream.training.data.dataset import DataError

    try:
        build(args, argv)
    except ParityError as e:  # the graph computes something else than the network (fp16 too coarse, say)
        print(f"build_default_bundle: error: {e}", file=sys.stderr)
        return 1
    except (BuildError, ExportError, CheckpointError, ConfigError, DataError) as e:
        print(f"build_default_bundle: error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"build_default_bundle: error: `{shlex.join(map(str, e.cmd))}` exited {e.returncode}", file=sys.stderr)
        return 1
    too_big = over_limit()
    if too_big:
        print(f"build_default_bundle: error: {too_big}", file=sys.stderr)
        return 1
    print(f"the shipped bundles take {shipped_bytes() / 1e6:.2f} MB of {LIMIT_BYTES / 1e6:g} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
