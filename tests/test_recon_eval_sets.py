"""`ganstream eval-reconstruction` on several sources in one run: one table each, a set's held-out folder used
whole, what the normalisation's clip costs (`--norm-clips`), and a missing source named before any work (bad option
values: tests/test_recon_eval.py)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ganstream.main import main as ganstream
from ganstream.training.data import real_sets

SEGMENT = 8192
BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "reconstruction_real_sets.py"


def write_tones(folder: Path, count: int, seed: int, lowest: float = 110.0) -> Path:
    """`count` files of one segment, each a sustained three-partial tone at a random pitch: strong spectral
    peaks, each far louder than its bins are in most of the other files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = np.arange(SEGMENT) / 16000
    for i in range(count):
        f0 = lowest * 2 ** (rng.integers(0, 36) / 12)
        x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 4))
        sf.write(folder / f"tone{i}.wav", (0.3 * x).astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return write_tones(root / "low", 12, seed=0), write_tones(root / "high", 8, seed=1, lowest=440.0)


@pytest.fixture
def fake_piano_set(tmp_path, monkeypatch):
    """set:piano resolves to a small folder with train/ and heldout/, built from tones instead of fluidsynth."""
    root = tmp_path / "sets" / "piano"
    write_tones(root / "train", 8, seed=2)
    write_tones(root / "heldout", 5, seed=3)
    monkeypatch.setattr(real_sets, "build_set", lambda name, cache_root, *a, **k: root)
    return root


def run(tmp_path, *args):
    out = tmp_path / "recon.json"
    rc = ganstream(["eval-reconstruction", *args, "--segment", str(SEGMENT), "--holdout", "0.5",
                    "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_several_sources_give_one_table_each(folders, tmp_path, capsys):
    rc, report = run(tmp_path, *map(str, folders))
    out = capsys.readouterr().out
    assert rc == 0
    assert [one["audio"] for one in report["sets"]] == [str(f) for f in folders]
    assert sum(line.startswith("method ") for line in out.splitlines()) == 2  # one table per source
    assert report["segment"] == SEGMENT and report["norm_clips"] == [3.0]  # SpecGAN's clip, without a network
    for folder, one in zip(folders, report["sets"]):
        assert f"\n{folder}: " in "\n" + out
        rows = {r["method"]: r for r in one["rows"]}
        assert list(rows) == ["GL-32 exact", "GL-16 locked exact", "GL-32 locked exact", "GL-100 exact", "PGHI exact", "GL-32 clip 3"]  # the exact rows lead
        assert [r["input"] for r in rows.values()] == ["exact"] * 5 + ["clip 3"]
        assert all(np.isfinite(r["spectral_convergence_db"]) and r["clips"] == rows["GL-32 exact"]["clips"] for r in rows.values())
        assert one["held_out"].startswith("its holdout split") and one["statistics"] == f"{folder}'s training statistics"


def test_a_looser_clip_costs_no_more_than_a_tighter_one(folders, tmp_path, capsys):
    rc, report = run(tmp_path, str(folders[0]), "--norm-clips", "1,4,2,none")
    assert rc == 0, capsys.readouterr().err
    (one,) = report["sets"]
    methods = [r["method"] for r in one["rows"]]
    assert methods[5:] == ["GL-32 clip 1", "GL-32 clip 4", "GL-32 clip 2"]  # "none" is the exact row: no row of its own
    costs = one["clip_costs"]
    assert [c["clip"] for c in costs] == [1.0, 2.0, 4.0, None]  # tightest first, no clip last
    sc = [c["spectral_convergence_db"] for c in costs]
    # A trend with a tolerance: each looser clip is no worse than the tighter one before it (measured: clip 1 costs
    # about 18 dB, clip 2 about 9, clip 4 about 3 on these tones). The tightest clip has to bind, or the trend says nothing.
    assert all(looser <= tighter + 1.0 for tighter, looser in zip(sc, sc[1:])), sc
    assert costs[0]["spectral_convergence_cost_db"] > 6.0 and costs[0]["energy_removed"] > 0.2
    above = [c["bins_clipped_above"] for c in costs]
    assert above == sorted(above, reverse=True) and above[0] > 0 and above[-1] == 0
    assert costs[-1]["method"] == "GL-32 exact" and costs[-1]["spectral_convergence_cost_db"] == 0.0
    out = capsys.readouterr().out
    assert "what the clip costs GL-32" in out and "\nnone " in out


def test_a_sets_held_out_folder_is_used_whole(fake_piano_set, tmp_path, capsys):
    rc, report = run(tmp_path, "set:piano/heldout")
    assert rc == 0, capsys.readouterr().err
    (one,) = report["sets"]
    assert one["files"] == 5 and all(r["clips"] == 5 for r in one["rows"])  # every file, not a holdout split of them
    assert one["held_out"] == "every clip of a set's held-out folder"
    assert one["statistics"] == "set:piano's training statistics"  # the folder it is held out of
    rc, report = run(tmp_path, "set:piano/heldout", "--max-clips", "2")
    assert rc == 0 and report["sets"][0]["rows"][0]["clips"] == 2


def test_a_missing_source_is_named_before_any_table(folders, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc, _ = run(tmp_path, str(folders[0]), str(missing))
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""  # the first source's table is not worked out before the error
    assert captured.err.startswith("eval-reconstruction: error:") and str(missing) in captured.err
    assert captured.err.count("\n") == 1


def test_the_benchmark_prints_one_markdown_table_per_set(folders, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))  # the script imports its neighbour quality_per_cpu
    spec = importlib.util.spec_from_file_location("reconstruction_real_sets", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rc, report = run(tmp_path, *map(str, folders), "--norm-clips", "2,3")
    assert rc == 0
    text = bench.tables(report)
    assert text.count("| method | input |") == 2
    assert "| **GL-32 exact** | exact |" in text and "| GL-32 clip 2 | clip 2 |" in text
    assert " dB (+" in text  # a clipped row shows its cost against GL-32 exact
