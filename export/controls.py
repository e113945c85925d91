"""Musical controls: a few latent directions worth putting on knobs.

A 100-dimensional latent is not playable with eight knobs, so a bundle carries
named unit directions in latent space (docs/bundle.md, `controls`):

- `pc1`..`pcK`, GANSpace (Härkönen et al., 2020, "GANSpace: Discovering
  Interpretable GAN Controls"): PCA of an early layer's activations over many
  random latents, carried back to latent space by a least-squares regression
  of the PCA coordinates on the latents. Their `explained_variance` is the
  component's share of the activation variance.
- `loudness`, `brightness`, `noisiness`: least-squares regressions of audio
  descriptors of generated segments on their latents (RMS level in dB,
  spectral centroid in octaves, spectral flatness in dB). Their `r2` is
  measured out of fold (4-fold cross-validation), so it is not inflated by the
  number of latent dimensions; it can be 0 or below when a descriptor is not
  linearly predictable.

Each direction is unit length and its `scale` is two standard deviations of
random latents projected on it. Principal directions are signed so that
turning them up does not make the sound quieter (their dot product with the
loudness direction is >= 0); the sign of a PCA axis is otherwise arbitrary.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ganstream.evaluation.metrics import loudness_db, power_spectrogram
from ganstream.training.models import LatentGenerator, sample_latents

DEFAULT_K = 8
PCA_LATENTS = 4096
AUDIO_LATENTS = 512
BATCH = 64


@dataclass
class Control:
    """One knob: a unit direction in latent space and what it is."""

    name: str
    kind: str  # principal | descriptor
    direction: np.ndarray  # (D,), unit length
    scale: float
    explained_variance: float | None = None
    descriptor: str | None = None
    r2: float | None = None

    def item(self, row: int) -> dict[str, Any]:
        """The manifest's `controls.items[]` entry for this control at `row` of controls.npy."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "row": row, "scale": _round(self.scale)}
        if self.kind == "principal":
            out["explained_variance"] = _round(self.explained_variance)
        else:
            out["descriptor"] = self.descriptor
            out["r2"] = _round(self.r2)
        return out


def _round(x: float | None) -> float:
    return float(f"{float(x):.4g}")


# ---- audio descriptors (numpy) ------------------------------------------------------------------


def _fft_size(length: int) -> int:
    """1024, or the largest power of two that fits a short segment."""
    return int(min(1024, 2 ** np.floor(np.log2(length))))


def measure_descriptors(audio: np.ndarray, sample_rate: int, chunk: int = 64) -> dict[str, np.ndarray]:
    """(N, T) audio -> {control name: (N,) values}, from one power spectrogram per chunk of items.

    loudness: RMS level in dBFS, floored 60 dB below the median so that a silent item is not an
    outlier that drags the regression. brightness: the power-weighted spectral centroid over all
    frames, in octaves (log2 Hz). noisiness: spectral flatness (geometric over arithmetic
    mean power, averaged over non-silent frames, as `training.metrics.spectral_flatness`) in
    dB; items with no sound get the median.
    """
    n_fft = _fft_size(audio.shape[1])
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    centroid, flatness = [], []
    for part in np.array_split(audio, max(1, -(-len(audio) // chunk))):
        power = power_spectrogram(part, n_fft, n_fft // 4).astype(np.float64) + 1e-12  # (n, frames, bins)
        summed = power.sum(axis=1)
        centroid.append((summed @ freqs) / summed.sum(axis=1))
        frame_mean = power.mean(axis=-1)
        flat = np.exp(np.log(power).mean(axis=-1)) / frame_mean
        loud = frame_mean > 1e-8
        flatness.append([f[m].mean() if m.any() else np.nan for f, m in zip(flat, loud)])
    db = loudness_db(audio)
    flat_db = 10 * np.log10(np.maximum(np.concatenate(flatness), 1e-12))
    flat_db = np.where(np.isnan(flat_db), np.nanmedian(flat_db) if not np.isnan(flat_db).all() else 0.0, flat_db)
    return {
        "loudness": np.maximum(db, np.median(db) - 60.0),
        "brightness": np.log2(np.maximum(np.concatenate(centroid), 1.0)),
        "noisiness": flat_db,
    }


# control name -> the manifest's `descriptor`
DESCRIPTORS: dict[str, str] = {"loudness": "loudness", "brightness": "spectral_centroid", "noisiness": "spectral_flatness"}


# ---- directions ---------------------------------------------------------------------------------


def _design(latents: np.ndarray) -> np.ndarray:
    return np.concatenate([latents.astype(np.float64), np.ones((len(latents), 1))], axis=1)


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations, in float64. Random latents are well conditioned.
    It runs in torch: numpy's BLAS threads, taking turns with torch's, cost 50x more on few cores."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return torch.linalg.solve(xt.T @ xt, xt.T @ yt).numpy()


def regress(latents: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least squares of targets (N, k) or (N,) on latents (N, D) with an intercept: the (D, k) or (D,) slopes."""
    return _solve(_design(latents), targets.astype(np.float64))[:-1]


def out_of_fold_r2(latents: np.ndarray, y: np.ndarray, folds: int = 4) -> float:
    """R^2 of the linear regression of y (N,) on latents (N, D), each item predicted by a fit without its fold."""
    x, y = _design(latents), y.astype(np.float64)
    pred = np.empty_like(y)
    for f in range(folds):
        test = np.arange(len(y)) % folds == f
        pred[test] = x[test] @ _solve(x[~test], y[~test])
    total = np.sum((y - y.mean()) ** 2)
    return float(1.0 - np.sum((y - pred) ** 2) / total) if total > 0 else 0.0


def _unit(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 and np.isfinite(norm) else None


def _scale(latents: np.ndarray, direction: np.ndarray) -> float:
    return float(2.0 * np.std(latents.astype(np.float64) @ direction))


def descriptor_controls(audio: np.ndarray, latents: np.ndarray, sample_rate: int) -> list[Control]:
    """The descriptor macros from generated audio (N, T) and its latents (N, D)."""
    out = []
    for name, y in measure_descriptors(audio, sample_rate).items():
        direction = _unit(regress(latents, y))
        if direction is None:
            warnings.warn(f"controls: {name} does not vary with the latent; the bundle has no {name} control", stacklevel=2)
            continue
        out.append(Control(name, "descriptor", direction, _scale(latents, direction), descriptor=DESCRIPTORS[name], r2=out_of_fold_r2(latents, y)))
    return out


def top_components(acts: Tensor, k: int, generator: torch.Generator, oversample: int = 20, iters: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """Randomised PCA (Halko et al., 2011) of activations (N, F): (coordinates (N, k), variances (k,), total variance).

    With 20 extra dimensions and 6 power iterations the leading variances come within about 1% of
    an exact SVD even for the flat spectra of WaveGAN's dense layer (d=16: 1 s instead of 45 s).
    """
    n, f = acts.shape
    centred = acts - acts.mean(0)
    total = centred.square().sum() / (n - 1)
    q = min(k + oversample, n, f)
    basis = torch.linalg.qr(centred @ torch.randn(f, q, generator=generator, dtype=acts.dtype)).Q
    for _ in range(iters):
        basis = torch.linalg.qr(centred.T @ basis).Q
        basis = torch.linalg.qr(centred @ basis).Q
    u, s, _ = torch.linalg.svd(basis.T @ centred, full_matrices=False)
    coords = basis @ u[:, :k] * s[:k]
    return coords, s[:k].square() / (n - 1), total


def principal_controls(
    early: Callable[[Tensor], Tensor], latents: Tensor, k: int, seed: int = 0, orient: np.ndarray | None = None,
    latent_dim: int | None = None,
) -> list[Control]:
    """GANSpace directions pc1..pck from early-layer activations of `latents` (N, D [+ C]).

    `orient`, a latent direction (D,), picks each component's sign (positive dot product). `latent_dim`:
    the directions span the first D columns only (a conditioned generator's latents end with its condition,
    which the performer sets by note, not by control).
    """
    with torch.inference_mode():
        acts = torch.cat([early(chunk).flatten(1) for chunk in latents.split(1024)]).float()
    k = min(k, acts.shape[1], latents.shape[1])
    coords, variances, total = top_components(acts, k, torch.Generator().manual_seed(seed))
    z = latents[:, :latent_dim].double().numpy()
    slopes = regress(z, coords.double().numpy())  # (D, k)
    out = []
    for i in range(k):
        direction = _unit(slopes[:, i])
        if direction is None:
            warnings.warn(f"controls: principal component {i + 1} does not depend on the latent; left out", stacklevel=2)
            continue
        if orient is not None and float(direction @ orient) < 0:
            direction = -direction
        share = float(variances[i] / total) if total > 0 else 0.0
        out.append(Control(f"pc{i + 1}", "principal", direction, _scale(z, direction), explained_variance=share))
    return out


def generate_audio(generator: Callable[[Tensor], Tensor], latents: Tensor, batch: int = BATCH) -> np.ndarray:
    """(N, D) -> (N, T) float32 audio from a waveform generator, in batches without autograd."""
    with torch.inference_mode():
        return torch.cat([generator(chunk)[:, 0] for chunk in latents.split(batch)]).float().numpy()


def compute_controls(
    generator: LatentGenerator,
    model_cfg: Any,
    sample_rate: int,
    k: int = DEFAULT_K,
    seed: int = 0,
    pca_latents: int = PCA_LATENTS,
    audio_latents: int = AUDIO_LATENTS,
    audio: Callable[[Tensor], Tensor] | None = None,
) -> list[Control]:
    """pc1..pck then the descriptor macros for a generator (in eval mode) of `model_cfg`.

    The principal directions come from `generator.early_features` (training/models/families.py).

    audio: latents (B, D) -> audio (B, 1, T), for a generator that outputs something else
    (a spectral generator: its spectrograms through the reconstruction network); default: the generator.
    """
    generator = generator.eval()
    rng = torch.Generator().manual_seed(seed)
    d = model_cfg.latent_dim  # a conditioned generator's latents end with condition columns: no control moves those
    z_audio = sample_latents(model_cfg, audio_latents, rng)
    macros = descriptor_controls(generate_audio(audio or generator, z_audio), z_audio[:, :d].double().numpy(), sample_rate)
    loudness = next((c.direction for c in macros if c.name == "loudness"), None)
    z_pca = sample_latents(model_cfg, pca_latents, rng)
    principal = principal_controls(generator.early_features, z_pca, k, seed, orient=loudness, latent_dim=d) if k > 0 else []
    return principal + macros


def controls_matrix(controls: list[Control]) -> np.ndarray:
    """(n, D) float32 rows in the order of `controls`, for controls.npy."""
    return np.stack([c.direction for c in controls]).astype(np.float32)
