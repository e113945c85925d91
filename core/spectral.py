"""The spectral front end shared by training, export and the engine, in numpy (no torch).

Framing. A clip of T samples has `frames(T) = T // hop` frames. Frame k is
centred on sample k * hop: the signal is padded with n_fft // 2 zeros on each
side (torch.stft(center=True, pad_mode="constant")) and the frame centred on
sample T, past the end, is dropped. Inverting F frames gives `samples(F) =
F * hop` samples. So SpecGAN's 16384 samples at hop 128 are 128 frames, and
the progressive GAN's 65536 samples at n_fft 1024, hop 128 are 512 frames.

Bins. `drop_nyquist` (SpecGAN) keeps bins 0 .. n_fft/2 - 1, so n_fft 256 gives
128 rows; inversion puts the Nyquist bin back as zeros. `mel_bins > 0` maps the
magnitudes through a mel filterbank instead (`mel_filterbank`).

Normalisation (`BinNorm`, the SpecGAN recipe): per-bin mean and standard
deviation of the log-magnitude over the training set; x -> (x - mean) / std,
clipped at +-clip standard deviations, divided by clip, so values lie in
[-1, 1]. The bundle stores mean and std as .npy side files.

training/spectral.py has the same functions on torch tensors; tests hold them
to 1e-5 of these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

WINDOWS = ("hann",)


class SpectralError(ValueError):
    """Spectral parameters or statistics that cannot work; the message names the field."""


@dataclass(frozen=True)
class SpectralParams:
    """STFT, log-magnitude and bin layout of a spectral model (stored as `spectral.params` in a bundle).

    sample_rate: Hz. n_fft: FFT size (even). hop: frame step, at most n_fft / 2 (so that
    every sample, the last hop included, lies under a window). window: "hann" (periodic).
    log_floor: magnitudes are floored here before the log. mel_bins: 0 for linear bins, else
    the number of mel bands. drop_nyquist: drop the Nyquist bin (linear bins only).
    """

    sample_rate: int = 16000
    n_fft: int = 256
    hop: int = 128
    window: str = "hann"
    log_floor: float = 1e-5
    mel_bins: int = 0
    drop_nyquist: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "spectral") -> None:
        def bad(name: str, why: str) -> SpectralError:
            return SpectralError(f"{where}.{name}: {why}, not {getattr(self, name)!r}")

        for name in ("sample_rate", "n_fft", "hop", "mel_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise bad(name, "must be an integer")
        if self.sample_rate <= 0:
            raise bad("sample_rate", "must be positive")
        if self.n_fft < 4 or self.n_fft % 2:
            raise bad("n_fft", "must be even and at least 4")
        if not 1 <= self.hop <= self.n_fft // 2:
            raise bad("hop", f"must be 1 .. n_fft / 2 = {self.n_fft // 2}")
        if self.window not in WINDOWS:
            raise bad("window", f"must be one of {', '.join(WINDOWS)}")
        if not (isinstance(self.log_floor, (int, float)) and np.isfinite(self.log_floor) and self.log_floor > 0):
            raise bad("log_floor", "must be a positive number")
        if not 0 <= self.mel_bins <= self.stft_bins:
            raise bad("mel_bins", f"must be 0 (linear bins) .. {self.stft_bins}")
        if not isinstance(self.drop_nyquist, (bool, np.bool_)):
            raise bad("drop_nyquist", "must be true or false")

    @property
    def stft_bins(self) -> int:
        """Rows of the complex STFT: n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    @property
    def bins(self) -> int:
        """Rows of the (log-)magnitude a model sees."""
        if self.mel_bins:
            return self.mel_bins
        return self.n_fft // 2 if self.drop_nyquist else self.stft_bins

    def frames(self, samples: int) -> int:
        """Frames of a clip of `samples` samples (see the module docstring)."""
        return int(samples) // self.hop

    def samples(self, frames: int) -> int:
        """Samples that `frames` frames invert to."""
        return int(frames) * self.hop

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "spectral") -> "SpectralParams":
        if not isinstance(d, Mapping):
            raise SpectralError(f"{where}: must be a mapping of spectral parameters, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpectralError(f"{where}.{unknown[0]}: unknown spectral parameter (known: {', '.join(sorted(known))})")
        try:
            params = cls.__new__(cls)
            for f in fields(cls):
                object.__setattr__(params, f.name, d.get(f.name, f.default))
            params.validate(where)
        except TypeError as e:
            raise SpectralError(f"{where}: {e}") from None
        return params


@dataclass(frozen=True)
class BinNorm:
    """Per-bin statistics of the log-magnitude: mean (bins,), std (bins,), and the clip in std units."""

    mean: np.ndarray
    std: np.ndarray
    clip: float = 3.0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise SpectralError(f"norm: mean and std must be non-empty and of one length, not {mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise SpectralError("norm: mean and std must be finite")
        if np.any(std <= 0):
            raise SpectralError(f"norm: std must be positive in every bin (bin {int(np.argmin(std))} is {float(std.min())})")
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise SpectralError(f"norm.clip: must be a positive number, not {self.clip!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "clip", float(self.clip))

    @property
    def bins(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_arrays(cls, mean: np.ndarray, std: np.ndarray, clip: float = 3.0) -> "BinNorm":
        return cls(mean, std, clip)

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each (bins,) float32: the bundle's side files."""
        return self.mean, self.std

    @classmethod
    def from_moments(cls, total: np.ndarray, total_sq: np.ndarray, count: int, clip: float = 3.0, min_std: float = 1e-3) -> "BinNorm":
        """From per-bin sums of x and x^2 over `count` values each (float64 for accuracy)."""
        if count < 2:
            raise SpectralError(f"norm: need at least 2 frames to estimate a standard deviation, got {count}")
        mean = np.asarray(total, np.float64) / count
        var = np.asarray(total_sq, np.float64) / count - mean**2
        return cls(mean, np.sqrt(np.maximum(var, min_std**2)), clip)

    def normalise(self, log_mag: np.ndarray) -> np.ndarray:
        """(..., bins, frames) log-magnitude -> values in [-1, 1]."""
        return normalise(log_mag, self)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        """(..., bins, frames) in [-1, 1] -> log-magnitude."""
        return denormalise(x, self)


def normalise(log_mag: np.ndarray, norm: BinNorm) -> np.ndarray:
    """(..., bins, frames) -> (x - mean) / std clipped at +-clip, over clip: in [-1, 1]."""
    z = (np.asarray(log_mag, np.float32) - norm.mean[:, None]) / norm.std[:, None]
    return (np.clip(z, -norm.clip, norm.clip) / norm.clip).astype(np.float32)


def denormalise(x: np.ndarray, norm: BinNorm) -> np.ndarray:
    """The inverse of `normalise` where nothing was clipped."""
    return (np.asarray(x, np.float32) * norm.clip * norm.std[:, None] + norm.mean[:, None]).astype(np.float32)


@lru_cache(maxsize=16)
def _window(n_fft: int) -> np.ndarray:
    """The periodic Hann window (torch.hann_window's default), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def window(p: SpectralParams) -> np.ndarray:
    """(n_fft,) float64 analysis and synthesis window."""
    return _window(p.n_fft)


def stft(audio: np.ndarray, p: SpectralParams) -> np.ndarray:
    """(..., T) -> complex64 (..., n_fft // 2 + 1, T // hop): centred frames, zero padded."""
    x = np.asarray(audio, dtype=np.float64)
    n = p.frames(x.shape[-1])
    half = p.n_fft // 2
    pad = [(0, 0)] * (x.ndim - 1) + [(half, half)]
    padded = np.pad(x, pad)
    starts = np.arange(n) * p.hop
    frames = padded[..., starts[:, None] + np.arange(p.n_fft)[None, :]]  # (..., n, n_fft)
    spec = np.fft.rfft(frames * window(p), axis=-1)
    return np.swapaxes(spec, -1, -2).astype(np.complex64)


# At hop = n_fft / 2 the last hop of a clip lies under the tail of one window only, where the
# squared-window envelope falls to 0. Dividing by it there amplifies any inconsistency of a
# generated spectrogram by up to 1 / window: measured on random-phase spectra, the last hop peaked
# at a median 776x the rest of the clip, and still 8x with a floor of 1e-3 (a click at every
# segment's end). Floored at 0.1 the gain is at most 1 / sqrt(0.1) = 3.2 (median 1.1x) and the
# output fades over the last 3/8 of that hop (48 of 128 samples) instead of inverting exactly;
# the engine's crossfade covers them. With hop <= n_fft / 4 the envelope never falls below 0.1.
ENVELOPE_FLOOR = 0.1


def overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """(..., F, n) frames -> (..., (F - 1) * hop + n) float64: frame k added in at sample k * hop."""
    *lead, count, n = frames.shape
    if n % hop:  # the general case, one frame at a time
        out = np.zeros((*lead, (count - 1) * hop + n))
        for k in range(count):
            out[..., k * hop : k * hop + n] += frames[..., k, :]
        return out
    # n = r * hop: chunk i of frame k lands on output block k + i, so r shifted block-wise adds do it all.
    r = n // hop
    chunks = frames.reshape(*lead, count, r, hop)
    out = np.zeros((*lead, count + r - 1, hop))
    for i in range(r):
        out[..., i : i + count, :] += chunks[..., i, :]
    return out.reshape(*lead, (count + r - 1) * hop)


@lru_cache(maxsize=64)
def envelope(n_fft: int, hop: int, frames: int) -> np.ndarray:
    """(frames * hop,) overlap-added squared window of `frames` centred frames, float64, read-only."""
    w2 = np.broadcast_to(_window(n_fft) ** 2, (frames, n_fft))
    env = overlap_add(w2, hop)[n_fft // 2 : n_fft // 2 + frames * hop]
    env.setflags(write=False)
    return env


def istft(spec: np.ndarray, p: SpectralParams, length: int | None = None) -> np.ndarray:
    """complex (..., n_fft // 2 + 1 or n_fft // 2, F) -> float32 (..., length or F * hop).

    Windowed overlap-add divided by the window envelope (floored at ENVELOPE_FLOOR):
    istft(stft(x)) == x but where the envelope is below the floor: at hop = n_fft / 2 the
    last 3/8 of the last hop fades out (see ENVELOPE_FLOOR), elsewhere it is exact. A spectrum
    without its Nyquist row gets it back as zeros.
    """
    spec = np.asarray(spec)
    if spec.shape[-2] == p.n_fft // 2:
        spec = np.concatenate([spec, np.zeros_like(spec[..., :1, :])], axis=-2)
    if spec.shape[-2] != p.stft_bins:
        raise SpectralError(f"istft: a spectrum needs {p.stft_bins} (or {p.n_fft // 2}) rows, not {spec.shape[-2]}")
    n = spec.shape[-1]
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=p.n_fft, axis=-1) * window(p)  # (..., n, n_fft)
    lead = frames.shape[:-2]
    out = overlap_add(frames, p.hop)
    out = out[..., p.n_fft // 2 : p.n_fft // 2 + n * p.hop] / np.maximum(envelope(p.n_fft, p.hop, n), ENVELOPE_FLOOR)
    if length is not None:
        out = out[..., :length] if length <= out.shape[-1] else np.pad(out, [(0, 0)] * len(lead) + [(0, length - out.shape[-1])])
    return out.astype(np.float32)


def _spectrum(x: np.ndarray, p: SpectralParams) -> np.ndarray:
    """Audio (..., T), real, goes through `stft`; a complex STFT (..., n_fft // 2 + 1, F) is used as it is."""
    x = np.asarray(x)
    if not np.iscomplexobj(x):
        return stft(x, p)
    if x.ndim < 2 or x.shape[-2] != p.stft_bins:
        raise SpectralError(f"a spectrum needs {p.stft_bins} rows (n_fft // 2 + 1), not shape {x.shape}")
    return x


def magnitude(x: np.ndarray, p: SpectralParams) -> np.ndarray:
    """Audio (..., T) or its complex STFT (..., n_fft // 2 + 1, F) -> (..., bins, F) float32.

    |STFT| with the Nyquist row dropped (drop_nyquist) or mapped to mel bands (mel_bins).
    Real input is audio, complex input a spectrum: pass a spectrum when you already
    have one, so it is not computed twice.
    """
    mag = np.abs(_spectrum(x, p))
    if p.mel_bins:
        return np.einsum("mk,...kf->...mf", mel_filterbank(p), mag).astype(np.float32)
    return (mag[..., : p.bins, :]).astype(np.float32)


def log_magnitude(x: np.ndarray, p: SpectralParams) -> np.ndarray:
    """Audio (..., T) or its complex STFT -> (..., bins, F): log(max(magnitude, log_floor)), natural log."""
    return np.log(np.maximum(magnitude(x, p), p.log_floor)).astype(np.float32)


@lru_cache(maxsize=16)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, each with unit area."""
    fmax = fmax or sample_rate / 2
    edges = _hz(np.linspace(_mel(fmin), _mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb = (fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-10)).astype(np.float32)
    fb.setflags(write=False)  # cached and shared
    return fb


def mel_filterbank(p: SpectralParams) -> np.ndarray:
    """(mel_bins, n_fft // 2 + 1) filters of a mel front end (a copy: yours to keep or convert)."""
    if not p.mel_bins:
        raise SpectralError("spectral.mel_bins: 0 means linear bins; there is no mel filterbank")
    return mel_filters(p.sample_rate, p.n_fft, p.mel_bins).copy()


def _mel(f: Any) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _hz(m: Any) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)
