"""Typed config: file + overrides, unknown keys and bad values are errors naming the key."""

import dataclasses
from dataclasses import dataclass, field

import pytest
import yaml

from hpcgan import fields
from hpcgan.config import Config, dump_yaml, from_dict, help_text, load_config, to_dict, validate
from hpcgan.errors import UserError
from hpcgan.fields import AT_LEAST_1, NON_NEGATIVE, option, set_key


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


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
        ("train.lr_g=-1e-3", "train.lr_g must be positive, got -0.001"),
        ("train.l2=-1", "train.l2 must not be negative, got -1.0"),
        ("train.recovery_lr_factor=0", r"train.recovery_lr_factor must be in \(0, 1\], got 0.0"),
        ("train.beta1=nan", r"train.beta1 must be in \[0, 1\), got nan"),
        ("dist.bucket_mb=-1", "dist.bucket_mb must not be negative"),
    ],
)
def test_each_field_carries_its_range(override, needle):
    """Ranges are checked where a value is read (file, override or saved config)."""
    with pytest.raises(UserError, match=needle):
        load_config(None, [override])
    key, _, value = override.partition("=")
    section, name = key.split(".")
    with pytest.raises(UserError, match=needle):
        from_dict({section: {name: yaml.safe_load(value)}})


def test_every_number_has_a_range_and_help_shows_it():
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            if f.type in ("int", "float"):
                assert f.metadata["range"] is not None, f"{section.name}.{f.name}"
    text = help_text()
    assert "train.steps [>= 1] (default 2000)" in text
    assert "train.lr_g [> 0]" in text and "train.beta2 [0, 1)" in text
    assert "train.loss {ns|hinge|wgan-gp|lsgan}" in text  # the objectives registry's names


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model.depth=2"], "model.depth is fixed for dcgan"),
        (["model.arch=mlp", "model.upsample=nearest"], "applies to dcgan only"),
        (["model.arch=dcgan", "model.attention=16"], "model.attention needs model.arch=resnet"),
    ],
)
def test_cross_field_checks_in_validate(overrides, needle):
    cfg = load_config(None, overrides)
    with pytest.raises(UserError, match=needle):
        validate(cfg, 1)


@dataclass
class _Extra:
    sizes: list[int] = option([4, 8], "list of ints", range=AT_LEAST_1)
    names: list[str] = option([], "list of strings", choices=("a", "b"))
    limit: float | None = option(None, "optional float", range=NON_NEGATIVE)


@dataclass
class _Root:
    extra: _Extra = field(default_factory=_Extra)


def test_list_and_optional_fields():
    """list[X] and X | None fields take YAML/CLI values (key=[1, 2], key=null)."""
    root = _Root()
    assert root.extra.sizes == [4, 8] and _Root().extra.sizes is not root.extra.sizes
    for key, raw, expected in [
        ("extra.sizes", "[1, 2]", [1, 2]),
        ("extra.names", "[a, b, a]", ["a", "b", "a"]),
        ("extra.names", "[]", []),
        ("extra.limit", "2e-3", 2e-3),
        ("extra.limit", "3", 3.0),
        ("extra.limit", "null", None),
    ]:
        set_key(root, key, yaml.safe_load(raw))
        assert getattr(root.extra, key.split(".")[1]) == expected
    for key, raw, needle in [
        ("extra.sizes", "3", r"expected a list of int \(e.g. \[1, 2\]\), got 3"),
        ("extra.sizes", "[1, x]", "extra.sizes: expected int, got 'x'"),
        ("extra.sizes", "[1, 0]", "extra.sizes must be at least 1, got 0"),
        ("extra.names", "[a, c]", "extra.names: 'c' is not one of a, b"),
        ("extra.limit", "-1", "extra.limit must not be negative"),
        ("extra.limit", "[1]", "extra.limit: expected float"),
    ]:
        with pytest.raises(UserError, match=needle):
            set_key(root, key, yaml.safe_load(raw))
    text = fields.help_text(_Root)
    assert "extra.sizes [>= 1] (default [4, 8])" in text and "extra.limit [>= 0]" in text
