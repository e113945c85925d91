"""Quality measures: known values on synthetic signals."""

import numpy as np
import pytest

from ganstream.training.metrics import frechet_distance, log_mel, log_mel_frechet, loudness_db, mel_filterbank, spectral_flatness

SR = 16000


def tones(n, rng, f_lo=200, f_hi=2000, length=8192):
    t = np.arange(length) / SR
    f = rng.uniform(f_lo, f_hi, (n, 1))
    return (0.5 * np.sin(2 * np.pi * f * t) * np.exp(-3 * t)).astype(np.float32)


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Shifting the mean by (1, 2, 2) adds |shift|^2 = 9.
    assert frechet_distance(a, a + np.array([1.0, 2.0, 2.0])) == pytest.approx(9.0, rel=1e-6)
    # Doubling the std of a unit Gaussian in 3 dims: 3 * (1 + 4 - 2*2) = 3.
    assert frechet_distance(a, 2 * a) == pytest.approx(3.0, rel=1e-3)


def test_log_mel_frechet_orders_sets():
    rng = np.random.default_rng(1)
    real, same = tones(64, rng), tones(64, rng)
    higher = tones(64, rng, 3000, 6000)
    noise = (rng.standard_normal((64, 8192)) * 0.1).astype(np.float32)
    d_same = log_mel_frechet(same, real, SR)
    d_shift = log_mel_frechet(higher, real, SR)
    d_noise = log_mel_frechet(noise, real, SR)
    assert log_mel_frechet(real, real, SR) == pytest.approx(0.0, abs=1e-3)
    assert d_same < d_shift < d_noise or d_same < d_noise < d_shift
    assert d_same * 5 < min(d_shift, d_noise)


def test_spectral_flatness_separates_tones_and_noise():
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((4, 16384)).astype(np.float32)
    flat_noise = spectral_flatness(noise)
    flat_tone = spectral_flatness(tones(4, rng, length=16384))
    # A Hann-windowed periodogram of white noise has flatness exp(-Euler gamma) = 0.56.
    assert flat_noise == pytest.approx(np.exp(-np.euler_gamma), abs=0.03)
    assert (flat_tone < 0.05).all()
    assert np.isnan(spectral_flatness(np.zeros((1, 4096))))[0]


def test_loudness_and_filterbank():
    x = np.full((1, 1000), 0.5)
    assert loudness_db(x)[0] == pytest.approx(20 * np.log10(0.5))
    fb = mel_filterbank(SR, 1024, 64)
    assert fb.shape == (64, 513) and np.allclose(fb.sum(1), 1.0, atol=1e-5)
    assert log_mel(np.zeros((2, 4096)), SR).shape == (2, 13, 64)
