"""Training throughput and peak memory of WaveGAN (d=64 and d=32, batch 16), CPU and CUDA when present.

One training step is the paper's: 5 critic updates (WGAN-GP) and 1 generator
update. Each configuration runs in its own process so that peak memory
(ru_maxrss on CPU, max_memory_allocated on CUDA) is its own.

    python benchmarks/train_throughput.py [--steps 5] [--out benchmarks/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def measure(width: int, batch: int, steps: int, device_name: str) -> dict:
    import torch

    from ganstream.training.config import load_config
    from ganstream.training.gan import GANTrainer

    cfg = load_config(None, [f"model.width={width}", f"train.batch_size={batch}", f"train.device={device_name}"])
    device = torch.device(device_name)
    torch.manual_seed(0)
    trainer = GANTrainer(cfg, device)
    real = [torch.rand(batch, 1, cfg.model.segment, device=device) * 2 - 1 for _ in range(cfg.loss.critic_steps)]
    trainer.step(real)  # warm-up: allocator, kernels, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(real)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    peak_mb = (torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {
        "device": device_name,
        "width": width,
        "batch": batch,
        "critic_steps": cfg.loss.critic_steps,
        "ms_per_step": round(dt * 1000, 1),
        "steps_per_s": round(1 / dt, 3),
        # Every step reads batch x critic_steps real segments and generates batch x (critic_steps + 1).
        "real_samples_per_s": round(batch * cfg.loss.critic_steps / dt, 1),
        "peak_memory_mb": round(peak_mb, 1),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 32])
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    p.add_argument("--one", nargs=2, metavar=("WIDTH", "DEVICE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.batch, args.steps, args.one[1])))
        return

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        for width in args.widths:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(width), device, "--steps", str(args.steps), "--batch", str(args.batch)],
                capture_output=True, text=True, check=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            results.append(row)
            print(f"{device:5} d={width:<3} batch {row['batch']}: {row['ms_per_step']:8.1f} ms/step  "
                  f"{row['real_samples_per_s']:8.1f} real samples/s  peak {row['peak_memory_mb']:7.1f} MB")
    report = {
        "benchmark": "train_throughput",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "torch": torch.__version__,
        "results": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
