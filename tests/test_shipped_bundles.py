"""Bundles shipped with ganstream, played by name (`ganstream play drums`), and export's --mode
(a trigger bundle is format version 3, of either kind; every other keeps 1 or 2).

What a bundle argument names is decided in one place, `resolve_bundle`: an existing path wins, then a
shipped bundle's name; otherwise one error saying the path does not exist and listing the shipped names.
The tests ship bundles from a temporary folder (SHIPPED_BUNDLES patched), so they need no drums bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from bundle_factory import make_bundle
from test_spectral_bundle import StandInConfig, StandInGenerator, norm_of

from ganstream.core.manifest import STREAMING_MODES
from ganstream.export.bundle import export_run, export_spectral
from ganstream.export.onnx import ExportError
from ganstream.main import main as ganstream
from ganstream.realtime import bundle as bundle_module
from ganstream.realtime.bundle import DEFAULT_NAME, SHIPPED_BUNDLES, BundleError, load_bundle, resolve_bundle, shipped_bundles
from ganstream.realtime.cli import bench_main, play_main, render_main
from ganstream.realtime.stream import MODES
from ganstream.training.models.vocoder import Vocoder, VocoderConfig

SEG = 2048


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A shipped-bundles folder holding `piano` and `drums` (two different test bundles), in place of the package's."""
    folder = tmp_path / "shipped"
    make_bundle(folder / "piano", segment=SEG, latent_size=8)
    make_bundle(folder / "drums", segment=2 * SEG, latent_size=8)
    (folder / "not-a-bundle").mkdir()  # a folder without a manifest is not a shipped bundle
    monkeypatch.setattr(bundle_module, "SHIPPED_BUNDLES", folder)
    return folder


def test_the_package_ships_piano_as_the_default():
    assert DEFAULT_NAME == "piano" and "piano" in shipped_bundles()
    assert resolve_bundle(None) == resolve_bundle("piano") == SHIPPED_BUNDLES / "piano"
    assert (SHIPPED_BUNDLES / "piano" / "manifest.json").is_file()


def test_a_shipped_name_resolves_to_its_folder(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped_bundles() == ("drums", "piano")
    assert resolve_bundle("drums") == shipped / "drums" and resolve_bundle(None) == shipped / "piano"
    b = load_bundle("drums")
    assert b.source == shipped / "drums" and b.segment == 2 * SEG
    assert load_bundle().segment == SEG  # no name: piano


def test_an_existing_path_wins_over_a_shipped_name(shipped, tmp_path, monkeypatch):
    here = tmp_path / "here"
    make_bundle(here / "drums", segment=SEG // 2, latent_size=8)
    monkeypatch.chdir(here)
    assert resolve_bundle("drums") == Path("drums")
    assert load_bundle("drums").segment == SEG // 2
    # negative control: from elsewhere, the same argument is the shipped bundle
    monkeypatch.chdir(tmp_path)
    assert load_bundle("drums").segment == 2 * SEG


def test_neither_a_path_nor_a_name_is_one_error_listing_the_names(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match=r"^bass: no such bundle: nothing at this path .* shipped with ganstream: drums, piano\)$"):
        resolve_bundle("bass")
    with pytest.raises(BundleError, match=r"not-a-bundle: no such bundle.*drums, piano"):
        load_bundle("not-a-bundle")
    monkeypatch.setattr(bundle_module, "SHIPPED_BUNDLES", tmp_path / "none")
    with pytest.raises(BundleError, match=r"bass: no such bundle: .*no bundles are shipped with this installation"):
        resolve_bundle("bass")


def test_every_command_taking_a_bundle_takes_a_name(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert render_main(["drums", "-o", "drums.wav", "--seconds", "0.5", "--provider", "cpu"]) == 0
    audio, rate = sf.read(tmp_path / "drums.wav")
    assert len(audio) == rate // 2 and np.abs(audio).max() > 0
    capsys.readouterr()
    for command in (
        lambda: render_main(["bass", "-o", "bass.wav", "--seconds", "1"]),
        lambda: play_main(["bass", "--no-realtime", "--no-osc", "--quiet", "--seconds", "1"]),
        lambda: bench_main(["bass", "--null", "--seconds", "0.1"]),
    ):
        assert command() == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "bass: no such bundle" in err and "drums, piano" in err, err


def test_help_names_the_shipped_bundles(shipped, capsys):
    assert render_main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "shipped with ganstream (drums, piano); default: piano" in out


# ---- export --mode -------------------------------------------------------------------------------


def test_the_manifest_takes_every_mode_the_live_engine_has():
    assert STREAMING_MODES == MODES


def test_export_mode_trigger_is_what_render_plays_by_default(tiny_run, tmp_path, capsys):
    out = tmp_path / "t.gsb"
    assert ganstream(["export", str(tiny_run), "-o", str(out), "--mode", "trigger", "--controls", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["format_version"], manifest["model"]["kind"], manifest["streaming"]["mode"]) == (3, "waveform", "trigger")
    assert load_bundle(out).streaming.mode == "trigger" and load_bundle(out).spec.format_version == 3
    capsys.readouterr()
    assert render_main([str(out), "-o", str(tmp_path / "t.wav"), "--seconds", "1", "--provider", "cpu"]) == 0
    assert "(trigger" in capsys.readouterr().err
    audio, _ = sf.read(tmp_path / "t.wav")
    assert not np.any(audio)  # trigger mode: silence until a note, and render was given none
    # negative control: the same bundle in crossfade mode sounds from the start
    assert render_main([str(out), "-o", str(tmp_path / "c.wav"), "--seconds", "1", "--provider", "cpu", "--mode", "crossfade"]) == 0
    assert np.abs(sf.read(tmp_path / "c.wav")[0]).max() > 0


def test_export_without_mode_keeps_the_mode_it_picks(tiny_run, tmp_path):
    assert ganstream(["export", str(tiny_run), "-o", str(tmp_path / "d.gsb"), "--controls", "0"]) == 0
    b = load_bundle(tmp_path / "d.gsb")
    assert b.streaming.mode == "crossfade"  # 16384 samples: a phrase, not a grain
    assert b.spec.format_version == 1  # the lowest version that describes it: hosts that read only 1 still play it


@pytest.mark.parametrize("mode, version", [("crossfade", 2), ("texture", 2), ("trigger", 3)])
def test_a_spectral_bundle_is_version_2_unless_it_is_a_trigger_bundle(tmp_path, mode, version):
    """tests/test_spectral_bundle.py's stand-in spectral GAN (a dense layer) and a tiny vocoder."""
    torch.manual_seed(0)
    cfg = StandInConfig()
    generator = StandInGenerator(cfg).eval()
    generator.set_norm(norm_of(cfg.bins))
    vocoder = Vocoder(VocoderConfig(width=8, depth=1)).eval()
    vocoder.set_norm(norm_of(cfg.bins))
    out = export_spectral(generator, cfg, generator.norm(), vocoder, tmp_path / "s.gsb", name="s", provenance={}, mode=mode)
    b = load_bundle(out)
    assert (b.kind, b.spec.format_version, b.streaming.mode) == ("spectral", version, mode)


def test_export_refuses_an_unknown_mode_and_provenance_it_writes_itself(tiny_run, tmp_path, capsys):
    with pytest.raises(ExportError, match=r"mode 'loop': unknown streaming mode \(modes: crossfade, texture, trigger\)"):
        export_run(tiny_run, tmp_path / "x.gsb", mode="loop")
    with pytest.raises(ExportError, match=r"extra provenance: command, step written by export itself"):
        export_run(tiny_run, tmp_path / "x.gsb", extra_provenance={"step": 3, "command": "x", "data": {}})
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit, as for every export option
        ganstream(["export", str(tiny_run), "-o", str(tmp_path / "x.gsb"), "--mode", "loop"])
    assert exit_.value.code == 2 and "invalid choice: 'loop'" in capsys.readouterr().err
    assert not (tmp_path / "x.gsb").exists()
