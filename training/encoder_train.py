"""Trains an encoder (models/encoder.py) that inverts a trained generator: audio -> the latent that regenerates it.

Two phases, as the issue asks and as GAN-inversion encoders are trained (Zhu et al. 2016, "in-domain"
inversion, Zhu et al. 2020), then a third for the refiner:

1. **On the generator's own samples.** A pool of (latent, G(latent)) pairs is drawn once (generating
   costs more than encoding, and the pool is reused every epoch). Each step regresses the latent (mean
   squared error; a conditioned GAN's pitch in octaves and velocity beside it). Every
   `spectral_every` steps a smaller batch also goes back through the generator, and the
   multi-resolution spectral distance of G(E(x)) to x (training/spectral.py, core/distance.py's twin)
   joins the loss: latents that differ but sound alike are equally good answers, which the latent
   loss alone would punish.
2. **On real clips** (the GAN's own training segments): the spectral distance of G(E(x)) to x, so the
   encoder learns to place sounds the generator never made where the generator comes nearest; and,
   with `search_targets`, the latent of the generated segment of the pool nearest each clip, found by
   search before the phase starts. The spectral distance's gradient alone left the encoder behind the
   best of 1000 random latents on held-out piano notes (12 of 30 nearer): it cannot carry a note to
   another pitch, where the partials no longer overlap, while a search over generated notes finds the
   pitch at once. With `code_lr`, each clip's target then improves during the phase: its own latent
   takes an Adam step through the generator at every visit (`_Codes`), and the nearest latent yet
   seen becomes the target, so the encoder learns to give in one pass what `ganstream invert
   --refine` reaches by search.
3. **The refiner** (`iterations` > 0, real clips at hand): the encoder frozen, a `Refiner` learns to
   correct its latent from the sample and what the generator makes of the latent (ReStyle, Alaluf et
   al. 2021), on the same objective. The encoder alone kept underfitting the per-clip targets; a
   correction that sees the generator's answer is a local step, which generalises to held-out clips.
   The result is an `IterativeEncoder`, exported as one graph.

Each phase trains the encoder's `hypotheses` proposals winner-takes-all (`_nearest_proposal`): the proposal
nearest a sample's target latent learns from it, so the proposals come to cover a sound's readings the
target alone cannot tell apart; the refiner starts from the proposal nearest the sample, as the host does.

The generator is frozen (eval mode, no parameter gradients). Returns the encoder (an `IterativeEncoder`
after phase 3) in eval mode and a summary (losses at the end of each phase, seconds) that export records in the bundle's provenance.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstream.core.manifest import LATENT_BOUNDS

from .models import condition_size, sample_latents
from .models.encoder import Encoder, EncoderConfig, IterativeEncoder, Refiner, generator_rows, octaves
from .spectral import spectral_distance


def _split(rows: Tensor, latent_dim: int) -> tuple[Tensor, Tensor | None]:
    return rows[:, :latent_dim], (rows[:, latent_dim:] if rows.shape[1] > latent_dim else None)


def _condition_loss(estimate: Tensor, target: Tensor) -> Tensor:
    """Pitch in octaves (a semitone off costs as much as 1/12 of the latent's range) and velocity."""
    loss = F.mse_loss(octaves(estimate[:, :1]), octaves(target[:, :1]))
    if target.shape[1] > 1:
        loss = loss + F.mse_loss(estimate[:, 1:], target[:, 1:])
    return loss


def coarse_distance(encoder: Encoder, reference: Tensor, candidates: Tensor) -> Tensor:
    """(B, T), (B, T) -> (B,): mean absolute difference of log-mel frames averaged over 4 bands by 4 frames.
    Blurred so that its gradient can move a note's pitch or a formant to where the reference's lies, which
    the fine distance's cannot once the partials no longer overlap."""
    blur = lambda audio: F.avg_pool2d(encoder.features(audio).unsqueeze(1), 4).squeeze(1)  # noqa: E731
    with torch.no_grad():
        ref = blur(reference)
    return (blur(candidates) - ref).abs().mean(dim=(1, 2))


def nearest_in_pool(
    encoder: Encoder, clips: Tensor, pool_audio: Tensor, pool_rows: Tensor, candidates: int, sample_rate: int
) -> tuple[Tensor, Tensor]:
    """For each real clip (N, T), the row of the generated segment (pool_audio (P, T)) nearest it by the
    spectral distance -> (rows (N, D [+ C]), distances (N,)). The `candidates` nearest by coarse log-mel
    frames (the encoder's own, averaged over 8 frames) are compared, so the search costs N * candidates
    distances, not N * P."""
    def coarse(audio: Tensor) -> Tensor:
        with torch.no_grad():
            feats = torch.cat([encoder.features(chunk) for chunk in audio.split(64)])
            return F.avg_pool1d(feats, 8, ceil_mode=True).flatten(1)

    pool_feats, real_feats = coarse(pool_audio), coarse(clips)
    rows, dists = [], []
    with torch.no_grad():
        for start in range(0, len(clips), 64):
            near = torch.cdist(real_feats[start : start + 64], pool_feats).topk(min(candidates, len(pool_feats)), largest=False).indices
            for clip, idx in zip(clips[start : start + 64], near):
                d = spectral_distance(clip, pool_audio[idx], sample_rate)
                best = int(torch.argmin(d))
                rows.append(pool_rows[idx[best]])
                dists.append(d[best])
    return torch.stack(rows), torch.stack(dists)


def _nearest_proposal(proposals: Tensor, target: Tensor, spread: float) -> tuple[Tensor, Tensor]:
    """(B, M, D) proposals, (B, D) target latents -> (the latent loss, (B, D) the proposal nearest each target).
    Winner takes all (multiple choice learning): the nearest proposal takes the mean squared error's weight
    but for a `spread` share, spread over all M, which keeps a proposal no target ever reaches from dying.
    With one proposal this is the mean squared error."""
    err = ((proposals - target[:, None]) ** 2).mean(dim=2)  # (B, M)
    win = err.argmin(dim=1)
    nearest = err.gather(1, win[:, None]).squeeze(1)
    loss = nearest if err.shape[1] == 1 else (1 - spread) * nearest + spread * err.mean(dim=1)
    return loss.mean(), proposals[torch.arange(len(win)), win]


CODE_BOUND = 0.9  # |per-clip latent| for uniform latents, inside LATENT_BOUNDS' 1 (see _Codes)


class _Codes:
    """Per-clip latents optimised beside the encoder (as Generative Latent Optimization does, Bojanowski et al.
    2018): every visit of a real clip takes one Adam step on its own latent through the generator, and the
    nearest latent yet seen for the clip (these steps', or the encoder's own output) is the encoder's regression
    target. The targets so improve from the pool's nearest towards what `ganstream invert --refine` reaches,
    which the encoder then learns to give in one pass. Adam's moments are kept per row, so rows not visited
    do not move."""

    def __init__(self, start: Tensor, latent_dim: int, dist: str, lr: float):
        self.d, self.lr = latent_dim, lr
        # Inside the tanh head's easy reach: targets on the edge of a uniform latent's range drive the head
        # into saturation. Held-out clips nearer than random (benchmarks/inversion.py, 40 per set) with
        # targets up to 1 against 0.9: speech 30% against 62%, drums 75% against 80%.
        self.bound = CODE_BOUND if dist == "uniform" else LATENT_BOUNDS[dist]
        self.rows = start.clone()
        self.best = start.clone()
        self.best_dist = torch.full((len(start),), float("inf"))
        self.m = torch.zeros(len(start), latent_dim)
        self.v = torch.zeros(len(start), latent_dim)
        self.t = torch.zeros(len(start))

    def step(self, pick: Tensor, clips: Tensor, distance: Callable[[Tensor, Tensor], Tensor]) -> None:
        """pick: (B,) clip indices; distance: ((B', D [+ C]) rows, (B', T) clips) -> (B',)."""
        pick = pick.unique()
        rows = self.rows[pick].clone()
        z = rows[:, : self.d].clone().requires_grad_(True)
        dist = distance(torch.cat([z, rows[:, self.d :]], dim=1), clips[pick])
        (grad,) = torch.autograd.grad(dist.sum(), z)
        self.offer(pick, rows, dist.detach())
        b1, b2 = 0.9, 0.99
        self.t[pick] += 1
        self.m[pick] = b1 * self.m[pick] + (1 - b1) * grad
        self.v[pick] = b2 * self.v[pick] + (1 - b2) * grad**2
        t = self.t[pick, None]
        update = self.lr * (self.m[pick] / (1 - b1**t)) / ((self.v[pick] / (1 - b2**t)).sqrt() + 1e-8)
        self.rows[pick, : self.d] = (z.detach() - update).clamp(-self.bound, self.bound)

    def mean_distance(self) -> float:
        """The mean distance of the visited clips' targets."""
        return float(self.best_dist[self.t > 0].mean())

    def offer(self, pick: Tensor, rows: Tensor, dist: Tensor) -> None:
        for i, row, di in zip(pick.tolist(), rows, dist.tolist()):
            if di < self.best_dist[i]:
                self.best_dist[i] = di
                self.best[i] = row


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

    def objective(reference: Tensor, fake: Tensor) -> Tensor:
        """(B, T), (B, T) -> (B,): the spectral distance, and the blurred one beside it (coarse_weight)."""
        per_clip = spectral_distance(reference, fake, sample_rate)
        return per_clip + cfg.coarse_weight * coarse_distance(encoder, reference, fake) if cfg.coarse_weight else per_clip

    latent_avg = spectral_avg = None
    for step in range(cfg.generated_steps):
        idx = torch.randint(0, cfg.pool, (cfg.batch,), generator=rng)
        z_true, c_true = _split(pool_rows[idx], d)
        proposals, c = encoder.propose(pool_audio[idx])
        latent_loss, z = _nearest_proposal(proposals, z_true, cfg.spread_weight)
        loss = cfg.latent_weight * latent_loss
        if c is not None:
            loss = loss + cfg.latent_weight * _condition_loss(c, c_true)
        latent_avg = loss.item() if latent_avg is None else 0.98 * latent_avg + 0.02 * loss.item()
        if cfg.spectral_weight and step % cfg.spectral_every == 0:
            k = min(cfg.spectral_batch, cfg.batch)
            # The generator's condition input takes the true condition: the spectral term trains the latent.
            spectral = objective(pool_audio[idx[:k]], generate(generator_rows(z[:k], c_true[:k] if c_true is not None else None))).mean()
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
    targets = None
    if steps and cfg.search_targets:
        t = time.perf_counter()
        targets, nearest = nearest_in_pool(encoder, clips, pool_audio, pool_rows, cfg.search_candidates, sample_rate)
        summary["search"] = {"pool": cfg.pool, "candidates": cfg.search_candidates, "mean_distance": float(nearest.mean()),
                             "seconds": round(time.perf_counter() - t, 1)}
        log(f"encoder: the nearest of {cfg.pool} generated segments to each of {len(clips)} real clips found in "
            f"{time.perf_counter() - t:.0f} s (mean distance {float(nearest.mean()):.3f})")

    codes = _Codes(targets, d, model_cfg.latent_dist, cfg.code_lr) if targets is not None and cfg.code_lr > 0 else None
    if codes is not None:
        targets = codes.best  # improved in place as the phase goes
    for step in range(steps):
        pick = torch.randint(0, len(clips), (cfg.spectral_batch,), generator=rng)
        batch = clips[pick]
        proposals, c = encoder.propose(batch)
        if targets is not None:
            # Regress the latent of the generated segment nearest each real clip: the spectral loss's gradient
            # cannot move a note's pitch across partials, a search over the pool can (see the module docstring).
            rows_pick, all_proposals, c_all = pick, proposals, c
            if cfg.target_batch > len(pick):
                extra = torch.randint(0, len(clips), (cfg.target_batch - len(pick),), generator=rng)
                extra_proposals, c_extra = encoder.propose(clips[extra])
                rows_pick, all_proposals = torch.cat([pick, extra]), torch.cat([proposals, extra_proposals])
                c_all = None if c is None else torch.cat([c, c_extra])
            z_true, c_true = _split(targets[rows_pick], d)
            anchor, z_all = _nearest_proposal(all_proposals, z_true, cfg.spread_weight)
            anchor = anchor + (_condition_loss(c_all, c_true) if c_all is not None else 0.0)
            z = z_all[: len(pick)]  # the proposal nearest each clip's target is the one the spectral loss trains
        else:
            # Keep the generated phase's latent regression alive, so the real phase cannot drift off the latent range.
            idx = torch.randint(0, cfg.pool, (cfg.batch,), generator=rng)
            gen_proposals, c_gen = encoder.propose(pool_audio[idx])
            z_true, c_true = _split(pool_rows[idx], d)
            anchor = _nearest_proposal(gen_proposals, z_true, cfg.spread_weight)[0]
            anchor = anchor + (_condition_loss(c_gen, c_true) if c_gen is not None else 0.0)
            z = proposals[:, 0]
        fake = generate(generator_rows(z, None if c is None else c.detach()))
        per_clip = objective(batch, fake)
        loss = per_clip.mean()
        if codes is not None:
            codes.step(pick, clips, lambda rows, target: objective(target, generate(rows)))
            codes.offer(pick, generator_rows(z.detach(), None if c is None else c.detach()), per_clip.detach())
        _decay(opt, cfg, step, steps)
        opt.zero_grad(set_to_none=True)
        (cfg.spectral_weight * loss + cfg.latent_weight * anchor).backward()
        opt.step()
        real_avg = loss.item() if real_avg is None else 0.95 * real_avg + 0.05 * loss.item()
        if (step + 1) % 100 == 0:
            seen = "" if codes is None else f", the targets' {codes.mean_distance():.3f}"
            log(f"encoder: real step {step + 1}/{steps}: spectral distance {real_avg:.3f}{seen}")
    summary["real"] = {"steps": steps, "clips": 0 if clips is None else len(clips), "spectral_distance": real_avg}
    if codes is not None and bool((codes.t > 0).any()):
        summary["real"]["target_distance"] = codes.mean_distance()
    result: nn.Module = encoder.eval()
    if cfg.iterations and cfg.iteration_steps and clips is not None:
        result = _train_refiner(encoder, generator, model_cfg, cfg, clips, objective, rng, summary, log)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    for p in generator.parameters():
        p.requires_grad_(True)
    return result.eval(), summary


def _train_refiner(
    encoder: Encoder, generator: nn.Module, model_cfg: Any, cfg: EncoderConfig, clips: Tensor,
    objective: Callable[[Tensor, Tensor], Tensor], rng: torch.Generator, summary: dict[str, Any], log: Callable[[str], None],
) -> IterativeEncoder:
    """Phase 3: the refiner (models/encoder.py) on the real clips, the encoder frozen. Each step runs the
    `trained_iterations` corrections from the encoder's latent (hosts run `iterations`, fewer or more), one optimiser step each on the objective of what the
    corrected latent generates (the latent carried on detached, as ReStyle trains), so each correction learns
    from where the previous ones leave a clip. What a correction's latent generates is scored, then heard
    by the next correction: the generator runs once per correction, as IterativeEncoder.run does."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    refiner = Refiner(cfg, model_cfg.segment, model_cfg.latent_dim, model_cfg.latent_dist)
    model = IterativeEncoder(encoder, refiner, generator, cfg.iterations, cfg.beam)
    unrolled = cfg.trained_iterations
    opt = torch.optim.Adam(refiner.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    first = last = None
    for step in range(cfg.iteration_steps):
        batch = clips[torch.randint(0, len(clips), (cfg.spectral_batch,), generator=rng)]
        with torch.no_grad():
            proposals, c = encoder.propose(batch)
            z = model.nearest(batch, proposals, c)  # the proposal the host corrects
            sample = encoder.standardised(batch)
            fake = generator(generator_rows(z, c)).reshape(len(batch), -1)
        _decay(opt, cfg, step, cfg.iteration_steps)
        for k in range(unrolled):
            z = refiner(sample, encoder.standardised(fake.detach()), z)
            fake = generator(generator_rows(z, c)).reshape(len(batch), -1)
            d = objective(batch, fake).mean()
            opt.zero_grad(set_to_none=True)
            d.backward()
            opt.step()
            z = z.detach()
            if k == 0:
                first = d.item() if first is None else 0.95 * first + 0.05 * d.item()
        last = d.item() if last is None else 0.95 * last + 0.05 * d.item()
        if (step + 1) % 100 == 0:
            log(f"encoder: iteration step {step + 1}/{cfg.iteration_steps}: distance after the first correction {first:.3f}, after the last {last:.3f}")
    summary["iterations"] = {"iterations": cfg.iterations, "trained": unrolled, "steps": cfg.iteration_steps,
                             "first_distance": first, "last_distance": last}
    for p in encoder.parameters():
        p.requires_grad_(True)
    return model


def _decay(opt: torch.optim.Optimizer, cfg: EncoderConfig, step: int, steps: int) -> None:
    """The learning rate along a cosine from `cfg.lr` at step 0 to `cfg.final_lr` of it at the last."""
    for group in opt.param_groups:
        group["lr"] = cfg.lr * (cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + np.cos(np.pi * step / steps)))
