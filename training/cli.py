"""The `train` command (also `ganstream train`)."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import CheckpointError
from .config import OPERATIONAL, ConfigError, TrainConfig, config_from_dict, describe_fields, load_config, parse_override
from .models import family_of

if TYPE_CHECKING:
    from .loop import EvaluatorFactory


def _config_dir() -> Path:
    """The shipped configs: package data (`ganstream.configs`), so `train wavegan` works from a wheel too."""
    return Path(str(resources.files("ganstream.configs")))


RESUMABLE = sorted(OPERATIONAL)
DEFAULT_CONFIG = "specgan-laptop"  # what `train` with no config trains: the quality benchmark's winner on all three real sets (docs/quality.md)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train",
        description="Train a GAN on a folder of audio or a built-in procedural set (synth:piano, synth:gaussian).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides are section.key=value, for example: train configs/wavegan.yaml data.source=~/samples train.steps=20000\n\n"
        "every field, with its default:\n" + describe_fields(),
    )
    p.add_argument("config", nargs="?", help=f"a YAML config file, or the name of one in configs/ (wavegan, dcgan1d, ...); "
                   f"omitted: configs/{DEFAULT_CONFIG}.yaml, the laptop recipe (or, with a model.kind=KIND override, that family's defaults); "
                   "its bundle needs a reconstruction network (train configs/vocoder.yaml, then export --vocoder)")
    p.add_argument("overrides", nargs="*", help="section.key=value settings applied on top of the config")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where its latest checkpoint stopped")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (same as train.device=...)")
    p.add_argument("--out", metavar="DIR", help="parent directory of the run directory (same as run.out_dir=...)")
    return p


def _config_path(name: str | None, overrides: list[str]) -> Path | None:
    if name is None:
        # Another family's fields are not WaveGAN's: model.kind=K alone means K's own defaults.
        return None if any(o.startswith("model.kind=") for o in overrides) else _config_dir() / f"{DEFAULT_CONFIG}.yaml"
    path = Path(name).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    config_dir = _config_dir()
    named = config_dir / f"{name}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml")))
    raise ConfigError(f"{name}: no such config file, and no config of that name in {config_dir} (known: {known})")


def _split_args(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """argparse cannot tell a config path from an override: an argument with '=' is an override."""
    items = ([args.config] if args.config else []) + list(args.overrides)
    config = [a for a in items if "=" not in a]
    if len(config) > 1:
        raise ConfigError(f"more than one config file given: {', '.join(config)}")
    return (config[0] if config else None), [a for a in items if "=" in a]


def resolve(args: argparse.Namespace) -> tuple[TrainConfig, Path, bool]:
    """The config, the run directory and whether it resumes."""
    from .loop import config_of_run, run_dir_for

    config_name, overrides = _split_args(args)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.resume:
        run_dir = Path(args.resume)
        if config_name:
            raise ConfigError("--resume takes its config from the run; give only overrides of train.{" + ",".join(RESUMABLE) + "}")
        cfg = config_of_run(run_dir)
        for text in overrides:
            (section, key), value = parse_override(text)
            if section != "train" or key not in RESUMABLE:
                raise ConfigError(f"override {text!r}: cannot change {section}.{key} when resuming (only train.{{{','.join(RESUMABLE)}}})")
        d = cfg.to_dict()
        for text in overrides:
            (section, key), value = parse_override(text)
            d[section][key] = value
        return config_from_dict(d, f"{run_dir} (resumed)"), run_dir, True
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    cfg = load_config(_config_path(config_name, overrides), overrides)
    return cfg, run_dir_for(cfg), False


def main(argv: list[str] | None = None, evaluator: EvaluatorFactory | None = None) -> int:
    """The command; `evaluator` scores runs as they train (the `train` entry point, ganstream/train.py,
    passes the evaluation package's; training cannot import it, see `loop.Run`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .data import DataError
    from .distributed import init_distributed
    from .loop import TrainingDiverged, install_stop_handlers

    try:
        cfg, run_dir, resume = resolve(args)
        dist, device = init_distributed(cfg.train.device)
        if dist.main:
            print(f"run: {run_dir}  device: {device}  model: {cfg.model.kind}  loss: {cfg.loss.kind}"
                  + (f"  processes: {dist.world}" if dist.enabled else ""), file=sys.stderr)
        run = family_of(cfg.model).run_class()(cfg, run_dir, device, dist, resume=resume, evaluator=evaluator)
        install_stop_handlers(run)
        run.train()
    except (ConfigError, CheckpointError, DataError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:  # the run failed after its rollbacks, not the user's input: 1 (cli/main.py)
        print(f"train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
