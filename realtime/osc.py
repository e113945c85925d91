"""OSC control of the live engine: a UDP server on 127.0.0.1:9000 by default.

The namespace (every address, its arguments and its replies) is in docs/osc.md.
`OscServer` owns one UDP socket and one daemon thread. Each datagram is parsed
(`decode`, strict OSC 1.0 on python-osc's primitives; messages and bundles;
bundle time tags are ignored: a message acts when it arrives), checked (address, arity, types, finiteness) and applied
through the `Controls` setters, which are thread-safe and never block the
audio. Anything refused is answered on `/ganstream/error` with the address and
the reason, and logged at most once a second per kind of error; the controls
are left as they were. A datagram that is not OSC is dropped and counted. No
exception leaves the server thread.

Replies go to the sender's address and port (so Pure Data's `netsend -u -b`
gets them back on its own socket), or to the sender's host on `reply_port`
when one is configured (Max's `udpsend` cannot receive: pair it with a
`udpreceive` on that port).

`learn` connects `/ganstream/learn...` to a MIDI input (`midi.MidiInput`, or
anything with the `Learner` methods); without one those addresses are refused.
`invert` connects `/ganstream/invert` and `/ganstream/invert/input` to an
inversion worker (`invert_live.InvertWorker`, or anything with the `Inversions`
methods); its handlers only enqueue, and the worker replies later, from its own
thread, through `reply`. Without one (a bundle without an encoder) they are
refused.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from .invert_live import InvertBusy
from .ratelog import RateLimitedLog

PREFIX = "/ganstream"
ERROR_ADDRESS = f"{PREFIX}/error"
STATUS_ADDRESS = f"{PREFIX}/status"
LEARNED_ADDRESS = f"{PREFIX}/learned"
SAVED_ADDRESS = f"{PREFIX}/learn/saved"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
MAX_DATAGRAM = 65535
MAX_BUNDLE_DEPTH = 8
ERROR_REPLIES_PER_SECOND = 200  # a flood of bad messages gets this many answers a second, no more
_POLL_S = 0.2  # how often the server thread looks at its stop flag

log = logging.getLogger("ganstream.osc")


class Learner(Protocol):
    """What `/ganstream/learn` drives; `midi.MidiInput` is one."""

    def learn(self, target: str, on_learned: Callable[[Any], None] | None = None) -> None: ...

    def cancel_learn(self) -> None: ...

    def save_map(self, path: Any = None) -> Any: ...


class Inversions(Protocol):
    """What `/ganstream/invert` drives; `invert_live.InvertWorker` is one. Each method only enqueues and
    returns (InvertBusy when it cannot take the request, ValueError for a bad argument); `reply(address,
    args)` is called once, later, with the answer."""

    def invert_file(self, path: str, reply: Callable[[str, Sequence[Any]], None]) -> None: ...

    def invert_input(self, seconds: float, reply: Callable[[str, Sequence[Any]], None]) -> None: ...


class Refused(Exception):
    """A message the server will not apply: `kind` groups it for the log, `reason` is sent back."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# -- decoding --------------------------------------------------------------------------------------


class Malformed(ValueError):
    """A datagram that is not well-formed OSC 1.0; it is dropped whole."""


def decode(data: bytes) -> list[tuple[str, list]]:
    """Every message in an OSC datagram (a message, or a bundle, nested or not) -> [(address, args)].

    Stricter than python-osc's own parser, whose primitives it uses: a message
    with an unknown type tag is malformed (OSC 1.0 says to discard it; python-osc
    skips the tag, logs on the root logger and applies the rest), and so is a
    float argument missing altogether (python-osc reads it as 0.0). A final
    float short of its trailing zero bytes, as Reaktor sends, is padded. Bundle
    time tags are read and ignored.
    """
    out: list[tuple[str, list]] = []
    try:
        _decode(bytes(data), out, 0)
    except Malformed:
        raise
    except (osc_types.ParseError, struct.error, UnicodeDecodeError, IndexError, ValueError) as e:
        raise Malformed(str(e) or type(e).__name__) from None
    return out


def _decode(data: bytes, out: list, depth: int) -> None:
    if data.startswith(b"#bundle\x00"):
        if depth >= MAX_BUNDLE_DEPTH:
            raise Malformed(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
        if len(data) < 16:
            raise Malformed("a bundle shorter than its header")
        i = 16  # "#bundle\0" and the 8-byte time tag
        while i < len(data):
            if len(data) - i < 4:
                raise Malformed("a bundle element without its size")
            (size,) = struct.unpack(">i", data[i : i + 4])
            i += 4
            if size <= 0 or size % 4 or i + size > len(data):
                raise Malformed(f"a bundle element of size {size} at byte {i - 4} of {len(data)}")
            _decode(data[i : i + size], out, depth + 1)
            i += size
        return
    if not data.startswith(b"/"):
        raise Malformed("neither a message (an address starting with /) nor a bundle")
    address, i = osc_types.get_string(data, 0)
    if i >= len(data):
        out.append((address, []))  # no type tag string: no arguments (OSC 1.0 allows it)
        return
    tags, i = osc_types.get_string(data, i)
    if not tags.startswith(","):
        raise Malformed(f"{address}: the type tag string {tags!r} does not start with ','")
    args: list = []
    stack = [args]
    for n, tag in enumerate(tags[1:]):
        if tag == "f":
            left = len(data) - i
            if left <= 0:
                raise Malformed(f"{address}: float argument {n} is missing")
            if left < 4:  # Reaktor leaves out a final float's trailing zero bytes
                data += b"\x00" * (4 - left)
            value, i = osc_types.get_float(data, i)
        elif tag == "i":
            value, i = osc_types.get_int(data, i)
        elif tag == "h":
            value, i = osc_types.get_int64(data, i)
        elif tag == "d":
            value, i = osc_types.get_double(data, i)
        elif tag in "sS":
            value, i = osc_types.get_string(data, i)
        elif tag == "b":
            value, i = osc_types.get_blob(data, i)
        elif tag == "c":
            code, i = osc_types.get_int(data, i)
            value = chr(code) if 0 <= code < 0x110000 else ""
        elif tag == "t":
            value, i = osc_types.get_timetag(data, i)
        elif tag == "r":
            value, i = osc_types.get_rgba(data, i)
        elif tag == "m":
            value, i = osc_types.get_midi(data, i)
        elif tag in "TFNI":
            value = {"T": True, "F": False, "N": None, "I": math.inf}[tag]
        elif tag == "[":
            stack.append([])
            stack[-2].append(stack[-1])
            continue
        elif tag == "]":
            if len(stack) < 2:
                raise Malformed(f"{address}: ']' without '[' in the type tags")
            stack.pop()
            continue
        else:
            raise Malformed(f"{address}: unknown type tag {tag!r}")
        stack[-1].append(value)
    if len(stack) != 1:
        raise Malformed(f"{address}: '[' without ']' in the type tags")
    out.append((address, args))


# -- argument checks ---------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (bytes, bytearray)):
        return "a blob"
    if value is None:
        return "nil"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, int):
        return "an integer"
    return f"a {type(value).__name__}"


def _number(address: str, args: Sequence[Any], i: int, what: str) -> float:
    v = args[i]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Refused("type", f"{what} must be a number, not {_type_name(v)}")
    v = float(v)
    if not math.isfinite(v):
        raise Refused("not finite", f"{what} must be finite, not {v}")
    return v


def _integer(address: str, args: Sequence[Any], i: int, what: str) -> int:
    v = args[i]
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)  # Pure Data sends every number as a float
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float):
            raise Refused("not finite" if not math.isfinite(v) else "type", f"{what} must be a whole number, not {v}")
        raise Refused("type", f"{what} must be a whole number, not {_type_name(v)}")
    return v


def _string(address: str, args: Sequence[Any], i: int, what: str) -> str:
    v = args[i]
    if not isinstance(v, str) or not v:
        raise Refused("type", f"{what} must be a non-empty string, not {_type_name(v)}")
    return v


def _arity(address: str, args: Sequence[Any], allowed: Sequence[int], usage: str) -> None:
    if len(args) not in allowed:
        raise Refused("arity", f"{address} takes {usage}, got {len(args)} argument{'s' * (len(args) != 1)}")


STATUS_HEADLINE = ("provider", "load", "buffer_fill", "underruns", "latency_ms")


def _status_args(status: dict) -> list[Any]:
    """The status dict as OSC arguments: key, value, key, value, ... (docs/osc.md).

    The headline keys come first, in STATUS_HEADLINE's order, then the rest in the
    engine's order; nested dicts become dotted keys, None the string "none",
    booleans 0/1, lists a comma-separated string.
    """
    out: list[Any] = []
    status = {**{k: status[k] for k in STATUS_HEADLINE if k in status}, **status}

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{key}.{k}", v)
            return
        if isinstance(value, bool):
            value = int(value)
        elif value is None:
            value = "none"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, float):
            value = value if math.isfinite(value) else str(value)
        elif not isinstance(value, (int, str)):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                value = str(value)
            else:
                value = value if math.isfinite(value) else str(value)
        if isinstance(value, int) and not -(2**31) <= value < 2**31:
            value = float(value)
        out.extend((str(key), value))

    for k, v in status.items():
        add(str(k), v)
    return out


def _build(address: str, args: Sequence[Any]) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, str):
            b.add_arg(a, "s")
        elif isinstance(a, float):
            b.add_arg(a, "f")
        elif isinstance(a, int):
            b.add_arg(a, "i")
        else:
            b.add_arg(str(a), "s")
    return b.build().dgram


# -- the server ---------------------------------------------------------------------------------


class OscServer:
    """The OSC server: `start()` binds and serves on a daemon thread, `stop()` ends it.

    controls: a `control.Controls` (the setters are called from the server thread).
    host, port: where to listen; port 0 takes a free port (read `.port` after start).
    learn: a `Learner` for `/ganstream/learn`, or None.
    invert: an `Inversions` (the worker) for `/ganstream/invert`, or None (those addresses are refused).
    reply_port: send replies to the sender's host on this port instead of the sender's own port.

    Counters (ints, read any time): `received` datagrams, `messages` in them,
    `applied`, `refused` (answered on /ganstream/error), `malformed` (dropped
    datagrams), `replies` sent and `replies_dropped` (error replies over the
    rate limit, or a send that failed).
    """

    def __init__(
        self,
        controls: Any,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        learn: Learner | None = None,
        reply_port: int | None = None,
        logger: logging.Logger | None = None,
        invert: Inversions | None = None,
    ):
        if reply_port is not None and not 1 <= int(reply_port) <= 65535:
            raise ValueError(f"OSC reply port must be 1..65535, not {reply_port}")
        self.controls = controls
        self.host = host
        self.requested_port = int(port)
        self.learner = learn
        self.invert = invert
        self.reply_port = reply_port
        self.log = RateLimitedLog(logger or log)
        self.received = self.messages = self.applied = self.refused = self.malformed = 0
        self.replies = self.replies_dropped = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None  # stop() writes to wake the thread at once
        self._bucket = float(ERROR_REPLIES_PER_SECOND)
        self._bucket_t = time.monotonic()
        self._routes: dict[str, Callable[[str, list, tuple], None]] = {
            f"{PREFIX}/latent": self._latent,
            f"{PREFIX}/gain": self._gain,
            f"{PREFIX}/seed": self._seed,
            f"{PREFIX}/walk": self._walk,
            f"{PREFIX}/walk/rate": self._walk_rate,
            f"{PREFIX}/walk/depth": self._walk_depth,
            f"{PREFIX}/preset/save": self._preset_save,
            f"{PREFIX}/preset/load": self._preset_load,
            f"{PREFIX}/preset/morph": self._preset_morph,
            f"{PREFIX}/trigger": self._trigger,
            f"{PREFIX}/release": self._release,
            f"{PREFIX}/note": self._note,
            f"{PREFIX}/pitch": self._pitch,
            f"{PREFIX}/pad": self._pad,
            f"{PREFIX}/learn": self._learn,
            f"{PREFIX}/learn/cancel": self._learn_cancel,
            f"{PREFIX}/learn/save": self._learn_save,
            f"{PREFIX}/status": self._status,
            f"{PREFIX}/invert": self._invert_file,
            f"{PREFIX}/invert/input": self._invert_input,
        }

    # -- life cycle

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for); the requested one before start."""
        if self._sock is None:
            return self.requested_port
        return self._sock.getsockname()[1]

    def start(self) -> "OscServer":
        """Bind (raising OSError with the address if that fails) and serve on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the OSC server is already running")
        try:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.requested_port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            raise OSError(f"cannot listen for OSC on {self.host}:{self.requested_port}: {e.strerror or e}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # bursts from a sequencer
            sock.bind(addr)
        except OSError as e:
            sock.close()
            raise OSError(f"cannot listen for OSC on {self.host}:{self.requested_port}: {e.strerror or e}") from None
        self._sock = sock
        self._wake = socket.socketpair()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="ganstream-osc", daemon=True)
        self._thread.start()
        log.info("OSC: listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._wake is not None:
            try:
                self._wake[1].send(b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._wake is not None:
            for end in self._wake:
                end.close()
            self._wake = None

    def __enter__(self) -> "OscServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "messages": self.messages,
            "applied": self.applied,
            "refused": self.refused,
            "malformed": self.malformed,
            "replies": self.replies,
            "replies_dropped": self.replies_dropped,
        }

    # -- the thread

    def _serve(self) -> None:
        sock, wake = self._sock, self._wake
        assert sock is not None and wake is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock, wake[0]], [], [], _POLL_S)
                if sock not in ready:
                    continue
                data, sender = sock.recvfrom(MAX_DATAGRAM)
            except (OSError, ValueError):
                # Windows reports an earlier reply's ICMP "port unreachable" here; a closed socket
                # at stop() lands here too.
                if self._stop.is_set():
                    return
                continue
            try:
                self.received += 1
                self._datagram(data, sender)
            except Exception:  # the last line of defence: the server thread never dies
                self.log("internal", "OSC: unexpected error handling a datagram", exc_info=True)

    def _datagram(self, data: bytes, sender: tuple) -> None:
        try:
            messages = decode(data)
        except Malformed as e:
            self.malformed += 1
            self.log("malformed", f"OSC: dropped a malformed datagram of {len(data)} bytes from {_who(sender)}: {e}")
            return
        for address, args in messages:
            self.messages += 1
            self._message(address, args, sender)

    def _message(self, address: str, args: list, sender: tuple) -> None:
        try:
            handler = self._routes.get(address)
            if handler is None:
                handler = self._pattern_route(address)
            handler(address, args, sender)
        except Refused as r:
            self._refuse(address, r.kind, r.reason, sender)
        except InvertBusy as e:  # the inversion worker has a request waiting already: refused, not queued
            self._refuse(address, "busy", f"{address}: {e}", sender)
        except ValueError as e:  # ControlError (a ValueError) from the controls: a bad value
            self._refuse(address, "value", str(e), sender)
        except Exception as e:
            self.log("internal", f"OSC: {address}: unexpected error", exc_info=True)
            self._refuse(address, "internal", f"internal error: {type(e).__name__}: {e}", sender, logged=True)
        else:
            self.applied += 1

    def _pattern_route(self, address: str) -> Callable[[str, list, tuple], None]:
        head, _, arg = address.rpartition("/")
        if head == f"{PREFIX}/latent" and arg:
            if not (arg.isascii() and arg.isdigit()):
                raise Refused("address", f"unknown address {address} (latent dimensions are /ganstream/latent/<0..{self._latent_size() - 1}>)")
            return self._latent_dim
        if head == f"{PREFIX}/macro" and arg:
            if arg not in tuple(self.controls.macro_names):
                names = ", ".join(self.controls.macro_names) or "none"
                raise Refused("address", f"unknown address {address}: the bundle has no control {arg!r} (it has: {names})")
            return self._macro
        raise Refused("address", f"unknown address {address} (the namespace is in docs/osc.md)")

    def _refuse(self, address: str, kind: str, reason: str, sender: tuple, logged: bool = False) -> None:
        self.refused += 1
        if not logged:
            self.log(kind, f"OSC: refused {address} from {_who(sender)}: {reason}")
        now = time.monotonic()
        self._bucket = min(float(ERROR_REPLIES_PER_SECOND), self._bucket + (now - self._bucket_t) * ERROR_REPLIES_PER_SECOND)
        self._bucket_t = now
        if self._bucket < 1.0:
            self.replies_dropped += 1
            return
        self._bucket -= 1.0
        self.reply(sender, ERROR_ADDRESS, [address, reason])

    def reply(self, sender: tuple, address: str, args: Sequence[Any]) -> None:
        """Send one message back to `sender` (or to its host on reply_port); thread-safe, never raises."""
        sock = self._sock
        if sock is None:
            return
        dest = (sender[0], self.reply_port) if self.reply_port else sender
        try:
            sock.sendto(_build(address, args), dest)
            self.replies += 1
        except OSError as e:
            self.replies_dropped += 1
            self.log("reply", f"OSC: cannot reply to {_who(dest)}: {e.strerror or e}")

    def _latent_size(self) -> int:
        return int(self.controls.latent_size)

    # -- handlers: (address, args, sender); raise Refused, or let ControlError through

    def _latent(self, address: str, args: list, sender: tuple) -> None:
        d = self._latent_size()
        _arity(address, args, (d,), f"{d} numbers (the whole latent)")
        self.controls.set_latent([_number(address, args, i, f"value {i}") for i in range(d)])

    def _latent_dim(self, address: str, args: list, sender: tuple) -> None:
        index = int(address.rpartition("/")[2])
        d = self._latent_size()
        if index >= d:
            raise Refused("range", f"latent dimension {index} is out of range: the latent has {d} (0..{d - 1})")
        _arity(address, args, (1,), "1 number")
        self.controls.set_latent_dim(index, _number(address, args, 0, "the value"))

    def _macro(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 number in [-1, 1]")
        self.controls.set_macro(address.rpartition("/")[2], _number(address, args, 0, "the value"))

    def _gain(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 number")
        self.controls.set_gain(_number(address, args, 0, "the gain"))

    def _seed(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 whole number")
        self.controls.set_seed(_integer(address, args, 0, "the seed"))

    def _walk(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (2,), "2 numbers (rate in Hz, depth)")
        self.controls.set_walk(rate=_number(address, args, 0, "the rate"), depth=_number(address, args, 1, "the depth"))

    def _walk_rate(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 number (Hz)")
        self.controls.set_walk(rate=_number(address, args, 0, "the rate"))

    def _walk_depth(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 number")
        self.controls.set_walk(depth=_number(address, args, 0, "the depth"))

    def _preset_save(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 string (the preset's name)")
        self.controls.save_preset(_string(address, args, 0, "the name"))

    def _preset_load(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 string (the preset's name)")
        self.controls.load_preset(_string(address, args, 0, "the name"))

    def _preset_morph(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (2,), "a string and a number (the preset's name, seconds)")
        name = _string(address, args, 0, "the name")
        self.controls.morph_preset(name, _number(address, args, 1, "the time"))

    def _trigger(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (0, 1, 2), "no arguments, a velocity, or a velocity and a note")
        velocity = _number(address, args, 0, "the velocity") if args else 1.0
        note = _integer(address, args, 1, "the note") if len(args) == 2 else None
        self.controls.trigger(velocity, note)

    def _release(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 whole number (the note)")
        self.controls.note_off(_integer(address, args, 0, "the note"))

    def _note(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1, 2), "a note, or a note and a velocity (0..1; 0 releases it)")
        note = _integer(address, args, 0, "the note")
        self.controls.note(note, _number(address, args, 1, "the velocity") if len(args) == 2 else 1.0)

    def _pitch(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 number (the pitch, a MIDI note; fractions allowed)")
        self.controls.set_pitch(_number(address, args, 0, "the pitch"))

    def _pad(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1, 2), "a note (the pad takes the current latent), or a note and a seed")
        note = _integer(address, args, 0, "the note")
        self.controls.set_pad(note, _integer(address, args, 1, "the seed") if len(args) == 2 else None)

    def _learner(self, address: str) -> Learner:
        if self.learner is None:
            raise Refused("unavailable", f"{address}: MIDI learn needs a MIDI input (--midi-in or --midi-virtual)")
        return self.learner

    def _learn(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (1,), "1 string (the target, e.g. macro/pc1)")
        target = _string(address, args, 0, "the target")
        learner = self._learner(address)

        def learned(binding: Any) -> None:  # on the MIDI thread
            if hasattr(binding, "note"):  # a pad learned: the note the controller sends, no LSB
                self.reply(sender, LEARNED_ADDRESS, [binding.target, binding.note, -1])
                return
            lsb = -1 if binding.lsb is None else binding.lsb
            self.reply(sender, LEARNED_ADDRESS, [binding.target, binding.cc, lsb])

        learner.learn(target, learned)

    def _learn_cancel(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (0,), "no arguments")
        self._learner(address).cancel_learn()

    def _learn_save(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (0,), "no arguments (the map is saved to the --midi-map file)")
        path = self._learner(address).save_map()
        self.reply(sender, SAVED_ADDRESS, [str(path)])

    def _inversions(self, address: str) -> Inversions:
        if self.invert is None:
            raise Refused(
                "unavailable", f"{address}: this bundle has no encoder to invert with: export it with `ganstream export RUN --encoder`"
            )
        return self.invert

    def _invert_file(self, address: str, args: list, sender: tuple) -> None:
        worker = self._inversions(address)
        _arity(address, args, (1,), "1 string (the path of an audio file)")
        worker.invert_file(_string(address, args, 0, "the path"), self._replier(sender))

    def _invert_input(self, address: str, args: list, sender: tuple) -> None:
        worker = self._inversions(address)
        _arity(address, args, (1,), "1 number (seconds to record from the input device)")
        worker.invert_input(_number(address, args, 0, "the length"), self._replier(sender))

    def _replier(self, sender: tuple) -> Callable[[str, Sequence[Any]], None]:
        """A reply to `sender` for a worker to call later, from its own thread."""
        return lambda address, args: self.reply(sender, address, args)

    def _status(self, address: str, args: list, sender: tuple) -> None:
        _arity(address, args, (0,), "no arguments")
        self.reply(sender, STATUS_ADDRESS, _status_args(self.controls.status()))


def _who(sender: tuple) -> str:
    try:
        return f"{sender[0]}:{sender[1]}"
    except (TypeError, IndexError):
        return str(sender)
