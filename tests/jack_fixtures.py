"""A JACK server of our own for tests with real audio: requested as `jack_server` (conftest.py imports it).

The session fixture starts `jackd -n NAME -d dummy -r 48000 -p 256` under a name
no other process uses, points this process's libjack (and PortAudio, which is
re-initialised to see it) and every child process at it through
JACK_DEFAULT_SERVER, waits until a client can connect, and kills the server at
the end. It skips, with the reason, only when jackd is missing or cannot run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

RATE = 48000
PERIOD = 256


def stop(*procs: subprocess.Popen) -> None:
    """Kills what is still running of `procs`: a test's `finally`, so that no player outlives a failure."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _connectable(name: str) -> bool:
    try:
        import jack
    except ImportError:  # no JACK-Client: ask jack_lsp
        lsp = shutil.which("jack_lsp")
        if lsp is None:
            return True  # nothing to ask with; the server printed that it started
        env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
        return subprocess.run([lsp], env=env, capture_output=True, timeout=5).returncode == 0
    try:
        client = jack.Client("ganstream-probe", servername=name, no_start_server=True)
    except jack.JackError:
        return False
    client.close()
    return True


@dataclass
class JackServer:
    """A running server: its name, and its log lines stamped with time.monotonic() as they came."""

    name: str
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.name

    def xruns(self, start: float = 0.0, end: float = float("inf")) -> list[tuple[float, str]]:
        """The server's xrun reports between two monotonic times (JACK2 names the late client)."""
        return [(t, line) for t, line in list(self.lines) if start <= t <= end and "XRun" in line]


def _follow(stream, server: JackServer, log) -> None:
    with open(log, "w") as f:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            server.lines.append((time.monotonic(), line))
            f.write(f"{time.monotonic():.3f} {line}\n")
            f.flush()


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory):
    """A `JackServer` (str() is its name); JACK_DEFAULT_SERVER is set to it for the whole session."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (tools/test.sh installs jackd2)")
    name = f"ganstream-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log = tmp_path_factory.mktemp("jack") / "jackd.log"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
    proc = subprocess.Popen(
        ["jackd", "-n", name, "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    server = JackServer(name)
    threading.Thread(target=_follow, args=(proc.stdout, server, log), daemon=True).start()
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    try:
        deadline = time.monotonic() + 15
        while not _connectable(name):
            if proc.poll() is not None:
                time.sleep(0.2)
                text = "\n".join(line for _, line in server.lines)
                pytest.skip(f"jackd could not run: {text.strip()[-600:]}")
            if time.monotonic() > deadline:
                pytest.skip("jackd started but no client could connect within 15 s")
            time.sleep(0.1)
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_START_SERVER"] = "1"
        _rescan_portaudio()
        yield server
    finally:
        _release_portaudio()  # while the server still runs: PortAudio's JACK host API asserts otherwise
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _rescan_portaudio() -> None:
    """PortAudio lists devices once, when it starts: have it look again if it already has."""
    import sys

    if "sounddevice" in sys.modules:
        from ganstream.realtime.audio import rescan

        rescan()


def _release_portaudio() -> None:
    """Terminate PortAudio in this process (so its exit handler has nothing left to do): closing its
    JACK client after the server has gone fails an assertion in pa_jack.c and aborts the process."""
    import sys

    sd = sys.modules.get("sounddevice")
    if sd is not None:
        while sd._initialized:
            sd._terminate()


def open_engine_midi(engine: subprocess.Popen, sender, midi_name: str, deadline: float) -> None:
    """Open the rtmidi output `sender` to the virtual MIDI port `midi_name` of a `ganstream play` process once it
    appears. Before any recorder exists: python-rtmidi holds the GIL through its JACK calls, which a recorder's
    JACK callbacks wait on (a hang once in ten runs)."""
    ports: list[int] = []
    while not ports:
        assert engine.poll() is None, engine.stdout.read()
        assert time.monotonic() < deadline, "the engine's MIDI port did not appear within 30 s"
        ports = [i for i, name in enumerate(sender.get_ports()) if midi_name in name]
        time.sleep(0.1)
    sender.open_port(ports[0], "out")


def connect_recorder(engine: subprocess.Popen, rec, deadline: float) -> None:
    """Connect the recorder `rec` (test_live_jack.Recorder) to the engine's first audio port once it appears."""
    while not rec.engine_ports():
        assert engine.poll() is None, engine.stdout.read()
        assert time.monotonic() < deadline, "the engine's audio ports did not appear within 30 s"
        time.sleep(0.1)
    time.sleep(0.2)
    rec.client.connect(rec.engine_ports()[0], rec.port)


def release_midi_test(engine: subprocess.Popen, rec, sender) -> None:
    """The end of a JACK MIDI test, in the order `open_engine_midi` needs: the engine, the recorder (if it was
    made), then the rtmidi output, closed only once no recorder's JACK callbacks can wait on its GIL."""
    stop(engine)
    if rec is not None:
        rec.close()
    sender.close_port()
    sender.delete()
