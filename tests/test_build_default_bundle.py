"""tools/build_default_bundle.py: the table of shipped bundles, the provenance it writes from a set's stamp.json,
and --from-run end to end on a one-step tiny run (the set's stamp faked in tmp_path, nothing trained on a real set)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ganstream.core.manifest import STREAMING_MODES
from ganstream.export.bundle import PROVENANCE_KEYS
from ganstream.realtime import bundle as bundle_module
from ganstream.realtime.bundle import load_bundle
from ganstream.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("build_default_bundle", ROOT / "tools" / "build_default_bundle.py")
tool = sys.modules[SPEC.name] = importlib.util.module_from_spec(SPEC)  # registered first: its dataclass looks itself up
SPEC.loader.exec_module(tool)

# The shape of training/data/real_sets.py's stamp.json, cut down.
STAMP = {
    "format": 1, "set": "drums", "seed": 0, "params": {"heldout_fraction": 0.2, "sample_rate": 16000},
    "packages": {"hydrogen-drumkits": "2017.09.19~dfsg-1"},
    "counts": {"train": {"clips": 569, "seconds": 987.14}, "heldout": {"clips": 185, "seconds": 187.31}},
    "kits": {"Audiophob": {"licence": "This work is licensed under the Creative Commons 0 License.", "clips": 14, "missing_files": 0}},
    "licences": {"hydrogen-drumkits": {"file": "licenses/hydrogen-drumkits.copyright", "licenses": ["CC-BY-3.0", "CC0", "GPL-2"]}},
    "built": "2026-12-06T01:53:42", "build_s": 12.5, "about": "Hydrogen drum kits' one-shots",
    "licence": "each kit its own (the stamp's kits.*.licence): GPL-2, CC-BY-3.0, CC-BY-SA-3.0 or CC0",
}


def fake_set(root: Path, name: str = "drums", stamp: dict = STAMP) -> Path:
    folder = root / "sets" / name
    folder.mkdir(parents=True)
    (folder / "stamp.json").write_text(json.dumps(stamp))
    return folder / "stamp.json"


# ---- the table ------------------------------------------------------------------------------------


def test_the_table_names_a_config_a_set_a_title_and_a_mode_per_bundle():
    assert sorted(tool.SHIPPED) == ["drums", "piano"]
    assert (tool.SHIPPED["piano"].mode, tool.SHIPPED["drums"].mode) == ("crossfade", "trigger")
    for name, spec in tool.SHIPPED.items():
        assert (ROOT / spec.config).is_file() and spec.mode in STREAMING_MODES and spec.title == name
    # The piano is pitch-conditioned: it trains on the note set, which holds every note of its range.
    assert (tool.SHIPPED["piano"].set, tool.SHIPPED["drums"].set) == ("notes", "drums")
    piano = load_config(ROOT / tool.SHIPPED["piano"].config)
    assert piano.data.source == "set:notes" and (piano.model.condition, piano.model.harmonics) == ("pitch+velocity", 16)


def test_the_drums_config_is_the_baseline_recipe_on_the_drums_set():
    drums = load_config(ROOT / tool.SHIPPED["drums"].config)
    baseline = load_config(ROOT / "configs" / "wavegan-cpu-baseline.yaml", ["run.name=default-bundle-drums", "data.source=set:drums"])
    assert drums == baseline


def test_train_commands_build_the_set_then_train():
    drums = tool.SHIPPED["drums"]
    assert tool.train_commands(drums, None, 10, ROOT / "runs", None) == [
        ["python", "tools/build_sets.py", "drums"],
        ["train", "configs/default-bundle-drums.yaml", "train.steps=10", "--out", "runs"],
    ]
    again = tool.train_commands(drums, Path("/data"), 10, ROOT / "runs", ROOT / "runs" / "default-bundle-drums-0123abcd")
    assert again == [
        ["python", "tools/build_sets.py", "drums", "--root", "/data"],
        ["train", "--resume", "runs/default-bundle-drums-0123abcd", "train.steps=10"],
    ]


def test_the_shipped_bundles_fit_the_limit(tmp_path, monkeypatch):
    assert tool.over_limit() is None, tool.over_limit()  # the checkout's realtime/bundles/
    (tmp_path / "drums").mkdir()
    (tmp_path / "drums" / "generator.onnx").write_bytes(b"12345")
    monkeypatch.setattr(tool, "TARGET", tmp_path)
    monkeypatch.setattr(tool, "LIMIT_BYTES", 4)
    assert "holds 0.00 MB, more than the 4e-06 MB the shipped bundles may take: rebuild with --fp16" in tool.over_limit()


# ---- provenance from the set's stamp -----------------------------------------------------------


def test_data_provenance_holds_the_source_the_licence_names_and_the_stamp(tmp_path):
    fake_set(tmp_path)
    stamp, file = tool.read_set_stamp(tmp_path, "drums")
    assert file == tmp_path / "sets" / "drums" / "stamp.json" and stamp == STAMP
    data = tool.data_provenance("set:drums", stamp, file)
    assert data == {"source": "set:drums", "licence": STAMP["licence"], "licences": {"hydrogen-drumkits": ["CC-BY-3.0", "CC0", "GPL-2"]}, "stamp": STAMP}
    json.dumps(data, allow_nan=False)  # it goes into manifest.json as it is


def test_a_missing_stamp_or_field_is_one_error_naming_the_file(tmp_path):
    with pytest.raises(tool.BuildError, match=r"sets/drums/stamp.json: missing or unreadable.*python tools/build_sets.py drums"):
        tool.read_set_stamp(tmp_path, "drums")
    broken = {k: v for k, v in STAMP.items() if k not in ("licences", "counts")}
    with pytest.raises(tool.BuildError, match=r"x/stamp.json: has no licences, counts; rebuild the set \(python tools/build_sets.py drums --force\)"):
        tool.data_provenance("set:drums", broken, Path("x/stamp.json"))


# ---- --from-run, end to end --------------------------------------------------------------------


def test_run_data_reads_the_runs_source_and_cache(tiny_run):
    source, root = tool.run_data(tiny_run)
    assert source == "synth:piano" and root == tiny_run.parent.parent / "cache"


def test_a_run_not_trained_on_the_set_is_refused(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tool, "TARGET", tmp_path / "bundles")
    assert tool.main(["drums", "--from-run", str(tiny_run), "--trained-by", "train x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tiny_run}/config.yaml: data.source is 'synth:piano', but the drums bundle is made from set:drums" in err
    assert not (tmp_path / "bundles").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--from-run", "r"], "--from-run needs --trained-by COMMAND"),
        (["--trained-by", "train x"], "--trained-by goes with --from-run"),
        (["--from-run", "r", "--trained-by", "train x", "--steps", "5"], "--steps and --resume train a run"),
    ],
)
def test_option_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        tool.main(["drums", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_from_run_exports_a_playable_bundle_with_its_provenance(tiny_run, tmp_path, monkeypatch, capsys):
    stamp_file = fake_set(tmp_path / "cache")
    monkeypatch.setattr(tool, "run_data", lambda run: ("set:drums", tmp_path / "cache"))  # as if it had trained on set:drums
    monkeypatch.setattr(tool, "TARGET", tmp_path / "bundles")
    trained_by = "python benchmarks/quality_per_cpu.py --sets drums"

    assert tool.main(["drums", "--from-run", str(tiny_run), "--trained-by", trained_by]) == 2  # no best.pt: not evaluated
    assert "no best checkpoint" in capsys.readouterr().err

    argv = ["drums", "--from-run", str(tiny_run), "--trained-by", trained_by, "--checkpoint", "latest", "--fp16"]
    assert tool.main(argv) == 0
    monkeypatch.setattr(bundle_module, "SHIPPED_BUNDLES", tmp_path / "bundles")
    b = load_bundle("drums")  # what `ganstream play drums` loads
    assert b.source == tmp_path / "bundles" / "drums"
    assert b.name == "drums" and b.streaming.mode == "trigger" and b.graph("generator").precision == "fp16"
    prov = b.provenance
    export = f"ganstream export {tiny_run} -o {tmp_path / 'bundles' / 'drums'} --name drums --mode trigger --checkpoint latest --fp16"
    assert prov["command"] == f"{trained_by} && {export}"
    assert prov["built_by"].startswith("python tools/build_default_bundle.py drums --from-run ") and "--fp16" in prov["built_by"]
    assert prov["data"] == tool.data_provenance("set:drums", STAMP, stamp_file)
    assert (prov["run_name"], prov["checkpoint"], prov["step"]) == ("run", "latest", 1)  # run.name of the defaults
    assert set(prov) == set(PROVENANCE_KEYS) - {"reconstruction"} | {"built_by", "data"}  # export's own keys, and the tool's


def test_a_shipped_encoder_comes_with_its_refiner(tmp_path, monkeypatch):
    """--encoder exports the encoder with export's defaults, its refiner included."""
    import ganstream.export.bundle as export_bundle

    seen: dict = {}
    monkeypatch.setattr(export_bundle, "export_run", lambda run_dir, out, **kw: seen.update(kw) or out)
    monkeypatch.setattr(tool, "TARGET", tmp_path / "bundles")
    tool.export_shipped("drums", tmp_path / "run", "best", True, ["train x"], {}, "python tools/build_default_bundle.py drums", encoder=True)
    assert seen["encoder"] is True
    assert seen["command"].endswith("--checkpoint best --fp16 --encoder")
    tool.export_shipped("drums", tmp_path / "run", "best", True, ["train x"], {}, "python tools/build_default_bundle.py drums")
    assert seen["encoder"] is False and "--encoder" not in seen["command"]
