"""Checkpoints: written atomically, loaded strictly and weights-only, versioned.

A checkpoint is one torch file: {"format", "config", "step", "trainer", "loop",
"rng"}. It is written to a temporary file in the same directory and renamed
over the target, so a crash mid-write never leaves a broken checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
LATEST = "latest.pt"
BEST = "best.pt"
_NUMBERED = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the file and the reason in the message."""


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Writes step_NNNNNNNN.pt and latest.pt, then deletes numbered ones beyond the newest `keep`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, **state}
    numbered = ckpt_dir / f"step_{state['step']:08d}.pt"
    save_atomic(state, numbered)
    tmp = ckpt_dir / f".{LATEST}.tmp{os.getpid()}"
    # latest.pt is a hard link when the file system allows it: no second copy of the weights.
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(numbered, tmp)
        os.replace(tmp, ckpt_dir / LATEST)
    except OSError:
        save_atomic(state, ckpt_dir / LATEST)
    for old in numbered_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return numbered


def numbered_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Numbered checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("step_*.pt") if (m := _NUMBERED.search(p.name))]
    return [p for _, p in sorted(found)]


def load_weights_only(path: Path, error: type[Exception], what: str) -> Any:
    """torch.load on the CPU with weights_only=True (no pickled code runs); an unreadable file raises
    `error` with "PATH: not a readable WHAT (...)"."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise error(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Loads with weights_only=True (no pickled code runs) and checks the format version."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    state = load_weights_only(path, CheckpointError, "checkpoint")
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path}: not a ganstream checkpoint (no format field)")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']} is not supported (this ganstream reads {FORMAT})")
    return state


def resolve_checkpoint(run_dir: Path, which: str = "latest") -> Path:
    """'latest', 'best' or a path -> the checkpoint file."""
    if which in ("latest", "best"):
        path = run_dir / "checkpoints" / (LATEST if which == "latest" else BEST)
        if not path.is_file():
            raise CheckpointError(f"{run_dir}: no {which} checkpoint in {path.parent}")
        return path
    return Path(which)


def load_generator(path: Path, weights: str = "ema") -> tuple[Any, Any, dict[str, Any]]:
    """Rebuilds a checkpoint's generator in eval mode: (generator, TrainConfig, checkpoint state).

    weights="ema" takes the EMA copy when the run kept one (and the raw weights
    otherwise); "raw" takes the trained weights. Loading is strict.
    """
    from .models import build_generator

    return _load_network(path, build_generator, "generator", weights)


def load_vocoder(path: Path, weights: str = "ema") -> tuple[Any, Any, dict[str, Any]]:
    """Rebuilds a vocoder run's reconstruction network in eval mode, like `load_generator`."""
    from .models import build_vocoder

    return _load_network(path, build_vocoder, "vocoder", weights)


def _load_network(path: Path, build: Any, raw_key: str, weights: str) -> tuple[Any, Any, dict[str, Any]]:
    from .config import config_from_dict

    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], str(path))
    trainer = state["trainer"]
    key = "ema" if weights == "ema" and trainer.get("ema") is not None else raw_key
    if key not in trainer:
        raise CheckpointError(f"{path}: a {cfg.model.kind} run holds no {raw_key} weights")
    network = build(cfg.model)
    try:
        network.load_state_dict(trainer[key])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the {key} weights do not match the model of its config: {e}") from None
    return network.eval(), cfg, state
