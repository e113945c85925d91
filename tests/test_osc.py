"""The OSC server with real UDP on 127.0.0.1 and the real Controls: every address, the status
reply, every kind of refusal (answered on /ganstream/error, the latent intact), garbage
datagrams and a flood."""

from __future__ import annotations

import logging
import math
import queue
import socket
import struct
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from ganstream.realtime import events as ev
from ganstream.realtime.control import Controls
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.osc import OscServer, _status_args
from ganstream.realtime.ratelog import RateLimitedLog

D = 8
MACROS = ("pc1", "pc2", "brightness")
TIMEOUT = 5.0


def make_controls(tmp_path=None, **kwargs) -> Controls:
    rng = np.random.default_rng(1)
    directions = {name: (rng.standard_normal(D), 0.5) for name in MACROS}
    presets = None if tmp_path is None else tmp_path / "presets.json"
    return Controls(LatentSpace(D, controls=directions), presets_path=presets, **kwargs)


def build(address: str, *args, types: str | None = None) -> bytes:
    b = OscMessageBuilder(address)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


class Peer:
    """The test's side: a real python-osc UDP server that also sends from its own socket,
    so replies addressed to the sender's port come back to it."""

    def __init__(self):
        self.replies: queue.Queue = queue.Queue()
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.replies.put((address, list(args))))
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), d)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.target: tuple[str, int] | None = None
        self.skipped: list = []  # replies passed over while waiting for another address

    def send(self, address: str, *args, types: str | None = None) -> None:
        self.raw(build(address, *args, types=types))

    def raw(self, data: bytes) -> None:
        assert self.target is not None
        self.server.socket.sendto(data, self.target)

    def reply(self, address: str | None = None, timeout: float = TIMEOUT) -> tuple[str, list]:
        """The next reply (to `address`, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply on {address or 'any address'} within {timeout} s")
            try:
                got = self.replies.get(timeout=left)
            except queue.Empty:
                continue
            if address is None or got[0] == address:
                return got
            self.skipped.append(got)

    def status(self) -> dict:
        """Ask for the status and wait for it: every message sent before has been handled then."""
        self.send("/ganstream/status")
        _, args = self.reply("/ganstream/status")
        assert len(args) % 2 == 0
        return dict(zip(args[0::2], args[1::2]))

    def drain(self) -> list:
        out, self.skipped = self.skipped, []
        while True:
            try:
                out.append(self.replies.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def controls(tmp_path):
    return make_controls(tmp_path)


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def server(controls, peer):
    s = OscServer(controls, port=0).start()
    peer.target = ("127.0.0.1", s.port)
    yield s
    s.stop()


def commands(controls: Controls) -> list:
    out = []
    while (c := controls.pop()) is not None:
        out.append(c)
    return out


def test_listens_on_loopback_by_default(controls):
    s = OscServer(controls)
    assert (s.host, s.port) == ("127.0.0.1", 9000)
    s = OscServer(controls, port=0).start()
    try:
        assert s._sock.getsockname()[0] == "127.0.0.1" and s.port != 0 and s.running
    finally:
        s.stop()
    assert not s.running


def test_every_address_is_applied(server, peer, controls):
    z = np.linspace(-0.9, 0.9, D)
    peer.send("/ganstream/latent", *z.tolist())
    peer.send("/ganstream/latent/3", 0.25)
    peer.send("/ganstream/macro/pc2", -0.5)
    peer.send("/ganstream/gain", 0.7)
    peer.send("/ganstream/walk/rate", 1.5)
    peer.send("/ganstream/walk/depth", 0.3)
    peer.status()
    want = z.copy()
    want[3] = 0.25
    np.testing.assert_allclose(controls.latent, want, atol=1e-6)  # OSC floats are 32-bit
    assert controls.macros["pc2"] == pytest.approx(-0.5)
    assert controls.gain == pytest.approx(0.7)
    assert controls.walk == pytest.approx((1.5, 0.3))
    kinds = [type(c.event) for c in commands(controls)]
    assert kinds == [ev.LatentChange, ev.LatentChange, ev.MacroChange, ev.GainChange, ev.WalkChange, ev.WalkChange]

    peer.send("/ganstream/walk", 0.5, 0.1)
    peer.send("/ganstream/seed", 42)
    peer.send("/ganstream/preset/save", "calm")
    peer.send("/ganstream/seed", 7.0)  # Pure Data sends every number as a float
    peer.send("/ganstream/preset/load", "calm")
    peer.send("/ganstream/preset/morph", "calm", 2.5)
    peer.send("/ganstream/trigger")
    peer.send("/ganstream/trigger", 0.5)
    peer.send("/ganstream/trigger", 0.25, 60)
    peer.send("/ganstream/trigger", 0.25, 61.0)
    peer.send("/ganstream/release", 60)
    peer.status()
    assert controls.walk == pytest.approx((0.5, 0.1))
    assert controls.seed == 7
    assert controls.presets == ("calm",)
    np.testing.assert_allclose(controls.latent, controls.space.seed_latent(42))  # the recalled preset
    cmds = commands(controls)
    events = [c.event for c in cmds]
    assert [type(e) for e in events] == (
        [ev.WalkChange, ev.SeedChange, ev.SeedChange, ev.PresetRecall, ev.PresetRecall] + [ev.NoteOn] * 4 + [ev.NoteOff]
    )
    assert events[1].seed == 42
    assert events[3].name == "calm" and events[3].seconds == 0.0
    assert events[4].seconds == pytest.approx(2.5)
    assert events[5:9] == [ev.NoteOn(1.0, None), ev.NoteOn(0.5, None), ev.NoteOn(0.25, 60), ev.NoteOn(0.25, 61)]
    assert events[9] == ev.NoteOff(60)
    assert (controls.presets_path).exists()  # saved to the presets file
    assert server.refused == 0 and server.malformed == 0
    assert peer.drain() == []  # nothing but the status replies


def test_a_bundle_is_applied_at_once_whatever_its_time_tag(server, peer, controls):
    b = OscBundleBuilder(time.time() + 3600)  # an hour ahead: not waited for (docs/osc.md)
    b.add_content(_msg("/ganstream/gain", 0.3))
    b.add_content(_msg("/ganstream/macro/pc1", 0.9))
    t0 = time.monotonic()
    peer.raw(b.build().dgram)
    peer.status()
    assert time.monotonic() - t0 < 2.0
    assert controls.gain == pytest.approx(0.3) and controls.macros["pc1"] == pytest.approx(0.9)


def _msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build()


def test_status_reply_layout(server, peer, controls):
    engine = {
        "provider": "CPUExecutionProvider",
        "rtf": 0.12,
        "load": 0.1,
        "buffer_fill": 0.75,
        "underruns": 3,
        "latency_ms": 21.5,
        "running": True,
        "device": None,
        "macros": {"pc1": 0.5},
    }
    controls.attach(lambda: engine)
    peer.send("/ganstream/status")
    address, args = peer.reply("/ganstream/status")
    assert args[0::2] == ["provider", "load", "buffer_fill", "underruns", "latency_ms", "rtf", "running", "device", "macros.pc1"]
    status = dict(zip(args[0::2], args[1::2]))
    assert status["provider"] == "CPUExecutionProvider"
    assert status["underruns"] == 3 and isinstance(status["underruns"], int)
    assert status["buffer_fill"] == pytest.approx(0.75) and status["latency_ms"] == pytest.approx(21.5)
    assert status["running"] == 1 and status["device"] == "none" and status["macros.pc1"] == pytest.approx(0.5)


def test_status_without_an_engine(server, peer, controls):
    status = peer.status()
    assert status["engine"] == "none" and status["gain"] == pytest.approx(1.0) and "macros.pc1" in status


def test_status_args_types():
    args = _status_args({"a": np.float32(0.5), "b": np.int64(3), "c": float("nan"), "d": 2**40, "e": [1, 2]})
    assert args == ["a", 0.5, "b", 3.0, "c", "nan", "d", float(2**40), "e", "1,2"]


def test_replies_go_to_the_reply_port_when_configured(controls, peer):
    s = OscServer(controls, port=0, reply_port=peer.port).start()
    try:
        client = SimpleUDPClient("127.0.0.1", s.port)  # sends from another port: a Max udpsend
        client.send_message("/ganstream/status", [])
        address, args = peer.reply("/ganstream/status")
        assert "gain" in args
    finally:
        s.stop()


REFUSALS = [
    # (address, args, type tags or None, what the reason says)
    ("/ganstream/nosuch", [1.0], None, "unknown address"),
    ("/other/gain", [1.0], None, "unknown address"),
    ("/ganstream/macro/nosuch", [0.5], None, "no control 'nosuch'"),
    ("/ganstream/latent/x", [0.5], None, "unknown address"),
    ("/ganstream/latent/99", [0.5], None, "out of range"),
    ("/ganstream/latent", [0.1] * (D - 1), None, f"takes {D} numbers"),
    ("/ganstream/latent", [0.1] * (D - 1) + ["x"], None, "value 7 must be a number"),
    ("/ganstream/latent", [0.1] * (D - 1) + [float("nan")], None, "must be finite"),
    ("/ganstream/latent", [0.1] * (D - 1) + [100.0], None, "out of range"),
    ("/ganstream/latent/2", [], None, "takes 1 number"),
    ("/ganstream/latent/2", [float("inf")], None, "must be finite"),
    ("/ganstream/latent/2", [9.0], None, "out of range"),
    ("/ganstream/macro/pc1", [0.5, 0.5], None, "takes 1 number"),
    ("/ganstream/macro/pc1", ["loud"], None, "must be a number"),
    ("/ganstream/macro/pc1", [True], "T", "must be a number, not a boolean"),
    ("/ganstream/macro/pc1", [b"\x01\x02"], "b", "not a blob"),
    ("/ganstream/macro/pc1", [float("nan")], None, "must be finite"),
    ("/ganstream/macro/pc1", [float("-inf")], "d", "must be finite"),
    ("/ganstream/macro/pc1", [1.5], None, "out of range"),
    ("/ganstream/gain", [3.0], None, "out of range"),
    ("/ganstream/gain", [-0.1], None, "out of range"),
    ("/ganstream/seed", [1.5], None, "whole number"),
    ("/ganstream/seed", [-1], None, "out of range"),
    ("/ganstream/seed", ["one"], None, "whole number"),
    ("/ganstream/walk", [1.0], None, "takes 2 numbers"),
    ("/ganstream/walk/rate", [100.0], None, "out of range"),
    ("/ganstream/walk/depth", [-1.0], None, "out of range"),
    ("/ganstream/preset/load", ["nosuch"], None, "unknown"),
    ("/ganstream/preset/load", [3], None, "non-empty string"),
    ("/ganstream/preset/save", ["a/b"], None, "without '/'"),
    ("/ganstream/preset/morph", ["calm"], None, "takes a string and a number"),
    ("/ganstream/trigger", [2.0], None, "out of range"),
    ("/ganstream/trigger", [1.0, 200], None, "out of range"),
    ("/ganstream/trigger", [1.0, 60, 1], None, "no arguments, a velocity"),
    ("/ganstream/release", [], None, "takes 1 whole number"),
    ("/ganstream/learn", ["macro/pc1"], None, "MIDI learn needs a MIDI input"),
    ("/ganstream/status", [1], None, "takes no arguments"),
]


@pytest.mark.parametrize("address,args,types,reason", REFUSALS, ids=[f"{a} {r}" for a, _, _, r in REFUSALS])
def test_refusals_are_answered_and_leave_the_controls_intact(server, peer, controls, address, args, types, reason):
    before = (controls.latent, controls.macros, controls.gain, controls.walk, controls.seed, controls.presets)
    peer.send(address, *args, types=types)
    got_address, got = peer.reply("/ganstream/error")
    assert got[0] == address
    assert reason in got[1], got[1]
    after = (controls.latent, controls.macros, controls.gain, controls.walk, controls.seed, controls.presets)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:]
    assert commands(controls) == []
    assert server.refused == 1 and server.applied == 0
    # ... and the server goes on
    peer.send("/ganstream/gain", 0.5)
    peer.status()
    assert controls.gain == pytest.approx(0.5)


def test_malformed_datagrams_are_dropped_and_the_server_goes_on(server, peer, controls, caplog):
    rng = np.random.default_rng(7)
    crafted = [
        b"",
        b"\x00",
        b"/ganstream/gain",  # no padding, no type tags
        b"/ganstream/gain\x00,f\x00\x00",  # a float promised, none sent
        b"/ganstream/gain\x00,i\x00\x00\x00\x01",  # 2 bytes of a 4-byte int
        b"/ganstream/gain\x00,s\x00\x00abc",  # an unterminated string
        b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 1_000_000) + b"/x",  # an element longer than the datagram
        b"#bundle\x00\x00\x00",
        b"/ganstream/gain\x00,\xff\xfe\x00" + b"\x00" * 8,  # unknown type tags
        "/gänstream\x00,f\x00\x00\x00\x00\x00\x00".encode("utf-8"),
    ]
    randoms = [rng.integers(0, 256, size=int(rng.integers(1, 600)), dtype=np.uint8).tobytes() for _ in range(300)]
    with caplog.at_level(logging.WARNING, logger="ganstream.osc"):
        for data in crafted + randoms:
            peer.raw(data)
        peer.send("/ganstream/gain", 0.25)
        status = peer.status()
    assert controls.gain == pytest.approx(0.25) and status["gain"] == pytest.approx(0.25)
    assert server.running
    assert server.malformed >= 280  # the rest parse as messages to unknown addresses and are refused
    assert server.malformed + server.refused == len(crafted) + len(randoms)
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert 1 <= len(lines) <= 3  # rate-limited: one line a second at most


def test_a_flood_of_500_messages_a_second_for_2_seconds(server, peer, controls, caplog):
    values = np.linspace(-1, 1, 1000)
    sent = bad = 0
    with caplog.at_level(logging.WARNING, logger="ganstream.osc"):
        t0 = time.perf_counter()
        for i, v in enumerate(values):
            if i % 10 == 9:
                peer.send("/ganstream/gain", 5.0)  # refused, 50 a second
                bad += 1
            else:
                peer.send("/ganstream/macro/pc1", float(v))
            sent += 1
            wait = t0 + (i + 1) * 0.002 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        elapsed = time.perf_counter() - t0
        peer.send("/ganstream/macro/pc1", 0.125)
        status = peer.status()
    assert 1.9 < elapsed < 3.0
    assert server.messages == sent + 2  # nothing lost on loopback
    deadline = time.monotonic() + TIMEOUT  # the status request itself is counted just after its reply
    while server.applied < sent - bad + 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert server.applied == sent - bad + 2 and server.refused == bad
    assert controls.macros["pc1"] == pytest.approx(0.125) and status["macros.pc1"] == pytest.approx(0.125)
    errors = [a for a, _ in peer.drain() if a == "/ganstream/error"]
    assert len(errors) == bad  # under the reply rate limit, every refusal is answered
    lines = [r for r in caplog.records if "refused /ganstream/gain" in r.getMessage()]
    assert 1 <= len(lines) <= 4  # one a second at most
    assert "suppressed" in lines[-1].getMessage() or len(lines) == 1


def test_error_replies_are_rate_limited_but_all_counted(server, peer, controls):
    for _ in range(600):
        peer.send("/ganstream/gain", 9.0)
    peer.status()
    errors = [a for a, _ in peer.drain() if a == "/ganstream/error"]
    assert server.refused == 600
    assert len(errors) + server.replies_dropped == 600
    assert 200 <= len(errors) < 600


class StubLearner:
    def __init__(self):
        self.armed = None
        self.saved = 0

    def learn(self, target, on_learned=None):
        if not target.startswith(("macro/", "latent/", "gain")):
            raise ValueError(f"MIDI learn: unknown target {target!r}")
        self.armed = (target, on_learned)

    def cancel_learn(self):
        self.armed = None

    def save_map(self, path=None):
        self.saved += 1
        return "/tmp/map.yaml"


def test_learn_addresses_drive_the_learner(controls, peer):
    learner = StubLearner()
    s = OscServer(controls, port=0, learn=learner).start()
    peer.target = ("127.0.0.1", s.port)
    try:
        peer.send("/ganstream/learn", "macro/pc1")
        peer.status()
        target, callback = learner.armed

        class Binding:
            target, cc, lsb = "macro/pc1", 21, None

        callback(Binding)  # as the MIDI thread would
        assert peer.reply("/ganstream/learned")[1] == ["macro/pc1", 21, -1]
        peer.send("/ganstream/learn", "bogus")
        assert "unknown target" in peer.reply("/ganstream/error")[1][1]
        peer.send("/ganstream/learn/cancel")
        peer.send("/ganstream/learn/save")
        assert peer.reply("/ganstream/learn/saved")[1] == ["/tmp/map.yaml"]
        assert learner.armed is None and learner.saved == 1
    finally:
        s.stop()


def test_a_busy_port_is_a_clear_error(controls):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen for OSC on 127.0.0.1:{port}"):
            OscServer(controls, port=port).start()


def test_rate_limited_log_counts_what_it_suppresses(caplog):
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("ganstream.test"), interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ganstream.test"):
        assert log("a", "first")
        for _ in range(5):
            now[0] += 0.1
            assert not log("a", "again")
        assert log("b", "another kind")  # kinds are limited apart
        now[0] = 1.2
        assert log("a", "later")
    assert [r.getMessage() for r in caplog.records] == ["first", "another kind", "later (5 more like this suppressed)"]
    assert math.isclose(log.interval, 1.0)


def test_decode_is_strict_where_python_osc_is_lenient():
    from ganstream.realtime.osc import MAX_BUNDLE_DEPTH, Malformed, decode

    assert decode(build("/ganstream/gain", 0.5)) == [("/ganstream/gain", [0.5])]
    assert decode(b"/ganstream/status\x00\x00\x00") == [("/ganstream/status", [])]  # no type tags at all
    with pytest.raises(Malformed, match="float argument 0 is missing"):
        decode(b"/ganstream/gain\x00,f\x00\x00")  # python-osc reads 0.0 here
    with pytest.raises(Malformed, match="unknown type tag 'x'"):
        decode(b"/ganstream/gain\x00,xf\x00" + struct.pack(">f", 0.5))  # python-osc skips 'x' and applies 0.5
    assert decode(b"/ganstream/gain\x00,f\x00\x00\x3f") == [("/ganstream/gain", [0.5])]  # Reaktor's short float
    assert decode(build("/a", 1, "s", b"xy", True, None, types="isbTN")) == [("/a", [1, "s", b"xy", True, None])]

    def bundle(*contents):
        b = OscBundleBuilder(0)
        for c in contents:
            b.add_content(c)
        return b.build()

    nested = bundle(_msg("/a", 1.0), bundle(_msg("/b", 2.0)))
    assert decode(nested.dgram) == [("/a", [1.0]), ("/b", [2.0])]
    deep = _msg("/x", 1.0)
    for _ in range(MAX_BUNDLE_DEPTH + 1):
        deep = bundle(deep)
    with pytest.raises(Malformed, match="nested deeper"):
        decode(deep.dgram)


def test_arrays_and_exotic_types_are_refused_as_types(server, peer, controls):
    peer.raw(b"/ganstream/gain\x00,[f]\x00\x00\x00\x00" + struct.pack(">f", 0.5))
    assert "must be a number, not an array" in peer.reply("/ganstream/error")[1][1]
    peer.raw(b"/ganstream/gain\x00,I\x00\x00")  # OSC's "infinitum"
    assert "must be finite" in peer.reply("/ganstream/error")[1][1]
    assert controls.gain == 1.0
