"""Trains an encoder (models/encoder.py) that inverts a trained generator: audio -> the latent that regenerates it.

Two phases, as the issue asks and as GAN-inversion encoders are trained (Zhu et al. 2016, "in-domain"
inversion, Zhu et al. 2020):

1. **On the generator's own samples.** A pool of (latent, G(latent)) pairs is drawn once (generating
   costs more than encoding, and the pool is reused every epoch). Each step regresses the latent (mean
   squared error; a conditioned GAN's pitch in octaves and velocity beside it). Every
   `spectral_every` steps a smaller batch also goes back through the generator, and the
   multi-resolution spectral distance of G(E(x)) to x (training/spectral.py, core/distance.py's twin)
   joins the loss: latents that differ but sound alike are equally good answers, which the latent
   loss alone would punish.
2. **On real clips** (the GAN's own training segments): the spectral distance of G(E(x)) to x alone,
   so the encoder learns to place sounds the generator never made where the generator comes nearest.

The generator is frozen (eval mode, no parameter gradients). Returns the encoder in eval mode and a
summary (losses at the end of each phase, seconds) that export records in the bundle's provenance.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import condition_size, sample_latents
from .models.encoder import Encoder, EncoderConfig, octaves
from .spectral import spectral_distance


def _split(rows: Tensor, latent_dim: int) -> tuple[Tensor, Tensor | None]:
    return rows[:, :latent_dim], (rows[:, latent_dim:] if rows.shape[1] > latent_dim else None)


def _rows(z: Tensor, condition: Tensor | None) -> Tensor:
    return z if condition is None else torch.cat([z, condition], dim=1)


def _condition_loss(estimate: Tensor, target: Tensor) -> Tensor:
    """Pitch in octaves (a semitone off costs as much as 1/12 of the latent's range) and velocity."""
    loss = F.mse_loss(octaves(estimate[:, :1]), octaves(target[:, :1]))
    if target.shape[1] > 1:
        loss = loss + F.mse_loss(estimate[:, 1:], target[:, 1:])
    return loss


def train_encoder(
    generator: nn.Module,
    model_cfg: Any,
    sample_rate: int,
    cfg: EncoderConfig,
    real: np.ndarray | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Encoder, dict[str, Any]]:
    """generator: (B, D [+ C]) -> (B, segment), frozen here. model_cfg: its config (latent_dim, latent_dist,
    segment, condition). real: (N, segment) real training clips for phase 2 (None or empty: skipped)."""
    cfg.validate()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    generator = generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    d, columns = model_cfg.latent_dim, condition_size(model_cfg)
    encoder = Encoder(cfg, sample_rate, model_cfg.segment, d, model_cfg.latent_dist, columns)

    def generate(rows: Tensor) -> Tensor:
        return generator(rows).reshape(rows.shape[0], -1)

    with torch.no_grad():
        pool_rows = sample_latents(model_cfg, cfg.pool, rng)
        pool_audio = torch.cat([generate(chunk) for chunk in pool_rows.split(64)])
    encoder.set_statistics(pool_audio)
    log(f"encoder: {cfg.pool} generated segments drawn in {time.perf_counter() - t0:.1f} s")
    opt = torch.optim.Adam(encoder.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    summary: dict[str, Any] = {"config": dict(vars(cfg))}

    def encode(audio: Tensor) -> tuple[Tensor, Tensor | None]:
        out = encoder(audio)
        return out if isinstance(out, tuple) else (out, None)

    latent_avg = spectral_avg = None
    for step in range(cfg.generated_steps):
        idx = torch.randint(0, cfg.pool, (cfg.batch,), generator=rng)
        z_true, c_true = _split(pool_rows[idx], d)
        z, c = encode(pool_audio[idx])
        loss = cfg.latent_weight * F.mse_loss(z, z_true)
        if c is not None:
            loss = loss + cfg.latent_weight * _condition_loss(c, c_true)
        latent_avg = loss.item() if latent_avg is None else 0.98 * latent_avg + 0.02 * loss.item()
        if cfg.spectral_weight and step % cfg.spectral_every == 0:
            k = min(cfg.spectral_batch, cfg.batch)
            # The generator's condition input takes the true condition: the spectral term trains the latent.
            spectral = spectral_distance(pool_audio[idx[:k]], generate(_rows(z[:k], c_true[:k] if c_true is not None else None)), sample_rate).mean()
            loss = loss + cfg.spectral_weight * spectral
            spectral_avg = spectral.item() if spectral_avg is None else 0.9 * spectral_avg + 0.1 * spectral.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 500 == 0:
            log(f"encoder: generated step {step + 1}/{cfg.generated_steps}: latent loss {latent_avg:.4f}, spectral distance {spectral_avg or 0:.3f}")
    summary["generated"] = {"steps": cfg.generated_steps, "latent_loss": latent_avg, "spectral_distance": spectral_avg}

    real_avg = None
    clips = torch.as_tensor(np.asarray(real, dtype=np.float32)) if real is not None and len(real) else None
    steps = cfg.real_steps if clips is not None else 0
    for step in range(steps):
        batch = clips[torch.randint(0, len(clips), (cfg.spectral_batch,), generator=rng)]
        z, c = encode(batch)
        loss = spectral_distance(batch, generate(_rows(z, None if c is None else c.detach())), sample_rate).mean()
        # Keep the generated phase's latent regression alive, so the real phase cannot drift off the latent range.
        idx = torch.randint(0, cfg.pool, (cfg.batch,), generator=rng)
        z_gen, c_gen = encode(pool_audio[idx])
        z_true, c_true = _split(pool_rows[idx], d)
        anchor = F.mse_loss(z_gen, z_true) + (_condition_loss(c_gen, c_true) if c_gen is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        (cfg.spectral_weight * loss + cfg.latent_weight * anchor).backward()
        opt.step()
        real_avg = loss.item() if real_avg is None else 0.95 * real_avg + 0.05 * loss.item()
        if (step + 1) % 100 == 0:
            log(f"encoder: real step {step + 1}/{steps}: spectral distance {real_avg:.3f}")
    summary["real"] = {"steps": steps, "clips": 0 if clips is None else len(clips), "spectral_distance": real_avg}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    for p in generator.parameters():
        p.requires_grad_(True)
    return encoder.eval(), summary
