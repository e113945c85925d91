"""The `gpu` extra: onnxruntime-gpu's CUDA and cuDNN wheels for a performer's GPU machine, never for the tests,
and the preload that lets onnxruntime find them (realtime/inference.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from packaging.requirements import Requirement

from ganstream.realtime import inference
from ganstream.realtime.inference import CPU, CUDA, ProviderError, create_session

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
PROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]

LINUX_X86 = {"platform_system": "Linux", "platform_machine": "x86_64"}
WINDOWS = {"platform_system": "Windows", "platform_machine": "AMD64"}
LINUX_ARM = {"platform_system": "Linux", "platform_machine": "aarch64"}
MAC = {"platform_system": "Darwin", "platform_machine": "arm64"}


def requirements_of(extra: str) -> list[Requirement]:
    """What `pip install 'ganstream[extra]'` asks for beyond the base dependencies, through ganstream[...] nesting."""
    out: list[Requirement] = []
    for text in EXTRAS[extra]:
        req = Requirement(text)
        if req.name == "ganstream":
            for inner in sorted(req.extras):
                out += requirements_of(inner)
        else:
            out.append(req)
    return out


def wanted_on(reqs: list[Requirement], platform: dict[str, str]) -> list[Requirement]:
    return [r for r in reqs if r.marker is None or r.marker.evaluate(platform)]


def test_gpu_extra_is_onnxruntime_gpu_with_its_cuda_and_cudnn_wheels_where_it_exists():
    gpu = requirements_of("gpu")
    for platform in (LINUX_X86, WINDOWS):
        (req,) = wanted_on(gpu, platform)
        assert req.name == "onnxruntime-gpu" and req.extras == {"cuda", "cudnn"}, req
        # preload_dlls and the cuda/cudnn extras arrived in onnxruntime-gpu 1.21
        assert "1.20.1" not in req.specifier and "1.21.0" in req.specifier, req
    for platform in (LINUX_ARM, MAC):  # onnxruntime-gpu has no wheels there: the extra asks for nothing
        assert wanted_on(gpu, platform) == []


@pytest.mark.parametrize("platform", [LINUX_X86, WINDOWS, LINUX_ARM, MAC], ids=["linux-x86_64", "windows", "linux-aarch64", "macos"])
def test_the_test_set_up_never_pulls_the_cuda_wheels(platform):
    """tools/test.sh installs '.[test]': the multi-GB nvidia-* wheels must stay out of it on every platform."""
    wanted = wanted_on(requirements_of("test") + [Requirement(t) for t in PROJECT["dependencies"]], platform)
    assert "gpu" not in {e for t in EXTRAS["test"] for e in Requirement(t).extras}
    assert not [r for r in wanted if r.extras & {"cuda", "cudnn"} or r.name.startswith("nvidia-")], wanted
    # the negative control: the gpu extra itself does ask for them where CUDA exists
    assert bool(wanted_on(requirements_of("gpu"), platform)) == (platform in (LINUX_X86, WINDOWS))


@pytest.fixture
def identity_model(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)  # any onnxruntime reads IR 8
    return path


@pytest.fixture
def preload_calls(monkeypatch):
    """Replace onnxruntime.preload_dlls by a recorder that prints, as the real one does for each library it misses."""
    calls = []

    def preload(*args, **kwargs):
        calls.append((args, kwargs))
        print("Failed to load libcublasLt.so.13: libcublasLt.so.13: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    # Claim CUDA is in this build (a CPU-only onnxruntime has none), so the CUDA path runs on any machine.
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CUDA, CPU])
    inference._preload_cuda_libraries.cache_clear()
    yield calls
    inference._preload_cuda_libraries.cache_clear()


def test_cuda_is_tried_only_after_preloading_its_libraries(identity_model, preload_calls, capfd):
    session, provider = create_session(identity_model, "cpu")
    assert provider == CPU and preload_calls == []  # the CPU never loads CUDA's libraries

    try:
        session, provider = create_session(identity_model, "cuda")
        assert provider == CUDA and session.get_providers()[0] == CUDA  # a GPU machine with the gpu extra
    except ProviderError as e:
        assert "did not start" in str(e)  # no GPU here: the error says so, and auto falls back below
    assert preload_calls == [((), {})]

    session, provider = create_session(identity_model, "auto")
    assert len(preload_calls) == 1  # once per process: the libraries stay loaded
    x = np.arange(4, dtype=np.float32)[None]
    assert np.array_equal(session.run(None, {"x": x})[0], x)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)  # preload_dlls' own messages stay out of the performer's terminal


def test_a_failing_preload_leaves_the_cpu_fallback_quiet(identity_model, preload_calls, monkeypatch, capfd):
    def broken(*args, **kwargs):
        raise RuntimeError("Invalid parameter of directory=None. The directory does not exist!")

    monkeypatch.setattr(ort, "preload_dlls", broken)
    session, provider = create_session(identity_model, "auto")
    assert provider in (CUDA, CPU)
    assert capfd.readouterr() == ("", "")


def test_an_onnxruntime_without_preload_dlls_still_tries_cuda(identity_model, preload_calls, monkeypatch):
    monkeypatch.delattr(ort, "preload_dlls")  # onnxruntime-gpu before 1.21, or a CPU build
    session, provider = create_session(identity_model, "auto")
    assert provider in (CUDA, CPU) and preload_calls == []
