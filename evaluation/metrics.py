"""Numbers that track how real generated audio is, where a GAN's losses do not.

Audio functions take numpy audio of shape (N, T) in [-1, 1] at `sample_rate`;
feature functions take one row per clip or frame, (n, F). Each metric comes in
two layers: the plain function (`ndb(generated, real)`) and the pieces it is
made of (`NDBBins.fit(real).score(generated)`), so a caller that scores many
generated sets against the same real data fits the real side once
(`evaluate.Reference` does).

`METRICS` names every number `evaluate` reports and which way is better.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import linalg
from scipy.special import ndtri

from ganstream.core.spectral import SpectralParams, mel_filters, stft


class Metric(NamedTuple):
    better: str  # "lower", "higher", or what a good value looks like for numbers that only inform
    selectable: bool  # may be train.best_metric: it says how good the audio is
    needs_classifier: bool
    help: str

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"


METRICS: dict[str, Metric] = {
    "fd_logmel": Metric("lower", True, False, "Frechet distance of log-mel frame statistics to held-out audio (FAD-style)"),
    "fd_classifier": Metric("lower", True, True, "Frechet distance of classifier embeddings to held-out audio (FID-style)"),
    "is": Metric("higher", True, True, "Inception Score with the dataset's classifier, mean over 10 splits"),
    "is_std": Metric("info", False, True, "standard deviation of the Inception Score over the 10 splits"),
    "ndb": Metric("lower", True, False, "fraction of the 50 k-means bins of training clips with a different share of generated clips"),
    "mem_nn_ratio": Metric("~1", False, False, "median distance to the nearest training clip, over that of held-out clips (< 1: copying)"),
    "mem_copies": Metric("lower", False, False, "fraction of clips nearer to a training clip than 99% of held-out clips are (fresh audio: ~0.01)"),
    "loudness_w1": Metric("lower", True, False, "earth mover's distance of the RMS loudness distribution to held-out audio, dB"),
    "loudness_mean": Metric("~floor", False, False, "mean RMS loudness, dBFS"),
    "flatness_w1": Metric("lower", True, False, "earth mover's distance of the spectral flatness distribution to held-out audio"),
    "flatness_mean": Metric("~floor", False, False, "mean spectral flatness (1: white noise, near 0: tones)"),
}


def power_spectrogram(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """(N, T) -> (N, T // hop, n_fft // 2 + 1) float32 power of the shared front end's STFT
    (core/spectral.py: periodic Hann, centred frames), so the metrics see audio framed as the
    spectral models and the engine do."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    spec = stft(audio, SpectralParams(n_fft=n_fft, hop=hop))
    return np.swapaxes(np.square(np.abs(spec)), -1, -2)


def log_mel(audio: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 64) -> np.ndarray:
    """(N, T) -> (N, frames, n_mels) log mel energies (natural log, floored at 1e-6)."""
    audio = np.atleast_2d(audio)
    fb = mel_filters(sample_rate, n_fft, n_mels)
    # In chunks of clips, so the framed copy stays small; einsum, not @: multithreaded BLAS on products
    # this small stalls 10-50x while torch's threads or another process hold the cores, which is
    # exactly when a training run evaluates (see synth.py).
    chunks = [np.einsum("nfk,mk->nfm", power_spectrogram(audio[i : i + 32], n_fft, hop), fb, optimize=False)
              for i in range(0, len(audio), 32)]
    return np.log(np.concatenate(chunks) + 1e-6)


# Features of a set of clips, all from one `log_mel(audio, sample_rate)`, (N, frames, n_mels):


def frame_features(lm: np.ndarray) -> np.ndarray:
    """-> (N x frames, n_mels) float64, every frame a row: what `log_mel_frechet` compares."""
    return lm.reshape(-1, lm.shape[-1]).astype(np.float64)


def clip_features(lm: np.ndarray) -> np.ndarray:
    """-> (N, 2 n_mels) mean and standard deviation over frames of each band: what a clip sounds
    like (pitch, timbre, how much it changes), not where in time it happens. NDB bins these."""
    return np.concatenate([lm.mean(1), lm.std(1)], axis=1).astype(np.float64)


def spectrogram_features(lm: np.ndarray) -> np.ndarray:
    """-> (N, frames x n_mels) whole spectrograms, flattened: two clips are close only when they
    match frame by frame. The memorisation check measures distances here."""
    return lm.reshape(len(lm), -1)


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, F) rows -> mean (F,) and covariance (F, F), float64: the Gaussian a Frechet distance compares."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a covariance needs at least 2 rows, got {len(x)}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_gaussians(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Frechet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b):
    |mu_a - mu_b|^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^1/2)."""
    with warnings.catch_warnings():
        # Covariances of fewer rows than features are singular; sqrtm warns but its result holds.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # regularise as pytorch-fid does
            eye = np.eye(len(cov_a)) * 1e-6
            covmean = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    d = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(covmean))
    return float(max(d, 0.0))  # rounding can leave identical sets a hair below zero


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of a and b, (n, F) each
    (Heusel et al., 2017, "GANs trained by a two time-scale update rule ...", the FID formula)."""
    return frechet_gaussians(*gaussian_stats(a), *gaussian_stats(b))


def log_mel_frechet(generated: np.ndarray, real: np.ndarray, sample_rate: int) -> float:
    """Frechet distance between the log-mel frame statistics of two sets of clips
    (the frame-level analogue of FAD, Kilgour et al., 2019, with log-mel features instead of VGGish).
    It sees the spectral content of short frames, not how a clip evolves over time."""
    return frechet_distance(frame_features(log_mel(generated, sample_rate)), frame_features(log_mel(real, sample_rate)))


def classifier_frechet(generated: np.ndarray, real: np.ndarray) -> float:
    """Frechet distance between a classifier's embeddings of generated and real clips, (n, E) each: FID
    (Heusel et al., 2017) with the dataset's own classifier (`classifier.py`, penultimate layer) in place
    of Inception. Unlike the log-mel distance it sees whole clips, through what tells the classes apart."""
    return frechet_distance(generated, real)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al., 2016) as the WaveGAN paper computes it (Donahue et al., 2019):
    exp(mean over clips of KL(p(y|x) || p(y))), with p(y) the mean prediction, on each of `splits`
    parts of (N, C) class probabilities -> (mean, std) over the parts. Between 1 and C: C when every
    prediction is confident and the classes are equally common, 1 when all agree.

    The rows are shuffled (always the same way for a given N) before they are split: real clips come
    in folder order, one class after another, and a part holding one class scores 1 however well the
    classifier knows it. Generated clips, in random order already, score the same either way."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[np.random.default_rng(0x15).permutation(len(p))]
    scores = []
    for part in np.array_split(p, min(splits, len(p))):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# ---- NDB: the number of statistically different bins --------------------------------------


def _nearest(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, F), (k, F) -> index (n,) and squared distance (n,) of each row's nearest centre."""
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None, :]
    idx = d2.argmin(1)
    return idx, np.maximum(d2[np.arange(len(x)), idx], 0.0)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """(n, F) -> (k, F) centres: k-means++ seeding (Arthur & Vassilvitskii, 2007), then Lloyd's
    iterations until no centre moves. Deterministic for a seed; an emptied cluster keeps its centre."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means: k={k} needs 1 <= k <= {len(x)} rows")
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(len(x))]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        centres[j] = x[rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))]
        d2 = np.minimum(d2, ((x - centres[j]) ** 2).sum(1))
    for _ in range(iters):
        labels, _ = _nearest(x, centres)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


@dataclass(frozen=True)
class NDBBins:
    """K-means bins fitted on real features and the number of real rows that fell in each."""

    centres: np.ndarray  # (K, F)
    counts: np.ndarray  # (K,)

    @classmethod
    def fit(cls, real: np.ndarray, k: int = 50, seed: int = 0) -> NDBBins:
        """Fewer bins than `k` when there are fewer real rows than bins."""
        real = np.asarray(real, dtype=np.float64)
        centres = kmeans(real, min(k, len(real)), seed)
        return cls(centres, np.bincount(_nearest(real, centres)[0], minlength=len(centres)))

    def different(self, generated: np.ndarray, alpha: float = 0.05) -> np.ndarray:
        """(K,) bool: bins whose share of generated rows differs from the real share
        (two-sided two-proportion z-test at level `alpha`)."""
        gen = np.bincount(_nearest(np.asarray(generated, np.float64), self.centres)[0], minlength=len(self.centres))
        n_real, n_gen = self.counts.sum(), gen.sum()
        pooled = (self.counts + gen) / (n_real + n_gen)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_real + 1 / n_gen))
        z = np.divide(gen / n_gen - self.counts / n_real, se, out=np.zeros(len(se)), where=se > 0)
        return np.abs(z) > ndtri(1 - alpha / 2)

    def score(self, generated: np.ndarray, alpha: float = 0.05) -> float:
        return float(self.different(generated, alpha).mean())


def ndb(generated: np.ndarray, real: np.ndarray, k: int = 50, alpha: float = 0.05, seed: int = 0) -> float:
    """NDB/K (Richardson & Weiss, 2018, "On GANs and GMMs"): cluster the real rows (n, F) into k bins
    with k-means, then count the bins where the share of generated rows differs significantly
    (two-proportion z-test, p < alpha), as a fraction of k. Near alpha-or-less for a generator that
    covers the data in the right proportions, near 1 for one that collapsed onto a few modes or
    misses the data altogether. Real rows should far outnumber k (the paper uses ~20 per bin)."""
    return NDBBins.fit(real, k, seed).score(generated, alpha)


# ---- memorisation ---------------------------------------------------------------------------


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(n, F), (m, F) -> (n,) Euclidean distance from each query row to its nearest reference row."""
    reference = np.asarray(reference, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    ref_sq = (reference.astype(np.float64) ** 2).sum(1)
    out = np.empty(len(queries))
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        d2 = (q.astype(np.float64) ** 2).sum(1)[:, None] - 2 * (q @ reference.T) + ref_sq[None, :]
        out[i : i + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def memorisation_scores(generated_nn: np.ndarray, heldout_nn: np.ndarray, quantile: float = 0.01) -> dict[str, float]:
    """Nearest-training-clip distances of generated clips against those of held-out real clips ->
    mem_nn_ratio (median over median: ~1 for fresh audio, well below 1 when the generator copies)
    and mem_copies (the fraction of generated clips nearer to a training clip than all but
    `quantile` of the held-out clips are: about `quantile` for fresh audio, 1 for copies)."""
    typical = float(np.median(heldout_nn))
    if typical <= 0:
        return {"mem_nn_ratio": float("nan"), "mem_copies": float("nan")}
    return {
        "mem_nn_ratio": float(np.median(generated_nn) / typical),
        "mem_copies": float(np.mean(generated_nn < np.quantile(heldout_nn, quantile))),
    }


def memorisation(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray, quantile: float = 0.01) -> dict[str, float]:
    """Does the generator copy its training data? Each generated clip's distance to its nearest
    training clip is compared with the same distance for held-out real clips, which the generator
    never saw (the nearest-neighbour check of the WaveGAN paper, Donahue et al., 2019, judged
    against held-out data as in Meehan et al., 2020, "A non-parametric test to detect data-copying").
    Features are rows, (n, F) each; `spectrogram_features` of a log-mel is the usual choice."""
    return memorisation_scores(nearest_distances(generated, train), nearest_distances(heldout, train), quantile)


# ---- distributions of clip descriptors ----------------------------------------------------


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two 1-D samples (NaNs dropped), in the values' unit: how far,
    on average, a's distribution has to move to become b's. 0 for identical distributions; a shift
    by c gives |c|. Compares the whole distributions of loudness or flatness, not just their means."""
    a = np.sort(np.asarray(a, dtype=np.float64)[~np.isnan(a)])
    b = np.sort(np.asarray(b, dtype=np.float64)[~np.isnan(b)])
    if not len(a) or not len(b):
        return float("nan")
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, values[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, values[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(values)))


def spectral_flatness(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """(N, T) -> (N,) mean over frames of geometric / arithmetic mean power: 1 for white noise, near 0 for tones
    (Johnston, 1988). Frames that are silent are left out."""
    p = power_spectrogram(audio, n_fft, hop) + 1e-12
    flat = np.exp(np.log(p).mean(-1)) / p.mean(-1)
    loud = p.mean(-1) > 1e-8
    return np.array([f[m].mean() if m.any() else np.nan for f, m in zip(flat, loud)])


def loudness_db(audio: np.ndarray) -> np.ndarray:
    """(N, T) -> (N,) RMS level in dBFS."""
    rms = np.sqrt(np.mean(np.square(np.atleast_2d(audio), dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))
