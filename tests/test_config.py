"""Typed config: file + overrides, unknown keys and bad values are errors naming the key."""

import pytest

from hpcgan.config import Config, dump_yaml, from_dict, help_text, load_config, to_dict, validate
from hpcgan.errors import UserError


def test_defaults_match_design():
    cfg = Config()
    assert cfg.data.path == "" and cfg.data.builtin == "digits"
    assert (cfg.model.arch, cfg.model.width, cfg.model.z_dim, cfg.model.norm) == (
        "dcgan",
        64,
        100,
        "batch",
    )
    assert (cfg.train.batch_size, cfg.train.steps, cfg.train.loss) == (64, 2000, "ns")
    assert cfg.train.lr_g == cfg.train.lr_d == 2e-4
    assert cfg.dist.backend == "auto" and cfg.run.keep == 3 and cfg.run.dir == "runs/default"


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: 10\n  lr_g: 1e-3\nmodel: {width: 16}\n")
    cfg = load_config(f, ["train.steps=20", "train.lr_d=5e-5", "run.dir=out/x"])
    assert cfg.train.steps == 20 and cfg.model.width == 16
    assert cfg.train.lr_g == 1e-3 and cfg.train.lr_d == 5e-5  # "1e-3" is a string in YAML 1.1
    assert cfg.run.dir == "out/x"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.stepz=3", "unknown config key 'train.stepz'"),
        ("trian.steps=3", "unknown config key 'trian.steps'"),
        ("train.steps=ten", "train.steps: expected int"),
        ("train.steps=1.5", "train.steps: expected int"),
        ("train.loss=mse", "train.loss: 'mse' is not one of"),
        ("model.norm=layer", "model.norm"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_overrides(override, needle):
    with pytest.raises(UserError, match=needle):
        load_config(None, [override])


def test_bad_file(tmp_path):
    with pytest.raises(UserError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  batchsize: 3\n")
    with pytest.raises(UserError, match="train.batchsize"):
        load_config(wrong)


def test_validate_world_size_and_ranges():
    cfg = load_config(None, ["train.batch_size=64"])
    validate(cfg, 4)
    with pytest.raises(UserError, match="not divisible by the 3 ranks"):
        validate(cfg, 3)
    with pytest.raises(UserError, match="train.steps must be at least 1"):
        validate(load_config(None, ["train.steps=0"]), 1)
    with pytest.raises(UserError, match="train.lr_d must be positive"):
        validate(load_config(None, ["train.lr_d=0"]), 1)
    with pytest.raises(UserError, match=r"train.beta2 must be in \[0, 1\), got 1.0"):
        validate(load_config(None, ["train.beta2=1"]), 1)
    with pytest.raises(UserError, match="train.gp_weight must not be negative"):
        validate(load_config(None, ["train.gp_weight=-10"]), 1)


def test_round_trip_and_help():
    cfg = load_config(None, ["model.width=8", "train.seed=7"])
    assert from_dict(to_dict(cfg)) == cfg
    assert "width: 8" in dump_yaml(cfg)
    text = help_text()
    for key in ("data.path", "model.arch", "train.max_minutes", "dist.backend", "run.keep"):
        assert key in text
