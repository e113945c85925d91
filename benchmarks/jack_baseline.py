"""The floor under the live benchmark's underrun count: a client that does nothing, on the same JACK set-up.

    python benchmarks/jack_baseline.py [--minutes 10] [--out benchmarks/results/jack_baseline.json]

A trivial PortAudio client (sounddevice, a Python callback that writes zeros) plays
through PortAudio's JACK host API on a JACK server of its own (dummy driver,
48 kHz, 256-frame periods) while another process makes load like a live session's
(500 OSC messages a second over UDP, and numpy work in bursts, about 20% of a
core). It counts the underflows PortAudio reports and the xruns the JACK server
logs, split by JACK's verdict on the client: "Triggered" (woken but not yet
scheduled: the machine's doing) and "Running" (still in its callback). Whatever
this client suffers, `ganstream play` cannot do better on the same machine;
benchmarks/live.py's soak is to be read against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

RATE, PERIOD = 48000, 256


def make_load() -> None:
    """Runs in the load process until killed."""
    import socket

    import numpy as np
    from pythonosc.osc_message_builder import OscMessageBuilder

    def osc() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t, i = time.monotonic(), 0
        while True:
            b = OscMessageBuilder("/ganstream/macro/pc1")
            b.add_arg((i % 100) / 100)
            s.sendto(b.build().dgram, ("127.0.0.1", 9))  # the discard port: nobody listens
            i += 1
            t += 0.002
            time.sleep(max(0.0, t - time.monotonic()))

    threading.Thread(target=osc, daemon=True).start()
    x = np.random.default_rng(0).random(16384).astype(np.float32)
    while True:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.002:
            np.fft.rfft(x)
        time.sleep(0.008)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/jack_baseline.json"))
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        make_load()
        return

    name = f"ganstream-baseline-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    lines: list[tuple[float, str]] = []
    jackd = subprocess.Popen(
        ["jackd", "-n", name, "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"},
        start_new_session=True,
    )

    def follow() -> None:
        for raw in jackd.stdout:
            lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    threading.Thread(target=follow, daemon=True).start()
    load = subprocess.Popen([sys.executable, __file__, "--load"])
    try:
        time.sleep(2.0)
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_START_SERVER"] = "1"
        import sounddevice as sd

        counts = {"callbacks": 0, "underflows": 0}

        def callback(out, frames, t, status) -> None:
            if status.output_underflow:
                counts["underflows"] += 1
            out.fill(0.0)
            counts["callbacks"] += 1

        device = next(
            i for i, d in enumerate(sd.query_devices())
            if d["max_output_channels"] > 0 and "JACK" in sd.query_hostapis(d["hostapi"])["name"]
        )
        with sd.OutputStream(samplerate=RATE, blocksize=PERIOD, device=device, channels=2, dtype="float32", callback=callback):
            time.sleep(1.0)
            counts["underflows"] = 0
            t0 = time.monotonic()
            time.sleep(args.minutes * 60)
            t1 = time.monotonic()
            underflows = counts["underflows"]
        sd._terminate()  # before the server goes: PortAudio's JACK host API asserts otherwise
    finally:
        load.send_signal(signal.SIGTERM)
        load.wait()
        jackd.terminate()
        jackd.wait()
    xruns = [line for t, line in lines if t0 <= t <= t1 and "XRun" in line]
    result = {
        "benchmark": "jack_baseline",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
        "minutes": args.minutes,
        "blocksize": PERIOD,
        "sample_rate": RATE,
        "device_underflows": underflows,
        "jack_xrun_lines": len(xruns),
        "client_not_scheduled": sum("PortAudio was not finished, state = Triggered" in line for line in xruns),
        "client_running": sum("PortAudio was not finished, state = Running" in line for line in xruns),
        "lines": xruns[:50],
    }
    print(
        f"trivial PortAudio client, {args.minutes:g} min at {PERIOD}-frame blocks under load: {underflows} device "
        f"underflows; JACK xrun lines {len(xruns)}: client not yet scheduled {result['client_not_scheduled']}, "
        f"client still running {result['client_running']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
