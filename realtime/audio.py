"""Sound output through PortAudio (sounddevice): ALSA, JACK, CoreAudio, WASAPI.

The callback only copies from the ring into the device buffer and notes the
stream position and the device's output time of the block; everything heavy
happens in the producer thread. Mono goes to every output channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic as _monotonic
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
class OutputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float


def output_devices() -> list[OutputDevice]:
    sd = _sd()
    apis = sd.query_hostapis()
    return [
        OutputDevice(i, d["name"], apis[d["hostapi"]]["name"], d["max_output_channels"], d["default_samplerate"])
        for i, d in enumerate(sd.query_devices())
        if d["max_output_channels"] > 0
    ]


def describe_devices() -> str:
    """The text of `ganstream devices`."""
    devices = output_devices()
    if not devices:
        return "no audio output devices found (connect a sound card, or start a JACK server: jackd -d alsa / jackd -d dummy)"
    sd = _sd()
    default = sd.default.device[1]
    lines = [f"{'*' if d.index == default else ' '} {d.index:3d}  {d.name}  [{d.hostapi}, {d.channels} ch, {d.default_rate:g} Hz]" for d in devices]
    return "\n".join(["output devices (* = default):", *lines])


def resolve_device(spec: str | int | None) -> OutputDevice:
    """An output device from an index, a name, or a case-insensitive substring of 'name [host API]'."""
    devices = output_devices()
    if not devices:
        raise AudioError("no audio output device: connect a sound card, or start a JACK server (jackd -d alsa, or jackd -d dummy without one)")
    if spec is None or spec == "":
        default = _sd().default.device[1]
        for d in devices:
            if d.index == default:
                return d
        return devices[0]
    if isinstance(spec, int) or str(spec).isdigit():
        for d in devices:
            if d.index == int(spec):
                return d
        raise AudioError(f"--device {spec}: no output device with that index; `ganstream devices` lists them")
    matches = [d for d in devices if str(spec).lower() in f"{d.name} [{d.hostapi}]".lower()]
    if not matches:
        raise AudioError(f"--device {spec!r}: no output device matches; `ganstream devices` lists them")
    exact = [d for d in matches if d.name.lower() == str(spec).lower()]
    if len(matches) > 1 and not exact:
        names = ", ".join(f"{d.index}: {d.name} [{d.hostapi}]" for d in matches)
        raise AudioError(f"--device {spec!r} matches several outputs ({names}); give an index or a longer name")
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


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
