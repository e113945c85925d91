"""Config files, overrides and the errors a user sees for bad ones."""

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from ganstream.train import main as train_main
from ganstream.training.config import SECTIONS, ConfigError, load_config
from ganstream.training.models import FAMILIES

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert type(cfg.model) is FAMILIES[cfg.model.kind].config
    assert cfg.run.name == path.stem


def test_overrides_are_typed_and_applied():
    cfg = load_config(None, ["train.steps=7", "optim.lr_g=3e-4", "model.width=8", "data.source=synth:gaussian", "train.bf16=true"])
    assert cfg.train.steps == 7 and cfg.optim.lr_g == 3e-4 and cfg.model.width == 8
    assert cfg.data.source == "synth:gaussian" and cfg.train.bf16 is True


def test_model_kind_override_switches_config_class():
    cfg = load_config(None, ["model.kind=dcgan1d", "model.ngf=32", "model.segment=100"])
    assert type(cfg.model).__name__ == "DCGAN1DConfig" and cfg.model.ngf == 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.stepz=3"], r"train\.stepz: unknown key"),
        (["trian.steps=3"], "unknown section 'trian'"),
        (["train.steps=many"], r"train\.steps: expected an integer, got 'many'"),
        (["train.steps"], "expected section.key=value"),
        (["steps=3"], "the key must be section.key"),
        (["model.kind=vae"], "unknown model 'vae'"),
        (["model.segment=1000"], "16384, 32768 or 65536"),
        (["loss.kind=lsgan"], "unknown loss 'lsgan'"),
        (["train.device=tpu"], "auto, cpu, cuda or cuda:N"),
        (["optim.lr_g=[1"], "not valid YAML"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_broken_yaml_file_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 3\n  batch_size: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d"):
        load_config(bad)


def test_unknown_key_in_file_names_the_file(tmp_path):
    bad = tmp_path / "cfg.yaml"
    bad.write_text("model:\n  kind: wavegan\n  widht: 32\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: model\.widht: unknown key"):
        load_config(bad)


def test_config_hash_tracks_what_is_trained():
    a = load_config(None)
    assert load_config(None, ["train.device=cpu", "run.out_dir=/elsewhere", "train.steps=5"]).hash() == a.hash()
    assert load_config(None, ["optim.lr_g=2e-4"]).hash() != a.hash()


def test_help_lists_every_field_with_its_default():
    out = subprocess.run([sys.executable, "-m", "ganstream.train", "--help"], capture_output=True, text=True, check=True).stdout
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert f"{section}.{f.name} = " in out
    for family in FAMILIES.values():
        for f in fields(family.config):
            assert f"model.{f.name} = " in out
    assert "train.steps = 100000" in out and "optim.lr_g = 0.0001" in out


def test_cli_reports_config_errors_in_one_line(capsys):
    assert train_main(["model.kind=wavegan", "train.stepz=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["train: error: defaults: train.stepz: unknown key (known: " + err[0].split("(known: ")[1]]
    assert train_main(["train.stepz=1"]) == 2  # the default config: its file is named
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "specgan-laptop.yaml: train.stepz: unknown key" in err[0]


def test_train_without_a_config_trains_the_laptop_recipe():
    from ganstream.training.cli import build_parser, resolve

    cfg, run_dir, resumed = resolve(build_parser().parse_args(["train.steps=3"]))
    laptop = load_config(Path(__file__).parent.parent / "configs" / "specgan-laptop.yaml", ["train.steps=3"])
    assert cfg == laptop and run_dir.name.startswith("specgan-laptop-") and not resumed
    assert cfg.model.kind == "specgan" and cfg.model.width == 16 and cfg.loss.feature_matching == 1.0 and cfg.loss.r1_gamma == 0.1
    # With another family named and no config, that family's defaults, as before.
    cfg, _, _ = resolve(build_parser().parse_args(["model.kind=specgan"]))
    assert cfg.model.kind == "specgan" and cfg.loss.feature_matching == 0 and not cfg.augment.enabled


def test_ganstream_train_is_train():
    out = subprocess.run([sys.executable, "-m", "ganstream.main", "train", "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: train")
