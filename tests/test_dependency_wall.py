"""The dependency walls between the layers, each backed by a test.

- core/ (`ganstream.core`: the shared DSP and the bundle schema) sits under everything and needs
  numpy and soxr only.
- realtime/ needs core/, numpy and onnxruntime: never torch, librosa, onnx or the training,
  evaluation and export packages, so a performer's machine runs bundles without a training stack.
- training/ may use core/ and torch, never realtime/, export/ or evaluation/ (the `train` command
  passes the evaluator in, see cli/train.py).

Every module of each layer is covered, including ones added later.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from bundle_factory import make_bundle

ROOT = Path(__file__).resolve().parents[1]
REALTIME = ROOT / "realtime"
PACKAGE = "ganstream.realtime"
# `training` and `export` are the repo folders' own names, importable when the repo root is on sys.path.
_APP = ("ganstream.training", "ganstream.export", "ganstream.evaluation", "training", "export", "evaluation")
FORBIDDEN = ("torch", "librosa", "onnx", *_APP)
# Each layer: (folder, package, what it may never import).
LAYERS = {
    "core": (ROOT / "core", "ganstream.core", ("torch", "librosa", "onnx", "onnxruntime", "scipy", "ganstream.realtime", "realtime", *_APP)),
    "realtime": (REALTIME, PACKAGE, FORBIDDEN),
    "training": (ROOT / "training", "ganstream.training",
                 ("onnxruntime", "onnx", "ganstream.realtime", "ganstream.export", "ganstream.evaluation", "realtime", "export", "evaluation")),
}


def layer_modules(folder: Path, package: str) -> list[str]:
    names = []
    for file in sorted(folder.rglob("*.py")):
        parts = file.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join((package, *parts)))
    return names


def realtime_modules() -> list[str]:
    return layer_modules(REALTIME, PACKAGE)


def forbidden(module: str, banned: tuple[str, ...] = FORBIDDEN) -> bool:
    return any(module == f or module.startswith(f + ".") for f in banned)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    # cwd away from the repo root, so its folders are not importable as top-level packages
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


IMPORT_ALL = """
import importlib, json, sys, traceback
failed = {}
for name in NAMES:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
print(json.dumps({"failed": failed, "loaded": loaded}))
"""


@pytest.mark.parametrize("layer", ["core", "realtime"])
def test_every_module_imports_with_the_training_stack_blocked(layer, tmp_path):
    folder, package, banned = LAYERS[layer]
    names = layer_modules(folder, package)
    assert package in names and len(names) > 2
    block = "".join(f"sys.modules[{m!r}] = None\n" for m in banned if m.startswith(("ganstream.", "torch", "librosa", "onnx", "scipy")))
    code = f"import sys\n{block}NAMES = {names!r}\nFORBIDDEN = {banned!r}\n{IMPORT_ALL}"
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, "\n".join(f"{name}:\n{tb}" for name, tb in report["failed"].items())


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_importing_a_layer_loads_nothing_beyond_its_wall(layer, tmp_path):
    """Unblocked, so a `try: import torch` or a third-party package pulling something in shows up too."""
    folder, package, banned = LAYERS[layer]
    code = f"NAMES = {layer_modules(folder, package)!r}\nFORBIDDEN = {banned!r}\n{IMPORT_ALL}"
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    assert report["loaded"] == [], f"importing {package} loaded {report['loaded']}"


def imports_of(file: Path, folder: Path | None = None, package: str = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a layer's file, relative ones resolved,
    plus importlib.import_module("x") and __import__("x") with a literal name."""
    folder = REALTIME if folder is None else folder
    package = ".".join((package, *file.relative_to(folder).parent.parts))  # what the file's __package__ is
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_file_of_a_layer_imports_past_its_wall(layer):
    folder, package, banned = LAYERS[layer]
    files = sorted(folder.rglob("*.py"))
    assert files
    bad = [
        f"{file.relative_to(ROOT)}:{line}: imports {module}"
        for file in files
        for line, module in imports_of(file, folder, package)
        if forbidden(module, banned)
    ]
    assert bad == [], "\n".join(bad)


def test_static_check_catches_what_it_should(tmp_path, monkeypatch):
    """The AST check itself: relative imports out of realtime/ and dynamic imports are caught."""
    fake = tmp_path / "realtime"
    (fake / "sub").mkdir(parents=True)
    (fake / "sub" / "m.py").write_text(
        "import numpy\nfrom ...training import loop\nfrom ... import export\nfrom .. import bundle\nimport importlib\n"
        "importlib.import_module('torch.nn')\nimport onnxruntime\nfrom onnx import helper\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REALTIME", fake)
    modules = [m for _, m in imports_of(fake / "sub" / "m.py") if forbidden(m)]
    assert sorted(modules) == ["ganstream.export", "ganstream.training", "ganstream.training.loop", "onnx", "onnx.helper", "torch.nn"]


def test_provider_probe_is_quiet(tmp_path):
    """onnxruntime-gpu without its CUDA libraries prints a screen of errors when CUDA is tried:
    `auto` must try it without a word on stderr, and fall back to what really works."""
    bundle = make_bundle(tmp_path / "b.gsb", segment=256, latent_size=4)
    code = (
        "import numpy as np\n"
        "from ganstream.realtime.bundle import load_bundle\n"
        "from ganstream.realtime.inference import Generator, create_session\n"
        f"session, provider = create_session({str(bundle / 'generator.onnx')!r}, 'auto')\n"
        f"g = Generator(load_bundle({str(bundle)!r}))\n"
        "assert g.generate(np.zeros((2, 4), np.float32)).shape == (2, 256)\n"
        "print(provider, g.provider)\n"
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"the probe wrote to stderr:\n{result.stderr}"
    provider, generator_provider = result.stdout.split()
    assert provider == generator_provider
    gpu_here = Path("/dev/nvidiactl").exists() or sys.platform in ("darwin", "win32")
    if gpu_here:
        assert provider in ort.get_available_providers()
    else:
        assert provider == "CPUExecutionProvider"


@pytest.mark.parametrize("module", ["numpy", "onnxruntime"])
def test_the_wall_is_not_too_high(module):
    assert not forbidden(module)


def test_training_wall_catches_a_lazy_import_of_the_engine_or_the_evaluator(tmp_path):
    """What the old training/evaluate.py did: an import of the engine inside a function."""
    fake = tmp_path / "training"
    fake.mkdir()
    (fake / "m.py").write_text(
        "import torch\nfrom ganstream.core.spectral import stft\n"
        "def f():\n    from ganstream.realtime.bundle import load_bundle\n    from ..evaluation import evaluate\n"
    )
    _, _, banned = LAYERS["training"]
    modules = [m for _, m in imports_of(fake / "m.py", fake, "ganstream.training") if forbidden(m, banned)]
    assert sorted(modules) == ["ganstream.evaluation", "ganstream.evaluation.evaluate", "ganstream.realtime.bundle", "ganstream.realtime.bundle.load_bundle"]
