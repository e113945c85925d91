"""`ganstream eval-reconstruction AUDIO...`: how well, and how fast, each way back from magnitudes to audio works.

On held-out clips of each AUDIO source, one table per source, side by side in one run:

- GL-32 exact, GL-100 exact: fast Griffin-Lim (core/phase.py), 32 and 100 iterations from a random phase;
- GL-16 locked exact, GL-32 locked exact: the same from the phase-locked vocoder's phase (`locked_phase`),
  what a spectral bundle without a network plays (16 iterations by default);
- PGHI exact: phase gradient heuristic integration, no iterations;
- the network (`--network`: a spectral or reconstruction bundle, or a bare ONNX file)
  in ONNX Runtime, fed the normalised log-magnitude a spectral GAN would give it;
- GL-32 clip C, for each C of `--norm-clips`: Griffin-Lim on the magnitudes after
  normalise -> clip at C std -> denormalise, which is all a spectral GAN trained with
  `model.norm_clip=C` can emit, so the rows show what each clip costs.

"exact" rows get each clip's unclipped STFT magnitudes: what a perfect generator
would emit, and the main comparison. The network cannot get them: its input is
normalised, and so clipped at its own norm_clip, by construction. The
normalisation's per-bin statistics are the network's, for every source (a bare
ONNX file's are those of the first source's training data, which it is taken to
be trained on), or else each source's own: those of its training data
(`set:NAME` for `set:NAME/heldout`, else the source's training split), as
training computes them.

Which clips: a set's held-out folder (`set:NAME/heldout`, other notes, kits or
voices that no model trains on) is used whole, every segment of every file once
(at most --max-clips); any other source gives its holdout split (the one training
uses for the same --seed and --holdout), --seconds of it (default 16). Each
clip's STFT magnitude is taken with the front end (the network's, or
--n-fft/--hop/--mel-bins); each method rebuilds audio from it, and the magnitude
of the rebuilt audio's STFT is compared with the original's: spectral
convergence and log-spectral distance (dB, lower is better) and compute seconds
per second of audio (one CPU thread, lower is faster).

Given a spectral bundle, it also measures the spectral consistency of spectrograms
the bundle's GAN generates, beside that of real clips (`spectral_consistency`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ganstream.core.phase import LOCKED, griffin_lim, pghi
from ganstream.core.spectral import BinNorm, SpectralParams, log_magnitude, magnitude, normalise, stft

from ganstream.training.config import ConfigError, DataConfig
from ganstream.training.data import DataError, load_dataset

CONSISTENCY_ITEMS = 16  # generated spectrograms whose consistency is measured
NORM_CLIP = 3.0  # SpecGAN's clip: the clipped row without a network, and a bare ONNX network's input
DEFAULT_SECONDS = 16.0  # of a holdout split, when --seconds is not given
DEFAULT_SEGMENT = 16384  # samples per clip without a bundle: SpecGAN's
MAX_CLIPS = 256  # per source: every clip of the three sets' held-out folders (80, 200 and 150 segments)


class ReconEvalError(ValueError):
    """A problem with the command's input: it names the path or option."""


@dataclass
class Method:
    """One way back to audio: `run` takes the front end's magnitudes (bins, F), or what `prepare` makes of them,
    and returns (F * hop,) audio. Only `run` is timed: `prepare` turns the exact magnitudes into the input the
    method would really be given (magnitudes clipped as a spectral GAN's output is, or a network's normalised
    frames). `input` says which, for the table: "exact", or "clip C" for C std."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    clip: float | None = None  # the normalisation's clip in std, None for the exact magnitudes
    prepare: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def input(self) -> str:
        return "exact" if self.clip is None else f"clip {self.clip:g}"


# ---------------------------------------------------------------------------- measures


def spectral_convergence_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """20 log10(|| |S| - |S'| ||_F / || |S| ||_F) of two magnitudes of one shape, in dB; lower is better."""
    ref = np.asarray(reference, np.float64)
    err = np.linalg.norm(ref - np.asarray(estimate, np.float64))
    return float(20 * np.log10(max(err, 1e-12) / max(np.linalg.norm(ref), 1e-12)))


def log_spectral_distance_db(reference: np.ndarray, estimate: np.ndarray, floor: float = 1e-5) -> float:
    """Mean over frames of the RMS over bins of 20 log10 |S| - 20 log10 |S'| (both floored), in dB; lower is better."""
    ref = 20 * np.log10(np.maximum(np.asarray(reference, np.float64), floor))
    est = 20 * np.log10(np.maximum(np.asarray(estimate, np.float64), floor))
    return float(np.mean(np.sqrt(np.mean((ref - est) ** 2, axis=-2))))


def spectral_consistency(log_mag: np.ndarray, p: SpectralParams, reconstruct: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """How far a log-magnitude (bins, F) is from the magnitude of any real signal, in dB (lower: more consistent).

    The spectral convergence between exp(log_mag) and the front end's magnitude of the
    STFT of its own reconstruction (`reconstruct`: magnitudes -> audio; default 32
    iterations of fast Griffin-Lim). A real clip's magnitude is nearly consistent; a
    GAN's spectrogram that no signal has cannot be, whatever phase is put under it
    (Marafioti et al. 2019 measure TiFGAN's spectrograms the same way).
    """
    mag = np.exp(np.asarray(log_mag, np.float64))
    audio = (reconstruct or (lambda m: griffin_lim(m, p, 32)))(mag)
    return spectral_convergence_db(mag, magnitude(np.asarray(audio, np.float32).reshape(-1), p))


# ---------------------------------------------------------------------------- the clip


def normalised(mag: np.ndarray, norm: BinNorm, p: SpectralParams) -> np.ndarray:
    """(bins, F) magnitudes -> (bins, F) what a spectral GAN outputs: normalised log-magnitude, clipped at norm.clip std."""
    return normalise(np.log(np.maximum(mag, p.log_floor)), norm)


def clipped(mag: np.ndarray, norm: BinNorm, p: SpectralParams) -> np.ndarray:
    """(bins, F) magnitudes as a spectral GAN's output holds them: normalised, clipped and denormalised."""
    return np.exp(norm.denormalise(normalised(mag, norm, p)))


def clip_statistics(mags: list[np.ndarray], norm: BinNorm, p: SpectralParams) -> dict[str, float]:
    """What clipping at norm.clip std does to (bins, F) magnitudes: the fractions of bins clipped from above
    (a peak louder than its bin's usual range) and from below (raised to the floor of that range), and
    the fraction of the energy the clip from above removes."""
    above = below = bins = 0
    energy = removed = 0.0
    for mag in mags:
        z = (np.log(np.maximum(mag, p.log_floor)) - norm.mean[:, None]) / norm.std[:, None]
        above += int(np.count_nonzero(z > norm.clip))
        below += int(np.count_nonzero(z < -norm.clip))
        bins += z.size
        m2 = np.square(mag, dtype=np.float64)
        energy += float(m2.sum())
        peaks = z > norm.clip
        removed += float((m2[peaks] - np.square(clipped(mag, norm, p)[peaks], dtype=np.float64)).sum())
    return {"bins_clipped_above": above / max(bins, 1), "bins_clipped_below": below / max(bins, 1),
            "energy_removed": removed / max(energy, 1e-30)}


def parse_norm_clips(text: str) -> list[float | None]:
    """"2,3,4,none" -> [2.0, 3.0, 4.0, None]: clips in std, None for no clip; a bad value is named."""
    out: list[float | None] = []
    for item in (s.strip() for s in text.split(",")):
        if item.lower() == "none":
            value = None
        else:
            try:
                value = float(item)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise ReconEvalError(f"--norm-clips: {item!r} is neither a positive number of standard deviations nor 'none' (e.g. 2,3,4,none)")
        if value not in out:
            out.append(value)
    return out


# ---------------------------------------------------------------------------- the network


@dataclass
class Network:
    """A reconstruction network and the front end it expects: (1, bins, F) normalised -> audio."""

    label: str
    params: SpectralParams
    norm: BinNorm
    statistics: str  # where `norm` comes from, for the table
    frames: int | None  # the bundle's spectrogram length, None for a bare ONNX file
    run: Callable[[np.ndarray], np.ndarray]
    bundle: Path | None  # a spectral bundle, whose GAN's consistency is measured too

    def method(self) -> Method:
        return Method("network", lambda frames: self.run(frames[None])[0], self.norm.clip, self.normalised)

    def reconstruct(self, mag: np.ndarray) -> np.ndarray:
        """(bins, F) magnitudes -> (F * hop,) audio through the network."""
        return self.run(self.normalised(mag)[None])[0]

    def normalised(self, mag: np.ndarray) -> np.ndarray:
        """(bins, F) magnitudes -> (bins, F) the network's input."""
        return normalised(mag, self.norm, self.params)


def open_network(path: str, provider: str, front_end: Callable[[], SpectralParams],
                 moments: Callable[[SpectralParams], tuple[BinNorm, str]]) -> Network:
    """A bundle (folder, zip or its manifest.json) or a bare .onnx file, whose front end is `front_end()`
    and whose statistics, and where they come from, are `moments(params)`, called once the file has loaded
    and its shape fits."""
    from ganstream.realtime.bundle import BundleError, load_reconstruction
    from ganstream.realtime.inference import ProviderError, Reconstructor, create_session

    file = Path(path).expanduser()
    if not file.exists():
        raise ReconEvalError(f"--network {path}: no such bundle or ONNX file")
    if file.suffix.lower() == ".onnx":
        try:
            session, _ = create_session(file, provider, 1)
        except ProviderError as e:
            raise ReconEvalError(f"--provider: {e}") from None
        except Exception as e:  # onnxruntime's own errors for a damaged file
            raise ReconEvalError(f"--network {path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        params = front_end()
        if len(inp.shape) != 3 or (isinstance(inp.shape[1], int) and inp.shape[1] != params.bins):
            raise ReconEvalError(
                f"--network {path}: takes {inp.shape}, not spectrograms (batch, {params.bins}, frames); check --n-fft and --mel-bins"
            )
        run = lambda x: session.run([out.name], {inp.name: x.astype(np.float32)})[0]  # noqa: E731
        return Network(str(file), params, *moments(params), None, run, None)
    try:
        network = load_reconstruction(str(file))
        runner = Reconstructor(network, provider=provider, threads=1)
    except BundleError as e:
        raise ReconEvalError(str(e)) from None
    except ProviderError as e:
        raise ReconEvalError(f"--provider: {e}") from None
    spectral = network.spectral
    kind = network.manifest.get("model", {}).get("kind")
    return Network(str(file), spectral.params, spectral.norm, "the network's statistics", spectral.frames, runner.reconstruct,
                   file if kind == "spectral" else None)


def consistency_of(items: list[np.ndarray], net: Network) -> dict[str, float]:
    """Mean spectral consistency (dB) of log-magnitudes (bins, F), through GL-32 and through the network."""
    p = net.params
    return {"GL-32": float(np.mean([spectral_consistency(x, p) for x in items])),
            "network": float(np.mean([spectral_consistency(x, p, net.reconstruct) for x in items]))}


def generated_spectrograms(net: Network, provider: str) -> list[np.ndarray]:
    """CONSISTENCY_ITEMS log-magnitudes (bins, F) that the bundle's GAN generates from fixed latents."""
    from ganstream.realtime.bundle import BundleError, load_bundle
    from ganstream.realtime.inference import create_session

    try:
        bundle = load_bundle(str(net.bundle))
    except BundleError as e:
        raise ReconEvalError(str(e)) from None
    spec = bundle.graph("generator")
    session, _ = create_session(spec.file, provider, 1)
    z = bundle.random_latents(CONSISTENCY_ITEMS, np.random.default_rng(0)).astype(spec.inputs[0].np_dtype)
    (out,) = session.run([spec.outputs[0].name], {spec.inputs[0].name: z})
    return [net.norm.denormalise(x) for x in np.asarray(out, np.float32).reshape(len(z), net.params.bins, -1)]


# ---------------------------------------------------------------------------- the comparison


@dataclass
class Result:
    """One method's scores on every clip of one source: spectral convergence and log-spectral distance per clip (dB)."""

    method: Method
    sc: np.ndarray  # (N,)
    lsd: np.ndarray  # (N,)
    compute: float  # seconds of compute per second of audio

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "input": self.method.input,
            "clip": self.method.clip,
            "spectral_convergence_db": float(np.mean(self.sc)),
            "spectral_convergence_sem_db": _sem(self.sc),
            "log_spectral_distance_db": float(np.mean(self.lsd)),
            "compute_s_per_audio_s": self.compute,
            "clips": int(len(self.sc)),
        }


def _sem(x: np.ndarray) -> float:
    """The standard error of the mean of x (0 for a single value)."""
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def evaluate(clips: np.ndarray, p: SpectralParams, methods: list[Method], log: Callable[[str], None] = lambda s: None) -> list[Result]:
    """(N, T) real clips -> each method's scores on every clip, and its compute per audio second.

    Each method gets the clips' exact magnitudes, through its `prepare` when it has one. It runs on
    all clips back to back, timed, after one untimed run; `prepare` is not timed.
    """
    results = []
    audio_seconds = clips.size / p.sample_rate
    specs = [stft(clip, p) for clip in clips]
    exact = [magnitude(spec, p) for spec in specs]
    for m in methods:
        inputs = [m.prepare(mag) for mag in exact] if m.prepare else exact
        m.run(inputs[0])  # untimed: ONNX Runtime plans its memory on a session's first call
        t0 = time.perf_counter()  # all clips back to back, as a stream would call the method
        outputs = [np.asarray(m.run(x), np.float32).reshape(-1) for x in inputs]
        spent = time.perf_counter() - t0
        sc, lsd = [], []
        for clip, spec, audio in zip(clips, specs, outputs):
            reference = np.abs(spec)
            rebuilt = np.abs(stft(_fit(audio, clip.shape[-1]), p))
            sc.append(spectral_convergence_db(reference, rebuilt))
            lsd.append(log_spectral_distance_db(reference, rebuilt, p.log_floor))
        results.append(Result(m, np.asarray(sc), np.asarray(lsd), spent / audio_seconds))
        log(f"  {m.name}: SC {np.mean(sc):.2f} dB")
    return results


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if audio.shape[-1] >= length else np.pad(audio, (0, length - audio.shape[-1]))


EXACT = "GL-32 exact"  # the row each clip's cost is measured against


def clip_row(clip: float) -> str:
    return f"GL-32 clip {clip:g}"


def baselines(p: SpectralParams) -> list[Method]:
    """The methods that need no network, on the exact magnitudes."""
    return [
        Method(EXACT, lambda m: griffin_lim(m, p, 32)),
        Method("GL-16 locked exact", lambda m: griffin_lim(m, p, 16, initial=LOCKED)),
        Method("GL-32 locked exact", lambda m: griffin_lim(m, p, 32, initial=LOCKED)),
        Method("GL-100 exact", lambda m: griffin_lim(m, p, 100)),
        Method("PGHI exact", lambda m: pghi(m, p)),
    ]


def clip_methods(p: SpectralParams, norm: BinNorm, clips: list[float | None]) -> list[Method]:
    """GL-32 on the magnitudes clipped at each clip (`norm`'s statistics); None, no clip, is the exact row."""
    out = []
    for c in clips:
        if c is not None:
            at = replace(norm, clip=c)
            out.append(Method(clip_row(c), lambda m: griffin_lim(m, p, 32), c, lambda mag, at=at: clipped(mag, at, p)))
    return out


def clip_costs(results: list[Result], clips: np.ndarray, p: SpectralParams, norm: BinNorm, wanted: list[float | None]) -> list[dict[str, Any]]:
    """For each clip (None: no clip), what it costs GL-32 against the exact magnitudes on the same clips
    (paired: mean and standard error of the per-clip difference), and what it clips."""
    by_name = {r.method.name: r for r in results}
    exact = by_name[EXACT]
    mags = [magnitude(clip, p) for clip in clips]
    out = []
    for c in sorted(wanted, key=lambda c: math.inf if c is None else c):
        r = exact if c is None else by_name[clip_row(c)]
        d_sc, d_lsd = r.sc - exact.sc, r.lsd - exact.lsd
        stats = ({"bins_clipped_above": 0.0, "bins_clipped_below": 0.0, "energy_removed": 0.0} if c is None
                 else clip_statistics(mags, replace(norm, clip=c), p))
        out.append({
            "clip": c, "method": r.method.name,
            "spectral_convergence_db": float(np.mean(r.sc)),
            "spectral_convergence_cost_db": float(np.mean(d_sc)), "spectral_convergence_cost_sem_db": _sem(d_sc),
            "log_spectral_distance_db": float(np.mean(r.lsd)),
            "log_spectral_distance_cost_db": float(np.mean(d_lsd)), "log_spectral_distance_cost_sem_db": _sem(d_lsd),
            **stats,
        })
    return out


# ---------------------------------------------------------------------------- the sources


@dataclass
class HeldOut:
    """The clips one source gives."""

    source: str  # as given
    clips: np.ndarray  # (N, segment)
    files: int  # how many of the source's files (or synth items) the clips come from
    how: str  # which clips, for the table


def set_of_heldout(source: str) -> str | None:
    """`set:NAME/heldout` -> `set:NAME`, the set whose training folder it is held out of; else None."""
    from ganstream.training.data.real_sets import SET_PREFIX

    name, _, split = source[len(SET_PREFIX):].partition("/") if source.startswith(SET_PREFIX) else ("", "", "")
    return SET_PREFIX + name if split == "heldout" else None


def held_out(source: str, p: SpectralParams, segment: int, args: argparse.Namespace) -> HeldOut:
    """The clips of `source` the comparison uses (see the module docstring), evenly spread when capped."""
    if set_of_heldout(source):  # every segment of every file once, from its start (a one-shot's onset)
        cfg = DataConfig(source=source, sample_rate=p.sample_rate, holdout=0.0, hop=1.0, random_offset=False, cache_dir=args.cache_dir)
        cfg.validate()
        segs = load_dataset(cfg, segment, args.seed, "train", progress=False)
        seconds = args.seconds
        how = "every clip of a set's held-out folder"
    else:
        cfg = DataConfig(source=source, sample_rate=p.sample_rate, holdout=args.holdout, cache_dir=args.cache_dir)
        cfg.validate()
        segs = load_dataset(cfg, segment, args.seed, "holdout", progress=False)
        if len(segs) == 0:
            raise ReconEvalError(f"{source}: no held-out clips (holdout {args.holdout}); add audio or raise --holdout")
        seconds = DEFAULT_SECONDS if args.seconds is None else args.seconds
        how = f"its holdout split (--seed {args.seed}, --holdout {args.holdout:g})"
    wanted = min(len(segs), args.max_clips)
    if seconds is not None:
        wanted = min(wanted, max(1, math.ceil(seconds * p.sample_rate / segment)))
    idx = np.linspace(0, len(segs) - 1, wanted).astype(np.int64)
    return HeldOut(source, segs.batch(idx, 0), len(np.unique(segs.clips[idx])), how)


def training_statistics(source: str, p: SpectralParams, segment: int, args: argparse.Namespace) -> tuple[BinNorm, str]:
    """The per-bin statistics of the training split that a model evaluated on `source` trains on (`set:NAME`'s
    for `set:NAME/heldout`, else the source's own), as the trainers take them (cached beside its audio),
    and a line that says so."""
    from ganstream.training.data.spectrograms import spectrogram_norm

    train_source = set_of_heldout(source) or source
    cfg = DataConfig(source=train_source, sample_rate=p.sample_rate, holdout=args.holdout, cache_dir=args.cache_dir)
    cfg.validate()
    train = load_dataset(cfg, segment, args.seed, "train", progress=False)
    return spectrogram_norm(train, p, NORM_CLIP), f"{train_source}'s training statistics"


# ---------------------------------------------------------------------------- the tables


def format_table(report: dict[str, Any], p: SpectralParams, segment: int) -> str:
    rows = report["rows"]
    head = f"{'method':<16} {'input':<9} {'spectral convergence':>21} {'log-spectral distance':>22} {'compute':>14}"
    lines = [
        f"{report['audio']}: {rows[0]['clips']} clips of {segment} samples ({report['seconds']:.1f} s) from {report['files']} "
        f"{'items' if report['audio'].startswith('synth:') else 'files'}, {report['held_out']}; n_fft {p.n_fft}, hop {p.hop}, {p.bins} bins",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['method']:<16} {r['input']:<9} {r['spectral_convergence_db']:>18.2f} dB {r['log_spectral_distance_db']:>19.2f} dB "
            f"{r['compute_s_per_audio_s']:>10.4f} s/s"
        )
    lines.append("(lower is better in every column; compute: seconds of one CPU thread per second of audio)")
    notes = ["exact: the unclipped magnitudes, what a perfect generator would emit"]
    if any(r["clip"] is not None for r in rows):
        notes.append(f"clip C: normalised per bin with {report['statistics']}, clipped at C std, as a spectral GAN's output is")
    if any(r["method"] == "network" for r in rows):
        notes.append("the network's input is always clipped at its own norm_clip")
    lines.append(f"({'; '.join(notes)})")
    if report.get("clip_costs"):
        lines += ["", format_clip_costs(report["clip_costs"])]
    return "\n".join(lines)


def format_clip_costs(costs: list[dict[str, Any]]) -> str:
    head = f"{'clip':<6} {'SC cost':>17} {'LSD cost':>17} {'bins clipped above':>19} {'below':>7} {'energy removed':>15}"
    lines = ["what the clip costs GL-32 (against GL-32 exact, on the same clips; mean +- standard error)", head, "-" * len(head)]
    for c in costs:
        lines.append(
            f"{'none' if c['clip'] is None else format(c['clip'], 'g'):<6} "
            f"{c['spectral_convergence_cost_db']:>+7.2f} +- {c['spectral_convergence_cost_sem_db']:.2f} dB "
            f"{c['log_spectral_distance_cost_db']:>+7.2f} +- {c['log_spectral_distance_cost_sem_db']:.2f} dB "
            f"{100 * c['bins_clipped_above']:>18.2f}% {100 * c['bins_clipped_below']:>6.2f}% {100 * c['energy_removed']:>14.2f}%"
        )
    return "\n".join(lines)


def format_consistency(c: dict[str, Any]) -> str:
    head = f"{'spectral consistency':<22} {'GL-32':>10} {'network':>10}"
    lines = [head, "-" * len(head)]
    for name in ("generated", "real"):
        lines.append(f"{name:<22} {c[name]['GL-32']:>7.2f} dB {c[name]['network']:>7.2f} dB")
    lines.append(f"({c['items']} generated, {c['real_items']} real spectrograms; lower: closer to a real signal's)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganstream eval-reconstruction",
        description="Compare Griffin-Lim (32 and 100 iterations), PGHI and a trained reconstruction network on "
        "held-out audio, on exact and on clipped magnitudes: spectral convergence, log-spectral distance and "
        "compute time, one table per source.",
    )
    p.add_argument("audio", metavar="AUDIO", nargs="+",
                   help="folders of audio, synth:NAME or set:NAME[/heldout], one table each; a set's held-out folder "
                   "is used whole, any other source gives its holdout split")
    p.add_argument("--network", metavar="BUNDLE_OR_ONNX",
                   help="a spectral or reconstruction bundle, or a bare reconstruction .onnx (front end from "
                   "--n-fft/--hop/--mel-bins, statistics from the first source's training data), to join the comparison")
    p.add_argument("--norm-clips", metavar="C,C,...",
                   help="clips (std) whose cost GL-32 measures, e.g. 2,3,4,none (none: no clip, the exact row); "
                   f"default: the network's norm_clip, else {NORM_CLIP:g} (SpecGAN's)")
    p.add_argument("--seconds", type=float,
                   help=f"at most this many seconds of audio per source (default: {DEFAULT_SECONDS:g} of a holdout split; "
                   "a set's held-out folder whole)")
    p.add_argument("--max-clips", type=int, default=MAX_CLIPS, help="at most this many clips per source, evenly spread (default %(default)s)")
    p.add_argument("--segment", type=int, help=f"samples per clip (default: the bundle's, else {DEFAULT_SEGMENT})")
    p.add_argument("--n-fft", type=int, default=256, help="FFT size without a bundle (default 256)")
    p.add_argument("--hop", type=int, default=128, help="hop without a bundle (default 128)")
    p.add_argument("--mel-bins", type=int, default=0, help="mel bands without a bundle (default 0: linear bins)")
    p.add_argument("--sample-rate", type=int, default=16000, help="rate without a bundle (default 16000)")
    p.add_argument("--seed", type=int, default=0, help="the data split seed: the run.seed the network was trained with (default 0)")
    p.add_argument("--holdout", type=float, default=DataConfig.holdout, help="holdout fraction, as data.holdout (default %(default)s)")
    p.add_argument("--cache-dir", default="", help="where decoded audio is cached (default ~/.cache/ganstream)")
    p.add_argument("--provider", default="cpu", help="onnxruntime provider for the network (default cpu, for a fair timing)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return p


def _front_end(args: argparse.Namespace) -> SpectralParams:
    try:
        return SpectralParams(sample_rate=args.sample_rate, n_fft=args.n_fft, hop=args.hop, mel_bins=args.mel_bins)
    except ValueError as e:
        flags = {"spectral.n_fft": "--n-fft", "spectral.hop": "--hop", "spectral.mel_bins": "--mel-bins", "spectral.sample_rate": "--sample-rate"}
        message = str(e)
        for field, flag in flags.items():
            message = message.replace(field, flag)
        raise ReconEvalError(message) from None


def compare(src: HeldOut, p: SpectralParams, net: Network | None, norm: BinNorm | None, wanted: list[float | None],
            about: str, log: Callable[[str], None]) -> dict[str, Any]:
    """One source's report: its rows, what each clip costs (with `norm`'s statistics, `about` says whose)."""
    methods = baselines(p) + ([net.method()] if net else [])
    if norm is not None:
        methods += clip_methods(p, norm, wanted)
    results = evaluate(src.clips, p, methods, log)
    return {
        "audio": src.source, "held_out": src.how, "files": src.files, "seconds": src.clips.size / p.sample_rate,
        "statistics": about, "rows": [r.row() for r in results],
        "clip_costs": clip_costs(results, src.clips, p, norm, wanted) if norm is not None else [],
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        if args.seconds is not None and not (args.seconds > 0 and math.isfinite(args.seconds)):
            raise ReconEvalError(f"--seconds: a positive number of seconds, not {args.seconds}")
        if args.max_clips < 1:
            raise ReconEvalError(f"--max-clips: at least 1, not {args.max_clips}")
        wanted = parse_norm_clips(args.norm_clips) if args.norm_clips is not None else None
        # A bare ONNX file carries no statistics: it is taken to be trained on the first source's training data.
        moments = lambda params: training_statistics(args.audio[0], params, args.segment or DEFAULT_SEGMENT, args)  # noqa: E731
        net = open_network(args.network, args.provider, lambda: _front_end(args), moments) if args.network else None
        params = net.params if net else _front_end(args)
        segment = args.segment or (params.samples(net.frames) if net and net.frames else DEFAULT_SEGMENT)
        wanted = wanted or [net.norm.clip if net else NORM_CLIP]
        # Every source and its statistics first: a missing folder is named before minutes of work on the others.
        sources = [held_out(s, params, segment, args) for s in args.audio]
        if net:  # one network, one normalisation: GL-32 at its clip gets the network's very input
            norms: list[tuple[BinNorm | None, str]] = [(net.norm, net.statistics)] * len(sources)
        elif any(c is not None for c in wanted):
            norms = [training_statistics(s, params, segment, args) for s in args.audio]
        else:
            norms = [(None, "no statistics")] * len(sources)
        generated = consistency_of(generated_spectrograms(net, args.provider), net) if net and net.bundle else None
        report: dict[str, Any] = {"network": args.network, "spectral": params.to_dict(), "segment": segment,
                                  "norm_clips": wanted, "sets": []}
        for src, (norm, about) in zip(sources, norms):
            log(f"eval-reconstruction: {len(src.clips)} clips of {segment} samples from {src.source} ({src.how})")
            one = compare(src, params, net, norm, wanted, about, log)
            if generated is not None:
                assert net is not None
                real = [log_magnitude(c, params) for c in src.clips[:CONSISTENCY_ITEMS]]
                one["consistency"] = {"items": CONSISTENCY_ITEMS, "real_items": len(real), "generated": generated,
                                      "real": consistency_of(real, net)}
            report["sets"].append(one)
            print(("\n" if len(report["sets"]) > 1 else "") + format_table(one, params, segment))
            if "consistency" in one:
                print()
                print(format_consistency(one["consistency"]))
    except (ReconEvalError, ConfigError, DataError, ValueError) as e:
        print(f"eval-reconstruction: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    if args.json:
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            print(f"eval-reconstruction: error: cannot write --json {out}: {e.strerror}", file=sys.stderr)
            return 2
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
