"""Control traffic for tests/test_live_jack.py, run as its own process.

    python tests/live_sender.py --osc-port P --midi-port NAME --seconds 21 --big-at 10 --out expected.json

For `--seconds`: 500 OSC messages a second (macro pc1 and latent dimension 3,
alternating, both moving smoothly and gently, so that
the one big change below stands far above their drift), 100 MIDI control changes a second on CC 21
through a JACK MIDI port (python-rtmidi's JACK API), and 20 a second of junk:
random bytes and wrongly typed, out-of-range or misaddressed OSC messages. At
`--big-at` seconds one /ganstream/latent message moves the whole latent far away.
It writes what the engine's controls must hold afterwards (the last valid
values sent) to --out as JSON; with --hold it then keeps its JACK client open
until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time

import numpy as np
import rtmidi
from pythonosc.osc_message_builder import OscMessageBuilder

OSC_PER_S = 500
MIDI_PER_S = 100
JUNK_PER_S = 20
CC = 21
BIG = [0.9, -0.8, 0.7, -0.6, 0.5, -0.9, 0.8, -0.7]


def message(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def junk(i: int, rng: np.random.Generator) -> bytes:
    kinds = [
        lambda: os.urandom(int(rng.integers(1, 200))),
        lambda: message("/ganstream/gain", "loud"),
        lambda: message("/ganstream/macro/pc1"),
        lambda: message("/ganstream/macro/pc1", "0.5"),
        lambda: message("/ganstream/macro/nope", 0.5),
        lambda: message("/ganstream/macro/pc1", 5.0),
        lambda: message("/ganstream/macro/pc1", float("nan")),
        lambda: message("/ganstream/latent/99", 0.1),
        lambda: message("/ganstream/latent/3", float("inf")),
        lambda: message("/ganstream/latent", 0.1, 0.2, 0.3),
        lambda: message("/ganstream/latent/3", b"\x00\x01"),
        lambda: message("/ganstream/seed", -4),
        lambda: message("/ganstream/preset/load", "no-such-preset"),
        lambda: b"/ganstream/gain\x00,f\x00",  # truncated inside the type tags
        lambda: message("/ganstream/latent/x", 1.0),
        lambda: message("/ganstream/latent/3", True),
    ]
    return kinds[i % len(kinds)]()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--osc-port", type=int, required=True)
    p.add_argument("--midi-port", required=True, help="part of the JACK MIDI input port's name")
    p.add_argument("--seconds", type=float, default=21.0)
    p.add_argument("--big-at", type=float, default=10.0)
    p.add_argument("--out", required=True)
    p.add_argument("--hold", action="store_true", help="keep the MIDI port open until stdin closes")
    args = p.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", args.osc_port)
    midi = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "ganstream-test-sender")
    ports = midi.get_ports()
    match = [i for i, name in enumerate(ports) if args.midi_port in name]
    if not match:
        raise SystemExit(f"no JACK MIDI input matching {args.midi_port!r} among {ports}")
    midi.open_port(match[0], "out")
    rng = np.random.default_rng(5)

    last = {"pc1": None, "latent3": None, "cc": None, "big": False}
    counts = {"osc": 0, "midi": 0, "junk": 0}
    start = time.monotonic()
    i_osc = i_midi = i_junk = 0
    while True:
        now = time.monotonic() - start
        if now >= args.seconds:
            break
        while i_osc < now * OSC_PER_S:
            t = i_osc / OSC_PER_S
            if not last["big"] and t >= args.big_at:
                sock.sendto(message("/ganstream/latent", *BIG), addr)  # sent as float32
                last["big"] = True
            if i_osc % 2 == 0:
                v = float(np.float32(0.08 * math.sin(2 * math.pi * 0.5 * t)))
                sock.sendto(message("/ganstream/macro/pc1", v), addr)
                last["pc1"] = v
            else:
                v = float(np.float32(0.05 * math.cos(2 * math.pi * 0.3 * t)))
                sock.sendto(message("/ganstream/latent/3", v), addr)
                last["latent3"] = v
            counts["osc"] += 1
            i_osc += 1
        while i_midi < now * MIDI_PER_S:
            value = int(64 + 14 * math.sin(2 * math.pi * 0.2 * i_midi / MIDI_PER_S))
            midi.send_message([0xB0, CC, value])
            last["cc"] = value
            counts["midi"] += 1
            i_midi += 1
        while i_junk < now * JUNK_PER_S:
            sock.sendto(junk(i_junk, rng), addr)
            counts["junk"] += 1
            i_junk += 1
        time.sleep(0.002)
    time.sleep(0.2)  # let the last messages land before the expectations are read
    latent = [float(np.float32(v)) for v in BIG]
    latent[3] = last["latent3"]
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"latent": latent, "pc1": last["pc1"], "cc": last["cc"], "counts": counts, "big": last["big"],
                   "start": start, "end": start + args.seconds}, f)
    os.replace(tmp, args.out)
    if args.hold:  # closing a JACK client reorders JACK's graph, which can xrun everyone: not while measured
        sys.stdin.read()
    midi.close_port()
    del midi


if __name__ == "__main__":
    main()
