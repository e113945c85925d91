"""Data parallelism with two real gloo processes on the CPU."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ganstream.training.config import load_config
from ganstream.training.distributed import average_gradients, init_distributed
from ganstream.training.gan import GANTrainer
from ganstream.training.loop import Run, run_dir_for

GLOBAL_BATCH = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp):
    # Hinge loss and no phase shuffle: nothing random beyond the inputs fixed below.
    return load_config(None, [
        "model.width=2", "model.phase_shuffle=0", "loss.kind=hinge", "loss.critic_steps=1",
        "train.ema_decay=0", f"train.batch_size={GLOBAL_BATCH}", "train.device=cpu",
        "train.progress=false", "train.tensorboard=false", "data.synth_items=24",
        f"data.cache_dir={tmp}/cache", f"run.out_dir={tmp}/runs",
    ])


def _one_step(cfg, rank: int, world: int):
    """One training step on this process's share of a fixed global batch; returns the new weights."""
    torch.manual_seed(0)
    trainer = GANTrainer(cfg, torch.device("cpu"), grad_sync=average_gradients if world > 1 else None)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(GLOBAL_BATCH, 1, cfg.model.segment, generator=gen) * 2 - 1
    latents = [torch.rand(GLOBAL_BATCH, cfg.model.latent_dim, generator=gen) * 2 - 1 for _ in range(2)]
    local = GLOBAL_BATCH // world
    part = slice(rank * local, (rank + 1) * local)
    queue = [z[part] for z in latents]
    trainer.latents = lambda n: queue.pop(0)
    trainer.step([real[part]])
    return {k: v.clone() for k, v in {**trainer.generator.state_dict(), **{"D." + k: v for k, v in trainer.critic.state_dict().items()}}.items()}


def _worker(rank: int, world: int, port: int, tmp: str, mode: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info, device = init_distributed("cpu")
    assert info.world == world and info.rank == rank
    cfg = _config(tmp)
    if mode == "step":
        torch.save(_one_step(cfg, rank, world), f"{tmp}/rank{rank}.pt")
    else:
        cfg.train.steps = 3
        Run(cfg, run_dir_for(cfg), device, info).train()
    dist.destroy_process_group()


def test_two_processes_average_to_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), "step"), nprocs=2, join=True)
    single = _one_step(_config(tmp_path), 0, 1)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name}: the processes disagree"
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6, msg=f"{name}: differs from one process")
    torch.manual_seed(0)
    initial = GANTrainer(_config(tmp_path), torch.device("cpu")).generator.state_dict()
    assert any(not torch.equal(initial[n], single[n]) for n in initial)  # the step really trained


def test_resume_with_a_different_world_size(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), "run"), nprocs=2, join=True)
    cfg = _config(tmp_path)
    run_dir = run_dir_for(cfg)
    # Only rank 0 wrote files.
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == ["checkpoints", "config.yaml", "curves.png", "metrics.csv", "previews"]
    cfg.train.steps = 5
    run = Run(cfg, run_dir, torch.device("cpu"), resume=True)
    assert run.step == 3
    assert run.order.state() == {"epoch": 0, "position": 3 * GLOBAL_BATCH}
    run.train()
    assert run.step == 5
