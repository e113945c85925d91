"""Issue 14 live: the latent that sounds like a sample, found while `ganstream play` plays
(realtime/invert_live.py behind OSC's /ganstream/invert and /ganstream/invert/input).

The factory's encoder (tests/bundle_factory.py) is the exact inverse of its generator, so the latent the
worker must set is known: the one that made the sample. Three layers:

- the worker with real `Controls`: a file's latent reaches the controls' queue as the LatentChange that
  /ganstream/latent would push, the reply says done; a bad file, a busy worker, a recording;
- the OSC server over real UDP with the worker behind it;
- `ganstream play` on a JACK server (dummy driver): /ganstream/invert PATH moves what it plays from the
  seed's latent A to the sample's latent B with no gap in the audio, and /ganstream/invert/input records
  a note a JACK client plays into play's input port and moves a pitch-conditioned drone to its pitch.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from bundle_factory import conditioned_audio, make_bundle, make_conditioned_bundle, reference_audio
from jack_fixtures import RATE, connect_recorder, stop
from test_osc import Peer

from ganstream.realtime import events as ev
from ganstream.realtime.bundle import BundleError, load_bundle
from ganstream.realtime.control import Controls
from ganstream.realtime.invert_live import DONE_ADDRESS, ERROR_ADDRESS, InvertBusy, InvertWorker
from ganstream.realtime.latents import LatentSpace
from ganstream.realtime.osc import OscServer

SR = 16000
SEG = 4096
D = 8
TIMEOUT = 10.0


def target_latent(seed: int = 7) -> np.ndarray:
    """(D,) a uniform latent of its own, inside the encoder's bound (1)."""
    return np.random.default_rng(seed + 500).uniform(-0.9, 0.9, D)


def write_wav(path, audio: np.ndarray, rate: int = SR):
    sf.write(path, np.asarray(audio, np.float32), rate, subtype="FLOAT")
    return path


class Replies:
    """A reply callback that queues (address, args) for the test to wait on."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def __call__(self, address: str, args) -> None:
        self.q.put((address, list(args)))

    def next(self, timeout: float = TIMEOUT) -> tuple[str, list]:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply within {timeout} s") from None


def events(controls: Controls) -> list:
    out = []
    while (c := controls.pop()) is not None:
        out.append(c.event)
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "exact": load_bundle(make_bundle(root / "exact", segment=SEG, sample_rate=SR, latent_size=D, encoder=True)),
        "none": load_bundle(make_bundle(root / "none", segment=SEG, sample_rate=SR, latent_size=D)),
        "conditioned": load_bundle(make_conditioned_bundle(root / "cond", segment=SEG, sample_rate=SR, latent_size=D, encoder=True)),
    }


@pytest.fixture
def controls(bundles):
    return Controls.from_bundle(bundles["exact"])


@pytest.fixture
def worker(bundles, controls):
    with InvertWorker(bundles["exact"], controls) as w:
        yield w


# -- the worker ---------------------------------------------------------------------------------------------


def test_a_file_s_latent_is_set_as_a_latent_change_and_replied_done(worker, controls, tmp_path):
    z = target_latent()
    path = write_wav(tmp_path / "b.wav", reference_audio(z[None].astype(np.float32), segment=SEG, sample_rate=SR)[0])
    replies = Replies()
    worker.invert_file(str(path), replies)
    address, args = replies.next()
    assert address == DONE_ADDRESS, args
    distance, seconds, message = args
    assert isinstance(distance, float) and distance < 0.05
    assert isinstance(seconds, float) and 0.0 <= seconds < TIMEOUT
    assert message == ""  # exactly one segment: neither cut nor padded
    changes = events(controls)
    assert [type(e) for e in changes] == [ev.LatentChange]  # the path of /ganstream/latent: heard at once
    np.testing.assert_allclose(changes[0].latent, z, atol=1e-3)
    np.testing.assert_allclose(controls.latent, z, atol=1e-3)  # the mirror a preset save reads
    assert (worker.done, worker.failed) == (1, 0)


def test_live_refinement_gets_nearer_than_a_biased_encoder(tmp_path):
    """play --invert-refine N: the worker refines the encoder's latent by CMA-ES before setting it."""
    bundle = load_bundle(make_bundle(tmp_path / "biased", segment=SEG, sample_rate=SR, latent_size=D, encoder=True, encoder_bias=0.3))
    z = target_latent()
    path = write_wav(tmp_path / "b.wav", reference_audio(z[None].astype(np.float32), segment=SEG, sample_rate=SR)[0])
    distances = {}
    for refine in (0, 15):
        controls = Controls.from_bundle(bundle)
        with InvertWorker(bundle, controls, refine=refine) as w:
            replies = Replies()
            w.invert_file(str(path), replies)
            address, (distance, _, _) = replies.next()
        assert address == DONE_ADDRESS
        distances[refine] = distance
    assert distances[15] < 0.7 * distances[0], distances


def test_play_refuses_a_negative_invert_refine(bundles, capsys):
    from ganstream.realtime.cli import play_main

    assert play_main([str(bundles["exact"].source), "--invert-refine", "-1", "--no-osc", "--seconds", "0.1"]) == 2
    assert "--invert-refine must be 0 or more generations, got -1" in capsys.readouterr().err


def test_a_longer_file_is_cut_and_the_message_says_so(worker, controls, tmp_path):
    z = target_latent(3)
    audio = np.concatenate([np.zeros(SR // 10, np.float32), np.tile(reference_audio(z[None].astype(np.float32))[0], 2)])
    replies = Replies()
    worker.invert_file(str(write_wav(tmp_path / "long.wav", audio)), replies)
    address, (_, _, message) = replies.next()
    assert address == DONE_ADDRESS
    assert len(events(controls)) == 1
    assert message.startswith("cut to 0.26 s from its onset at 0.10 s"), message


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "missing.wav", "no such file"),
    (lambda d: (d / "notes.wav").write_text("not audio") and d / "notes.wav", "cannot be read as audio"),
    (lambda d: write_wav(d / "silent.wav", np.zeros(SEG)), "silent"),
])
def test_a_bad_file_is_replied_as_an_error_naming_it_and_changes_nothing(worker, controls, tmp_path, make, problem):
    path = make(tmp_path)
    before = controls.latent
    replies = Replies()
    worker.invert_file(str(path), replies)
    address, args = replies.next()
    assert address == ERROR_ADDRESS
    assert len(args) == 1 and args[0].startswith(f"{path}: ") and problem in args[0], args
    assert events(controls) == [] and np.array_equal(controls.latent, before)
    assert worker.failed == 1 and worker.running  # the worker goes on
    worker.invert_file(str(write_wav(tmp_path / "ok.wav", reference_audio(target_latent()[None].astype(np.float32))[0])), replies)
    assert replies.next()[0] == DONE_ADDRESS


def test_a_third_request_is_refused_busy_while_one_runs_and_one_waits(worker, tmp_path):
    path = str(write_wav(tmp_path / "b.wav", reference_audio(target_latent()[None].astype(np.float32))[0]))
    replying, release = threading.Event(), threading.Event()
    got: list = []

    def held(address, args):  # the first request's reply holds the worker until the test lets go
        got.append(address)
        replying.set()
        assert release.wait(TIMEOUT)

    second = Replies()
    worker.invert_file(path, held)
    assert replying.wait(TIMEOUT)  # the first is off the queue, being answered
    worker.invert_file(path, second)  # waits
    with pytest.raises(InvertBusy, match="busy"):
        worker.invert_file(path, Replies())
    with pytest.raises(InvertBusy, match="busy"):
        worker.invert_input(1.0, Replies())
    assert worker.refused == 2
    release.set()
    assert second.next()[0] == DONE_ADDRESS and got == [DONE_ADDRESS]


def test_input_records_then_inverts_and_bad_lengths_are_refused(bundles, controls):
    z = target_latent(11)
    # What a capture at 48 kHz hands the worker: one segment's length of the sound, which prepare resamples
    # to one segment at the bundle's rate (soxr's edges cost the latent a little under 1e-3).
    recorded = reference_audio(z[None].astype(np.float32), segment=3 * SEG, sample_rate=3 * SR)[0]
    asked: list = []

    def capture(seconds, stop):
        asked.append(seconds)
        return recorded, RATE

    replies = Replies()
    with InvertWorker(bundles["exact"], controls, capture=capture) as worker:
        for bad in (0.01, 31.0, math.nan, "2"):
            with pytest.raises(ValueError, match="seconds"):
                worker.invert_input(bad, replies)
        worker.invert_input(0.256, replies)
        address, (distance, _, message) = replies.next()
    assert asked == [0.256]
    assert address == DONE_ADDRESS and distance < 0.1 and message == "", (distance, message)
    (change,) = events(controls)
    np.testing.assert_allclose(change.latent, z, atol=2e-3)


def test_a_failed_recording_is_replied_as_an_error(bundles, controls):
    from ganstream.realtime.audio import AudioError

    def capture(seconds, stop):
        raise AudioError("no audio input device: connect a sound card")

    replies = Replies()
    with InvertWorker(bundles["exact"], controls, capture=capture) as worker:
        worker.invert_input(1.0, replies)
        assert replies.next() == (ERROR_ADDRESS, ["no audio input device: connect a sound card"])
        worker.invert_input(1.0, replies)  # and it goes on
        assert replies.next()[0] == ERROR_ADDRESS


def test_stopping_ends_a_recording_under_way_at_once(bundles, controls):
    recording = threading.Event()

    def capture(seconds, stop):  # as AudioCapture.record: until full (never, here) or stopped
        recording.set()
        stop.wait(seconds)
        return np.zeros(10, np.float32), RATE

    replies = Replies()
    worker = InvertWorker(bundles["exact"], controls, capture=capture).start()
    worker.invert_input(30.0, replies)
    assert recording.wait(TIMEOUT)
    waiting = Replies()
    worker.invert_file("b.wav", waiting)
    t = time.monotonic()
    worker.stop()
    assert time.monotonic() - t < 1.0
    assert replies.next() == (ERROR_ADDRESS, ["the recording was cut short: ganstream play is stopping"])
    assert waiting.next() == (ERROR_ADDRESS, ["not inverted: ganstream play is stopping"])  # one reply each
    assert events(controls) == []


def test_a_conditioned_bundle_gets_the_sample_s_pitch_then_its_latent(bundles, tmp_path):
    bundle = bundles["conditioned"]
    controls = Controls.from_bundle(bundle)
    controls.pitch_range = bundle.spec.condition.pitch_range  # what the Engine sets
    row = np.zeros((1, D + 2), np.float32)
    row[0, 0], row[0, D], row[0, D + 1] = 0.3, 55.0, 1.0
    path = write_wav(tmp_path / "g3.wav", conditioned_audio(row, latent_size=D, segment=SEG, sample_rate=SR)[0])
    replies = Replies()
    with InvertWorker(bundle, controls) as worker:
        worker.invert_file(str(path), replies)
        address, args = replies.next()
    # Not near 0: a pure sine scores ~0.2 even against its own row (ONNX Runtime's float32 sine drifts by
    # ~1e-5 over a segment, loud beside the empty bins; tests/test_invert.py).
    assert address == DONE_ADDRESS and args[0] < 0.5, args
    pitch, latent = events(controls)
    assert pitch == ev.PitchChange(55.0)
    assert isinstance(latent, ev.LatentChange) and latent.latent[0] == pytest.approx(0.3, abs=1e-3)


def test_a_bundle_without_an_encoder_has_no_worker_and_a_stopped_worker_takes_nothing(bundles, controls, tmp_path):
    with pytest.raises(BundleError, match=r"no encoder: export it with `ganstream export RUN --encoder`"):
        InvertWorker(bundles["none"], controls)
    worker = InvertWorker(bundles["exact"], controls)
    with pytest.raises(InvertBusy, match="not running"):
        worker.invert_file("x.wav", Replies())  # not started
    worker.start()
    t = time.monotonic()
    worker.stop()
    assert time.monotonic() - t < 1.0 and not worker.running
    with pytest.raises(InvertBusy, match="not running"):
        worker.invert_file("x.wav", Replies())
    worker.stop()  # twice is fine


# -- OSC over real UDP ----------------------------------------------------------------------------------------


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def serve(controls, peer, invert=None) -> OscServer:
    s = OscServer(controls, port=0, invert=invert).start()
    peer.target = ("127.0.0.1", s.port)
    return s


def test_osc_without_an_encoder_refuses_both_addresses_naming_the_encoder(bundles, peer):
    controls = Controls.from_bundle(bundles["none"])
    server = serve(controls, peer)
    try:
        peer.send("/ganstream/invert", "/tmp/x.wav")
        peer.send("/ganstream/invert/input", 1.0)
        for address in ("/ganstream/invert", "/ganstream/invert/input"):
            _, (refused, reason) = peer.reply("/ganstream/error")
            assert refused == address
            assert reason == f"{address}: this bundle has no encoder to invert with: export it with `ganstream export RUN --encoder`"
        assert server.refused == 2 and events(controls) == []
    finally:
        server.stop()


def test_osc_invert_replies_done_to_the_sender_and_sets_the_latent(bundles, controls, peer, tmp_path):
    z = target_latent(5)
    path = write_wav(tmp_path / "b.wav", reference_audio(z[None].astype(np.float32))[0])
    with InvertWorker(bundles["exact"], controls) as worker:
        server = serve(controls, peer, worker)
        try:
            peer.send("/ganstream/invert", str(path))
            _, (distance, seconds, message) = peer.reply(DONE_ADDRESS)
            assert distance < 0.05 and seconds >= 0.0 and message == ""
            (change,) = events(controls)
            np.testing.assert_allclose(change.latent, z, atol=1e-3)

            peer.send("/ganstream/invert", str(tmp_path / "nothing.wav"))
            _, (reason,) = peer.reply(ERROR_ADDRESS)
            assert reason == f"{tmp_path / 'nothing.wav'}: no such file"

            peer.send("/ganstream/invert", 3.0)  # refused before the worker sees it
            peer.send("/ganstream/invert/input", 100.0)
            peer.send("/ganstream/invert/input")
            reasons = [peer.reply("/ganstream/error")[1] for _ in range(3)]
            assert reasons == [
                ["/ganstream/invert", "the path must be a non-empty string, not a float"],
                ["/ganstream/invert/input", "seconds: 100 is out of range [0.05, 30]"],
                ["/ganstream/invert/input", "/ganstream/invert/input takes 1 number (seconds to record from the input device), got 0 arguments"],
            ]
            assert (server.applied, server.refused) == (2, 3)
        finally:
            server.stop()


def test_osc_refuses_a_request_while_the_worker_is_busy(controls, peer):
    class Busy:
        def invert_file(self, path, reply):
            raise InvertBusy("busy: an inversion is under way and another waits; send again when one replies")

        def invert_input(self, seconds, reply):
            reply(DONE_ADDRESS, [0.5, 0.01, "from a stub"])  # the reply goes back to the sender

    server = serve(controls, peer, Busy())
    try:
        peer.send("/ganstream/invert", "a.wav")
        assert peer.reply("/ganstream/error")[1] == [
            "/ganstream/invert", "/ganstream/invert: busy: an inversion is under way and another waits; send again when one replies"
        ]
        peer.send("/ganstream/invert/input", 1)
        address, args = peer.reply(DONE_ADDRESS)
        assert args[0] == pytest.approx(0.5) and args[2] == "from a stub"
    finally:
        server.stop()


# -- `ganstream play` without a sound card ---------------------------------------------------------------------


def test_play_wires_the_worker_to_osc_and_stops_it_at_exit(bundles, tmp_path, monkeypatch, capsys):
    """The whole `play` command on NullOutput (no sound card): the start line says /ganstream/invert answers,
    an inversion sets the latent (the final stats hold it), and the command ends on time with the worker."""
    import json

    from test_live_jack import free_udp_port

    from ganstream.realtime import audio
    from ganstream.realtime.cli import play_main
    from ganstream.realtime.engine import NullOutput

    monkeypatch.setattr(audio, "AudioOutput", lambda ring, sr, device=None, blocksize=256, latency="low": NullOutput(ring, sr, blocksize))
    z = target_latent(9)
    sample = write_wav(tmp_path / "b.wav", reference_audio(z[None].astype(np.float32))[0])
    port, stats = free_udp_port(), tmp_path / "stats.json"
    argv = [str(bundles["exact"].source), "--provider", "cpu", "--threads", "1", "--no-realtime", "--no-walk",
            "--osc-port", str(port), "--seconds", "2.5", "--quiet", "--stats", str(stats)]
    result: list = []
    thread = threading.Thread(target=lambda: result.append(play_main(argv)), daemon=True)
    started = time.monotonic()
    thread.start()
    peer = Peer()
    peer.target = ("127.0.0.1", port)
    try:
        reply = None
        while reply is None:  # until the server listens
            assert thread.is_alive() and time.monotonic() < started + TIMEOUT, result
            peer.send("/ganstream/invert", str(sample))
            try:
                reply = peer.reply(DONE_ADDRESS, timeout=0.3)
            except AssertionError:
                pass
    finally:
        peer.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive() and result == [0]
    assert time.monotonic() - started < 2.5 + 5.0  # the worker's stop did not hold the exit up
    err = capsys.readouterr().err
    assert "; OSC on 127.0.0.1:" in err and "; /ganstream/invert with the bundle's encoder" in err, err
    np.testing.assert_allclose(json.loads(stats.read_text())["latent"], z, atol=1e-3)


def test_play_warns_that_input_device_is_unused_without_an_encoder(bundles, monkeypatch, capsys):
    from ganstream.realtime import audio
    from ganstream.realtime.cli import play_main
    from ganstream.realtime.engine import NullOutput

    monkeypatch.setattr(audio, "AudioOutput", lambda ring, sr, device=None, blocksize=256, latency="low": NullOutput(ring, sr, blocksize))
    argv = [str(bundles["none"].source), "--provider", "cpu", "--threads", "1", "--no-realtime", "--no-osc",
            "--seconds", "0.3", "--quiet", "--input-device", "mic"]
    assert play_main(argv) == 0
    err = capsys.readouterr().err
    assert "ganstream play: warning: --input-device is unused: test has no encoder" in err, err
    assert "/ganstream/invert" not in err


# -- `ganstream play` on JACK ---------------------------------------------------------------------------------

SEED_A = 3  # the latent play starts from (--seed), and B below: chosen so the check below tells them apart


def latent_b() -> np.ndarray:
    return np.random.default_rng(102).uniform(-1.0, 1.0, D)


def period_48k(z: np.ndarray) -> np.ndarray:
    """One period of what the generator makes of z, at 48 kHz: its harmonics (a whole number of cycles per
    segment) evaluated at three times the rate, which is what the live resampler passes on (all below 1 kHz)."""
    return reference_audio(np.asarray(z, np.float32)[None], segment=3 * SEG, sample_rate=3 * SR)[0]


def best_correlation(x: np.ndarray, z: np.ndarray, window: int = 4096, hop: int = 256) -> float:
    """The highest normalised correlation of any `window` samples of x with the same length of z's periodic
    sound at any lag: 1 where x holds a stretch one segment plays alone (between crossfades), wherever it
    lies in the recording. The stream crossfades consecutive segments, which start at other phases, so a
    window across a join matches less."""
    ref = period_48k(z)
    p = len(ref)
    spectrum = np.fft.rfft(ref)
    box = np.fft.rfft(np.r_[np.ones(window), np.zeros(p - window)])
    energy = np.fft.irfft(np.conj(box) * np.fft.rfft(ref**2), p)  # energy of ref[lag : lag + window], circularly
    best = -1.0
    for i in range(0, len(x) - window + 1, hop):
        w = x[i : i + window].astype(np.float64)
        dot = np.fft.irfft(np.conj(np.fft.rfft(w, p)) * spectrum, p)
        best = max(best, float(np.max(dot / np.sqrt(np.maximum(energy, 1e-12) * np.dot(w, w)))))
    return best


def longest_silence(x: np.ndarray, floor: float = 1e-6) -> int:
    """The longest run of samples whose magnitude is below `floor`."""
    quiet = np.r_[False, np.abs(x) < floor, False]
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return int(np.max(edges[1::2] - edges[0::2])) if len(edges) else 0


def test_the_check_tells_latent_a_from_latent_b():
    """The negative control of the JACK test's measure: each latent's sound matches itself exactly and the
    other one far less, at every window and lag."""
    a, b = LatentSpace(D).seed_latent(SEED_A), latent_b()
    one_of_each = [np.tile(period_48k(z), 2) for z in (a, b)]
    assert best_correlation(one_of_each[0], a, hop=1024) > 0.999
    assert best_correlation(one_of_each[1], b, hop=1024) > 0.999
    assert best_correlation(one_of_each[0], b, hop=512) < 0.6
    assert best_correlation(one_of_each[1], a, hop=512) < 0.6
    # And the gap detector finds a 5 ms dropout in a sound (a sine's own zero crossings are single samples).
    x = np.sin(2 * np.pi * 110 * np.arange(RATE) / RATE)
    assert longest_silence(x) <= 1
    x[RATE // 2 : RATE // 2 + RATE // 200] = 0.0
    assert longest_silence(x) >= RATE // 200 > RATE // 500


def play_on_jack(bundle, osc_port: int, *args: str) -> subprocess.Popen:
    from test_live_jack import ordinary_priority

    return subprocess.Popen(
        [
            sys.executable, "-m", "ganstream.main", "play", str(bundle), "--provider", "cpu", "--threads", "1",
            "--no-walk", "--osc-port", str(osc_port), "--quiet", "--seconds", "60", *args,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ordinary_priority,
    )


def wait_for_sound(engine, rec, seconds: float, deadline: float) -> int:
    """Wait until the recording holds `seconds` of sound; -> the index of its first sample."""
    while np.count_nonzero(rec.buf[: rec.n]) < seconds * RATE:
        assert engine.poll() is None, engine.stdout.read()
        assert time.monotonic() < deadline, "no sound came through JACK"
        time.sleep(0.02)
    return int(np.flatnonzero(rec.buf[: rec.n])[0])


def record_more(engine, rec, seconds: float) -> int:
    """Keep recording `seconds` more while play runs; -> how many samples the recording then holds."""
    until = rec.n + round(seconds * RATE)
    while rec.n < until:
        assert engine.poll() is None, engine.stdout.read()
        time.sleep(0.02)
    return rec.n


def interrupt(engine) -> str:
    engine.send_signal(signal.SIGINT)
    out, _ = engine.communicate(timeout=30)
    return out


@pytest.mark.timeout(90)
def test_play_on_jack_inverts_a_file_and_plays_its_latent_without_a_gap(jack_server, tmp_path):
    """`ganstream play` plays latent A (--seed); /ganstream/invert PATH, a WAV of the generator's sound for
    latent B, replies done and from then on play plays B's sound; the recording, across the change, never
    falls silent."""
    pytest.importorskip("jack", reason="JACK-Client is not installed (pip install JACK-Client; the test extra has it)")
    from test_live_jack import Recorder, free_udp_port

    bundle = make_bundle(tmp_path / "inv.gsb", segment=SEG, sample_rate=SR, latent_size=D, encoder=True)
    a, b = LatentSpace(D).seed_latent(SEED_A), latent_b()
    sample = write_wav(tmp_path / "b.wav", reference_audio(b[None].astype(np.float32), segment=SEG, sample_rate=SR)[0])
    osc_port = free_udp_port()
    engine = play_on_jack(bundle, osc_port, "--seed", str(SEED_A))
    rec, peer = None, Peer()
    peer.target = ("127.0.0.1", osc_port)
    try:
        deadline = time.monotonic() + 30
        rec = Recorder(str(jack_server), 30.0)
        connect_recorder(engine, rec, deadline)
        first = wait_for_sound(engine, rec, 1.0, deadline)
        sent = rec.n
        peer.send("/ganstream/invert", str(sample))
        _, (distance, seconds, message) = peer.reply(DONE_ADDRESS, timeout=TIMEOUT)
        replied = rec.n
        end = record_more(engine, rec, 1.6)
        out = interrupt(engine)
    finally:
        stop(engine)
        peer.close()
        if rec is not None:
            rec.close()
    assert engine.returncode == 0, out
    assert "/ganstream/invert with the bundle's encoder" in out, out
    assert distance < 0.05 and message == "", (distance, message)
    print(f"\ninverted in {1000 * seconds:.1f} ms (distance {distance:.4f}); replied "
          f"{1000 * (replied - sent) / RATE:.0f} ms of audio after it was sent")

    y = rec.buf[:end]
    with rec.judging(first, end):
        before = y[first + RATE // 4 : sent]  # the fade-in left out
        after = y[replied + RATE // 2 : end]  # the step's crossfade and glide left out
        scores = {(part, z): best_correlation(x, latent) for part, x in (("before", before), ("after", after))
                  for z, latent in (("A", a), ("B", b))}
        print("best correlations:", {f"{p} with {z}": round(v, 4) for (p, z), v in scores.items()})
        assert scores["before", "A"] > 0.95 and scores["before", "B"] < 0.75, scores
        assert scores["after", "B"] > 0.95 and scores["after", "A"] < 0.75, scores
        # The audio never stopped: from the first sound to the end no run of silence longer than 2 ms.
        assert longest_silence(y[first:end]) < RATE // 500, longest_silence(y[first:end])


@pytest.mark.timeout(90)
def test_play_on_jack_inverts_what_its_input_hears(jack_server, tmp_path):
    """/ganstream/invert/input 1.5 on a pitch-conditioned bundle: play opens its JACK input port and records;
    a JACK client plays a note (G4) into it; play replies done and its drone moves from the middle of the
    range (C4) to G4, never falling silent."""
    jack = pytest.importorskip("jack", reason="JACK-Client is not installed (pip install JACK-Client; the test extra has it)")
    from test_condition_live import midi_hz, note_of, period_hz
    from test_live_jack import Recorder, free_udp_port
    from test_transpose import cents

    note = 67
    bundle = make_conditioned_bundle(tmp_path / "keys.gsb", segment=SEG, sample_rate=SR, latent_size=D, encoder=True)
    # The note a player sends: 0.4 s of a sine at 0.45, starting at the phase that puts phase 0 where the
    # inversion's onset cut begins (5 ms, 80 samples at 16 kHz, before the onset); the factory's encoder
    # measures each note's sine at phase 0.
    w = 2 * np.pi * midi_hz(note)
    t = np.arange(round(0.4 * RATE)) / RATE
    shot = (0.45 * np.sin(w * (t + 80 / SR))).astype(np.float32)
    osc_port = free_udp_port()
    engine = play_on_jack(bundle, osc_port)
    rec = player = None
    peer = Peer()
    peer.target = ("127.0.0.1", osc_port)
    try:
        deadline = time.monotonic() + 30
        rec = Recorder(str(jack_server), 30.0)
        connect_recorder(engine, rec, deadline)  # before the player's port exists: the engine's is the only one
        first = wait_for_sound(engine, rec, 0.5, deadline)
        player = Player(jack, str(jack_server), shot)
        known = {p.name for p in player.client.get_ports(is_audio=True, is_input=True)}
        peer.send("/ganstream/invert/input", 1.5)
        port = None
        while port is None:  # play's input port appears when its recording starts
            assert engine.poll() is None, engine.stdout.read()
            assert time.monotonic() < deadline, "play's JACK input port did not appear"
            new = [p for p in player.client.get_ports(is_audio=True, is_input=True) if p.name not in known]
            port = new[0] if new else None
            time.sleep(0.005)
        player.client.connect(player.port, port)
        time.sleep(0.3)  # the recording has begun by now
        player.go = True
        _, (distance, seconds, message) = peer.reply(DONE_ADDRESS, timeout=TIMEOUT)
        replied = rec.n
        end = record_more(engine, rec, 1.2)
        out = interrupt(engine)
    finally:
        stop(engine)
        peer.close()
        for client in (player, rec):
            if client is not None:
                client.close()
    assert engine.returncode == 0, out
    assert message.startswith("cut to 0.26 s from its onset"), message
    print(f"\ninput inverted in {1000 * seconds:.1f} ms after the recording, distance {distance:.3f}: {message}")
    y = rec.buf[:end]
    with rec.judging(first, end):
        before = y[first + RATE // 4 : first + RATE // 2]
        after = y[replied + RATE // 2 : end]
        assert abs(cents(period_hz(before, RATE), midi_hz(60))) < 10.0, note_of(period_hz(before, RATE))
        error = cents(period_hz(after, RATE), midi_hz(note))
        assert abs(error) < 10.0, note_of(period_hz(after, RATE))
        assert longest_silence(y[first:end]) < RATE // 500, longest_silence(y[first:end])


class Player:
    """A JACK client with one output port that plays `shot` once when `go` is set, silence otherwise."""

    def __init__(self, jack, server: str, shot: np.ndarray):
        self.client = jack.Client(f"ganstream-test-player-{os.getpid()}", servername=server, no_start_server=True)
        self.port = self.client.outports.register("out")
        self.shot, self.at, self.go = shot, 0, False
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        out = self.port.get_array()
        out.fill(0.0)
        if self.go and self.at < len(self.shot):
            k = min(frames, len(self.shot) - self.at)
            out[:k] = self.shot[self.at : self.at + k]
            self.at += k

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()
