"""Quality measures: known values on synthetic signals."""

import numpy as np
import pytest

from ganstream.core.spectral import mel_filters
from ganstream.evaluation.metrics import (
    METRICS,
    NDBBins,
    power_spectrogram,
    classifier_frechet,
    frechet_distance,
    inception_score,
    kmeans,
    log_mel,
    log_mel_frechet,
    loudness_db,
    memorisation,
    ndb,
    spectral_flatness,
    spectrogram_features,
    wasserstein_1d,
)

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
    fb = mel_filters(SR, 1024, 64)
    assert fb.shape == (64, 513) and np.allclose(fb.sum(1), 1.0, atol=1e-5)
    # The shared front end's framing (core/spectral.py): centred frames, one per hop.
    assert log_mel(np.zeros((2, 4096)), SR).shape == (2, 4096 // 256, 64)


def test_metrics_frame_audio_as_the_shared_front_end_does():
    from ganstream.core.spectral import SpectralParams, stft

    x = np.random.default_rng(0).standard_normal((3, 4096)).astype(np.float32)
    want = np.abs(stft(x, SpectralParams(n_fft=1024, hop=256))) ** 2  # (N, bins, frames)
    np.testing.assert_allclose(power_spectrogram(x), np.swapaxes(want, 1, 2), rtol=1e-5, atol=1e-6)


def blobs(n, rng, centres, spread=0.3):
    """(n, F) rows around `centres` (K, F), equally often."""
    idx = np.arange(n) % len(centres)
    return centres[idx] + spread * rng.standard_normal((n, centres.shape[1]))


def test_every_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((2000, 8))
    values = rng.standard_normal(2000)
    distances = {
        "frechet": lambda a, b: frechet_distance(a, b),
        "classifier_frechet": lambda a, b: classifier_frechet(a, b),
        "ndb": lambda a, b: ndb(a, b, k=20),
        "wasserstein": lambda a, b: wasserstein_1d(a[:, 0], b[:, 0]),
    }
    for name, dist in distances.items():
        same = dist(feats, feats)
        small = dist(feats + 0.5, feats)
        large = dist(feats + 2.0, feats)
        assert same == pytest.approx(0.0, abs=1e-6), name
        assert 0 < small < large or (name == "ndb" and 0 < small <= large), name
    # A shift by c moves a 1-D distribution by exactly |c|.
    assert wasserstein_1d(values + 3.0, values) == pytest.approx(3.0)
    # Halving the amplitude lowers every clip's loudness by 6.02 dB.
    clips = tones(32, rng)
    assert wasserstein_1d(loudness_db(clips / 2), loudness_db(clips)) == pytest.approx(20 * np.log10(2), rel=1e-6)
    assert wasserstein_1d(np.array([np.nan, 1.0]), np.array([1.0])) == 0.0


def test_ndb_is_near_zero_for_the_same_distribution_and_high_for_others():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((10, 6)) * 4
    real = blobs(5000, rng, centres)
    same = blobs(1000, rng, centres)
    collapsed = blobs(1000, rng, centres[:2])
    elsewhere = blobs(1000, rng, centres + 3)
    bins = NDBBins.fit(real, k=50, seed=0)
    assert len(bins.centres) == 50 and bins.counts.sum() == 5000
    assert bins.score(same) <= 0.1
    assert bins.score(collapsed) >= 0.7
    assert bins.score(elsewhere) >= 0.7
    assert ndb(same, real) == bins.score(same)  # the function is fit-then-score, seeded


def test_kmeans_is_seeded_and_finds_separated_clusters():
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = blobs(300, rng, centres, spread=0.5)
    found = kmeans(x, 3, seed=1)
    assert np.array_equal(found, kmeans(x, 3, seed=1))
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.3
    with pytest.raises(ValueError, match="k=5"):
        kmeans(x[:4], 5)


def test_inception_score_of_an_oracle():
    classes = 10
    confident = np.full((1000, classes), 1e-4)
    confident[np.arange(1000), np.arange(1000) % classes] = 1 - 1e-4 * (classes - 1)
    mean, std = inception_score(confident)
    # Shuffled into 10 parts of 100, each part's classes are not exactly equally common.
    assert mean == pytest.approx(classes, rel=0.06) and mean < classes and std < 0.3
    collapsed = np.repeat(confident[:1], 1000, axis=0)  # confident, but always the same class
    assert inception_score(collapsed)[0] == pytest.approx(1.0, abs=1e-6)
    unsure = np.full((1000, classes), 1 / classes)  # every class equally likely for every clip
    assert inception_score(unsure)[0] == pytest.approx(1.0, abs=1e-6)
    half = confident[np.arange(1000) % classes < 5]  # five classes used
    assert inception_score(half)[0] == pytest.approx(5, rel=0.06)


def test_memorisation_flags_copies_of_training_clips_and_not_fresh_ones():
    rng = np.random.default_rng(6)
    train = spectrogram_features(log_mel(tones(200, rng), SR))
    heldout = spectrogram_features(log_mel(tones(100, rng), SR))
    fresh = spectrogram_features(log_mel(tones(50, rng), SR))
    copies = train[:50] + 1e-3 * rng.standard_normal(train[:50].shape)
    mem_fresh = memorisation(fresh, train, heldout)
    mem_copies = memorisation(copies, train, heldout)
    assert mem_fresh["mem_copies"] <= 0.06 and 0.6 < mem_fresh["mem_nn_ratio"] < 1.6
    assert mem_copies["mem_copies"] == 1.0 and mem_copies["mem_nn_ratio"] < 0.05
    half = memorisation(np.concatenate([copies[:25], fresh[:25]]), train, heldout)
    assert 0.45 <= half["mem_copies"] <= 0.55


def test_metric_table_names_directions():
    assert METRICS["fd_logmel"].higher_is_better is False and METRICS["is"].higher_is_better is True
    assert METRICS["mem_nn_ratio"].better == "~1"
    assert not METRICS["mem_copies"].selectable and METRICS["fd_classifier"].needs_classifier


def test_inception_score_does_not_depend_on_the_order_of_the_clips():
    """Real clips arrive class by class (folder order); split as they come, each part would hold one class."""
    confident = np.repeat(np.eye(10) * 0.99 + 0.001, 200, axis=0)  # 2000 clips, 200 of each class in a row
    assert inception_score(confident)[0] > 8.5  # split as they come, each part would score 1
    rng = np.random.default_rng(3)
    assert inception_score(confident[rng.permutation(2000)])[0] == pytest.approx(inception_score(confident)[0], rel=0.05)
