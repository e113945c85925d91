"""The live engine on a real audio path: real-time factor, control-to-sound latency, CPU, memory, first sound.

    python benchmarks/live.py [BUNDLE] [--seconds 15] [--minutes 0.5] [--out benchmarks/results/live.json]

- Real-time factor per mode (crossfade, texture, trigger) on the CPU, pulling the
  engine's own chain (stream, gain, resampler, control handling) as fast as it
  goes, alone and with 100 control changes a second (trigger mode plays 8 notes a
  second throughout).
- For blocks of 64, 128 and 256 frames: a JACK server of its own (dummy driver,
  48 kHz, period = block), `ganstream play` in its own process through PortAudio's
  JACK host API, and this process sending OSC (/ganstream/macro/...) 100 times a
  second at irregular times. Latency runs from the setter call the OSC server makes
  on the packet's arrival to the first output sample made with the new value at the
  DAC, by PortAudio's output timestamps; p50, p95 and max, with the default
  settings and with --low-latency. Also: CPU load of the play process (utime+stime
  over wall time), its peak resident memory (VmHWM), the time from launching
  `ganstream play` to the first sound at the DAC, and underruns, split into what
  the engine caused (its ring ran dry, or its callback ran late) and JACK server
  xruns its log does not blame on the engine.
- A soak (--minutes, default 0.5; 10 for the target) at 256-frame blocks with 500
  OSC messages a second: underruns over the whole run.

BUNDLE defaults to the bundle shipped with ganstream, else a freshly initialised
model of its architecture (configs/wavegan-laptop.yaml, exported through
ganstream.export; needs the training extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from pythonosc.osc_message_builder import OscMessageBuilder

from ganstream.realtime.bench import measure_rtf
from ganstream.realtime.bundle import BundleError, load_bundle
from ganstream.realtime.engine import Engine, EngineSettings
from ganstream.realtime.inference import Generator
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.stream import MODES, StreamSettings

RATE = 48000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- a JACK server of our own ---------------------------------------------------------------------


class Jack:
    def __init__(self, period: int):
        if shutil.which("jackd") is None:
            raise SystemExit("jackd is not installed (apt-get install jackd2)")
        self.name = f"ganstream-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            ["jackd", "-n", self.name, "-d", "dummy", "-r", str(RATE), "-p", str(period)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"},
            start_new_session=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()
        deadline = time.monotonic() + 15
        while not any("starting" in line.lower() for _, line in self.lines) or not self._lsp():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("jackd did not start: " + " | ".join(line for _, line in self.lines[-5:]))
            time.sleep(0.1)

    def _follow(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def _lsp(self) -> bool:
        env = {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}
        return subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0

    def env(self) -> dict:
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def xruns(self, start: float, end: float) -> dict:
        lines = [line for t, line in self.lines if start <= t <= end and "XRun" in line]
        cycles = sum(1 for line in lines if line.startswith("JackEngine::XRun: client = ") or "Driver" in line)
        return {
            "server_xrun_lines": len(lines),
            "engine_blamed": sum(1 for line in lines if "PortAudio was not finished, state = Running" in line),
            # Woken but not yet scheduled when the cycle ended: the machine's doing, not the callback's
            # (benchmarks/jack_baseline.py sees these with a client that does nothing).
            "engine_not_scheduled": sum(1 for line in lines if "PortAudio was not finished, state = Triggered" in line),
            "cycles": cycles,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- measurements -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def osc_traffic(port: int, macro: str, per_s: float, stop: threading.Event) -> int:
    """Irregularly timed /ganstream/macro/<macro> messages; returns how many were sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(3)
    sent = 0
    t_next = time.monotonic()
    while not stop.is_set():
        b = OscMessageBuilder(f"/ganstream/macro/{macro}")
        b.add_arg(rng.uniform(-1.0, 1.0))
        sock.sendto(b.build().dgram, ("127.0.0.1", port))
        sent += 1
        t_next += rng.uniform(0.5, 1.5) / per_s
        delay = t_next - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -0.1:
            t_next = time.monotonic()
    return sent


def play_session(bundle: str, block: int, seconds: float, per_s: float, macro: str, extra: list[str]) -> dict:
    """`ganstream play` on a fresh JACK server for `seconds` under OSC traffic; its measured figures."""
    jack = Jack(block)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stats_file = Path(tmp) / "stats.json"
            port = free_port()
            launched = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "ganstream.main", "play", bundle, "--blocksize", str(block), "--osc-port",
                 str(port), "--quiet", "--stats", str(stats_file), "--seconds", str(seconds + 60), *extra],
                env=jack.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            # Running once its OSC port answers... simplest: wait for its JACK ports.
            deadline = time.monotonic() + 60
            while not _has_portaudio(jack):
                if proc.poll() is not None:
                    raise SystemExit(f"ganstream play failed:\n{proc.stdout.read()}")
                if time.monotonic() > deadline:
                    raise SystemExit("ganstream play did not open its output within 60 s")
                time.sleep(0.05)
            time.sleep(5.0)  # past the start-up margin: measure the steady state
            stop = threading.Event()
            counter: list[int] = []
            sender = threading.Thread(target=lambda: counter.append(osc_traffic(port, macro, per_s, stop)), daemon=True)
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            sender.start()
            time.sleep(seconds)
            stop.set()
            sender.join()
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            rss = peak_rss_mb(proc.pid)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
            st = json.loads(stats_file.read_text())
    finally:
        jack.stop()
    first_sound = st["first_sound_monotonic"] - launched if st.get("first_sound_monotonic") else None
    lat = st["control_latency_ms"] or {}
    xr = jack.xruns(t0, t1)
    return {
        "blocksize": block,
        "options": extra,
        "seconds": round(t1 - t0, 1),
        "osc_sent": counter[0] if counter else 0,
        "osc_applied": (st.get("osc") or {}).get("applied"),
        "latency_ms": {k: lat.get(k) for k in ("p50", "p95", "max", "count")},
        "lookahead_ms": st["lookahead_ms"],
        "device_latency_ms": st["device_latency_ms"],
        "cpu_load": (c1 - c0) / (t1 - t0),
        "peak_rss_mb": rss,
        "first_sound_s": first_sound,
        "ring_underruns": st["ring_underruns"],
        "late_callbacks": st["late_callbacks"],
        "device_underflows": st["xruns"],
        "jack": xr,
        "provider": st["provider"],
        "rtf_live": st["rtf"],
    }


def _has_portaudio(jack: Jack) -> bool:
    r = subprocess.run(["jack_lsp"], env=jack.env(), capture_output=True, text=True)
    return "PortAudio:" in r.stdout


def ensure_bundle(arg: str | None, tmp: Path) -> str:
    if arg:
        return arg
    try:
        return str(load_bundle(None).source)
    except BundleError:
        pass
    print("no default bundle built: exporting a freshly initialised configs/wavegan-laptop.yaml model", file=sys.stderr)
    import torch

    from ganstream.export.bundle import export_run
    from ganstream.training.config import load_config
    from ganstream.training.loop import Run, run_dir_for

    cfg = load_config(Path(__file__).parent.parent / "configs" / "wavegan-laptop.yaml",
                      [f"run.out_dir={tmp}", "train.steps=1", "train.batch_size=4", "loss.critic_steps=1",
                       "data.synth_items=16", "train.progress=false", "train.tensorboard=false"])
    run_dir = Run(cfg, run_dir_for(cfg), torch.device("cpu")).train()
    return str(export_run(run_dir, tmp / "bench.gsb", controls=4, log=lambda *a: None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of control traffic per latency run")
    p.add_argument("--rtf-seconds", type=float, default=10.0, help="seconds of audio per real-time factor run")
    p.add_argument("--minutes", type=float, default=0.5, help="length of the soak at 256-frame blocks (10: the target)")
    p.add_argument("--blocks", default="64,128,256")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/live.json"))
    args = p.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        bundle_path = ensure_bundle(args.bundle, Path(tmp))
        bundle = load_bundle(bundle_path)
        space = LatentSpace.from_bundle(bundle)
        macro = bundle.control_names[0] if bundle.control_names else None
        if macro is None:
            raise SystemExit("the bundle has no macros to move; pick one with controls")
        results: dict = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_at_start": os.getloadavg()},
            "bundle": {"name": bundle.name, "sample_rate": bundle.sample_rate, "segment": bundle.segment,
                       "latent": bundle.latent_size},
            "rtf": {}, "latency": [], "soak": None,
        }

        print(f"bundle {bundle.name}: {bundle.sample_rate} Hz, segment {bundle.segment}, latent {bundle.latent_size}")
        gen = Generator(bundle, provider="cpu", warmup_batch_sizes=(1, 2))
        for mode in MODES:
            engine = Engine(gen, space, StreamSettings.from_bundle(bundle, mode=mode), EngineSettings())
            r = measure_rtf(engine, args.rtf_seconds, 100.0)
            results["rtf"][mode] = r
            print(f"  {mode:9s} real-time factor {r['rtf']:6.1f}x alone, {r['rtf_controls']:6.1f}x with 100 changes/s")

        runs = [(b, []) for b in blocks] + [(b, ["--low-latency"]) for b in blocks if b <= 128]
        print(f"latency: OSC at 100/s for {args.seconds:g} s per run, `ganstream play` on JACK (dummy driver)")
        for block, extra in runs:
            r = play_session(bundle_path, block, args.seconds, 100.0, macro, extra)
            results["latency"].append(r)
            lat = r["latency_ms"]
            print(
                f"  block {block:3d} {' '.join(extra) or 'default':13s} p50 {lat['p50']:5.1f}  p95 {lat['p95']:5.1f}  "
                f"max {lat['max']:5.1f} ms (n={lat['count']})  cpu {100 * r['cpu_load']:4.1f}%  "
                f"rss {r['peak_rss_mb']:4.0f} MB  first sound {r['first_sound_s']:.2f} s  "
                f"ring underruns {r['ring_underruns']}  late callbacks {r['late_callbacks']}  "
                f"device underflows {r['device_underflows']} (JACK xrun cycles {r['jack']['cycles']}, "
                f"engine running {r['jack']['engine_blamed']}, not yet scheduled {r['jack']['engine_not_scheduled']})"
            )

        soak_s = args.minutes * 60
        results["soak"] = None
        if soak_s > 0:
            print(f"soak: {args.minutes:g} min at 256-frame blocks with 500 OSC messages/s")
            r = play_session(bundle_path, 256, soak_s, 500.0, macro, [])
            results["soak"] = {**r, "minutes": args.minutes}
            print(
                f"  ring underruns {r['ring_underruns']}, late callbacks {r['late_callbacks']}, device underflows "
                f"{r['device_underflows']} (JACK xrun cycles {r['jack']['cycles']}, engine running "
                f"{r['jack']['engine_blamed']}, not yet scheduled {r['jack']['engine_not_scheduled']}); "
                f"p95 latency {r['latency_ms']['p95']:.1f} ms; "
                f"cpu {100 * r['cpu_load']:.1f}%; rss {r['peak_rss_mb']:.0f} MB"
            )
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
