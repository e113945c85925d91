import pytest
from jack_fixtures import jack_server  # noqa: F401  (a session fixture: one JACK server for every test that needs one)

from ganstream.training.config import load_config


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
