"""Spectral bundles without a reconstruction network (format version 4): the host rebuilds the audio from the
generator's spectrograms in numpy, by fast Griffin-Lim or PGHI (core/phase.py `PhaseReconstructor`).

A SpecGAN at its family's tiny size, trained one step, exported with `ganstream export --reconstruction`,
then loaded, generated, rendered and played live through it. No test here measures how good the sound is.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from test_bundle import delf, setf
from test_engine import OUT, assert_live_equals_render, make_engine, play
from test_manifest import reconstruction_manifest, spectral_manifest
from test_render import join_ratios

from ganstream.core import manifest as schema
from ganstream.core.manifest import BundleError, Manifest, PhaseReconstruction, lowest_version
from ganstream.core.phase import GriffinLim, PhaseReconstructor
from ganstream.core.spectral import BinNorm, SpectralParams, log_magnitude
from ganstream.export.bundle import DEFAULT_GL_ITERATIONS
from ganstream.export.cli import main as export_main
from ganstream.realtime.bundle import load_bundle, load_reconstruction
from ganstream.realtime.cli import bench_main, render_main
from ganstream.realtime.engine import render_timeline
from ganstream.realtime.inference import Generator
from ganstream.realtime.latents import ControlPath, LatentSpace
from ganstream.realtime.stream import SegmentStream, StreamSettings
from ganstream.training.config import load_config
from ganstream.training.loop import run_dir_for
from ganstream.training.models import FAMILIES, family_of

SR = 16000


# ---- the manifest -------------------------------------------------------------------------------


def fallback_manifest(method: str = "griffin-lim", iterations: int | None = 16) -> Manifest:
    """test_manifest's spectral manifest without its network: the generator, the front end and the method."""
    m = spectral_manifest(fused=False)
    return replace(
        m,
        format_version=lowest_version("spectral", m.streaming.mode, method),
        graphs={"generator": m.graphs["generator"]},
        spectral=replace(m.spectral, reconstruction=PhaseReconstruction(method, iterations)),
        files={k: v for k, v in m.files.items() if k != "vocoder.onnx"},
        provenance={"run_name": "spectral"},
    )


@pytest.mark.parametrize("method, iterations", [("griffin-lim", 16), ("pghi", None)])
def test_a_fallback_manifest_is_version_4_and_round_trips(method, iterations):
    m = fallback_manifest(method, iterations)
    assert m.format_version == 4
    data = m.to_json()
    assert data["spectral"]["reconstruction"] == ({"method": method, "iterations": 16} if iterations else {"method": method})
    assert Manifest.from_json(data) == m and Manifest.from_json(json.loads(m.dumps())) == m
    for mode in ("crossfade", "texture", "trigger"):
        assert lowest_version("spectral", mode, method) == 4
        assert lowest_version("spectral", mode) == (3 if mode == "trigger" else 2)  # bundles with a network keep theirs
    assert "reconstruction" not in spectral_manifest().to_json()["spectral"]  # and write no such key


def test_a_fallback_bundle_saying_version_3_is_refused_naming_the_method():
    data = {**fallback_manifest().to_json(), "format_version": 3}
    with pytest.raises(BundleError, match=r"^m.json: `spectral.reconstruction.method` is \"griffin-lim\", which format version 3 does not have: "
                       r"a spectral bundle without a reconstruction network needs format version 4$") as info:
        Manifest.from_json(data, "m.json")
    assert info.value.field == "spectral.reconstruction.method"


def test_a_reader_of_versions_1_to_3_asks_for_an_upgrade(monkeypatch):
    """What ganstream before version 4 does with a fallback bundle: the existing message, not a missing graph."""
    monkeypatch.setattr(schema, "VERSIONS", (1, 2, 3))
    with pytest.raises(BundleError, match=r"`format_version` is 4, but ganstream \S+ reads format version 1, 2, 3 only: upgrade ganstream"):
        Manifest.from_json(fallback_manifest().to_json())


BROKEN = [
    ("spectral.reconstruction.iterations", setf("spectral.reconstruction.iterations", 0), r"must be >= 1, got 0"),
    ("spectral.reconstruction.iterations", setf("spectral.reconstruction.iterations", 2.5), r"must be an integer, got 2.5"),
    ("spectral.reconstruction.iterations", delf("spectral.reconstruction.iterations"), r"missing required field"),
    ("spectral.reconstruction.method", setf("spectral.reconstruction.method", "istft"), r'must be one of "griffin-lim", "pghi", got "istft"'),
    ("spectral.reconstruction", setf("spectral.reconstruction", "griffin-lim"), r"must be an object with method \(and iterations for griffin-lim\)"),
    ("model.segment", setf("model.segment", 4000),
     r"is 4000 but griffin-lim rebuilds `spectral.frames` \(32\) frames of `spectral.params.hop` \(128\) into 4096 samples"),
    ("graphs.reconstruction", setf("graphs.reconstruction", spectral_manifest().graphs["reconstruction"].to_json()),
     r"is not a graph role of a spectral bundle that rebuilds its audio by griffin-lim \(`spectral.reconstruction`\) \(only `generator`\)"),
]


@pytest.mark.parametrize("field, change, message", BROKEN, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BROKEN)])
def test_broken_fallback_manifests_are_refused_naming_the_field(field, change, message):
    data = copy.deepcopy(fallback_manifest().to_json())
    change(data)
    with pytest.raises(BundleError, match=message) as info:
        Manifest.from_json(data)
    assert info.value.field == field and f"`{field}`" in str(info.value)


def test_a_reconstruction_bundle_has_no_fallback():
    data = reconstruction_manifest().to_json()
    data = {**data, "format_version": 4, "spectral": {**data["spectral"], "reconstruction": {"method": "pghi"}}}
    with pytest.raises(BundleError, match=r"`spectral.reconstruction` must be absent in a reconstruction bundle"):
        Manifest.from_json(data)


# ---- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spectral_run(tmp_path_factory):
    """A SpecGAN at its family's tiny size (width 2, 32 frames: 4096 samples) trained one step on synth:piano."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [
        "model.kind=specgan", *FAMILIES["specgan"].tiny, "run.seed=1", "data.source=synth:piano", "data.synth_items=8",
        f"data.cache_dir={tmp / 'cache'}", f"run.out_dir={tmp / 'runs'}", "train.batch_size=4", "train.steps=1", "loss.critic_steps=1",
        "train.progress=false", "train.tensorboard=false", "train.preview_every=1000", "train.eval_every=0", "train.device=cpu",
    ])
    run = family_of(cfg.model).run_class()(cfg, run_dir_for(cfg), torch.device("cpu"))
    run.train()
    return run.run_dir


@pytest.fixture(scope="module")
def gl_bundle(spectral_run, tmp_path_factory):
    """The run exported with `--reconstruction griffin-lim` (the default iterations) and its controls."""
    out = tmp_path_factory.mktemp("gl") / "gl.gsb"
    assert export_main([str(spectral_run), "-o", str(out), "--reconstruction", "griffin-lim"]) == 0
    return out


@pytest.fixture(scope="module")
def pghi_bundle(spectral_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pghi") / "pghi.gsb"
    assert export_main([str(spectral_run), "-o", str(out), "--reconstruction", "pghi", "--controls", "0"]) == 0
    return out


def test_export_writes_the_generator_the_front_end_and_the_method(gl_bundle):
    manifest = json.loads((gl_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 4 and manifest["model"]["kind"] == "spectral"
    assert list(manifest["graphs"]) == ["generator"] and "vocoder.onnx" not in manifest["files"]
    # New bundles start Griffin-Lim from the phase-locked vocoder's phase (core/phase.py locked_phase).
    assert manifest["spectral"]["reconstruction"] == {"method": "griffin-lim", "iterations": DEFAULT_GL_ITERATIONS, "initial_phase": "locked"}
    assert manifest["model"]["segment"] == 32 * 128
    assert {c["name"] for c in manifest["controls"]["items"]} >= {"pc1", "loudness"}  # the descriptors heard through Griffin-Lim
    bundle = load_bundle(gl_bundle)
    assert bundle.spec.to_json() == manifest
    with pytest.raises(BundleError, match=r"`spectral.reconstruction` says the bundle has no reconstruction network") as info:
        load_reconstruction(gl_bundle)
    assert info.value.field == "spectral.reconstruction"


@pytest.mark.parametrize("option, message", [
    ("griffin-lim:0", "--reconstruction griffin-lim:0: griffin-lim:N takes N, the iterations per segment, as a whole number of at least 1"),
    ("griffin-lim:many", "--reconstruction griffin-lim:many: griffin-lim:N takes N"),
    ("bogus", f"--reconstruction bogus: unknown; use griffin-lim ({DEFAULT_GL_ITERATIONS} iterations per segment), griffin-lim:N (N iterations) or pghi"),
    ("pghi:8", "--reconstruction pghi:8: pghi has no iterations to count; use pghi"),
    ("griffin-lim:8:sideways", "--reconstruction griffin-lim:8:sideways: griffin-lim:N takes N"),
    ("griffin-lim:8:4", "then :random to start from a random phase"),
])
def test_export_refuses_a_nonsense_reconstruction_in_one_line(spectral_run, tmp_path, capsys, option, message):
    out = tmp_path / "x.gsb"
    assert export_main([str(spectral_run), "-o", str(out), "--reconstruction", option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ganstream export: error: ") and message in err, err
    assert not out.exists()


def test_export_asks_for_a_network_or_a_method_but_not_both(spectral_run, tiny_run, tmp_path, capsys):
    out = tmp_path / "x.gsb"
    assert export_main([str(spectral_run), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "name the reconstruction network with --vocoder VOCODER_RUN, or rebuild the audio without one with --reconstruction griffin-lim[:N] or pghi" in err
    assert export_main([str(spectral_run), "-o", str(out), "--vocoder", str(tmp_path), "--reconstruction", "pghi"]) == 2
    assert "not both; give one" in capsys.readouterr().err
    assert export_main([str(spectral_run), "-o", str(out), "--reconstruction", "pghi", "--fused"]) == 2
    assert "--fused: a bundle rebuilt by pghi has no reconstruction network" in capsys.readouterr().err
    assert export_main([str(tiny_run), "-o", str(out), "--reconstruction", "pghi"]) == 2  # a WaveGAN makes audio itself
    assert "wavegan generates audio; --reconstruction is for spectral GAN runs" in capsys.readouterr().err
    assert not out.exists()


# ---- generating and rendering ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gl_bundle", "pghi_bundle"])
def test_the_fallback_makes_segments_of_exactly_the_segment_length(request, which):
    bundle = load_bundle(request.getfixturevalue(which))
    generator = Generator(bundle, provider="cpu", threads=1, warmup_batch_sizes=(1, 3))
    z = bundle.random_latents(3, np.random.default_rng(0))
    audio = generator.generate(z)
    assert audio.shape == (3, 32 * 128) == (3, bundle.segment) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-4
    # What render and the live stream rely on: a row's audio is the same alone, in a batch, and every time.
    np.testing.assert_array_equal(generator.generate(z[1:2])[0], audio[1])
    np.testing.assert_array_equal(Generator(bundle, provider="cpu", threads=1).generate(z), audio)
    # The numpy stage alone on the generator graph's spectrograms.
    s = bundle.spectral
    method = s.reconstruction
    spectrograms = generator.session.run(None, {"z": z})[0]
    rebuilt = PhaseReconstructor(s.params, s.norm, s.frames, method.method, method.iterations, method.initial_phase).reconstruct(spectrograms)
    np.testing.assert_array_equal(rebuilt, audio)
    assert generator.reconstruction == f"{method.describe()}, in numpy"


@pytest.mark.parametrize("params, frames", [(SpectralParams(), 1), (SpectralParams(), 7), (SpectralParams(hop=96), 10),
                                            (SpectralParams(n_fft=512, hop=128, mel_bins=64), 12)])
def test_griffin_lim_gives_frames_times_hop_samples_at_any_front_end(params, frames):
    mag = np.exp(np.random.default_rng(0).normal(-3, 1, (params.bins, frames)))
    gl = GriffinLim(params, frames)
    audio = gl(mag, 3)
    assert audio.shape == (frames * params.hop,) and audio.dtype == np.float32 and np.isfinite(audio).all()
    out = np.empty(frames * params.hop, np.float32)
    assert gl(mag, 3, out=out) is out and np.array_equal(out, audio)  # the same plan again: the same audio


@pytest.mark.parametrize("which", ["gl_bundle", "pghi_bundle"])
def test_a_fallback_bundle_renders_to_the_sample(request, tmp_path, which):
    out = tmp_path / "r.wav"
    bundle = request.getfixturevalue(which)
    assert render_main([str(bundle), "-o", str(out), "--seconds", "1.3", "--sample-rate", "16000", "--provider", "cpu", "--subtype", "float"]) == 0
    audio, sr = sf.read(out)
    assert sr == SR and len(audio) == round(1.3 * SR)
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-4


# ---- joins ----------------------------------------------------------------------------------------


class ToneSpectrograms:
    """A stand-in spectral generator in numpy, heard through the fallback: each latent's first value picks a tone
    (300 to 600 Hz, so the walk makes neighbouring segments differ), whose normalised log-magnitude the
    `PhaseReconstructor` rebuilds. Tones make a click stand out: their sample-to-sample steps are small."""

    sample_rate, latent_size = SR, 2
    params, frames = SpectralParams(), 32
    norm = BinNorm(np.full(128, -6.0), np.full(128, 2.5), 3.0)

    def __init__(self, method: str, iterations: int | None):
        self.segment = self.params.samples(self.frames)
        self.rebuild = PhaseReconstructor(self.params, self.norm, self.frames, method, iterations)

    def generate(self, z: np.ndarray) -> np.ndarray:
        t = np.arange(self.segment) / SR
        tones = [0.3 * np.sin(2 * np.pi * (450 + 150 * row[0]) * t) for row in z]
        return self.rebuild.reconstruct(np.stack([self.norm.normalise(log_magnitude(x, self.params)) for x in tones]))


@pytest.mark.parametrize("method, iterations", [("griffin-lim", DEFAULT_GL_ITERATIONS), ("pghi", None)])
@pytest.mark.parametrize("mode", ["crossfade", "texture"])
def test_no_step_at_the_joins_of_rebuilt_segments(method, iterations, mode):
    """test_render's click measure (a join's largest sample step over those of the stretches beside it) on 12 s
    of a fast walk, in the engine's two ways of joining segments: an equal-power crossfade, Hann overlap-add."""
    generator = ToneSpectrograms(method, iterations)
    settings = StreamSettings(mode=mode, crossfade=1024, texture_overlap=4)
    stream = SegmentStream(generator, ControlPath.random_walk(LatentSpace(2), 3, 4.0, 1.0, SR), settings)
    x = stream.read(12 * SR)
    overlap = settings.crossfade if mode == "crossfade" else 0
    ratios = join_ratios(x, SR, stream.hop, overlap)
    assert len(ratios) >= 12 * SR // stream.hop - 4
    assert ratios.max() < 2.0, ratios.max()


def test_the_join_measure_fails_on_hard_cuts_between_rebuilt_segments():
    """The negative control: the same PGHI tones cut without a crossfade click (Griffin-Lim's own fade-out over
    the last 48 samples, ENVELOPE_FLOOR, hides a cut from this measure)."""
    generator = ToneSpectrograms("pghi", None)
    stream = SegmentStream(generator, ControlPath.random_walk(LatentSpace(2), 3, 4.0, 1.0, SR), StreamSettings(mode="crossfade", crossfade=0))
    assert join_ratios(stream.read(12 * SR), SR, stream.hop, 0).max() > 4.0


# ---- live -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["crossfade", "texture"])
def test_live_output_of_a_fallback_bundle_equals_the_render_of_its_timeline(gl_bundle, mode):
    """test_engine's promise for a bundle rebuilt by Griffin-Lim: the live stream, knobs turning, is its render."""
    bundle = load_bundle(gl_bundle)
    generator = Generator(bundle, provider="cpu", threads=1, warmup_batch_sizes=(1, 2))
    space = LatentSpace.from_bundle(bundle)
    engine = make_engine(bundle, generator, mode, seed=2, walk_depth=0.3)
    c = engine.controls
    rng = np.random.default_rng(1)
    actions = [(0.05 * i, lambda: c.set_macro("pc1", float(rng.uniform(-1, 1)))) for i in range(20)]
    actions += [(0.6, lambda: c.set_latent_dim(3, 0.9)), (1.0, lambda: c.set_seed(11))]
    out = play(engine, 1.6, capture_s=3.0, actions=actions)
    n = min(engine.ring.read_position, len(out.captured))
    assert n > OUT
    offline = render_timeline(generator, space, engine.timeline(), n)
    assert_live_equals_render(out, offline)
    assert np.abs(offline).max() > 1e-3


def test_bench_reports_the_fallbacks_real_time_factor(gl_bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [str(gl_bundle), "--provider", "cpu", "--null", "--seconds", "0.5", "--modes", "crossfade", "--json", str(out)]
    assert bench_main(argv) == 0
    doc = json.loads(out.read_text())
    g = doc["generator"]
    assert g["reconstruction"] == f"griffin-lim, {DEFAULT_GL_ITERATIONS} iterations from the locked phase, in numpy"
    assert g["segment_s"] == 32 * 128 / SR and g["rtf"] == pytest.approx(g["segment_s"] / g["seconds"])
    assert doc["rtf"]["crossfade"]["rtf"] > 1  # real time, even on a busy test machine
    assert f"griffin-lim, {DEFAULT_GL_ITERATIONS} iterations from the locked phase, in numpy" in capsys.readouterr().err


@pytest.mark.parametrize("option, iterations, initial", [
    ("griffin-lim", DEFAULT_GL_ITERATIONS, "locked"), ("griffin-lim:8", 8, "locked"),
    ("griffin-lim:8:random", 8, "random"), ("griffin-lim:random", DEFAULT_GL_ITERATIONS, "random"),
])
def test_reconstruction_option_names_iterations_and_initial_phase(option, iterations, initial):
    from ganstream.export.bundle import parse_reconstruction

    r = parse_reconstruction(option)
    assert (r.method, r.iterations, r.initial_phase) == ("griffin-lim", iterations, initial)
    data = r.to_json()
    assert ("initial_phase" in data) == (initial == "locked")  # a random start writes what version-4 bundles wrote
    assert type(r).from_json(data) == r


def test_a_manifest_with_an_unknown_initial_phase_names_the_field():
    from ganstream.core.manifest import PhaseReconstruction

    with pytest.raises(BundleError, match=r"spectral\.reconstruction\.initial_phase"):
        PhaseReconstruction.from_json({"method": "griffin-lim", "iterations": 4, "initial_phase": "sideways"})
