"""The spectral front end: framing, numpy and torch agreeing to 1e-5, exact inversion, normalisation, mel, errors."""

import numpy as np
import pytest
import torch

from ganstream.core import spectral as S
from ganstream.training import spectral as T

RNG = np.random.default_rng(0)


def tone(n: int, f: float = 440.0, sr: int = 16000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)


def test_framing_gives_the_specgan_and_progressive_shapes():
    specgan = S.SpectralParams(n_fft=256, hop=128)
    assert (specgan.bins, specgan.frames(16384), specgan.samples(128)) == (128, 128, 16384)
    assert S.stft(np.zeros(16384, np.float32), specgan).shape == (129, 128)
    big = S.SpectralParams(n_fft=1024, hop=128)
    assert (big.bins, big.frames(65536)) == (512, 512)
    assert S.SpectralParams(drop_nyquist=False).bins == 129
    assert S.SpectralParams(mel_bins=80).bins == 80


PARITY_PARAMS = [
    S.SpectralParams(),
    S.SpectralParams(n_fft=1024, hop=128),
    S.SpectralParams(n_fft=512, hop=128, drop_nyquist=False),
    S.SpectralParams(mel_bins=40),
]


def parity_audio(kind: str) -> np.ndarray:
    """(2, 8192): white noise, or two pure tones (one between bins), the second quieter."""
    if kind == "noise":
        audio = RNG.uniform(-1, 1, (2, 8192)).astype(np.float32)
    else:
        audio = np.stack([tone(8192, 440.0), tone(8192, 1234.5)])
    audio[1] *= 0.25
    return audio


@pytest.mark.parametrize("kind", ["noise", "tones"])
@pytest.mark.parametrize("params", PARITY_PARAMS, ids=lambda p: f"nfft{p.n_fft}-mel{p.mel_bins}-nyq{int(not p.drop_nyquist)}")
def test_numpy_and_torch_agree(params, kind):
    audio = parity_audio(kind)
    spec_np = S.stft(audio, params)
    spec_t = T.stft(torch.from_numpy(audio), params)
    assert spec_np.shape == tuple(spec_t.shape) == (2, params.stft_bins, 64)
    peak = np.abs(spec_np).max()
    assert np.abs(spec_np - spec_t.numpy()).max() / peak < 1e-5
    mag_np, mag_t = S.magnitude(audio, params), T.magnitude(torch.from_numpy(audio), params).numpy()
    assert mag_np.shape == mag_t.shape == (2, params.bins, 64)
    assert np.abs(mag_np - mag_t).max() / mag_np.max() < 1e-5
    # torch works in float32, numpy in float64: the STFTs differ by ~1e-7 of the peak, which the
    # log magnifies by peak / |S| in quiet bins. So log-magnitudes agree to 1e-6 * peak / |S|:
    # within 1e-5 wherever a bin is above a tenth of the peak.
    lm_np, lm_t = S.log_magnitude(audio, params), T.log_magnitude(torch.from_numpy(audio), params).numpy()
    above_floor = mag_np > 10 * params.log_floor
    assert (np.abs(lm_np - lm_t) * mag_np / mag_np.max())[above_floor].max() < 1e-6
    loud = mag_np > 0.1 * mag_np.max()
    assert loud.any() and np.abs(lm_np - lm_t)[loud].max() < 1e-5
    norm = S.BinNorm(lm_np.mean(axis=(0, 2)), lm_np.std(axis=(0, 2)) + 0.1, clip=3.0)
    assert np.abs(S.normalise(lm_np, norm) - T.normalise(torch.from_numpy(lm_np), norm).numpy()).max() < 1e-5
    assert np.abs(S.denormalise(lm_np, norm) - T.denormalise(torch.from_numpy(lm_np), norm).numpy()).max() < 1e-5 * np.abs(lm_np).max()
    back_np = S.istft(spec_np, params)
    back_t = T.istft(spec_t, params)
    assert np.abs(back_np - back_t.numpy()).max() < 1e-5


def test_magnitude_takes_audio_or_its_spectrum():
    p = S.SpectralParams()
    audio = parity_audio("tones")
    spec = S.stft(audio, p)
    assert np.array_equal(S.magnitude(audio, p), S.magnitude(spec, p))
    assert np.array_equal(S.log_magnitude(audio, p), S.log_magnitude(audio, p))
    x = torch.from_numpy(audio)
    assert torch.equal(T.magnitude(x, p), T.magnitude(T.stft(x, p), p))
    with pytest.raises(S.SpectralError, match="a spectrum needs 129 rows"):
        S.magnitude(spec[..., :100, :], p)
    with pytest.raises(S.SpectralError, match="a spectrum needs 129 rows"):
        T.log_magnitude(T.stft(x, p)[..., :100, :], p)


@pytest.mark.parametrize("n_fft, hop, faded", [(256, 128, 48), (256, 64, 0), (1024, 128, 0), (2048, 1024, 389)])
def test_inversion_is_exact_but_for_the_fade_of_the_last_hop(n_fft, hop, faded):
    p = S.SpectralParams(n_fft=n_fft, hop=hop)
    x = RNG.uniform(-1, 1, (3, 8192)).astype(np.float32)
    y = S.istft(S.stft(x, p), p)
    assert y.shape == x.shape
    covered = S.envelope(n_fft, hop, p.frames(8192)) >= S.ENVELOPE_FLOOR
    assert int((~covered).sum()) == faded and np.all(covered[: 8192 - faded])  # only the very end fades
    assert np.abs(y - x)[:, covered].max() < 1e-5
    assert np.all(np.abs(y[:, ~covered]) <= np.abs(x[:, ~covered]) + 1e-6)  # a fade, never a boost
    yt = T.istft(T.stft(torch.from_numpy(x), p), p).numpy()
    assert np.abs(yt - x)[:, covered].max() < 1e-5
    assert np.abs(yt - y).max() < 1e-5  # torch and numpy fade alike


def test_a_spectrum_without_its_nyquist_row_inverts():
    p = S.SpectralParams()
    t = tone(8192)
    no_nyquist = S.stft(t, p)[:-1]
    assert np.abs(S.istft(no_nyquist, p) - t)[:8000].max() < 1e-3  # its Nyquist row held only leakage
    assert S.istft(S.stft(t, p), p, length=8000).shape == (8000,)
    assert S.istft(S.stft(t, p), p, length=9000)[8192:].tolist() == [0.0] * 808


def test_a_generated_spectrogram_does_not_blow_up_at_the_end():
    """Random phases make an inconsistent spectrum, like a GAN's: the last hop, under one window's tail,
    must stay about as loud as the rest (without the floor it peaked at a median 776x, measured)."""
    p = S.SpectralParams()
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(20):
        mag = np.exp(rng.normal(-2, 1, (p.stft_bins, 32)))
        y = S.istft(mag * np.exp(2j * np.pi * rng.uniform(size=mag.shape)), p)
        ratios.append(np.abs(y[-p.hop :]).max() / np.abs(y[: -p.hop]).max())
    assert np.median(ratios) < 1.5 and max(ratios) < 1 / np.sqrt(S.ENVELOPE_FLOOR)


def test_torch_front_end_is_differentiable():
    p = S.SpectralParams()
    x = torch.from_numpy(tone(4096)).requires_grad_()
    T.log_magnitude(x, p).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_log_magnitude_of_a_tone_peaks_in_its_bin_and_is_floored_in_silence():
    p = S.SpectralParams()
    lm = S.log_magnitude(tone(4096, f=1000.0), p)
    assert int(np.argmax(lm[:, 10])) == round(1000 / (16000 / 256))
    silent = S.log_magnitude(np.zeros(4096, np.float32), p)
    assert np.all(silent == np.float32(np.log(p.log_floor)))


def test_normalisation_clips_at_three_std_and_inverts_inside():
    norm = S.BinNorm(np.array([0.0, -2.0]), np.array([1.0, 0.5]), clip=3.0)
    x = np.array([[[0.0, 1.5, 10.0]], [[-2.0, -2.5, -9.0]]])[:, 0]  # (2 bins, 3 frames)
    y = norm.normalise(x)
    assert y == pytest.approx(np.array([[0.0, 0.5, 1.0], [0.0, -1 / 3, -1.0]]), abs=1e-6)
    assert norm.denormalise(y)[:, :2] == pytest.approx(x[:, :2], abs=1e-6)
    assert norm.denormalise(y)[0, 2] == pytest.approx(3.0)  # clipped: 3 std above the mean


def test_moments_over_a_dataset_match_numpy():
    p = S.SpectralParams()
    clips = [RNG.uniform(-1, 1, (5, 2048)).astype(np.float32) * s for s in (0.1, 1.0)]
    norm = T.dataset_moments(clips, p, clip=2.0)
    lm = S.log_magnitude(np.concatenate(clips), p)
    assert norm.mean == pytest.approx(lm.mean(axis=(0, 2)), abs=1e-4)
    assert norm.std == pytest.approx(lm.std(axis=(0, 2)), rel=1e-3)
    assert norm.clip == 2.0 and norm.bins == p.bins
    with pytest.raises(S.SpectralError, match="no audio"):
        T.dataset_moments([], p)


def test_mel_filterbank_has_unit_area_rows_increasing_centres_and_a_pseudo_inverse():
    p = S.SpectralParams(n_fft=512, mel_bins=40)
    fb = S.mel_filterbank(p)
    assert fb.shape == (40, 257)
    assert fb.sum(axis=1) == pytest.approx(np.ones(40), abs=1e-5)
    centres = fb.argmax(axis=1)
    assert np.all(np.diff(centres) >= 0) and centres[-1] > centres[0]
    pinv = T.mel_pseudo_inverse(p)
    assert tuple(pinv.shape) == (257, 40)
    assert (torch.from_numpy(fb) @ pinv) == pytest.approx(torch.eye(40), abs=1e-3)
    with pytest.raises(S.SpectralError, match="mel_bins"):
        S.mel_filterbank(S.SpectralParams())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_fft": 255}, "spectral.n_fft: must be even"),
        ({"hop": 200}, r"spectral.hop: must be 1 .. n_fft / 2 = 128"),
        ({"window": "kaiser"}, "spectral.window: must be one of hann"),
        ({"log_floor": 0.0}, "spectral.log_floor: must be a positive number"),
        ({"mel_bins": 500}, "spectral.mel_bins"),
        ({"hop": "128"}, "spectral.hop: must be an integer"),
        ({"nfft": 256}, "spectral.nfft: unknown spectral parameter"),
    ],
)
def test_bad_parameters_name_the_field(change, message):
    with pytest.raises(S.SpectralError, match=message):
        S.SpectralParams.from_dict({**S.SpectralParams().to_dict(), **change})


def test_params_round_trip_and_bad_norms_are_refused():
    p = S.SpectralParams(n_fft=1024, hop=256, mel_bins=64)
    assert S.SpectralParams.from_dict(p.to_dict()) == p
    with pytest.raises(S.SpectralError, match="std must be positive in every bin \\(bin 1"):
        S.BinNorm(np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(S.SpectralError, match="of one length"):
        S.BinNorm(np.zeros(3), np.ones(2))
    with pytest.raises(S.SpectralError, match="finite"):
        S.BinNorm(np.array([np.nan]), np.ones(1))


def test_norm_travels_as_npy_side_files_and_from_moments(tmp_path):
    x = RNG.normal(-4.0, 2.0, (3, 50)).astype(np.float64)  # 3 bins, 50 frames
    norm = S.BinNorm.from_moments(x.sum(axis=1), (x**2).sum(axis=1), 50, clip=2.5)
    assert norm.mean == pytest.approx(x.mean(axis=1), abs=1e-5)
    assert norm.std == pytest.approx(x.std(axis=1), rel=1e-5)
    mean, std = norm.to_arrays()
    np.save(tmp_path / "norm_mean.npy", mean)
    np.save(tmp_path / "norm_std.npy", std)
    back = S.BinNorm.from_arrays(np.load(tmp_path / "norm_mean.npy"), np.load(tmp_path / "norm_std.npy"), clip=2.5)
    assert back.mean.dtype == np.float32 and np.array_equal(back.mean, norm.mean) and np.array_equal(back.std, norm.std)
    assert np.array_equal(back.normalise(x), norm.normalise(x))
    with pytest.raises(S.SpectralError, match="at least 2 frames"):
        S.BinNorm.from_moments(np.zeros(3), np.zeros(3), 1)
    constant = S.BinNorm.from_moments(np.full(2, 10.0), np.full(2, 50.0), 10)  # every value 1.0: zero variance
    assert np.all(constant.std > 0)  # floored, so a silent bin cannot divide by zero
