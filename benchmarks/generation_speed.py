"""Generation speed of the same weights in ONNX Runtime and in PyTorch eager.

Exports a run's generator (or, with no run, a freshly initialised one of the
embedded default's architecture) to a temporary bundle, then times both at
batch 1 and 8: seconds of audio generated per second of compute. CPU always,
CUDA too when torch and ONNX Runtime both see a GPU.

    python benchmarks/generation_speed.py [RUN_DIR] [--repeats 20] [--out benchmarks/results/generation_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ganstream.export.bundle import export_run, load_run_generator
from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.inference import Generator


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of one call, after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fresh_run(directory: Path) -> Path:
    """A one-step run of configs/wavegan-laptop.yaml: the default bundle's architecture, untrained weights."""
    from ganstream.training.config import load_config
    from ganstream.training.loop import Run, run_dir_for

    cfg = load_config(Path(__file__).parent.parent / "configs" / "wavegan-laptop.yaml",
                      [f"run.out_dir={directory}", "train.steps=1", "train.batch_size=16", "loss.critic_steps=1",
                       "data.synth_items=64", "train.progress=false", "train.tensorboard=false"])
    return Run(cfg, run_dir_for(cfg), torch.device("cpu")).train()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", type=Path)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/generation_speed.json"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or fresh_run(Path(tmp))
        bundle_dir = export_run(run_dir, Path(tmp) / "bundle", controls=0, log=lambda *a: None)
        bundle = load_bundle(bundle_dir)
        torch_gen, cfg, _, _ = load_run_generator(run_dir)
        seconds_per_segment = bundle.segment / bundle.sample_rate
        rows = []
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            ort_gen = Generator(bundle, provider=device, threads=os.cpu_count())
            model = torch_gen.to(device)
            for batch in (1, 8):
                z = bundle.random_latents(batch, np.random.default_rng(0))
                zt = torch.from_numpy(z).to(device)

                def eager() -> object:
                    with torch.inference_mode():
                        out = model(zt)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    return out

                t_ort = timed(lambda: ort_gen.generate(z), args.repeats)
                t_torch = timed(eager, args.repeats)
                row = {
                    "device": device, "provider": ort_gen.provider, "batch": batch,
                    "onnxruntime_ms": round(t_ort * 1000, 3), "torch_eager_ms": round(t_torch * 1000, 3),
                    "onnxruntime_audio_s_per_s": round(batch * seconds_per_segment / t_ort, 1),
                    "torch_eager_audio_s_per_s": round(batch * seconds_per_segment / t_torch, 1),
                    "speedup_onnxruntime_over_torch": round(t_torch / t_ort, 2),
                }
                rows.append(row)
                print(f"{device:4} batch {batch}: onnxruntime {row['onnxruntime_audio_s_per_s']:8.1f} s/s   "
                      f"torch eager {row['torch_eager_audio_s_per_s']:8.1f} s/s   ratio {row['speedup_onnxruntime_over_torch']:.2f}x")
    report = {
        "benchmark": "generation_speed",
        "model": {"architecture": cfg.model.kind, "width": getattr(cfg.model, "width", None), "segment": bundle.segment, "sample_rate": bundle.sample_rate},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch": torch.__version__,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
