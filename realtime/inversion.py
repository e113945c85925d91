"""Start from your own sound: the latent whose segment sounds nearest a sample (`ganstream invert`).

    inverter = Inverter(load_bundle("drums"))
    result = inverter.invert_file("kick.wav", refine=30, random=1000)
    result.latent, result.condition, result.distance

Three steps, each scored by the one spectral distance (`ganstream.core.distance.spectral_distance`,
lower is nearer) between the sample and what the bundle's generator makes of a latent:

1. the bundle's encoder (manifest `encoder`, an ONNX graph audio (batch, segment) -> latent
   (batch, D) [, condition (batch, C)] [, proposals (batch, M, D)]) guesses at once; where it proposes
   M latents, the generator hears all M in one call and the nearest is taken; where the bundle has a
   refiner (manifest `refiner`: one correction, (sample, what the generator makes of the latent, the
   latent) -> (corrected latent, distance)), its `iterations` corrections follow from there (from the
   `beam` nearest proposals side by side, in one call each), the bundle's generator run between them, and
   the latent whose audio the refiner found nearest is kept (the torch twin is
   training/models/encoder.py `IterativeEncoder`); the latent is clipped to the bundle's range
   (`LATENT_BOUNDS`), a conditioned bundle's pitch rounded into `condition.pitch_range` and its
   velocity into [0, 1];
2. optionally, the best of `random` latents drawn as the bundle draws them (with the encoder's
   condition), a baseline the encoder should beat, and a start when it does not;
3. optionally, `refine` generations of a separable CMA-ES (Ros and Hansen, 2008) on the latent,
   the condition fixed: derivative-free, so it runs on ONNX Runtime alone, POPULATION latents per
   generation in one batched generator call. It never returns a worse latent than it started from.
   `ganstream invert --run` refines by gradient through the run's torch generator instead
   (export/invert.py), passed in as `refiner`.

A sample becomes one segment (`Inverter.prepare`): mixed to mono, resampled to the bundle's rate,
cut from its onset (`ganstream.core.distance.onset_cut`) when longer than a segment, zero-padded at
the end when shorter. A file that cannot give a segment raises one InversionError naming it.

numpy, soundfile, soxr (through core) and onnxruntime only: realtime/ never imports torch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from ganstream.core.distance import onset_cut, spectral_distance
from ganstream.core.manifest import ENCODER_PROPOSALS, LATENT_BOUNDS, REFINER_INPUTS
from ganstream.core.resample import resample_clip

from .bundle import Bundle, BundleError
from .inference import Generator, open_graph

MIN_SECONDS = 0.05  # shorter samples are refused: too little to compare
MAX_SECONDS = 600.0  # longer files are refused before they are read
SILENT_PEAK = 1e-4  # a sample whose peak is below this (-80 dBFS) is silent
ONSET_DB = -40.0  # a long sample is cut from its first sample within this many dB of its peak
BATCH = 100  # latents per generator call when scoring many
POPULATION = 12  # CMA-ES latents per generation, one generator call
SIGMA0 = 0.15  # CMA-ES's first step size, in units of the latent bound: a local search around a good start


class InversionError(ValueError):
    """A sample that cannot be inverted; `file` names it (or "input" for an array), `problem` says why."""

    def __init__(self, file: str, problem: str):
        self.file = str(file)
        self.problem = problem
        super().__init__(f"{self.file}: {problem}")


@dataclass(frozen=True)
class Stage:
    """One step of an inversion: its name, the distance it reached and the seconds it took."""

    name: str
    distance: float
    seconds: float


@dataclass
class Inversion:
    """What `Inverter.invert` found: the latent (D,) and, for a conditioned bundle, its condition (C,);
    `distance` the chosen row's, beside the encoder's and the best random latent's (None: no random
    search); `message` what was done to the sample (cut, padded); `method` what found the row."""

    latent: np.ndarray
    condition: np.ndarray | None
    distance: float
    encoder_distance: float
    random_distance: float | None
    seconds: float
    message: str | None
    method: str
    stages: tuple[Stage, ...] = ()

    @property
    def row(self) -> np.ndarray:
        """(D [+ C],) float32: what `Generator.generate` takes for this result."""
        if self.condition is None:
            return self.latent
        return np.concatenate([self.latent, self.condition]).astype(np.float32)


class Refiner(Protocol):
    """A refinement step `invert` can use in place of CMA-ES: (audio (segment,), start row, steps, seed) ->
    (row, distance by its own measure); `name` says how it works. `invert` re-measures the row on the bundle."""

    name: str

    def __call__(self, audio: np.ndarray, row: np.ndarray, steps: int, seed: int) -> tuple[np.ndarray, float]: ...


def latent_bound(distribution: str) -> float:
    """The largest |component| an inverted latent of this distribution may have (LATENT_BOUNDS)."""
    return LATENT_BOUNDS[distribution]


class Inverter:
    """A bundle's encoder and generator, to find the latent that sounds nearest a sample (module docstring).

    generator: a `Generator` of the same bundle to reuse (else one is opened on `provider`, `threads`).
    Raises BundleError if the bundle has no encoder or its encoder cannot run."""

    def __init__(self, bundle: Bundle, provider: str = "cpu", threads: int | None = 1, generator: Generator | None = None):
        spec = bundle.encoder
        if spec is None:
            raise BundleError(str(bundle.source), "has no encoder: export it with `ganstream export RUN --encoder`", "encoder")
        self._session, self.provider = open_graph(spec, provider, threads)
        self._input, self._input_dtype = spec.inputs[0].name, spec.inputs[0].np_dtype
        self._outputs = [s.name for s in spec.outputs]
        self.proposals = spec.outputs[-1].shape[1] if self._outputs[-1] == ENCODER_PROPOSALS else 1
        self._refiner = open_graph(bundle.refiner, provider, threads)[0] if bundle.refiner is not None else None
        self.corrections = bundle.spec.refiner.iterations if bundle.spec.refiner is not None else 0
        self.beam = bundle.spec.refiner.beam if bundle.spec.refiner is not None else 1
        self.bundle = bundle
        self.generator = generator if generator is not None else Generator(bundle, provider, threads)
        self.sample_rate, self.segment, self.latent_size = bundle.sample_rate, bundle.segment, bundle.latent_size
        self.condition = bundle.spec.condition
        self.bound = latent_bound(bundle.latent_distribution)

    def __repr__(self) -> str:
        return f"Inverter({self.bundle.name!r}, provider={self.provider!r}, segment={self.segment}, sample_rate={self.sample_rate})"

    # -- the sample --------------------------------------------------------------------------

    def load(self, path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
        """Any file soundfile reads -> ((segment,) float32 at the bundle's rate, what was done to it or None).
        One InversionError naming the file if it cannot give a segment (see `prepare`)."""
        path = Path(path)
        if not path.exists():
            raise InversionError(str(path), "no such file")
        if path.is_dir():
            raise InversionError(str(path), "is a directory, not an audio file")
        try:
            if path.stat().st_size == 0:
                raise InversionError(str(path), "empty (0 bytes)")
            with sf.SoundFile(str(path)) as f:
                rate, frames = f.samplerate, f.frames
                if rate > 0 and frames / rate > MAX_SECONDS:  # refused before it is read
                    raise InversionError(str(path), _too_long(frames / rate))
                x = f.read(dtype="float32", always_2d=True)
        except InversionError:
            raise
        except Exception as e:  # libsndfile's errors, and the OS's: one line for any file it cannot read
            cause = getattr(e, "error_string", None) or getattr(e, "strerror", None) or str(e)
            raise InversionError(str(path), f"cannot be read as audio ({cause})") from None
        return self.prepare(x, rate, source=str(path))

    def prepare(self, audio: np.ndarray, sample_rate: int, source: str = "input") -> tuple[np.ndarray, str | None]:
        """(T,) or (T, channels) samples at `sample_rate` -> ((segment,) float32 at the bundle's rate, message):
        mixed to mono, resampled, then cut from its onset if longer than a segment (the message gives the
        times) or zero-padded at the end if shorter. InversionError naming `source` for audio that is empty,
        shorter than MIN_SECONDS, longer than MAX_SECONDS, not finite or silent (peak below SILENT_PEAK)."""
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1) if x.shape[1] else np.zeros(0, np.float32)
        if x.ndim != 1:
            raise InversionError(source, f"expected samples (T,) or (T, channels), got an array of shape {np.shape(audio)}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise InversionError(source, f"sample rate must be a positive whole number of Hz, got {sample_rate!r}")
        if x.size == 0:
            raise InversionError(source, "empty (no audio frames)")
        seconds = x.size / sample_rate
        if seconds > MAX_SECONDS:
            raise InversionError(source, _too_long(seconds))
        if seconds < MIN_SECONDS:
            raise InversionError(source, f"too short: {seconds * 1000:.0f} ms of audio, at least {MIN_SECONDS * 1000:.0f} ms needed")
        if not np.all(np.isfinite(x)):
            raise InversionError(source, "corrupt: it holds NaN or infinite samples")
        peak = float(np.abs(x).max())
        if peak < SILENT_PEAK:
            level = "all zeros" if peak == 0.0 else f"its peak is {20 * math.log10(peak):.0f} dBFS"
            raise InversionError(source, f"silent ({level}; below {20 * math.log10(SILENT_PEAK):.0f} dBFS): there is nothing to match")
        x = resample_clip(x, int(sample_rate), self.sample_rate)
        n, sr = self.segment, self.sample_rate
        if x.size > n:
            cut, at = onset_cut(x, n, ONSET_DB, sample_rate=sr)
            return cut, f"cut to {n / sr:.2f} s from its onset at {at / sr:.2f} s (of {seconds:.2f} s)"
        if x.size < n:
            return np.pad(x, (0, n - x.size)), f"padded with silence from {seconds:.2f} s to {n / sr:.2f} s"
        return x, None

    # -- the steps ---------------------------------------------------------------------------

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """(segment,) audio -> (D [+ C],) float32 row: the encoder's latent (the nearest of its proposals, then
        of the refiner's corrections) clipped into +-bound, and a conditioned bundle's pitch rounded into
        `condition.pitch_range`, velocity clipped into [0, 1]."""
        x = self._segment(audio)
        outs = self._session.run(self._outputs, {self._input: x[None].astype(self._input_dtype)})
        latent = np.nan_to_num(np.asarray(outs[0], np.float32)[0])
        proposals = np.nan_to_num(np.asarray(outs[-1], np.float32)[0]) if self.proposals > 1 else latent[None]  # (M, D)
        cond = None
        if self.condition is not None:
            cond = np.nan_to_num(np.asarray(outs[1], np.float64)[0]).copy()
            low, high = self.condition.pitch_range
            cond[0] = np.clip(np.round(cond[0]), low, high)
            if cond.shape[0] > 1:
                cond[1] = np.clip(cond[1], 0.0, 1.0)
            cond = cond.astype(np.float32)
        if self._refiner is not None:
            latent = self._corrected(x, proposals, cond)
        elif len(proposals) > 1:
            latent = proposals[int(np.argmin(self.distance(x, self._rows(proposals, cond))))]
        latent = np.clip(latent, -self.bound, self.bound)
        return latent.astype(np.float32) if cond is None else np.concatenate([latent, cond]).astype(np.float32)

    def _corrected(self, x: np.ndarray, proposals: np.ndarray, condition: np.ndarray | None) -> np.ndarray:
        """The encoder's (M, D) proposals, heard through the generator (with the condition) and measured by the
        refiner in one call, then `corrections` more calls on the corrections of the `beam` nearest, side by
        side (each call corrects every row it measures) -> the latent whose audio the refiner's distance found
        nearest the sample, the proposals included."""
        (audio, heard_name, latent_name), dtypes = REFINER_INPUTS, [s.np_dtype for s in self.bundle.refiner.inputs]
        sample = x[None].astype(dtypes[0])
        best, best_d, z = proposals[0], math.inf, proposals
        for k in range(self.corrections + 1):
            feeds = {audio: np.repeat(sample, len(z), axis=0), heard_name: self.generator.generate(self._rows(z, condition)).astype(dtypes[1]),
                     latent_name: z.astype(dtypes[2])}
            corrected, distance = self._refiner.run(None, feeds)
            i = int(np.argmin(distance))
            if float(distance[i]) < best_d:
                best, best_d = z[i], float(distance[i])
            keep = np.argsort(distance, kind="stable")[: self.beam] if k == 0 else slice(None)
            z = np.nan_to_num(np.asarray(corrected[keep], np.float32))
        return best

    @staticmethod
    def _rows(latents: np.ndarray, condition: np.ndarray | None) -> np.ndarray:
        """(M, D) latents [and the (C,) condition, which may be empty] -> (M, D [+ C]) generator rows."""
        return latents if condition is None else np.concatenate([latents, np.broadcast_to(condition, (len(latents), len(condition)))], axis=1)

    def distance(self, audio: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(segment,) audio, (B, D [+ C]) rows -> (B,) float64 spectral distances of what the rows generate."""
        x = self._segment(audio)
        rows = np.atleast_2d(np.asarray(rows, np.float32))
        return np.concatenate([spectral_distance(x, self.generator.generate(rows[i : i + BATCH])) for i in range(0, rows.shape[0], BATCH)])

    def random_search(
        self, audio: np.ndarray, n: int = 1000, seed: int = 0, *, condition: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """The nearest of `n` rows drawn as the bundle draws them (`Bundle.random_rows`, seeded), scored
        BATCH at a time -> (row (D [+ C],), distance). condition: (C,) to use in every row (the encoder's),
        so the search is over latents alone."""
        if n < 1:
            raise ValueError(f"random search needs n >= 1 latents, got {n}")
        rng = np.random.default_rng(seed)
        best, best_d = None, math.inf
        for start in range(0, n, BATCH):
            rows = self.bundle.random_rows(min(BATCH, n - start), rng)
            if condition is not None and self.condition is not None:
                rows[:, self.latent_size :] = np.asarray(condition, np.float32)
            d = self.distance(audio, rows)
            i = int(np.argmin(d))
            if d[i] < best_d:
                best, best_d = rows[i].copy(), float(d[i])
        return best, best_d

    def refine(
        self, audio: np.ndarray, rows0: np.ndarray, steps: int, seed: int = 0, *, population: int = POPULATION
    ) -> tuple[np.ndarray, float]:
        """`steps` generations of separable CMA-ES on the latent from the best of `rows0` ((D [+ C],) or
        (K, D [+ C])), the condition fixed -> (row, distance): never farther than the start. Each generation
        scores `population` samples and the mean in one generator call; samples are clipped into +-bound."""
        x = self._segment(audio)
        starts = np.atleast_2d(np.asarray(rows0, np.float32))
        d0 = self.distance(x, starts)
        best = starts[int(np.argmin(d0))].copy()
        best_d = float(d0.min())
        if steps <= 0:
            return best, best_d
        es = SepCMA(best[: self.latent_size].astype(np.float64), SIGMA0 * self.bound, population, self.bound, np.random.default_rng(seed))
        fixed = best[self.latent_size :]
        for _ in range(int(steps)):
            latents = es.ask()  # (population + 1, D): the samples, then the mean
            rows = self._rows(latents, fixed).astype(np.float32)
            d = self.distance(x, rows)
            es.tell(d[:-1])
            i = int(np.argmin(d))
            if d[i] < best_d:
                best, best_d = rows[i].copy(), float(d[i])
        return best, best_d

    def invert(
        self,
        audio: np.ndarray,
        refine: int = 0,
        random: int = 0,
        seed: int = 0,
        message: str | None = None,
        *,
        refiner: Refiner | None = None,
    ) -> Inversion:
        """(segment,) audio -> Inversion: the encoder's row, the best of `random` random latents if nearer
        (0 skips the search), then `refine` steps of refinement (CMA-ES, or `refiner`) from the nearer.
        `message` is passed through (what `load` or `prepare` said)."""
        x = self._segment(audio)
        t0 = time.perf_counter()
        row = self.encode(x)
        enc_d = float(self.distance(x, row[None])[0])
        stages = [Stage("encoder", enc_d, time.perf_counter() - t0)]
        best, best_d, method = row, enc_d, "encoder"
        random_d = None
        if random > 0:
            t = time.perf_counter()
            cond = row[self.latent_size :] if self.condition is not None else None
            r_row, random_d = self.random_search(x, random, seed, condition=cond)
            stages.append(Stage(f"best of {random} random latents", random_d, time.perf_counter() - t))
            if random_d < best_d:
                best, best_d, method = r_row, random_d, "random search"
        if refine > 0:
            t = time.perf_counter()
            if refiner is None:
                name = f"CMA-ES, {refine} generations of {POPULATION}"
                r_row, r_d = self.refine(x, best, refine, seed)
            else:
                name = f"{refiner.name}, {refine} steps"
                r_row, _ = refiner(x, best.copy(), refine, seed)
                r_row = np.asarray(r_row, np.float32).copy()
                r_row[: self.latent_size] = np.clip(r_row[: self.latent_size], -self.bound, self.bound)
                r_row[self.latent_size :] = best[self.latent_size :]  # refinement moves the latent only
                r_d = float(self.distance(x, r_row[None])[0])
            stages.append(Stage(f"refined ({name})", r_d, time.perf_counter() - t))
            if r_d < best_d:
                best, best_d, method = r_row, r_d, f"{method} + {name}"
        d = self.latent_size
        return Inversion(
            latent=np.asarray(best[:d], np.float32).copy(),
            condition=np.asarray(best[d:], np.float32).copy() if self.condition is not None else None,
            distance=best_d,
            encoder_distance=enc_d,
            random_distance=random_d,
            seconds=time.perf_counter() - t0,
            message=message,
            method=method,
            stages=tuple(stages),
        )

    def invert_file(
        self, path: str | os.PathLike, refine: int = 0, random: int = 0, seed: int = 0, *, refiner: Refiner | None = None
    ) -> Inversion:
        """`load` then `invert`; the Inversion's message says what was done to the file (cut, padded)."""
        audio, message = self.load(path)
        return self.invert(audio, refine, random, seed, message, refiner=refiner)

    def _segment(self, audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio, dtype=np.float32)
        if x.shape != (self.segment,):
            raise ValueError(f"audio must be one segment, shape ({self.segment},), got {x.shape}: use load or prepare")
        return x


def _too_long(seconds: float) -> str:
    return f"too long: {seconds:.0f} s of audio, at most {MAX_SECONDS:.0f} s (cut the part you want to match)"


class SepCMA:
    """Separable CMA-ES (Ros and Hansen, "A simple modification in CMA-ES achieving linear time and space
    complexity", 2008): a diagonal covariance, so D values instead of D x D, which is all a search of
    tens of generations can learn anyway. Minimises; samples are clipped into +-bound (the update uses
    the clipped steps, so the mean stays inside). Hansen's default rates, with c1 and cmu scaled by
    (D + 2) / 3 as the paper does.

    ask() -> (population + 1, D): the samples, then the mean (worth scoring: near the optimum it is often
    better than every sample); tell(fitness of the samples) updates the mean, step size and variances."""

    def __init__(self, mean: np.ndarray, sigma: float, population: int, bound: float, rng: np.random.Generator):
        n = mean.shape[0]
        self.mean, self.sigma, self.bound, self.rng = mean.astype(np.float64).copy(), float(sigma), float(bound), rng
        self.lam = max(4, int(population))
        mu = self.lam // 2
        w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
        self.weights = w / w.sum()
        self.mu_eff = 1.0 / np.sum(self.weights**2)
        self.c_sigma = (self.mu_eff + 2.0) / (n + self.mu_eff + 5.0)
        self.d_sigma = 1.0 + 2.0 * max(0.0, math.sqrt((self.mu_eff - 1.0) / (n + 1.0)) - 1.0) + self.c_sigma
        self.c_c = (4.0 + self.mu_eff / n) / (n + 4.0 + 2.0 * self.mu_eff / n)
        c1 = 2.0 / ((n + 1.3) ** 2 + self.mu_eff)
        cmu = min(1.0 - c1, 2.0 * (self.mu_eff - 2.0 + 1.0 / self.mu_eff) / ((n + 2.0) ** 2 + self.mu_eff))
        scale = (n + 2.0) / 3.0
        self.c1, self.cmu = min(1.0, c1 * scale), min(1.0 - min(1.0, c1 * scale), cmu * scale)
        self.chi = math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))
        self.var = np.ones(n)  # the diagonal of C
        self.p_sigma, self.p_c = np.zeros(n), np.zeros(n)
        self.generation = 0
        self._steps: np.ndarray | None = None

    def ask(self) -> np.ndarray:
        z = self.rng.standard_normal((self.lam, self.mean.shape[0]))
        x = np.clip(self.mean + self.sigma * np.sqrt(self.var) * z, -self.bound, self.bound)
        self._steps = (x - self.mean) / self.sigma  # y = sqrt(C) z, after clipping
        return np.concatenate([x, self.mean[None]], axis=0)

    def tell(self, fitness: np.ndarray) -> None:
        assert self._steps is not None, "ask before tell"
        order = np.argsort(np.asarray(fitness))[: self.weights.shape[0]]
        y = self._steps[order]  # (mu, D), best first
        y_w = self.weights @ y
        self.mean = np.clip(self.mean + self.sigma * y_w, -self.bound, self.bound)
        self.generation += 1
        cs, cc = self.c_sigma, self.c_c
        self.p_sigma = (1 - cs) * self.p_sigma + math.sqrt(cs * (2 - cs) * self.mu_eff) * y_w / np.sqrt(self.var)
        norm = float(np.linalg.norm(self.p_sigma))
        h_sigma = norm / math.sqrt(1 - (1 - cs) ** (2 * self.generation)) < (1.4 + 2 / (self.mean.shape[0] + 1)) * self.chi
        self.p_c = (1 - cc) * self.p_c + h_sigma * math.sqrt(cc * (2 - cc) * self.mu_eff) * y_w
        rank_mu = self.weights @ (y * y)
        self.var = (
            (1 - self.c1 - self.cmu) * self.var
            + self.c1 * (self.p_c**2 + (not h_sigma) * cc * (2 - cc) * self.var)
            + self.cmu * rank_mu
        )
        self.var = np.maximum(self.var, 1e-12)
        self.sigma = min(2.0 * self.bound, self.sigma * math.exp(min(1.0, (cs / self.d_sigma) * (norm / self.chi - 1.0))))
        self._steps = None
