"""Sound output through PortAudio (sounddevice): ALSA, JACK, CoreAudio, WASAPI.

The callback only copies from the ring into the device buffer and notes the
stream position and the device's output time of the block; everything heavy
happens in the producer thread. Mono goes to every output channel.
"""

from __future__ import annotations

from dataclasses import dataclass
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


class AudioOutput:
    """A PortAudio output stream that plays what the producer writes into `ring`."""

    def __init__(self, ring: Ring, sample_rate: int, device: str | int | None = None, blocksize: int = 256, latency: str | float = "low"):
        sd = _sd()
        self.ring = ring
        self.device = resolve_device(device)
        self.sample_rate = sample_rate
        self.blocksize = blocksize
        self.channels = max(1, min(2, self.device.channels))
        try:
            sd.check_output_settings(self.device.index, channels=self.channels, dtype="float32", samplerate=sample_rate)
        except Exception as e:
            raise AudioError(
                f"{self.device.name} [{self.device.hostapi}] does not play {sample_rate} Hz ({e}); "
                f"use --sample-rate {int(self.device.default_rate)} (its default) or another --device"
            ) from None
        self.xruns = 0  # blocks the device itself reported as underflowed
        # Written by the callback, read by the status line and the latency benchmark.
        self.last_block_position = 0  # stream sample position of the last block's first sample
        self.last_block_dac_time = 0.0  # when that sample reaches the DAC, on the stream's clock
        self._stream = sd.OutputStream(
            samplerate=sample_rate, blocksize=blocksize, device=self.device.index, channels=self.channels,
            dtype="float32", latency=latency, callback=self._callback,
        )

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status.output_underflow:
            self.xruns += 1
        self.last_block_position = self.ring.read_position
        self.last_block_dac_time = time.outputBufferDacTime
        self.ring.read_into(outdata[:, 0])
        if self.channels > 1:
            outdata[:, 1:] = outdata[:, :1]

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
        self._stream.stop()
        self._stream.close()
