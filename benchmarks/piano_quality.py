"""How far a run's generator has moved from noise toward its data.

Compares 64 EMA samples of the latest checkpoint with 64 held-out data segments
and with 64 clips of white noise at the data's loudness: mean spectral flatness
(1 for white noise, near 0 for tones) and the Frechet distance of log-mel frame
statistics against the data. Also follows the run's preview WAVs (8 fixed
latents every preview_every steps) to show the trend over training.

    python benchmarks/piano_quality.py RUN_DIR [--out benchmarks/results/piano_quality.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ganstream.training.checkpoint import LATEST, load_generator
from ganstream.training.data import load_dataset
from ganstream.evaluation.metrics import log_mel_frechet, loudness_db, spectral_flatness
from ganstream.training.models import sample_latents

N = 64


def summary(audio: np.ndarray, real: np.ndarray, sr: int) -> dict[str, float]:
    return {
        "spectral_flatness": round(float(np.nanmean(spectral_flatness(audio))), 4),
        "log_mel_frechet_to_data": round(log_mel_frechet(audio, real, sr), 2),
        "loudness_db": round(float(np.mean(loudness_db(audio))), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/piano_quality.json"))
    args = p.parse_args()

    generator, cfg, state = load_generator(args.run_dir / "checkpoints" / LATEST)
    sr, seg = cfg.data.sample_rate, cfg.model.segment
    with torch.no_grad():
        fake = generator(sample_latents(cfg.model, N, torch.Generator().manual_seed(2024)))[:, 0].numpy()

    holdout = load_dataset(cfg.data, seg, cfg.run.seed, "holdout", progress=False)
    train = load_dataset(cfg.data, seg, cfg.run.seed, "train", progress=False)
    rng = np.random.default_rng(0)
    real = holdout.batch(rng.choice(len(holdout), N, replace=len(holdout) < N), 0)
    other_real = train.batch(rng.choice(len(train), N, replace=False), 0)
    rms = np.sqrt(np.mean(real**2))
    noise = (rng.standard_normal((N, seg)) * rms).clip(-1, 1).astype(np.float32)

    report = {
        "run": str(args.run_dir),
        "step": state["step"],
        "samples": N,
        "generated_ema": summary(fake, real, sr),
        "data_train_vs_holdout": summary(other_real, real, sr),
        "white_noise": summary(noise, real, sr),
        "previews": [],
    }
    for wav in sorted((args.run_dir / "previews").glob("step_*.wav")):
        audio, _ = sf.read(wav, dtype="float32")
        clips = audio.reshape(-1, seg + sr // 5)[:, :seg]
        report["previews"].append({"step": int(wav.stem.split("_")[1]), **summary(clips, real, sr)})

    for name in ("generated_ema", "data_train_vs_holdout", "white_noise"):
        print(f"{name:24} {report[name]}")
    for row in report["previews"]:
        print(f"  preview step {row['step']:6d}: flatness {row['spectral_flatness']:.3f}  log-mel FD {row['log_mel_frechet_to_data']:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
