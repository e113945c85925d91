"""Training throughput of WaveGAN: ours against the peer's (wavegan-pytorch), and the laptop recipe.

    python benchmarks/train_throughput.py --peer /path/to/wavegan-pytorch [--steps 16] [--threads 2] [--paper]

Every row is one configuration, run in its own process (so that its peak memory is its own) at
--threads threads: --warmup untimed steps, then the median of --steps timed steps. The random
"real" batches are made once; no data is loaded. Rows (docs/throughput.md says more):

- peer-config: WaveGAN d=32, batch 16, 16384 samples, WGAN-GP, 1 critic step (gradient penalty
  included) and 1 generator step (issue 11). Ours in fp32, in bf16 (train.bf16=true), with
  torch.compile; and, given --peer DIR, the peer's own models and step, its generator as its
  train.py builds it and with transposed convolutions like ours; each ours row then carries
  peer_over_ours, peer ms / ours ms for each peer row (the issue's target is 1.5).
- laptop: configs/wavegan-laptop.yaml as it is, fp32 and bf16.
- paper (--paper): d=64 and d=32, 5 critic steps, as before; on CUDA too when there is one.

A row that fails (torch.compile cannot take the gradient penalty's double backward) is kept,
with an "error" field. Results go to --out with the machine, the torch version and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
LAPTOP = str(REPO / "configs" / "wavegan-laptop.yaml")
# The configuration issue 11 measured the peer in: ours reads it, and so does the peer's row.
PEER_CONFIG = ("model.width=32", "model.segment=16384", "train.batch_size=16", "loss.kind=wgan-gp", "loss.critic_steps=1")
# Its train.py as it is (nearest-neighbour upsampling, then convolution), and with upsample=False:
# transposed convolutions, the paper's generator and ours.
PEER_ROWS = ("peer fp32", "peer fp32 transpose")
PEER_LR = {"lr_g": 1e-4, "lr_d": 3e-4, "betas": (0.5, 0.9)}  # its params.py; the rates change no timing


@dataclass(frozen=True)
class Case:
    """One row: our trainer on a config (YAML or defaults, plus overrides), or the peer's step."""

    name: str
    group: str  # peer-config | laptop | paper
    overrides: tuple[str, ...] = ()
    config: str | None = None
    compile: tuple[str, ...] = ()  # our modules to torch.compile: "generator", "critic"
    peer: str | None = None  # the peer's checkout: time its models and step, in our config's sizes
    peer_upsample: bool = True  # its generator's `upsample`: False makes it transpose, like ours
    device: str = "cpu"


def cases(args: argparse.Namespace, cuda: bool) -> list[Case]:
    """The rows this invocation measures, in order."""
    rows = [
        Case("ours fp32", "peer-config", PEER_CONFIG),
        Case("ours bf16", "peer-config", (*PEER_CONFIG, "train.bf16=true")),
        # Fails (torch 2.13): AOTAutograd has no double backward, and the gradient penalty needs one.
        # The generator alone compiles, but showed no gain worth a row (docs/throughput.md).
        Case("ours fp32 compiled", "peer-config", PEER_CONFIG, compile=("generator", "critic")),
    ]
    if args.peer:
        peer = str(Path(args.peer).resolve())
        rows += [Case(PEER_ROWS[0], "peer-config", PEER_CONFIG, peer=peer),
                 Case(PEER_ROWS[1], "peer-config", PEER_CONFIG, peer=peer, peer_upsample=False)]
    rows += [Case("laptop fp32", "laptop", config=LAPTOP),
             Case("laptop bf16", "laptop", ("train.bf16=true",), config=LAPTOP)]
    if args.paper:
        for device in ["cpu"] + (["cuda"] if cuda else []):
            for width in (64, 32):
                paper = (f"model.width={width}", "train.batch_size=16", "loss.kind=wgan-gp", "loss.critic_steps=5")
                rows.append(Case(f"paper d={width} {device}", "paper", (*paper, f"train.device={device}"), device=device))
    rows = [replace(r, overrides=(*r.overrides, *args.override)) for r in rows]
    if args.only:
        names = {r.name for r in rows}
        if unknown := set(args.only) - names:
            raise SystemExit(f"--only: no row named {', '.join(sorted(unknown))} (rows: {', '.join(sorted(names))})")
        rows = [r for r in rows if r.name in args.only]
    return rows


def our_step(case: Case, cfg, device) -> Callable[[], None]:
    import torch

    from ganstream.training.gan import GANTrainer

    trainer = GANTrainer(cfg, device)
    for name in case.compile:
        getattr(trainer, name).compile()  # in place: the optimisers keep the same parameters
    b, c, t = cfg.train.batch_size, cfg.model.channels, cfg.model.segment
    real = [torch.rand(b, c, t, device=device) * 2 - 1 for _ in range(cfg.loss.critic_steps)]
    return lambda: trainer.step(real)


def peer_step(peer_dir: str, upsample: bool, cfg) -> Callable[[], None]:
    """One step of the peer's train.py (WaveGan_GP.train, n_critic=1) on its own WaveGAN modules.

    Its critic update: the generator frozen, the critic run on fake, real and interpolates apart,
    the penalty (||grad|| - 1)^2 * 10 by autograd.grad with create_graph; then its generator update
    with the critic frozen. Its latents are normal. Its critic never shuffles phase (its Conv1D
    turns phase shuffle on only when the shift is 0). Its train.py is not imported: it needs
    librosa and pescador, and reads its sizes from globals."""
    import torch

    sys.path.insert(0, peer_dir)
    import models  # the peer's models.py; its params.py makes ./output (we run in a scratch folder)

    w, b, t, gp_weight = cfg.model.width, cfg.train.batch_size, cfg.model.segment, cfg.loss.gp_weight
    g = models.WaveGANGenerator(model_size=w, slice_len=t, num_channels=1, use_batch_norm=False, upsample=upsample)
    d = models.WaveGANDiscriminator(model_size=w, slice_len=t, num_channels=1, use_batch_norm=False)
    opt_g = torch.optim.Adam(g.parameters(), lr=PEER_LR["lr_g"], betas=PEER_LR["betas"])
    opt_d = torch.optim.Adam(d.parameters(), lr=PEER_LR["lr_d"], betas=PEER_LR["betas"])
    real = torch.rand(b, 1, t) * 2 - 1

    def step() -> None:
        d.requires_grad_(True)
        g.requires_grad_(False)
        fake = g(torch.randn(b, models.noise_latent_dim))
        opt_d.zero_grad()
        d_fake, d_real = d(fake), d(real)
        alpha = torch.rand(b, 1, 1)
        x = ((1 - alpha) * real + alpha * fake).requires_grad_(True)
        scores = d(x)
        (grad,) = torch.autograd.grad(scores, x, grad_outputs=torch.ones_like(scores), create_graph=True)
        penalty = gp_weight * ((grad.view(b, -1).norm(2, dim=1) - 1) ** 2).mean()
        (d_fake.mean() - d_real.mean() + penalty).backward()
        opt_d.step()

        opt_g.zero_grad()
        d.requires_grad_(False)
        g.requires_grad_(True)
        (-d(g(torch.randn(b, models.noise_latent_dim))).mean()).backward()
        opt_g.step()

    return step


def measure(case: Case, steps: int, warmup: int, threads: int) -> dict:
    """The row of one case, measured in this process."""
    import torch

    from ganstream.training.config import load_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(case.config, list(case.overrides))
    device = torch.device(case.device)
    row = {
        "name": case.name, "group": case.group, "device": case.device, "threads": torch.get_num_threads(),
        "width": cfg.model.width, "batch": cfg.train.batch_size, "critic_steps": cfg.loss.critic_steps,
        "loss": cfg.loss.kind, "bf16": cfg.train.bf16 and case.peer is None, "compile": list(case.compile),
        "config": Path(case.config).name if case.config else None, "overrides": list(case.overrides),
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        step = peer_step(case.peer, case.peer_upsample, cfg) if case.peer else our_step(case, cfg, device)
        for _ in range(warmup):  # allocator, oneDNN primitives, cuDNN autotuning, compilation
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
    except Exception as e:  # a configuration that does not run is a result too
        return {**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ms = 1000 * statistics.median(times)
    return {
        **row,
        "ms_per_step": round(ms, 1),
        # The mean counts the steps the median skips: the laptop recipe's lazy R1 runs every 16th.
        "ms_mean": round(1000 * statistics.fmean(times), 1),
        "real_samples_per_s": round(cfg.train.batch_size * cfg.loss.critic_steps / (ms / 1000), 1),
        "peak_memory_mb": round(peak / 2**20, 1),
    }


def run_case(case: Case, args: argparse.Namespace, scratch: str) -> dict:
    """`measure` in a fresh process; a crash becomes the row's error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(asdict(case)),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return {"name": case.name, "group": case.group, "device": case.device, "error": tail}


def add_ratios(rows: list[dict]) -> None:
    """peer_over_ours, {peer row: its ms / ours}, on every ours row of the peer-config group: > 1 when ours is faster."""
    peers = {r["name"]: r["ms_per_step"] for r in rows if r["name"] in PEER_ROWS and "ms_per_step" in r}
    for r in rows:
        if peers and r["group"] == "peer-config" and r["name"] not in PEER_ROWS and "ms_per_step" in r:
            r["peer_over_ours"] = {name: round(ms / r["ms_per_step"], 2) for name, ms in peers.items()}


def machine() -> dict:
    import platform

    import torch

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return proc.stdout.strip() or None


def print_row(r: dict) -> None:
    where = f"{r['device']}/{r.get('threads', '?')}t"
    if "error" in r:
        print(f"{r['group']:12} {r['name']:22} {where:8} error: {r['error']}")
        return
    print(f"{r['group']:12} {r['name']:22} {where:8} {r['ms_per_step']:9.1f} ms/step (mean {r['ms_mean']:.1f})"
          f"  peak {r['peak_memory_mb']:7.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 16: the laptop recipe's lazy R1 (every 16th critic step) then falls once among the timed steps.
    p.add_argument("--steps", type=int, default=16, help="timed steps per row; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens in them)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer", metavar="DIR", help="a checkout of mostafaelaraby/wavegan-pytorch: adds its two rows")
    p.add_argument("--paper", action="store_true", help="also the paper's d=64 and d=32 at 5 critic steps")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                   help="added to every row's config, the peer's included (tests: model.width=2)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="measure only the rows of these names")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # a Case as JSON: measure it here, print its row
    args = p.parse_args()
    if args.one:
        fields = json.loads(args.one)
        case = Case(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        print(json.dumps(measure(case, args.steps, args.warmup, args.threads)))
        return

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases(args, torch.cuda.is_available()):
            rows.append(run_case(case, args, scratch))
            print_row(rows[-1])
    add_ratios(rows)
    ratios = [r for r in rows if "peer_over_ours" in r]
    if ratios:
        peers = list(ratios[0]["peer_over_ours"])
        print(f"peer ms / ours ms (> 1: ours faster; issue 11 aims at 1.5)\n  {'':22} " + "  ".join(f"{n:>20}" for n in peers))
        for r in ratios:
            print(f"  {r['name']:22} " + "  ".join(f"{r['peer_over_ours'][n]:20.2f}" for n in peers))
    report = {
        "benchmark": "train_throughput",
        "command": shlex.join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": rows,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
