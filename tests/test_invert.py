"""Issue 14, "start from your own sound": the spectral distance (core/distance.py) and its torch twin, the
bundle's optional encoder in the manifest and the loader, the Inverter (realtime/inversion.py: encoder,
random search, CMA-ES, one error per bad file) and `ganstream invert` (export/invert.py) writing presets
that the live engine's preset reader reads back.

The factory's encoder (tests/bundle_factory.py) is the exact inverse of its generator, so what the
inversion should find is known: the latent that made the sample."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from bundle_factory import (
    conditioned_audio,
    make_bundle,
    make_conditioned_bundle,
    read_manifest,
    reference_audio,
    weights,
    write_manifest,
)

from ganstream.main import main as ganstream
from ganstream.core.distance import RESOLUTIONS, magnitudes, onset, onset_cut, spectral_distance
from ganstream.core.manifest import PROPOSALS_VERSION, BundleError, Manifest
from ganstream.core.spectral import SpectralParams, stft
from ganstream.export.invert import TorchRefiner, torch_spectral_distance
from ganstream.realtime import inversion
from ganstream.realtime.automation import load_presets
from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.control import write_presets
from ganstream.realtime.inversion import InversionError, Inverter, SepCMA
from ganstream.realtime.latents import LatentSpace

SR = 16000
SEGMENT = 4096
D = 8


def rng_latent(seed: int = 123) -> np.ndarray:
    """(1, D) uniform latent from a generator of its own (the searches' seeds would find it by chance)."""
    return np.random.default_rng(seed + 1000).uniform(-0.9, 0.9, (1, D)).astype(np.float32)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "exact": make_bundle(root / "exact", segment=SEGMENT, latent_size=D, encoder=True),
        "biased": make_bundle(root / "biased", segment=SEGMENT, latent_size=D, encoder=True, encoder_bias=0.3),
        "none": make_bundle(root / "none", segment=SEGMENT, latent_size=D),
        "conditioned": make_conditioned_bundle(root / "cond", segment=SEGMENT, latent_size=D, encoder=True),
    }


@pytest.fixture(scope="module")
def exact(bundles):
    return Inverter(load_bundle(bundles["exact"]))


# ---- core/distance.py ----------------------------------------------------------------------------------


def test_distance_is_zero_for_identical_audio_and_grows_with_the_difference():
    rng = np.random.default_rng(0)
    ref = reference_audio(rng_latent())[0]
    assert spectral_distance(ref, ref) == 0.0 and isinstance(spectral_distance(ref, ref), float)
    noise = rng.standard_normal(SEGMENT).astype(np.float32)
    candidates = np.stack([ref, 1.1 * ref, 2.0 * ref, ref + 0.001 * noise, ref + 0.1 * noise])
    d = spectral_distance(ref, candidates)
    assert d.shape == (5,) and d.dtype == np.float64 and d[0] == 0.0
    assert 0 < d[1] < d[2]  # a louder copy is farther, the louder the farther
    assert 0 < d[3] < d[4]  # and so is added noise
    one_by_one = np.array([spectral_distance(ref, c) for c in candidates])
    np.testing.assert_allclose(d, one_by_one, rtol=1e-12)


def test_distance_batches_across_chunks_as_one_by_one():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(2048).astype(np.float32)
    cand = rng.standard_normal((70, 2048)).astype(np.float32)  # more than two chunks of CHUNK
    np.testing.assert_allclose(spectral_distance(ref, cand), [spectral_distance(ref, c) for c in cand], rtol=1e-12)


@pytest.mark.parametrize("n_fft, hop", RESOLUTIONS)
def test_distance_frames_audio_as_core_spectral_does(n_fft, hop):
    x = np.random.default_rng(2).standard_normal((2, 3000)).astype(np.float32)
    ours = np.swapaxes(magnitudes(x, n_fft, hop), -1, -2)
    theirs = np.abs(stft(x, SpectralParams(n_fft=n_fft, hop=hop)))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-6 * theirs.max())


def test_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="reference"):
        spectral_distance(np.zeros(1000), np.zeros((2, 999)))


def test_onset_cut_starts_5_ms_before_the_first_loud_sample_and_pads_at_the_end():
    x = np.full(SR, 1e-4, np.float32)  # -80 dB under the peak: not the onset
    x[8000:8100] = 0.5
    cut, at = onset_cut(x, 4096, sample_rate=SR)
    assert at == 8000 == onset(x)
    assert cut.shape == (4096,) and cut[80] == 0.5 and cut[79] == np.float32(1e-4)  # 80 samples = 5 ms at 16 kHz
    late = np.zeros(SR, np.float32)
    late[-100:] = 0.3
    cut, at = onset_cut(late, 4096, sample_rate=SR)
    assert at == SR - 100 and np.all(cut[180:] == 0.0) and cut[80] == np.float32(0.3)  # what runs past the end is silence
    assert onset(np.zeros(100)) == 0


def test_torch_twin_agrees_with_numpy_within_1e_3():
    rng = np.random.default_rng(3)
    ref = reference_audio(rng_latent())[0]
    other = reference_audio(rng_latent(7))[0]
    padded = np.concatenate([ref[:1000], np.zeros(SEGMENT - 1000, np.float32)])
    cand = np.stack([ref, 0.5 * ref, other, ref + 0.05 * rng.standard_normal(SEGMENT).astype(np.float32), padded])
    ours = spectral_distance(ref, cand)
    twin = torch_spectral_distance(torch.from_numpy(ref), torch.from_numpy(cand)).double().numpy()
    np.testing.assert_allclose(twin[1:], ours[1:], rtol=1e-3)
    assert twin[0] == 0.0 == ours[0]


# ---- the manifest's encoder ---------------------------------------------------------------------------


def test_a_bundle_with_an_encoder_loads_and_round_trips(bundles):
    bundle = load_bundle(bundles["exact"], verify=True)
    assert bundle.encoder is not None and bundle.encoder.file == bundles["exact"] / "encoder.onnx"
    assert [s.name for s in bundle.encoder.outputs] == ["latent"] and bundle.encoder.inputs[0].shape == ("batch", SEGMENT)
    m = bundle.spec
    assert Manifest.from_json(m.to_json()) == m and m.encoder is not None
    cond = load_bundle(bundles["conditioned"], verify=True)
    assert [s.name for s in cond.encoder.outputs] == ["latent", "condition"]
    assert Manifest.from_json(cond.spec.to_json()) == cond.spec
    plain = load_bundle(bundles["none"], verify=True)
    assert plain.encoder is None and "encoder" not in read_manifest(bundles["none"])


def _broken(directory: Path, change) -> dict:
    data = copy.deepcopy(read_manifest(directory))
    change(data)
    return data


ENCODER_BROKEN = [
    (lambda m: m["encoder"]["inputs"][0].update(shape=["batch", 1000]), "encoder.inputs[0].shape", r"is \[\"batch\", 1000\] but must be \[\"batch\", 4096\]"),
    (lambda m: m["encoder"]["outputs"][0].update(name="z"), "encoder.outputs", r"must list \[\"latent\"\], got \[\"z\"\]"),
    (lambda m: m["encoder"]["outputs"].append({"name": "condition", "shape": ["batch", 2], "dtype": "float32"}), "encoder.outputs",
     r"must list \[\"latent\"\], got \[\"latent\", \"condition\"\]"),
    (lambda m: m["files"].pop("encoder.onnx"), "encoder.file", r"names 'encoder.onnx', which is not listed in `files`"),
    (lambda m: m["encoder"]["outputs"][0].update(shape=["batch", 9]), "encoder.outputs[0].shape", r"is \[\"batch\", 9\] but must be \[\"batch\", 8\]"),
]


@pytest.mark.parametrize("change, field, match", ENCODER_BROKEN, ids=[b[1] + str(i) for i, b in enumerate(ENCODER_BROKEN)])
def test_a_broken_encoder_entry_is_named(bundles, change, field, match):
    with pytest.raises(BundleError, match=r"^x/manifest.json: .*" + match) as info:
        Manifest.from_json(_broken(bundles["exact"], change), "x/manifest.json")
    assert info.value.field == field


def test_an_encoder_may_propose_several_latents_from_format_version_6(tmp_path):
    d = make_bundle(tmp_path / "p", segment=SEGMENT, latent_size=D, encoder=True, proposals=(0.3, -0.2, 0.0))
    b = load_bundle(d, verify=True)  # the graph's three outputs against the manifest's
    assert [s.name for s in b.encoder.outputs] == ["latent", "proposals"] and b.encoder.outputs[1].shape == ("batch", 3, D)
    assert b.spec.format_version == PROPOSALS_VERSION and Manifest.from_json(b.spec.to_json()) == b.spec


PROPOSALS_BROKEN = [
    (lambda m: m.update(format_version=5), "format_version", r"is 5, but the encoder's 'proposals' output needs format version 6"),
    (lambda m: m["encoder"]["outputs"][1].update(shape=["batch", 1, D]), "encoder.outputs[1].shape",
     r'is \["batch", 1, 8\] but must be \["batch", "M", 8\], M a whole number of 2 or more'),
    (lambda m: m["encoder"]["outputs"][1].update(shape=["batch", 3, 9]), "encoder.outputs[1].shape", r'is \["batch", 3, 9\] but must be'),
    (lambda m: m["encoder"]["outputs"][1].update(shape=["batch", D]), "encoder.outputs[1].shape", r'is \["batch", 8\] but must be'),
    (lambda m: m["encoder"]["outputs"].reverse(), "encoder.outputs", r'must list \["latent"\], got \["proposals", "latent"\]'),  # proposals come last
]


@pytest.mark.parametrize("change, field, match", PROPOSALS_BROKEN, ids=[b[1] + str(i) for i, b in enumerate(PROPOSALS_BROKEN)])
def test_a_broken_proposals_output_is_named(tmp_path, change, field, match):
    d = make_bundle(tmp_path / "p", segment=SEGMENT, latent_size=D, encoder=True, proposals=(0.3, -0.2, 0.0))
    with pytest.raises(BundleError, match=r"^x/manifest.json: .*" + match) as info:
        Manifest.from_json(_broken(d, change), "x/manifest.json")
    assert info.value.field == field


def test_the_inverter_starts_from_the_nearest_proposal(tmp_path):
    """The factory's encoder proposes the exact latent third: the host hears all three and takes it, where the
    `latent` output alone (the first proposal) is 0.3 off on every component."""
    d = make_bundle(tmp_path / "p", segment=SEGMENT, latent_size=D, encoder=True, proposals=(0.3, -0.2, 0.0))
    inv = Inverter(load_bundle(d))
    z = rng_latent(5)
    audio = reference_audio(z, segment=SEGMENT)[0]
    assert inv.proposals == 3
    np.testing.assert_allclose(inv.encode(audio), z[0], atol=1e-3)
    first = Inverter(load_bundle(make_bundle(tmp_path / "b", segment=SEGMENT, latent_size=D, encoder=True, encoder_bias=0.3)))
    assert first.proposals == 1 and np.abs(first.encode(audio) - z[0]).mean() > 0.2


def _with_refiner(m: dict) -> None:
    """A `refiner` section as export writes one (the factory has no refiner graph; these tests read the manifest alone)."""
    t = lambda name, shape: {"name": name, "shape": shape, "dtype": "float32"}  # noqa: E731
    graph = {"file": "refiner.onnx", "inputs": [t("audio", ["batch", SEGMENT]), t("heard", ["batch", SEGMENT]), t("latent", ["batch", D])],
             "outputs": [t("corrected", ["batch", D]), t("distance", ["batch"])], "precision": "fp32", "opset": 17, "parity_max_abs_error": 0.0}
    m["refiner"] = {"graph": graph, "iterations": 8}
    m["files"]["refiner.onnx"] = dict(m["files"]["encoder.onnx"])


REFINER_BROKEN = [
    (lambda m: m.pop("encoder"), "refiner", r"is a correction of the encoder's latent, but the manifest has no `encoder`"),
    (lambda m: m["refiner"].update(iterations=0), "refiner.iterations", r"must be >= 1, got 0"),
    (lambda m: m["refiner"].update(beam=0), "refiner.beam", r"must be >= 1, got 0"),
    (lambda m: m["refiner"].update(beam="two"), "refiner.beam", r'must be an integer, got "two"'),
    (lambda m: m["refiner"].pop("graph"), "refiner.graph", r"missing required field `refiner.graph`"),
    (lambda m: m["refiner"]["graph"]["inputs"][1].update(name="fake"), "refiner.graph.inputs",
     r'must list \["audio", "heard", "latent"\], got \["audio", "fake", "latent"\]'),
    (lambda m: m["refiner"]["graph"]["outputs"][1].update(shape=["batch", 1]), "refiner.graph.outputs[1].shape",
     r'is \["batch", 1\] but must be \["batch"\]'),
    (lambda m: m["refiner"]["graph"]["inputs"][2].update(shape=["batch", 9]), "refiner.graph.inputs[2].shape",
     r'is \["batch", 9\] but must be \["batch", 8\]'),
    (lambda m: m["files"].pop("refiner.onnx"), "refiner.graph.file", r"names 'refiner.onnx', which is not listed in `files`"),
]


def test_a_refiner_entry_round_trips(bundles):
    m = Manifest.from_json(_broken(bundles["exact"], _with_refiner), "x/manifest.json")
    assert m.refiner is not None and m.refiner.iterations == 8 and m.refiner.graph.file == "refiner.onnx"
    assert m.refiner.beam == 1 and "beam" not in m.to_json()["refiner"]  # absent: the nearest proposal alone, as before beams
    assert Manifest.from_json(m.to_json()) == m
    m = Manifest.from_json(_broken(bundles["exact"], lambda d: (_with_refiner(d), d["refiner"].update(beam=3))), "x/manifest.json")
    assert m.refiner.beam == 3 and m.to_json()["refiner"]["beam"] == 3 and Manifest.from_json(m.to_json()) == m


@pytest.mark.parametrize("change, field, match", REFINER_BROKEN, ids=[b[1] + str(i) for i, b in enumerate(REFINER_BROKEN)])
def test_a_broken_refiner_entry_is_named(bundles, change, field, match):
    with pytest.raises(BundleError, match=r"^x/manifest.json: .*" + match) as info:
        Manifest.from_json(_broken(bundles["exact"], lambda m: (_with_refiner(m), change(m))), "x/manifest.json")
    assert info.value.field == field


def test_a_conditioned_encoder_must_output_the_condition(bundles):
    change = lambda m: m["encoder"]["outputs"].pop()  # noqa: E731
    with pytest.raises(BundleError, match=r"must list \[\"latent\", \"condition\"\] \(the manifest has a `condition`\)") as info:
        Manifest.from_json(_broken(bundles["conditioned"], change), "x/manifest.json")
    assert info.value.field == "encoder.outputs"


def test_the_loader_checks_the_encoder_graph_against_the_manifest(tmp_path):
    d = make_bundle(tmp_path / "b", segment=SEGMENT, latent_size=D, encoder=True)
    data = read_manifest(d)
    data["encoder"]["outputs"][0]["name"] = "latent"  # unchanged: loads
    data["encoder"]["inputs"][0]["dtype"] = "float16"  # the graph's input is float32
    write_manifest(d, data)
    with pytest.raises(BundleError, match=r"encoder\.onnx") as info:
        load_bundle(d, verify=True)
    assert "encoder.inputs" in str(info.value)


# ---- the Inverter ------------------------------------------------------------------------------------


def test_the_exact_encoder_recovers_the_latent(exact):
    z = rng_latent()
    result = exact.invert(reference_audio(z)[0])
    assert result.method == "encoder" and result.condition is None and result.random_distance is None
    np.testing.assert_allclose(result.latent, z[0], atol=1e-3)
    assert result.distance == result.encoder_distance < 0.03  # the float32 noise floor of the log term is ~0.01
    assert result.seconds > 0 and [s.name for s in result.stages] == ["encoder"]


def test_a_random_search_is_no_better_than_the_exact_encoder(exact):
    audio = reference_audio(rng_latent())[0]
    result = exact.invert(audio, random=300, seed=5)
    assert result.method == "encoder"
    assert result.random_distance > 5 * result.encoder_distance
    # negative control: a random search does find its own draws
    row, d = exact.random_search(reference_audio(exact.bundle.random_rows(1, np.random.default_rng(5)))[0], 100, seed=5)
    assert d < 0.03


def test_refinement_improves_on_a_biased_encoder_and_never_makes_it_worse(bundles, exact):
    inverter = Inverter(load_bundle(bundles["biased"]))
    z = rng_latent()
    audio = reference_audio(z)[0]
    start = inverter.encode(audio)
    np.testing.assert_allclose(start, np.clip(z[0] + 0.3, -1, 1), atol=1e-3)  # the bias, clipped into [-1, 1]
    result = inverter.invert(audio, refine=25, seed=1)
    assert result.distance < 0.3 * result.encoder_distance
    assert "CMA-ES" in result.method and result.stages[-1].distance == result.distance
    assert np.all(np.abs(result.latent) <= 1.0)
    # From the exact latent there is nothing to gain: the start comes back, never a farther row.
    exact_row = exact.encode(audio)
    d0 = float(exact.distance(audio, exact_row[None])[0])
    for steps in (0, 3):
        row, d = exact.refine(audio, exact_row, steps, seed=2)
        assert d <= d0
        assert d == pytest.approx(float(exact.distance(audio, row[None])[0]))


def test_sep_cma_minimises_a_shifted_sphere():
    target = np.linspace(-0.5, 0.5, D)
    es = SepCMA(np.full(D, 0.8), 0.3, 12, 1.0, np.random.default_rng(0))
    for _ in range(150):
        x = es.ask()
        es.tell(np.sum((x[:-1] - target) ** 2, axis=1))
    assert np.sum((es.mean - target) ** 2) < 1e-6


def test_a_conditioned_encoder_gives_the_pitch(bundles):
    inverter = Inverter(load_bundle(bundles["conditioned"]))
    row = np.zeros(D + 2, np.float32)
    row[0], row[D], row[D + 1] = 0.5, 60, 0.7
    audio = conditioned_audio(row[None])[0]
    result = inverter.invert(audio, random=50, refine=3)
    np.testing.assert_array_equal(result.condition, [60.0, 1.0])  # the factory's encoder says velocity 1
    assert abs(result.latent[0] - 0.5) < 1e-3
    # Not 0: ONNX Runtime's float32 sine drifts by ~1e-5 over a segment, loud beside LOG_FLOOR in the bins a
    # pure sine leaves empty. The true row itself scores that on the bundle, and the inversion no worse.
    assert result.distance <= float(inverter.distance(audio, row[None])[0]) + 1e-9
    np.testing.assert_array_equal(result.row[D:], result.condition)


def test_a_bundle_without_an_encoder_is_refused(bundles):
    with pytest.raises(BundleError, match=r"has no encoder: export it with `ganstream export RUN --encoder`") as info:
        Inverter(load_bundle(bundles["none"]))
    assert str(bundles["none"]) in str(info.value) and info.value.field == "encoder"


# ---- files ---------------------------------------------------------------------------------------------


def _write(path: Path, audio: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


BAD_FILES = {
    "corrupt": (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio at all" * 10), "cannot be read as audio"),
    "empty": (lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
    "no frames": (lambda p: _write(p, np.zeros(0, np.float32)), r"empty \(no audio frames\)"),
    "silent": (lambda p: _write(p, np.zeros(SR, np.float32)), r"silent \(all zeros"),
    "very quiet": (lambda p: _write(p, np.full(SR, 2e-5, np.float32), subtype="FLOAT"), r"silent \(its peak is -94 dBFS"),
    "too short": (lambda p: _write(p, np.full(160, 0.5, np.float32)), r"too short: 10 ms of audio, at least 50 ms needed"),
    "too long": (lambda p: _write(p, np.full(3 * 8000, 0.5, np.float32), rate=8000), r"too long: 3 s of audio, at most 2 s"),
    "missing": (lambda p: None, "no such file"),
    "directory": (lambda p: p.mkdir(), "is a directory, not an audio file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_each_bad_file_gets_one_error_naming_it(exact, tmp_path, monkeypatch, case):
    monkeypatch.setattr(inversion, "MAX_SECONDS", 2.0)  # a cheap "too long" file: 3 s at 8 kHz
    make, match = BAD_FILES[case]
    path = tmp_path / "sample.wav"
    make(path)
    with pytest.raises(InversionError, match=match) as info:
        exact.invert_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and info.value.file == str(path)


def test_a_file_over_600_s_is_refused_before_it_is_read(exact, tmp_path):
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", 8000, 1, "PCM_16") as f:  # 601 s at 8 kHz, 9.6 MB, in blocks
        block = np.full(8000 * 60, 0.25, np.float32)
        for _ in range(10):
            f.write(block)
        f.write(block[:8000])
    with pytest.raises(InversionError, match=r"too long: 601 s of audio, at most 600 s"):
        exact.load(path)


def test_a_long_file_is_cut_from_its_onset(exact, tmp_path):
    z = rng_latent()
    tone = reference_audio(z)[0]
    rate = 44100  # resampled to the bundle's 16 kHz on the way in
    hiss = 1e-4 * np.random.default_rng(4).standard_normal(2 * rate)  # -60 dB under the tone: not its onset
    x = hiss.copy()
    body = np.interp(np.arange(rate) * SR / rate, np.arange(SEGMENT), tone)[: int(SEGMENT * rate / SR)]
    x[rate // 2 : rate // 2 + body.size] += body
    path = _write(tmp_path / "long.flac", np.stack([x, x], axis=1), rate=rate)  # stereo: mixed to mono
    audio, message = exact.load(path)
    assert audio.shape == (SEGMENT,) and message == "cut to 0.26 s from its onset at 0.50 s (of 2.00 s)"
    first = int(np.argmax(np.abs(audio) > 0.01 * np.abs(audio).max()))
    assert 75 <= first <= 85  # 5 ms (80 samples) of lead before the tone
    result = exact.invert(audio, message=message)
    assert result.message == message


def test_a_short_file_is_padded_and_an_array_can_be_prepared(exact, tmp_path):
    x = np.full(SR // 10, 0.5, np.float32)
    audio, message = exact.load(_write(tmp_path / "short.wav", x))
    assert audio.shape == (SEGMENT,) and np.all(audio[SR // 10 :] == 0) and message == "padded with silence from 0.10 s to 0.26 s"
    same, _ = exact.prepare(np.stack([x, x], axis=1), SR)  # (T, channels), as live capture gives it
    np.testing.assert_allclose(same, audio, atol=1e-4)  # the file was 16-bit
    exact_length, message = exact.prepare(np.full(SEGMENT, 0.5, np.float32), SR, source="mic")
    assert message is None
    with pytest.raises(InversionError, match=r"^mic: silent"):
        exact.prepare(np.zeros(SEGMENT), SR, source="mic")


# ---- torch refinement (ganstream invert --run) -------------------------------------------------------------


class FactoryTorch(torch.nn.Module):
    """The factory generator in torch: (B, D) -> (B, 1, segment)."""

    def __init__(self):
        super().__init__()
        w, s = weights(D, SEGMENT, SR)
        self.w = torch.nn.Parameter(torch.from_numpy(w))
        self.register_buffer("s", torch.from_numpy(s))

    def forward(self, z):
        return (torch.tanh(z @ self.w) @ self.s)[:, None, :]


@pytest.fixture
def one_torch_thread():
    """Tiny graphs: a second intra-op thread only waits (50x slower here while another process holds a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_torch_refinement_lowers_the_distance(bundles, one_torch_thread):
    inverter = Inverter(load_bundle(bundles["biased"]))
    audio = reference_audio(rng_latent())[0]
    refiner = TorchRefiner(FactoryTorch(), D, 1.0)
    start = inverter.encode(audio)
    row, d = refiner(audio, start, 20)
    with torch.no_grad():
        torch_start = float(torch_spectral_distance(torch.from_numpy(audio), FactoryTorch()(torch.from_numpy(start)[None])[:, 0]))
    assert d < 0.5 * torch_start and np.all(np.abs(row) <= 1.0)
    result = inverter.invert(audio, refine=20, refiner=refiner)
    assert result.method == "encoder + Adam through the run's torch generator, 20 steps"
    assert result.distance < 0.5 * result.encoder_distance  # measured on the bundle


# ---- the command ------------------------------------------------------------------------------------------


def _space(bundle_dir: Path) -> LatentSpace:
    return LatentSpace.from_bundle(load_bundle(bundle_dir))


def test_the_command_saves_a_preset_beside_the_others(bundles, tmp_path, capsys):
    z = rng_latent()
    sample = _write(tmp_path / "my sound.wav", reference_audio(z)[0], subtype="FLOAT")
    presets = tmp_path / "presets.json"
    space = _space(bundles["exact"])
    write_presets(presets, {"other": {"latent": np.full(D, 0.25), "macros": {"pc1": 0.5}}})
    argv = ["invert", str(bundles["exact"]), str(sample), "--presets", str(presets), "--random", "40", "--refine", "2", "--provider", "cpu"]
    assert ganstream(argv) == 0
    out = capsys.readouterr().out
    assert "encoder:" in out and "best of 40 random latents:" in out and "refined (CMA-ES, 2 generations of 12):" in out
    assert "chose: encoder" in out and f"saved preset 'my sound' to {presets}" in out
    read = load_presets(presets, space)
    assert sorted(read) == ["my sound", "other"]
    np.testing.assert_allclose(read["my sound"]["latent"], z[0], atol=1e-3)
    assert read["my sound"]["macros"] == {name: 0.0 for name in space.controls}
    np.testing.assert_allclose(read["other"]["latent"], 0.25)
    assert read["other"]["macros"] == {"pc1": 0.5}
    # --preset names it; a second run replaces only its own preset
    assert ganstream([*argv, "--preset", "other", "--random", "0"]) == 0
    read = load_presets(presets, space)
    assert sorted(read) == ["my sound", "other"]
    np.testing.assert_allclose(read["other"]["latent"], z[0], atol=1e-3)


def test_the_command_prints_a_conditioned_bundles_pitch_without_storing_it(bundles, tmp_path, capsys):
    row = np.zeros((1, D + 2), np.float32)
    row[0, 0], row[0, D], row[0, D + 1] = -0.3, 57, 1.0
    sample = _write(tmp_path / "note.wav", conditioned_audio(row)[0], subtype="FLOAT")
    presets = tmp_path / "p.json"
    assert ganstream(["invert", str(bundles["conditioned"]), str(sample), "--presets", str(presets), "--random", "20"]) == 0
    assert "estimated pitch: A3 (MIDI 57), velocity 1.00" in capsys.readouterr().out
    doc = json.loads(presets.read_text())
    assert list(doc["presets"]["note"]) == ["latent", "macros"]  # presets have no "pitch" (automation refuses it)
    assert load_presets(presets, _space(bundles["conditioned"]))["note"]["latent"][0] == pytest.approx(-0.3, abs=1e-3)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("ganstream invert: error: "), err
    return err


def test_the_command_refuses_user_errors_with_one_line(bundles, tmp_path, capsys):
    sample = _write(tmp_path / "s.wav", reference_audio(rng_latent())[0])
    presets = tmp_path / "p.json"
    assert ganstream(["invert", str(bundles["none"]), str(sample), "--presets", str(presets)]) == 2
    assert "has no encoder" in _error(capsys)
    silent = _write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    assert ganstream(["invert", str(bundles["exact"]), str(silent), "--presets", str(presets)]) == 2
    assert f"{silent}: silent" in _error(capsys)
    assert ganstream(["invert", str(tmp_path / "nowhere"), str(sample)]) == 2
    assert str(tmp_path / "nowhere") in _error(capsys)
    presets.write_text('{"presets": {"x": {"latent": [1, 2]}}}')  # another bundle's: kept, never clobbered
    assert ganstream(["invert", str(bundles["exact"]), str(sample), "--presets", str(presets), "--random", "0"]) == 2
    assert "latent has 2 values" in _error(capsys) and json.loads(presets.read_text()) == {"presets": {"x": {"latent": [1, 2]}}}
    assert ganstream(["invert", str(bundles["exact"]), str(sample), "--preset", "a/b", "--presets", str(tmp_path / "q.json")]) == 2
    assert "preset name 'a/b'" in _error(capsys) and not (tmp_path / "q.json").exists()
    with pytest.raises(SystemExit) as e:
        ganstream(["invert", str(bundles["exact"]), str(sample), "--refine", "-1"])
    assert e.value.code == 2 and "--refine" in capsys.readouterr().err


def test_the_command_refines_through_a_training_run(tiny_run, tmp_path, capsys, bundles, one_torch_thread):
    from ganstream.export.bundle import load_run_generator

    _, cfg, _, _ = load_run_generator(tiny_run)
    bundle = make_bundle(tmp_path / "b", segment=cfg.model.segment, latent_size=cfg.model.latent_dim,
                         sample_rate=cfg.data.sample_rate, encoder=True)
    sample = _write(tmp_path / "s.wav", np.sin(np.arange(cfg.model.segment) * 0.05).astype(np.float32) * 0.5, rate=cfg.data.sample_rate)
    presets = tmp_path / "p.json"
    argv = ["invert", str(bundle), str(sample), "--presets", str(presets), "--random", "0", "--refine", "2", "--run", str(tiny_run)]
    assert ganstream(argv) == 0
    assert "refined (Adam through the run's torch generator, 2 steps):" in capsys.readouterr().out
    assert "s" in load_presets(presets, _space(bundle))
    # a run that does not match the bundle is refused, naming what differs
    assert ganstream(["invert", str(bundles["exact"]), str(sample), "--presets", str(tmp_path / "q.json"), "--run", str(tiny_run)]) == 2
    assert "--run: its segment is" in _error(capsys)


def test_the_shipped_drums_invert_their_own_sounds(tmp_path):
    """The shipped drums bundle carries an encoder: a sound it made itself comes back nearer than the typical
    random latent's (measured: far nearer; benchmarks/inversion.py has the held-out real clips)."""
    bundle = load_bundle("drums")
    assert bundle.encoder is not None and bundle.encoder.inputs[0].shape == ("batch", bundle.segment)
    inv = Inverter(bundle, provider="cpu", threads=1)
    rows = bundle.random_rows(9, np.random.default_rng(11))
    sounds = inv.generator.generate(rows)
    for target in sounds[:3]:
        found = inv.invert(target)
        typical = float(np.median(inv.distance(target, rows[3:])))
        assert found.distance < typical, (found.distance, typical)
        assert np.all(np.abs(found.latent) <= 1.0)
