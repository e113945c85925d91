"""The installed wheel works away from the checkout: `train` finds its shipped configs, `ganstream render` its
default bundle and its other shipped bundles by name (all package data), and every module of the source tree is in the wheel.

The wheel is built from a copy of the working tree (so the build's files never land in the checkout), then
installed into a fresh venv that sees the system's site-packages for torch and the rest; that venv's own
ganstream is the wheel, which the tests check before they trust anything it runs. About 40 s on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


class Installed:
    def __init__(self, wheel: Path, venv: Path, away: Path):
        self.wheel, self.venv, self.away = wheel, venv, away

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A console script or python of the venv, run in a folder outside the checkout, the checkout off the path."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        exe = self.venv / "bin" / argv[0]
        return subprocess.run([str(exe), *argv[1:]], cwd=self.away, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.whl", ".pytest_cache", "runs"))
    pip = [sys.executable, "-m", "pip"]
    quiet = {"capture_output": True, "text": True, "timeout": 300}
    # --no-index: the build and the install must not touch a package index (no deps: they come from the system).
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(source)], **quiet)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("ganstream-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True, **quiet)
    # The system's pip, seen through the system site-packages, installs into the venv it runs in. --ignore-installed:
    # the system's editable ganstream must not count as already there.
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)], **quiet)
    assert done.returncode == 0, done.stdout + done.stderr
    away = tmp / "elsewhere"
    away.mkdir()
    return Installed(wheel, venv, away)


def test_the_wheel_holds_every_module_and_the_package_data(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = []
    for package, folder in SETUPTOOLS["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                inside = path.relative_to(ROOT / folder).as_posix()
                if f"{package.replace('.', '/')}/{inside}" not in names:
                    missing.append(f"{folder}/{inside}")
    assert not missing, f"not in the wheel (a package missing from pyproject.toml's `packages`?): {missing}"
    configs = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert "wavegan.yaml" in configs and {f"ganstream/configs/{c}" for c in configs} <= names
    shipped = sorted(p.parent for p in (ROOT / "realtime" / "bundles").glob("*/manifest.json"))
    assert "piano" in [p.name for p in shipped]
    for bundle in shipped:
        files = {f"ganstream/realtime/bundles/{bundle.name}/{p.name}" for p in bundle.iterdir()}
        assert files <= names, f"{bundle}: not in the wheel: {sorted(files - names)}"


def test_the_venv_runs_the_wheel_not_the_checkout(installed):
    probe = installed.run(
        "python", "-c",
        "import ganstream, ganstream.train, importlib.resources as r; from ganstream.realtime.bundle import resolve_bundle; "
        "print(ganstream.__file__); print(ganstream.train.__file__); print(r.files('ganstream.configs')); print(resolve_bundle(None))",
    )
    assert probe.returncode == 0, probe.stderr
    site = installed.venv / "lib"
    for line in probe.stdout.split():
        assert Path(line).is_relative_to(site) and not Path(line).is_relative_to(ROOT), probe.stdout


def test_train_help_and_a_two_step_run_from_outside_the_checkout(installed):
    shown = installed.run("train", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "every field, with its default" in shown.stdout
    for field in ("model.width", "train.steps", "data.source", "optim.lr_g"):
        assert field in shown.stdout, field

    runs, cache = installed.away / "runs", installed.away / "cache"
    trained = installed.run(
        "train", "wavegan", "model.width=2", "data.source=synth:piano", "data.synth_items=8", f"data.cache_dir={cache}",
        "train.steps=2", "train.batch_size=2", "train.eval_every=0", "train.progress=false", "train.tensorboard=false",
        "train.device=cpu", "--out", str(runs),
    )
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = runs.iterdir()
    assert run_dir.name.startswith("wavegan-")  # run.name from the shipped configs/wavegan.yaml
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest.pt").is_file()
    assert (run_dir / "checkpoints" / "step_00000002.pt").is_file()


@pytest.mark.parametrize("bundle", [None, "piano"], ids=["default", "by-name"])
def test_render_a_shipped_bundle_from_the_wheel(installed, bundle):
    out = installed.away / f"{bundle or 'default'}.wav"
    rendered = installed.run("ganstream", "render", *([bundle] if bundle else []), "-o", str(out), "--seconds", "1")
    assert rendered.returncode == 0, rendered.stderr
    audio, rate = sf.read(out)
    assert len(audio) == rate and 0 < abs(audio).max() <= 1.0
