"""Sound through PortAudio (sounddevice): ALSA, JACK, CoreAudio, WASAPI.

`AudioOutput` plays the ring. Its callback only copies from the ring into the
device buffer and notes the stream position and the device's output time of
the block; everything heavy happens in the producer thread. Mono goes to every
output channel.

`AudioCapture` records a few seconds from an input device, for
`/ganstream/invert/input` (realtime/invert_live.py): another stream beside the
output, whose callback only copies into a preallocated buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic as _monotonic
from time import sleep as _sleep
from typing import Any

import numpy as np

from .ring import Ring


class AudioError(RuntimeError):
    """No usable output: the message says what is wrong and how to fix it."""


def _sd() -> Any:
    try:
        import sounddevice
    except OSError as e:  # the PortAudio library itself is missing
        raise AudioError(f"PortAudio is not installed ({e}); on Debian/Ubuntu: sudo apt-get install libportaudio2") from None
    return sounddevice


@dataclass(frozen=True)
class Device:
    """A PortAudio device as one direction sees it: `channels` counts its output channels in
    `output_devices`, its input channels in `input_devices`."""

    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float


def output_devices() -> list[Device]:
    sd = _sd()
    apis = sd.query_hostapis()
    return [
        Device(i, d["name"], apis[d["hostapi"]]["name"], d["max_output_channels"], d["default_samplerate"])
        for i, d in enumerate(sd.query_devices())
        if d["max_output_channels"] > 0
    ]


def describe_devices() -> str:
    """The text of `ganstream devices`: the outputs, then the inputs (for `play --input-device`) if any."""
    devices = output_devices()
    if not devices:
        return "no audio output devices found (connect a sound card, or start a JACK server: jackd -d alsa / jackd -d dummy)"
    sd = _sd()

    def lines(devices: list[Device], default: int) -> list[str]:
        return [f"{'*' if d.index == default else ' '} {d.index:3d}  {d.name}  [{d.hostapi}, {d.channels} ch, {d.default_rate:g} Hz]" for d in devices]

    inputs = input_devices()
    text = ["output devices (* = default):", *lines(devices, sd.default.device[1])]
    if inputs:
        text += ["", "input devices, for play --input-device (* = default):", *lines(inputs, sd.default.device[0])]
    return "\n".join(text)


def input_devices() -> list[Device]:
    """The devices with input channels (`channels` counts those), as `output_devices` lists outputs."""
    sd = _sd()
    apis = sd.query_hostapis()
    return [
        Device(i, d["name"], apis[d["hostapi"]]["name"], d["max_input_channels"], d["default_samplerate"])
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


def resolve_device(spec: str | int | None) -> Device:
    """An output device from an index, a name, or a case-insensitive substring of 'name [host API]'."""
    devices = output_devices()
    if not devices:
        raise AudioError("no audio output device: connect a sound card, or start a JACK server (jackd -d alsa, or jackd -d dummy without one)")
    return _pick(devices, spec, 1, "--device", "output")


def resolve_input_device(spec: str | int | None, option: str = "--input-device") -> Device:
    """An input device, as `resolve_device` finds an output; `option` names the option in errors."""
    devices = input_devices()
    if not devices:
        raise AudioError("no audio input device: connect a sound card, or start a JACK server (jackd -d alsa, or jackd -d dummy without one)")
    return _pick(devices, spec, 0, option, "input")


def _pick(devices: list[Device], spec: str | int | None, default_slot: int, option: str, kind: str) -> Device:
    """The device `spec` names among `devices` (PortAudio's default, sd.default.device[default_slot], for None)."""
    if spec is None or spec == "":
        default = _sd().default.device[default_slot]
        for d in devices:
            if d.index == default:
                return d
        return devices[0]
    if isinstance(spec, int) or str(spec).isdigit():
        for d in devices:
            if d.index == int(spec):
                return d
        raise AudioError(f"{option} {spec}: no {kind} device with that index; `ganstream devices` lists them")
    matches = [d for d in devices if str(spec).lower() in f"{d.name} [{d.hostapi}]".lower()]
    if not matches:
        raise AudioError(f"{option} {spec!r}: no {kind} device matches; `ganstream devices` lists them")
    exact = [d for d in matches if d.name.lower() == str(spec).lower()]
    if len(matches) > 1 and not exact:
        names = ", ".join(f"{d.index}: {d.name} [{d.hostapi}]" for d in matches)
        raise AudioError(f"{option} {spec!r} matches several {kind}s ({names}); give an index or a longer name")
    return (exact or matches)[0]


def rescan() -> None:
    """Re-initialise PortAudio so it sees servers and devices that appeared since it started (a JACK server)."""
    sd = _sd()
    sd._terminate()
    sd._initialize()


LOG_BLOCKS = 1 << 13  # blocks remembered (position, DAC time) for latency measurement
MAX_CHANNELS = 32


class AudioOutput:
    """A PortAudio output stream that plays what the producer writes into `ring`, mono to every channel.

    The callback copies one block from the ring and notes where it was in the
    stream and when it reaches the DAC (PortAudio's outputBufferDacTime) in a
    preallocated log: no allocation of buffers, no lock, no I/O.
    """

    def __init__(self, ring: Ring, sample_rate: int, device: str | int | None = None, blocksize: int = 256, latency: str | float = "low"):
        sd = _sd()
        self.ring = ring
        self.device = resolve_device(device)
        self.name = f"{self.device.name} [{self.device.hostapi}]"
        self.sample_rate = sample_rate
        self.blocksize = blocksize
        self.channels = max(1, min(MAX_CHANNELS, self.device.channels))
        try:
            sd.check_output_settings(self.device.index, channels=self.channels, dtype="float32", samplerate=sample_rate)
        except Exception as e:
            raise AudioError(
                f"{self.name} does not play {sample_rate} Hz ({_reason(e)}); "
                f"use --sample-rate {int(self.device.default_rate)} (its default) or another --device"
            ) from None
        self.xruns = 0  # blocks the device itself reported as underflowed
        # Written by the callback only; read by the status line and the latency measurement.
        self.block_pos = np.zeros(LOG_BLOCKS, dtype=np.int64)  # ring position of each block's first sample
        self.block_dac = np.zeros(LOG_BLOCKS, dtype=np.float64)  # when that sample reaches the DAC
        self.blocks = 0
        self.xrun_blocks = np.zeros(64, dtype=np.int64)  # block numbers of the last 64 underflows
        # Callbacks that began more than half a block after PortAudio called back (this process's
        # fault: a thread kept the GIL), and the longest such wait in seconds.
        self.late_callbacks = 0
        self.late_blocks = np.zeros(64, dtype=np.int64)
        self.callback_wait_max = 0.0
        self._late = 0.5 * blocksize / sample_rate
        self.first_sound: tuple[float, float] | None = None  # (DAC time, time.monotonic()) of the first sound
        self._mask = LOG_BLOCKS - 1
        try:
            self._stream = sd.OutputStream(
                samplerate=sample_rate, blocksize=blocksize, device=self.device.index, channels=self.channels,
                dtype="float32", latency=latency, callback=self._callback,
            )
        except Exception as e:
            raise AudioError(
                f"cannot open {self.name} at {sample_rate} Hz with {blocksize}-frame blocks ({_reason(e)}); "
                f"try another --blocksize, --sample-rate {int(self.device.default_rate)} or --device"
            ) from None

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        # How long after the host called back this Python code runs: waiting for the GIL, mostly.
        wait = self._stream.time - time.currentTime
        if wait > self.callback_wait_max:
            self.callback_wait_max = wait
        if wait > self._late:
            self.late_blocks[self.late_callbacks & 63] = self.blocks
            self.late_callbacks += 1
        if status.output_underflow:
            self.xrun_blocks[self.xruns & 63] = self.blocks
            self.xruns += 1
        i = self.blocks & self._mask
        self.block_pos[i] = self.ring.read_position
        self.block_dac[i] = time.outputBufferDacTime
        n = self.ring.read_into(outdata[:, 0])
        if self.channels > 1:
            outdata[:, 1:] = outdata[:, :1]
        self.blocks += 1
        if n and self.first_sound is None:
            self.first_sound = (time.outputBufferDacTime, _monotonic())

    @property
    def latency(self) -> float:
        """The device's output latency in seconds, as PortAudio reports it."""
        return float(self._stream.latency)

    def time(self) -> float:
        """Now, on the same clock as the DAC times."""
        return float(self._stream.time)

    def start(self) -> None:
        self._stream.start()

    def stop(self) -> None:
        try:
            self._stream.stop()
        finally:
            self._stream.close()


CAPTURE_POLL_S = 0.005  # how often `AudioCapture.record` looks whether the buffer is full
CAPTURE_START_S = 5.0  # time allowed, beyond its length, for a capture's stream to start and fill


class AudioCapture:
    """One recording of `seconds` from an input device (`resolve_input_device(device, option)`), at the
    device's default rate, its first channel, for `/ganstream/invert/input`.

    The callback copies each block into a buffer allocated here, advancing an index, until the buffer is
    full: no allocation of buffers, no lock, no logging, no I/O. `record` starts the stream, waits (polling
    the index) until the buffer is full or `stop` is set, then stops and closes it. The output stream is
    another stream: it plays on while this one records."""

    def __init__(self, seconds: float, device: str | int | None = None, option: str = "--input-device"):
        sd = _sd()
        self.device = resolve_input_device(device, option)
        self.name = f"{self.device.name} [{self.device.hostapi}]"
        self.sample_rate = int(self.device.default_rate)
        self.buffer = np.zeros(max(1, round(seconds * self.sample_rate)), dtype=np.float32)
        self.filled = 0  # written by the callback only
        self.overflows = 0  # blocks the device reported as overflowed (samples lost)
        try:
            self._stream = sd.InputStream(
                samplerate=self.sample_rate, device=self.device.index, channels=1, dtype="float32", callback=self._callback,
            )
        except Exception as e:
            raise AudioError(
                f"cannot record from {self.name} at {self.sample_rate} Hz ({_reason(e)}); give another {option}"
            ) from None

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        n = self.filled
        k = min(frames, self.buffer.shape[0] - n)
        if k > 0:
            self.buffer[n : n + k] = indata[:k, 0]
            self.filled = n + k

    def record(self, stop: Any = None) -> np.ndarray:
        """Start, wait until the buffer is full, stop; -> (T,) float32 at `sample_rate`, a view of the buffer.

        stop: a threading.Event; when set, the recording ends early and what was recorded is returned.
        AudioError if the stream cannot start, or does not fill within CAPTURE_START_S beyond its length."""
        total = self.buffer.shape[0]
        try:
            self._stream.start()
        except Exception as e:
            self._stream.close()
            raise AudioError(f"cannot start recording from {self.name} ({_reason(e)})") from None
        deadline = _monotonic() + total / self.sample_rate + CAPTURE_START_S
        try:
            while self.filled < total and not (stop is not None and stop.is_set()):
                if _monotonic() > deadline:
                    raise AudioError(
                        f"{self.name} gave {self.filled / self.sample_rate:.2f} s of audio in "
                        f"{total / self.sample_rate + CAPTURE_START_S:.1f} s, not {total / self.sample_rate:.2f} s: is it running?"
                    )
                _sleep(CAPTURE_POLL_S)
        finally:
            try:
                self._stream.stop()
            finally:
                self._stream.close()
        return self.buffer[: self.filled]


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
