"""Measurements of the live engine, shared by `ganstream bench` and benchmarks/live.py.

measure_rtf: how fast the live chain (stream, gain, resampler, control handling)
runs with nothing else to do: seconds of output audio per second of wall time,
alone and with control changes, pulled in the producer's own steps.

measure_generator: one generator call alone, a segment from one latent: for a spectral bundle
without a network, the ONNX generator and the numpy Griffin-Lim or PGHI that rebuilds its audio.

measure_latency: the engine playing for real while a thread moves a control;
each change's latency runs from its arrival at `Controls` (the OSC server calls
the setter as soon as a datagram is parsed) to the moment the first output
sample made with it reaches the DAC, by PortAudio's output timestamps.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .engine import Engine
from .inference import Generator
from .stream import probe_rows


def _control_target(engine: Engine):
    """A setter moving one control over its whole range: the first macro, else latent dimension 0."""
    c = engine.controls
    if c.macro_names:
        name = c.macro_names[0]
        return lambda v: c.set_macro(name, v)
    return lambda v: c.set_latent_dim(0, v)


def measure_rtf(engine: Engine, seconds: float, rate: float, notes_per_s: float = 8.0) -> dict:
    """{"rtf", "rtf_controls", "calls", "regenerations"}: audio seconds per wall second, pulling the
    engine's chain directly (its threads are not started). Trigger mode plays `notes_per_s` notes."""
    sr = engine.settings.sample_rate
    total = round(seconds * sr)
    chunk = engine.chunk
    rng = np.random.default_rng(0)
    move = _control_target(engine)
    trigger = engine.stream_settings.mode == "trigger"

    def run(controls_per_s: float) -> float:
        every = sr / controls_per_s if controls_per_s > 0 else None
        notes = sr / notes_per_s if trigger else None
        next_ctl, next_note = 0.0, 0.0
        done = 0
        t0 = time.perf_counter()
        while done < total:
            if every is not None and done >= next_ctl:
                move(float(rng.uniform(-1, 1)))
                next_ctl += every
            if notes is not None and done >= next_note:
                engine.controls.trigger(float(rng.uniform(0.3, 1.0)), int(rng.integers(36, 84)))
                next_note += notes
            engine._apply_controls()
            engine.chain.read(chunk)
            done += chunk
        return seconds / (time.perf_counter() - t0)

    alone = run(0.0)
    calls0, regen0 = engine.chain.stream.generator_calls, engine.chain.stream.regenerations
    with_controls = run(rate)
    return {
        "rtf": alone,
        "rtf_controls": with_controls,
        "controls_per_s": rate,
        "generator_calls_per_s": (engine.chain.stream.generator_calls - calls0) / seconds,
        "regenerations_per_s": (engine.chain.stream.regenerations - regen0) / seconds,
    }


def measure_generator(generator: Generator, repeats: int = 20) -> dict:
    """{"segment_s", "seconds", "rtf", "reconstruction"}: one segment from one latent, the median of `repeats`
    calls after a first one; rtf: seconds of segment per second of generation (on the calling thread)."""
    z = probe_rows(generator, 1)
    out = np.empty((1, generator.segment), dtype=np.float32)
    generator.generate_into(z, out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generator.generate_into(z, out)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    segment_s = generator.segment / generator.sample_rate
    return {"segment_s": segment_s, "seconds": seconds, "rtf": segment_s / seconds, "reconstruction": generator.reconstruction}


def measure_latency(
    engine: Engine, seconds: float, rate: float, output="device", device=None, sender=None
) -> dict:
    """Play for `seconds` while moving a control `rate` times a second; latency and health figures.

    sender: a callable(stop_event) that sends the changes itself (e.g. over OSC); default:
    a thread calling the setter directly.
    """
    engine.start(output, device=device)
    stop = threading.Event()
    move = _control_target(engine)

    def direct(stop_event: threading.Event) -> None:
        rng = np.random.default_rng(1)
        period = 1.0 / rate
        t_next = time.monotonic()
        while not stop_event.is_set():
            move(float(rng.uniform(-1, 1)))
            t_next += period * rng.uniform(0.5, 1.5)  # not locked to the block clock
            delay = t_next - time.monotonic()
            if delay > 0:
                stop_event.wait(delay)

    thread = threading.Thread(target=sender or direct, args=(stop,), daemon=True)
    time.sleep(0.5)  # let the lookahead settle before measuring
    engine.latencies.clear()
    under0 = engine.status()["underruns"]
    thread.start()
    try:
        time.sleep(seconds)
    finally:
        stop.set()
        thread.join()
        st = engine.status()
        engine.stop()
    lat = np.asarray(engine.latencies, dtype=np.float64) * 1000.0
    out = engine.output
    result = {
        "output": getattr(out, "name", str(output)),
        "blocksize": engine.settings.blocksize,
        "count": int(lat.size),
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p95": float(np.percentile(lat, 95)) if lat.size else float("nan"),
        "max": float(lat.max()) if lat.size else float("nan"),
        "underruns": st["underruns"] - under0,
        "lookahead_ms": st["lookahead_ms"],
        "device_latency_ms": st["device_latency_ms"],
        "cpu": st["cpu"],
        "load": st["load"],
        "producer": engine.priority,
    }
    return result
