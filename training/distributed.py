"""Devices and data parallelism: picking the device, and averaging gradients across processes.

Runs launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) join
one process group: NCCL on GPUs, gloo on CPUs. Each process trains on its share
of the global batch and gradients are averaged with one all-reduce per network
and step, which is DistributedDataParallel's arithmetic. DDP's module wrapper is
not used because the WGAN-GP gradient penalty differentiates through the critic
twice and runs it three times before one backward pass, which DDP's reducer does
not support (pytorch/pytorch#63812, #47562).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process logs and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA when present (this process's GPU under torchrun), else CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available here (use cpu or auto)")
    return device


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Joins the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), pick_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def average_gradients(module: nn.Module) -> None:
    """Replaces each gradient by its mean over all processes, in one flat all-reduce."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def any_flags(flags: list[bool], device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over all processes, so every process takes the same branch."""
    if not (dist.is_available() and dist.is_initialized()):
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (a single-item list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
