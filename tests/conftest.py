import numpy as np
import pytest
import scipy.linalg  # noqa: F401  (scipy has its own OpenBLAS: loaded now, so the BLAS limit below holds for it)
import torch
from jack_fixtures import jack_server  # noqa: F401  (a session fixture: one JACK server for every test that needs one)
from threadpoolctl import threadpool_info, threadpool_limits

from ganstream.training.config import load_config


def pytest_report_header(config):
    """The float kernels this run used: what to compare first when two machines disagree on a number.
    torch picks its own kernels by CPU (ATen's capability, oneDNN, MKL: MKL takes another FFT path on AMD),
    numpy and scipy theirs (OpenBLAS's architecture); torch is pinned in tools/constraints.txt."""
    blas = [f"{i['internal_api']} {i['version']} {i.get('architecture', '?')} ({i['prefix']})" for i in threadpool_info() if i["user_api"] == "blas"]
    return [
        f"torch {torch.__version__}: cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"mkl {torch.backends.mkl.is_available()}, mkldnn {torch.backends.mkldnn.is_available()}",
        f"numpy {np.__version__}, scipy's and numpy's blas: {'; '.join(blas) or 'none found'}",
    ]


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """numpy's and scipy's BLAS on one thread: OpenBLAS splits a product differently by thread count, so sums
    (the Fréchet distances' covariances and matrix square roots) round differently on a machine with more
    cores. The kernels still differ by CPU: tests compare those results with tolerances, not exactly."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def tiny_config(tmp_path):
    """A WaveGAN small enough to train a step in well under a second on a CPU."""

    def make(*overrides: str):
        wavegan = not any(o.startswith("model.kind=") and o != "model.kind=wavegan" for o in overrides)
        return load_config(
            None,
            [
                *(["model.width=2"] if wavegan else []),
                "data.synth_items=24",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"run.out_dir={tmp_path / 'runs'}",
                "train.batch_size=4",
                "train.steps=4",
                "loss.critic_steps=2",
                "train.progress=false",
                "train.tensorboard=false",
                "train.log_every=1",
                "train.preview_every=1000",
                "train.preview_count=2",
                "train.ckpt_every=1000",
                "train.device=cpu",
                *overrides,
            ],
        )

    return make


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The directory of a WaveGAN (width 2) trained one step on synth:piano: a run to export, once per module."""
    from ganstream.training.loop import Run, run_dir_for

    tmp = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [
        "model.width=2", "run.seed=1", "data.source=synth:piano", "data.synth_items=8", f"data.cache_dir={tmp / 'cache'}",
        f"run.out_dir={tmp / 'runs'}", "train.batch_size=4", "train.steps=1", "loss.kind=hinge", "loss.critic_steps=1",
        "train.progress=false", "train.tensorboard=false", "train.preview_every=1000", "train.device=cpu",
    ])
    run = Run(cfg, run_dir_for(cfg), torch.device("cpu"))
    run.train()
    return run.run_dir
