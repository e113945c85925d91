"""Procedural datasets that need no files: `synth:piano` and `synth:gaussian`.

Each item is drawn from its own generator seeded by (seed, set, item index), so
an item never depends on how many others were made or in what order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import numpy as np
from scipy.signal import lfilter

# A clip renderer: (rng, length in samples, sample rate) -> (length,) float32 in [-1, 1].
Renderer = Callable[[np.random.Generator, int, int], np.ndarray]

_CHUNK = 128  # block length of the mode matrix product in `_modes`


def _modes(amp: np.ndarray, freq: np.ndarray, decay: np.ndarray, phase: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """Sum of exponentially decaying sinusoids, (M,) parameters each -> (length,) float64.

    Mode m is amp * exp(-decay * t) * sin(2 pi freq t + phase) with t in seconds.
    Written as Im(c * z**k) with z = exp((-decay + 2 pi i freq) / rate), and
    z**(k0 + j) = z**k0 * z**j splits every sample index into block start and
    offset, so the whole sum is one (blocks, 2M) @ (2M, _CHUNK) real product
    (Im(L R) = Re L Im R + Im L Re R) instead of M x length sin and exp calls.
    """
    s = (-decay + 2j * np.pi * freq) / sample_rate  # (M,) log of z
    blocks = -(-length // _CHUNK)
    k0 = np.arange(blocks) * _CHUNK
    j = np.arange(_CHUNK)
    left = amp * np.exp(1j * phase) * np.exp(np.outer(k0, s))  # (blocks, M)
    right = np.exp(np.outer(s, j))  # (M, _CHUNK)
    lhs = np.concatenate([left.real, left.imag], axis=1)
    rhs = np.concatenate([right.imag, right.real], axis=0)
    # einsum, not @: multithreaded BLAS on matrices this small stalls 10-20x
    # whenever the cores are busy (DDP ranks preparing at once, a run training).
    return np.einsum("bm,mj->bj", lhs, rhs, optimize=False).reshape(-1)[:length]


def piano(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """One struck, piano-like note -> (length,) float32, onset within the first ~4 ms.

    Random MIDI pitch 36..84 and velocity; velocity sets loudness and brightness.
    Stiff-string partials f_n = n f0 sqrt(1 + B n^2); the strike point notches
    the spectrum; each partial decays in two stages (prompt sound, aftersound),
    higher partials faster; a pair of slightly detuned strings beats; a short
    filtered-noise hammer thump and a faint noise floor complete it.
    """
    nyquist = 0.5 * sample_rate
    note = int(rng.integers(36, 85))
    f0 = 440.0 * 2.0 ** ((note - 69) / 12)
    velocity = rng.uniform(0.15, 1.0)
    stiffness = 10 ** rng.uniform(-4.3, -3.3)  # B: bass and treble strings are stiffer, a range covers both

    n = np.arange(1, 41, dtype=np.float64)
    freq = n * f0 * np.sqrt(1.0 + stiffness * n**2)
    keep = freq < 0.45 * sample_rate  # above this the partials would alias or sit in the resampler's stopband
    n, freq = n[keep], freq[keep]

    brightness = 2.0 + 12.0 * velocity**1.5  # harder strikes excite more partials
    strike = rng.uniform(1 / 9, 1 / 7)  # hammer position along the string, as a fraction of its length
    amp = np.exp(-(n - 1) / brightness) / n**0.7 * (np.abs(np.sin(np.pi * n * strike)) + 0.05)

    ring = rng.uniform(0.8, 1.25) * 1.8 * (f0 / 65.4) ** -0.55  # seconds; low notes ring longer
    slow = 1.0 / (ring / (1.0 + 0.08 * (n - 1) ** 1.4))  # decay rates, 1/s, rising with the partial number
    fast = slow * rng.uniform(3.0, 6.0)
    prompt = rng.uniform(0.5, 0.8)  # share of each partial in the fast stage

    detune = 2.0 ** (rng.uniform(0.3, 2.0) / 1200)  # second string, in cents
    phase = rng.uniform(0, 2 * np.pi, size=n.size)
    modes = [
        (amp * prompt * 0.5, freq, fast, phase),
        (amp * prompt * 0.5, freq * detune, fast, phase),
        (amp * (1 - prompt) * 0.5, freq, slow, phase),
        (amp * (1 - prompt) * 0.5, freq * detune, slow, phase),
    ]
    params = [np.concatenate(p) for p in zip(*modes)]

    onset = int(rng.integers(0, max(1, min(length // 8, int(0.004 * sample_rate)))))
    body_len = length - onset
    tone = _modes(*params, body_len, sample_rate)
    t = np.arange(body_len) / sample_rate
    tone *= 1.0 - np.exp(-t / (0.0004 + 0.0016 * (1.0 - velocity)))  # a soft strike has a slower attack

    # Hammer thump: a few ms of noise, low-passed more for soft strikes.
    thump_len = min(body_len, int(rng.uniform(0.003, 0.008) * sample_rate))
    pole = np.exp(-2 * np.pi * min(nyquist * 0.9, 600 + 5000 * velocity) / sample_rate)
    thump = lfilter([1 - pole], [1, -pole], rng.standard_normal(thump_len))
    thump *= np.exp(-np.arange(thump_len) / (0.25 * thump_len + 1))
    tone /= np.abs(tone).max() + 1e-12
    tone[:thump_len] += 0.15 * velocity * thump / (np.abs(thump).max() + 1e-12)

    out = np.zeros(length, np.float32)
    out[onset:] = tone * (0.15 + 0.8 * velocity**1.3) / max(1.0, np.abs(tone).max())
    out += rng.standard_normal(length, dtype=np.float32) * np.float32(10 ** (rng.uniform(-70, -58) / 20))
    return np.clip(out, -1.0, 1.0)


def gaussian(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """A centred Gaussian bump plus a little white noise -> (length,) float32 in [-1, 1].

    Made for length 100: a seconds-long smoke test of the whole pipeline.
    """
    t = np.arange(length, dtype=np.float64)
    centre = (length - 1) / 2
    width = rng.uniform(0.04, 0.15) * length
    height = rng.uniform(0.5, 0.9)
    bump = height * np.exp(-0.5 * ((t - centre) / width) ** 2)
    noise = rng.normal(0.0, rng.uniform(0.005, 0.03), size=length)
    return np.clip(bump + noise, -1.0, 1.0).astype(np.float32)


SYNTH_SETS: dict[str, Renderer] = {"piano": piano, "gaussian": gaussian}


def generate(name: str, items: int, length: int, sample_rate: int, seed: int) -> Iterator[np.ndarray]:
    """Yields `items` clips of the set `name`, each (length,) float32, item i seeded by (seed, name, i)."""
    render = SYNTH_SETS[name]
    salt = zlib.crc32(name.encode())  # different sets with one seed stay unrelated
    for i in range(items):
        yield render(np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, salt, i]), length, sample_rate)
