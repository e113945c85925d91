"""`ganstream eval-reconstruction AUDIO`: how well, and how fast, each way back from magnitudes to audio works.

On held-out clips of AUDIO (a folder or synth:NAME; the holdout split training
uses, for the same --seed and --holdout), side by side in one run:

- GL-32 and GL-100: fast Griffin-Lim (core/phase.py), 32 and 100 iterations;
- PGHI: phase gradient heuristic integration, no iterations;
- the network (`--network`: a spectral or reconstruction bundle, or a bare ONNX file)
  in ONNX Runtime, fed the normalised log-magnitude a spectral GAN would give it.

Each clip's STFT magnitude is taken with the front end (the network's, or
--n-fft/--hop/--mel-bins); each method rebuilds audio from the same magnitudes,
as the front end represents them: with a network, that is after its per-bin
normalisation, which clips each bin at norm_clip standard deviations, since
that is all a spectral GAN's output (and so any method in the engine) can hold.
One more row, "GL-32 exact", runs Griffin-Lim on the unclipped magnitudes, for
reference. The magnitude of the rebuilt audio's STFT is compared with the
original's: spectral convergence and log-spectral distance (dB, lower is better)
and compute seconds per second of audio (one CPU thread, lower is faster).

Given a spectral bundle, it also measures the spectral consistency of spectrograms
the bundle's GAN generates, beside that of real clips (`spectral_consistency`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ganstream.core.phase import griffin_lim, pghi
from ganstream.core.spectral import BinNorm, SpectralParams, log_magnitude, magnitude, normalise, stft

from ganstream.training.config import ConfigError, DataConfig
from ganstream.training.data import DataError, load_dataset

CONSISTENCY_ITEMS = 16  # generated spectrograms whose consistency is measured
NORM_CLIP = 3.0  # the SpecGAN clip a bare ONNX network's statistics are taken with


class ReconEvalError(ValueError):
    """A problem with the command's input: it names the path or option."""


@dataclass
class Method:
    """One way back to audio: `run` takes the front end's magnitudes (bins, F), or what `prepare` makes of them,
    and returns (F * hop,) audio. Only `run` is timed: `prepare` turns magnitudes into the input the
    method would really be given (a network's normalised frames, which a spectral GAN outputs)."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    exact: bool = False  # given the unclipped magnitudes, not the front end's representation of them
    prepare: Callable[[np.ndarray], np.ndarray] | None = None


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


# ---------------------------------------------------------------------------- the network


@dataclass
class Network:
    """A reconstruction network and the front end it expects: (1, bins, F) normalised -> audio."""

    label: str
    params: SpectralParams
    norm: BinNorm
    frames: int | None  # the bundle's spectrogram length, None for a bare ONNX file
    run: Callable[[np.ndarray], np.ndarray]
    bundle: Path | None  # a spectral bundle, whose GAN's consistency is measured too

    def method(self) -> Method:
        return Method("network", lambda frames: self.run(frames[None])[0], prepare=self.normalised)

    def reconstruct(self, mag: np.ndarray) -> np.ndarray:
        """(bins, F) magnitudes -> (F * hop,) audio through the network."""
        return self.run(self.normalised(mag)[None])[0]

    def normalised(self, mag: np.ndarray) -> np.ndarray:
        """(bins, F) magnitudes -> (bins, F) the network's input: normalised log-magnitude, clipped."""
        return normalise(np.log(np.maximum(mag, self.params.log_floor)), self.norm)

    def represent(self, mag: np.ndarray) -> np.ndarray:
        """(bins, F) magnitudes as the network's input holds them: clipped where normalisation clips."""
        return np.exp(self.norm.denormalise(self.normalised(mag)))


def open_network(path: str, provider: str, front_end: Callable[[], SpectralParams], moments: Callable[[SpectralParams], BinNorm]) -> Network:
    """A bundle (folder, zip or its manifest.json) or a bare .onnx file, whose front end is `front_end()`
    and whose statistics are `moments(params)`, called once the file has loaded and its shape fits."""
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
        return Network(str(file), params, moments(params), None, run, None)
    try:
        network = load_reconstruction(str(file))
        runner = Reconstructor(network, provider=provider, threads=1)
    except BundleError as e:
        raise ReconEvalError(str(e)) from None
    except ProviderError as e:
        raise ReconEvalError(f"--provider: {e}") from None
    spectral = network.spectral
    kind = network.manifest.get("model", {}).get("kind")
    return Network(str(file), spectral.params, spectral.norm, spectral.frames, runner.reconstruct,
                   file if kind == "spectral" else None)


def generated_consistency(net: Network, clips: np.ndarray, provider: str) -> dict[str, Any]:
    """Spectral consistency (dB) of spectrograms the bundle's GAN generates and of real clips,
    each through GL-32 and through the bundle's own network."""
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
    p, norm = net.params, net.norm
    generated = [norm.denormalise(x) for x in np.asarray(out, np.float32).reshape(len(z), p.bins, -1)]
    real = [log_magnitude(c, p) for c in clips[:CONSISTENCY_ITEMS]]
    by_network = net.reconstruct
    result: dict[str, Any] = {"items": len(generated), "real_items": len(real)}
    for name, items in (("generated", generated), ("real", real)):
        result[name] = {
            "GL-32": float(np.mean([spectral_consistency(x, p) for x in items])),
            "network": float(np.mean([spectral_consistency(x, p, by_network) for x in items])),
        }
    return result


# ---------------------------------------------------------------------------- the comparison


def evaluate(
    clips: np.ndarray, p: SpectralParams, methods: list[Method], log: Callable[[str], None] = lambda s: None,
    represent: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """(N, T) real clips -> one row per method: spectral convergence, log-spectral distance, compute per audio second.

    Every method gets `represent(magnitudes)` (default: the magnitudes themselves) but an `exact` one,
    which gets the magnitudes. Each method runs on all clips back to back, timed, after one untimed
    run; representing and `prepare` are not timed.
    """
    rows = []
    audio_seconds = clips.size / p.sample_rate
    specs = [stft(clip, p) for clip in clips]
    exact = [magnitude(spec, p) for spec in specs]
    represented = exact if represent is None else [represent(mag) for mag in exact]
    for m in methods:
        mags = exact if m.exact else represented
        inputs = [m.prepare(mag) for mag in mags] if m.prepare else mags
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
        rows.append({
            "method": m.name,
            "spectral_convergence_db": float(np.mean(sc)),
            "log_spectral_distance_db": float(np.mean(lsd)),
            "compute_s_per_audio_s": spent / audio_seconds,
            "clips": int(len(clips)),
            "input": "exact" if m.exact or represent is None else "front end",
        })
        log(f"  {m.name}: SC {rows[-1]['spectral_convergence_db']:.2f} dB")
    return rows


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if audio.shape[-1] >= length else np.pad(audio, (0, length - audio.shape[-1]))


def format_table(rows: list[dict[str, Any]], p: SpectralParams, seconds: float) -> str:
    head = f"{'method':<12} {'spectral convergence':>21} {'log-spectral distance':>22} {'compute':>14}"
    lines = [
        f"reconstruction from magnitudes: n_fft {p.n_fft}, hop {p.hop}, {p.bins} bins, "
        f"{rows[0]['clips']} held-out clips ({seconds:.1f} s)",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['method']:<12} {r['spectral_convergence_db']:>18.2f} dB {r['log_spectral_distance_db']:>19.2f} dB "
            f"{r['compute_s_per_audio_s']:>10.4f} s/s"
        )
    lines.append("(lower is better in every column; compute: seconds of one CPU thread per second of audio)")
    if any(r["input"] == "front end" for r in rows):
        lines.append("(every method but \"exact\" rebuilds the magnitudes as the network's input holds them: "
                     "normalised per bin, clipped at norm_clip std)")
    return "\n".join(lines)


def format_consistency(c: dict[str, Any]) -> str:
    head = f"{'spectral consistency':<22} {'GL-32':>10} {'network':>10}"
    lines = [head, "-" * len(head)]
    for name in ("generated", "real"):
        lines.append(f"{name:<22} {c[name]['GL-32']:>7.2f} dB {c[name]['network']:>7.2f} dB")
    lines.append(f"({c['items']} generated, {c['real_items']} real spectrograms; lower: closer to a real signal's)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganstream eval-reconstruction",
        description="Compare Griffin-Lim (32 and 100 iterations), PGHI and a trained reconstruction network on "
        "held-out audio: spectral convergence, log-spectral distance and compute time.",
    )
    p.add_argument("audio", metavar="AUDIO_DIR", help="a folder of audio or synth:NAME; its held-out clips are used")
    p.add_argument("--network", metavar="BUNDLE_OR_ONNX",
                   help="a spectral or reconstruction bundle, or a bare reconstruction .onnx (front end from "
                   "--n-fft/--hop/--mel-bins, statistics from the training split), to join the comparison")
    p.add_argument("--seconds", type=float, default=16.0, help="seconds of held-out audio to use (default 16)")
    p.add_argument("--segment", type=int, help="samples per clip (default: the bundle's, else 16384)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        if not (args.seconds > 0 and math.isfinite(args.seconds)):
            raise ReconEvalError(f"--seconds: a positive number of seconds, not {args.seconds}")

        def data(params: SpectralParams) -> DataConfig:
            cfg = DataConfig(source=args.audio, sample_rate=params.sample_rate, holdout=args.holdout, cache_dir=args.cache_dir)
            cfg.validate()
            return cfg

        def moments(params: SpectralParams) -> BinNorm:
            # A bare ONNX file carries no statistics: take them as the vocoder trainer does, from the training split.
            from ganstream.training.data.spectrograms import spectrogram_norm

            train = load_dataset(data(params), args.segment or params.samples(128), args.seed, "train", progress=False)
            return spectrogram_norm(train, params, NORM_CLIP)

        net = open_network(args.network, args.provider, lambda: _front_end(args), moments) if args.network else None
        params = net.params if net else _front_end(args)
        segment = args.segment or (params.samples(net.frames) if net and net.frames else 16384)
        held = load_dataset(data(params), segment, args.seed, "holdout", progress=False)
        if len(held) == 0:
            raise ReconEvalError(f"{args.audio}: no held-out clips (holdout {args.holdout}); add audio or raise --holdout")
        wanted = max(1, math.ceil(args.seconds * params.sample_rate / segment))
        idx = np.linspace(0, len(held) - 1, min(wanted, len(held))).astype(np.int64)
        clips = held.batch(idx, 0)
        seconds = clips.size / params.sample_rate
        log(f"eval-reconstruction: {len(clips)} held-out clips of {segment} samples ({seconds:.1f} s) from {args.audio}")
        methods = [
            Method("GL-32", lambda m: griffin_lim(m, params, 32)),
            Method("GL-100", lambda m: griffin_lim(m, params, 100)),
            Method("PGHI", lambda m: pghi(m, params)),
        ]
        if net:
            methods += [net.method(), Method("GL-32 exact", lambda m: griffin_lim(m, params, 32), exact=True)]
        rows = evaluate(clips, params, methods, log, net.represent if net else None)
        report: dict[str, Any] = {
            "audio": args.audio, "network": args.network, "spectral": params.to_dict(), "segment": segment,
            "seconds": seconds, "rows": rows,
        }
        if net and net.bundle:
            report["consistency"] = generated_consistency(net, clips, args.provider)
    except (ReconEvalError, ConfigError, DataError, ValueError) as e:
        print(f"eval-reconstruction: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(format_table(rows, params, seconds))
    if "consistency" in report:
        print()
        print(format_consistency(report["consistency"]))
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
