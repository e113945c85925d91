"""Phase reconstruction without a network: fast Griffin-Lim and PGHI, measured, not just run."""

import numpy as np
import pytest

from ganstream.core import phase as P
from ganstream.core.spectral import SpectralParams, stft
from ganstream.training.data.synth import generate
from ganstream.evaluation.recon_eval import spectral_convergence_db

PIANO = list(generate("piano", 3, 16384, 16000, 1))


def convergence(x: np.ndarray, y: np.ndarray, p: SpectralParams) -> float:
    return spectral_convergence_db(np.abs(stft(x, p)), np.abs(stft(y, p)))


def front_end_magnitude(x: np.ndarray, p: SpectralParams) -> np.ndarray:
    return np.abs(stft(x, p))[: p.bins]


def test_griffin_lim_improves_with_iterations_and_momentum():
    p = SpectralParams()
    x = PIANO[0]
    mag = front_end_magnitude(x, p)
    sc = {it: convergence(x, P.griffin_lim(mag, p, it), p) for it in (1, 32, 100)}
    assert sc[1] > sc[32] > sc[100]
    assert sc[100] < -25.0
    plain = convergence(x, P.griffin_lim(mag, p, 32, momentum=0.0), p)
    assert sc[32] < plain - 2.0  # the fast variant's point
    y = P.griffin_lim(mag, p, 8)
    assert y.shape == (16384,) and y.dtype == np.float32
    assert np.array_equal(y, P.griffin_lim(mag, p, 8))  # seeded: reproducible


@pytest.mark.parametrize("hop, better_than", [(128, -17.0), (64, -22.0)])
def test_pghi_recovers_phase_without_iterations(hop, better_than):
    p = SpectralParams(hop=hop)
    scores = [convergence(x, P.pghi(front_end_magnitude(x, p), p), p) for x in PIANO]
    assert np.mean(scores) < better_than
    # Random phase with the right magnitudes is nowhere near.
    rng = np.random.default_rng(0)
    x = PIANO[0]
    spec = stft(x, p)
    from ganstream.core.spectral import istft

    noise = istft(np.abs(spec) * np.exp(2j * np.pi * rng.uniform(size=spec.shape)), p)
    assert convergence(x, noise, p) > -10.0


@pytest.mark.parametrize("hop, better_than", [(128, -25.0), (64, -32.0)])
def test_pghi_on_tones_and_a_chirp_beats_griffin_lim(hop, better_than):
    """Measured: tones -31/-29 dB at hop 128, -36/-35 at hop 64; the chirp -29 and -37; GL-32 about -21."""
    p = SpectralParams(hop=hop)
    t = np.arange(16384) / 16000
    signals = [0.5 * np.sin(2 * np.pi * f * t) for f in (440.0, 1234.5)] + [0.5 * np.sin(2 * np.pi * (200 + 600 * t) * t)]
    for x in (s.astype(np.float32) for s in signals):
        mag = front_end_magnitude(x, p)
        pghi = convergence(x, P.pghi(mag, p), p)
        assert pghi < better_than
        assert pghi < convergence(x, P.griffin_lim(mag, p, 32), p) - 5.0


def test_mel_magnitudes_go_back_through_the_pseudo_inverse():
    p = SpectralParams(n_fft=512, hop=128, mel_bins=128)
    x = PIANO[1]
    from ganstream.core.spectral import magnitude

    mel = magnitude(stft(x, p), p)
    y = P.griffin_lim(mel, p, 32)
    assert y.shape == x.shape
    assert convergence(x, y, p) < -8.0  # mel loses detail; still clearly the same sound


def test_wrong_magnitude_height_is_refused():
    with pytest.raises(ValueError, match="magnitudes have 64 bins; the front end has 128"):
        P.griffin_lim(np.ones((64, 10)), SpectralParams())


def test_locked_phase_turns_a_steady_partial_at_its_frequency():
    """One sinusoid between two bins: every bin of its lobe advances by 2 pi f hop / sample_rate a frame."""
    p = SpectralParams()
    f = 1000.0 + 0.3 * p.sample_rate / p.n_fft  # 0.3 of a bin above bin 16
    t = np.arange(16384) / p.sample_rate
    mag = np.abs(stft(np.sin(2 * np.pi * f * t).astype(np.float32), p))
    phase = P.locked_phase(np.log(np.maximum(mag, 1e-5)), p.n_fft, p.hop)
    want = 2 * np.pi * f * p.hop / p.sample_rate
    for k in (15, 16, 17, 18):  # the lobe around the peak
        step = np.angle(np.exp(1j * (np.diff(phase[k, 4:-4]) - want)))
        assert np.max(np.abs(step)) < 0.05, (k, np.max(np.abs(step)))
    assert np.allclose(np.angle(np.exp(1j * (phase[17] - phase[16] - np.pi))), 0, atol=1e-4)  # pi per bin within the lobe


def test_locked_phase_matches_the_networks_phase_lock():
    torch = pytest.importorskip("torch")
    from ganstream.training.models.vocoder import PhaseLock

    x = np.random.default_rng(0).standard_normal((129, 40)) * 2
    ours = P.locked_phase(x, 256, 128)
    theirs = PhaseLock(256, 128, "hann")(torch.tensor(x, dtype=torch.float32)[None])[0].double().numpy()
    assert np.max(np.abs(np.angle(np.exp(1j * (ours - theirs))))) < 1e-3


def test_griffin_lim_from_the_locked_phase_beats_a_random_start_on_piano():
    p = SpectralParams()
    x = PIANO[1]
    mag = front_end_magnitude(x, p)
    locked = convergence(x, P.griffin_lim(mag, p, 8, initial=P.LOCKED), p)
    random = convergence(x, P.griffin_lim(mag, p, 8), p)
    assert locked < random - 3.0, (locked, random)
    y = P.griffin_lim(mag, p, 4, initial=P.LOCKED)
    assert np.array_equal(y, P.griffin_lim(mag, p, 4, initial=P.LOCKED))  # no seed involved: reproducible
    with pytest.raises(ValueError, match="initial phase: one of random, locked"):
        P.griffin_lim(mag, p, 4, initial="sideways")
