"""Any grid (docs/architecture.md, "Any grid"): every architecture builds and trains on 1-D,
2-D and 3-D samples of any sides, exactly, without resampling; the registry owns each
architecture's rules; model.padding=circular wraps the data's periodic axes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import checkpoint, launch, tiny

from hpcgan import nd
from hpcgan.config import ModelConfig, load_config, validate
from hpcgan.data.write import write_dataset
from hpcgan.errors import UserError
from hpcgan.models import ARCHS, build_models
from hpcgan.models.plan import Plan, conv, conv_transpose
from hpcgan.symmetry import Symmetry

SHAPES = [(1, 368), (1, 28, 28), (3, 12, 12), (2, 45, 16, 9), (1, 51, 51, 25), (1, 25, 25, 25)]
SCRIPTS = Path(__file__).parent / "mpi_scripts"


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_makes_and_scores_exactly_the_samples_shape(arch, shape, norm):
    torch.manual_seed(0)
    G, D = build_models(ModelConfig(arch=arch, width=4, z_dim=8, norm=norm), shape)
    x = G(torch.randn(3, 8))
    assert x.shape == (3, *shape) and x.abs().max() <= 1
    logits = D(x).logits
    assert logits.shape == (3,)
    logits.sum().backward()
    for name, p in [*G.named_parameters(), *D.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_plan_halves_each_axis_while_it_is_long_and_keeps_odd_sides_exact():
    plan = Plan.of((45, 16, 9))
    assert plan.sides == ((45, 16, 9), (23, 8, 5), (12, 4, 3), (6, 4, 3), (3, 4, 3))
    assert plan.up()[-1] == ((23, 8, 5), (45, 16, 9)) and plan.start == (3, 4, 3)
    assert Plan.of((368,)).sides[-1] == (3,) and Plan.of((368,)).stages == 7
    assert Plan.of((12, 12)).sides == ((12, 12), (6, 6), (3, 3))
    # Powers of two: every axis halves at every stage down to 4 a side, as DCGAN and SNGAN.
    assert Plan.of((64, 64)).sides == ((64, 64), (32, 32), (16, 16), (8, 8), (4, 4))
    assert Plan.of((32, 32)).attention_sides() == [16, 8]


@pytest.mark.parametrize("spatial", [(16, 16), (32, 32, 32)])
def test_power_of_two_grids_keep_the_layers_they_had(spatial):
    """Square and cubic power-of-two sides: 4x4 kernels of stride 2 throughout (the 1x1 start
    of G excepted), upsampling by a factor of 2 and pooling by 2, as before the plan."""
    shape = (1, *spatial)
    for arch in ARCHS:
        G, D = build_models(ModelConfig(arch=arch, width=4, z_dim=8, upsample="transposed"), shape)
        strided = [
            m
            for m in [*G.modules(), *D.modules()]
            if isinstance(m, torch.nn.modules.conv._ConvNd) and max(m.stride) > 1
        ]
        assert all(set(m.stride) == {2} for m in strided)
        if arch == "dcgan":
            assert all(set(m.kernel_size) == {4} for m in strided)
            stages = Plan.of(spatial).stages  # width 4 at the finest, doubling
            assert D.out.in_features == 4 * 2 ** (stages - 1) * 4 ** len(spatial)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_a_grid_too_small_to_halve_is_refused_in_one_line(arch):
    with pytest.raises(UserError, match=f"model.arch={arch} needs a side longer than 4") as e:
        build_models(ModelConfig(arch=arch), (1, 4, 3))
    assert "4x3" in str(e.value) and "\n" not in str(e.value)
    G, D = build_models(ModelConfig(arch="mlp", width=4, z_dim=8), (1, 4, 3))  # mlp takes any
    assert D(G(torch.randn(2, 8)))[0].shape == (2,)


def test_the_registry_is_the_choice_of_model_arch_and_holds_its_rules(monkeypatch):
    with pytest.raises(UserError, match="mlp, dcgan, resnet"):
        load_config(None, ["model.arch=vgg"])
    monkeypatch.setitem(ARCHS, "tiny", ARCHS["mlp"])
    assert load_config(None, ["model.arch=tiny"]).model.arch == "tiny"
    for overrides, needle in [
        (["model.arch=mlp", "model.attention=8"], "model.attention needs model.arch=resnet"),
        (["model.arch=resnet", "model.upsample=nearest"], "applies to dcgan only"),
        (["model.depth=3"], "model.depth is fixed for dcgan"),
    ]:
        with pytest.raises(UserError, match=needle):  # refused when the config is read
            validate(load_config(None, overrides), 1)
    # The shape rules wait for the data: attention at a resolution of the 45x16x9 plan only.
    cfg = ModelConfig(arch="resnet", width=4, z_dim=8, attention=12)
    validate(load_config(None, ["model.arch=resnet", "model.attention=12"]), 1)
    G, D = build_models(cfg, (1, 45, 16, 9))
    assert D(G(torch.randn(2, 8)))[0].shape == (2,)
    with pytest.raises(UserError, match="model.attention=12 needs .*: 25, 13$"):
        build_models(cfg, (1, 50, 16, 9))


def test_circular_padding_makes_d_invariant_to_periodic_shifts():
    """ResNet D (norm none) on a periodic 16x16 field: shifting the input by D's total stride
    (4) shifts its last feature map by one, which global sum pooling ignores; with zeros the
    borders break it."""
    x = torch.randn(2, 1, 16, 16)
    shifted = x.roll((4, -8), dims=(2, 3))
    box = Symmetry.periodic_box((16, 16))
    cfg = ModelConfig(arch="resnet", width=4, z_dim=8, norm="none", padding="circular")
    torch.manual_seed(0)
    _, D = build_models(cfg, (1, 16, 16), symmetry=box)
    torch.manual_seed(0)
    _, D_zeros = build_models(ModelConfig(**{**cfg.__dict__, "padding": "zeros"}), (1, 16, 16))
    assert torch.allclose(D(shifted)[0], D(x)[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(D_zeros(shifted)[0], D_zeros(x)[0], rtol=1e-3)
    # The same weights (only the padding differs), and no axis wraps without a periodic one.
    assert [p.shape for p in D.parameters()] == [p.shape for p in D_zeros.parameters()]
    _, D_none = build_models(cfg, (1, 16, 16), symmetry=Symmetry.none(2))
    assert not any(type(m).__name__ == "CircularPad" for m in D_none.modules())


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_circular_convolutions_commute_with_periodic_shifts(ndim):
    """On the periodic axis 0 (the others zero-padded): a stride-2 convolution maps a shift by
    2 to a shift by 1, the stride-2 transposed convolution a shift by 1 to a shift by 2."""
    ops = nd.ops(ndim)
    periodic = (True,) + (False,) * (ndim - 1)
    x = torch.randn(2, 3, *[8] * ndim)
    down = conv(ops, 3, 4, 4, 2, 1, periodic)
    up = conv_transpose(ops, 3, 4, 4, 2, 1, periodic)
    assert down(x).shape == (2, 4, *[4] * ndim) and up(x).shape == (2, 4, *[16] * ndim)
    assert torch.allclose(down(x.roll(2, 2)), down(x).roll(1, 2), atol=1e-6)
    assert torch.allclose(up(x.roll(1, 2)), up(x).roll(2, 2), atol=1e-6)
    same = conv_transpose(ops, 3, 4, 3, 1, 1, periodic)
    assert torch.allclose(same(x.roll(3, 2)), same(x).roll(3, 2), atol=1e-6)
    if ndim > 1:  # a zero-padded axis does not commute
        assert not torch.allclose(down(x.roll(2, 3)), down(x).roll(1, 3), atol=1e-3)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_circular_padding_builds_every_arch_on_a_periodic_axis_of_a_cylinder(arch):
    """45x16x9 with the angle axis (16) periodic: exact shapes, and the wrap is on."""
    sym = Symmetry((False, True, False), (False, False, False))
    cfg = ModelConfig(arch=arch, width=4, z_dim=8, padding="circular", upsample="transposed")
    G, D = build_models(cfg, (1, 45, 16, 9), symmetry=sym)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, 1, 45, 16, 9) and D(x)[0].shape == (2,)
    pads = [m for m in [*G.modules(), *D.modules()] if type(m).__name__ == "CircularPad"]
    assert pads and all(m.pads[2:4] != (0, 0) and set(m.pads[:2] + m.pads[4:]) == {0} for m in pads)


def _field_file(path: Path, spatial: tuple[int, ...], periodic: tuple[bool, ...]) -> Path:
    import h5py

    fields = torch.rand(16, 1, *spatial, generator=torch.Generator().manual_seed(0)) + 0.1
    write_dataset(path, fields.numpy(), None, kind="field", source=f"test {spatial}")
    with h5py.File(path, "a") as f:  # as data_prep writes it (docs/data.md, "Symmetries")
        f.attrs["symmetry"] = Symmetry(periodic, (False,) * len(spatial)).to_json()
    return path


@pytest.mark.mpi
def test_two_ranks_compute_what_one_rank_computes_on_odd_grids():
    """40-value vectors, 12x20 maps and 9x16x5 volumes, every arch at np=2 (mpi engine, fp64,
    no batch norm): identical replicas, equal to a one-process Trainer on the same global
    batch."""
    shapes = ["1x40", "1x12x20", "1x9x16x5"]
    proc = launch([str(SCRIPTS / "volumes.py"), *shapes], np=2, module=None, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [(r["arch"], r["shape"][1:]) for r in records] == [
        (arch, [int(v) for v in s.split("x")]) for s in shapes for arch in ARCHS
    ]
    for r in records:
        assert r["identical"] and r["finite"] and r["skipped"] == 0, r
        assert r["moved"] > 1e-4 and r["relative"] < 1e-10, r


@pytest.mark.mpi
@pytest.mark.parametrize(
    "spatial,periodic,arch",
    [((12, 20), (False, True), "resnet"), ((9, 16, 5), (False, True, False), "dcgan")],
    ids=["12x20", "9x16x5"],
)
def test_train_on_an_odd_grid_file_at_two_ranks(tmp_path, spatial, periodic, arch):
    """python -m hpcgan.train on the file as it is: no refusal, no resizing; the samples and
    the checkpoint have the data's sides; the file's periodic axis is padded circularly."""
    data = _field_file(tmp_path / "grid.h5", spatial, periodic)
    run = tmp_path / "run"
    args = tiny(run, data, f"model.arch={arch}", "model.width=4", "train.batch_size=4")
    args += ["train.steps=3", "run.checkpoint_every=3", "run.sample_every=3", "run.eval_every=0"]
    args += ["model.padding=circular"]
    proc = launch(args, np=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = "x".join(map(str, spatial))
    assert f"(1, {', '.join(map(str, spatial))}) float32 (field)" in proc.stdout, grid
    state = checkpoint(run, 3)
    assert state["config"]["model"]["padding"] == "circular"
    # A circularly padded convolution is the second layer of a (pad, conv) pair.
    assert any(
        k.endswith(".1.weight") and v.dim() == 2 + len(spatial) for k, v in state["D"].items()
    )
    assert (run / "samples" / "step-00000003.png").exists()
