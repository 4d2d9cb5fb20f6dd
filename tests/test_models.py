"""Models and value transforms: shapes, layout, analytic values; the spatial-rank table."""

import math

import numpy as np
import pytest
import torch

from hpcgan import nd
from hpcgan.condition import Condition, ConditionSpec
from hpcgan.config import ModelConfig
from hpcgan.data.format import DatasetInfo
from hpcgan.data.transforms import make_transform
from hpcgan.errors import UserError
from hpcgan.models import build_models
from hpcgan.symmetry import Symmetry


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    G, D = build_models(ModelConfig(width=4, z_dim=8), (channels, size, size))
    z = torch.randn(3, 8)
    x = G(z)
    assert x.shape == (3, channels, size, size)
    assert x.abs().max() <= 1  # tanh output
    logits, aux, _ = D(x)
    assert logits.shape == (3,) and aux is None


def test_dcgan_layout_follows_radford():
    G, D = build_models(ModelConfig(width=64, z_dim=100), (3, 64, 64))
    g_convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    d_convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    # pytorch/examples: ngf*8 -> ngf*4 -> ngf*2 -> ngf -> nc; ndf -> ndf*2 -> ndf*4 -> ndf*8,
    # then its last 4x4 convolution, which is our linear head on the flattened 4x4 map.
    assert [c.out_channels for c in g_convs] == [512, 256, 128, 64, 3]
    assert [c.out_channels for c in d_convs] == [64, 128, 256, 512]
    assert D.out.in_features == 512 * 16 and D.out.out_features == 1
    assert all(c.kernel_size == (4, 4) for c in g_convs + d_convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules()) == 4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules()) == 3  # none on first
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in D.modules())
    w = torch.cat([c.weight.flatten() for c in g_convs])
    assert abs(w.std().item() - 0.02) < 0.002  # N(0, 0.02) initialisation


def test_norm_none_has_no_batchnorm():
    G, D = build_models(ModelConfig(width=4, norm="none"), (1, 32, 32))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in [*G.modules(), *D.modules()])


@pytest.mark.parametrize("shape", [(1, 24, 24), (1, 8, 8), (1, 32, 16)])
def test_sizes_once_refused_build_exactly(shape):
    """Not square powers of two >= 16: refused before the shape plan, built as they are now."""
    G, D = build_models(ModelConfig(width=4, z_dim=8), shape)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, *shape) and D(x)[0].shape == (2,)


def _info(dtype, kind, lo, hi):
    stats = {"min": lo, "max": hi, "mean": 0.0, "std": 1.0}
    sym = Symmetry.none(2)
    return DatasetInfo("x.h5", 10, 1, (4, 4), dtype, kind, "t", stats, False, 0, 10, None, sym)


def test_transforms_round_trip_and_range():
    x = np.array([0, 128, 255], dtype=np.uint8)
    t = make_transform(_info("uint8", "image", 3, 250), "auto")
    assert np.allclose(t.encode(x), [-1, 128 / 127.5 - 1, 1], atol=1e-6)
    fields = np.array([0.1, 1.0, 10.0], dtype=np.float32)
    log = make_transform(_info("float32", "field", 0.1, 10.0), "auto")
    assert log.kind == "log"
    assert np.allclose(log.encode(fields), [-1, 0, 1], atol=1e-6)
    back = log.decode(torch.from_numpy(log.encode(fields)))
    assert np.allclose(back.numpy(), fields, rtol=1e-5)
    assert make_transform(_info("float32", "field", -1.0, 1.0), "auto").kind == "linear"
    with pytest.raises(UserError, match="positive"):
        make_transform(_info("float32", "field", -1.0, 1.0), "log")
    assert math.isclose(log.hi, math.log(10.0))


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3), (64, 2)])
def test_every_arch_any_size_and_channels(arch, size, channels):
    G, D = build_models(ModelConfig(arch=arch, width=8, z_dim=8), (channels, size, size))
    x = G(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size)
    assert D(x)[0].shape == (2,)


def test_mlp_is_the_classic_layout():
    G, D = build_models(ModelConfig(arch="mlp", width=64, z_dim=100), (1, 32, 32))
    linears = [m for m in G.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [128, 256, 1024]
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 64, 128, 256]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in convs)


def test_resnet_depth_attention_and_spectral_norm():
    cfg = ModelConfig(arch="resnet", width=8, depth=2, attention=16, spectral_norm=True)
    G, D = build_models(cfg, (1, 32, 32))
    from hpcgan.models.base import SelfAttention
    from hpcgan.models.resnet import DownBlock, UpBlock

    assert sum(isinstance(m, SelfAttention) for m in G.modules()) == 1
    assert sum(isinstance(m, SelfAttention) for m in D.modules()) == 1
    assert sum(isinstance(m, UpBlock) for m in G.modules()) == 3 * 2  # 3 stages x depth 2
    assert sum(isinstance(m, DownBlock) for m in D.modules()) == 3 * 2
    sn = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert sn and all("weight" in m.parametrizations for m in sn)
    # Spectral norm: the largest singular value of the (reshaped) weight is about 1.
    D.train()
    for _ in range(20):  # power iterations run in training-mode forwards
        D(torch.randn(2, 1, 32, 32))
    w = D.out.weight
    assert torch.linalg.matrix_norm(w.detach(), ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_attention_sits_on_feature_maps_of_g_and_d():
    from hpcgan.models.base import SelfAttention

    G, D = build_models(ModelConfig(arch="resnet", width=8, attention=16), (1, 32, 32))
    (g_attn,) = [m for m in G.modules() if isinstance(m, SelfAttention)]
    (d_attn,) = [m for m in D.modules() if isinstance(m, SelfAttention)]
    # Not on D's one-channel input: on the 16x16 features of D's first stage.
    assert g_attn.v.in_channels > 1 and d_attn.v.in_channels > 1
    seen = []
    d_attn.register_forward_hook(lambda m, args, out: seen.append(out.shape[-1]))
    D(torch.randn(2, 1, 32, 32))
    assert seen == [16]
    for bad in (4, 32, 64):  # where G or D has no feature map of that size: an error, not a no-op
        with pytest.raises(UserError, match=f"model.attention={bad} needs"):
            build_models(ModelConfig(arch="resnet", width=8, attention=bad), (1, 32, 32))


def test_aux_classifier_alone_is_ac_gan():
    """AC-GAN: a class-conditional G, and a D with a classification head but no projection."""
    cfg = ModelConfig(arch="dcgan", width=8, z_dim=8)
    G, D = build_models(cfg, (1, 16, 16), ConditionSpec(10), aux_classifier=True)
    z = torch.randn(3, 8)
    assert not torch.allclose(
        G(z, Condition(torch.tensor([0, 0, 0]))), G(z, Condition(torch.tensor([7, 7, 7])))
    )
    x = G(z, Condition(torch.tensor([0, 3, 9])))
    logits, aux, _ = D(x, Condition(torch.tensor([0, 3, 9])))
    assert aux.shape == (3, 10)
    assert torch.equal(logits, D(x, Condition(torch.tensor([1, 1, 1])))[0])  # no projection term


def test_conditional_and_aux_classifier():
    cfg = ModelConfig(arch="dcgan", width=8, z_dim=8, conditional=True)
    G, D = build_models(cfg, (1, 16, 16), ConditionSpec(10), aux_classifier=True)
    y = Condition(torch.tensor([0, 3, 9]))
    x = G(torch.randn(3, 8), y)
    logits, aux, _ = D(x, y)
    assert logits.shape == (3,) and aux.shape == (3, 10)
    # The projection term makes D's output depend on the label.
    assert not torch.allclose(D(x, y)[0], D(x, Condition(torch.tensor([1, 1, 1])))[0])
    with pytest.raises(UserError, match="labels"):
        build_models(cfg, (1, 16, 16), ConditionSpec(0))


@pytest.mark.parametrize("size", [16, 64])
def test_dcgan_nearest_upsampling_has_no_strided_transposed_convolutions(size):
    G, _ = build_models(ModelConfig(width=4, z_dim=8, upsample="nearest"), (2, size, size))
    transposed = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.stride for m in transposed] == [(1, 1)]  # only z -> 4x4, a dense layer
    assert sum(isinstance(m, torch.nn.Upsample) for m in G.modules()) == int(math.log2(size)) - 2
    assert G(torch.randn(3, 8)).shape == (3, 2, size, size)
    with pytest.raises(UserError, match="dcgan only"):
        build_models(ModelConfig(arch="resnet", width=4, upsample="nearest"), (1, 16, 16))


def test_the_rank_table_is_complete_and_refuses_other_ranks():
    for ndim, ops in nd.OPS.items():
        assert ops.ndim == ndim and ops.fft_dims == tuple(range(-ndim, 0))
        conv = ops.conv(2, 3, 3, padding=1)
        x = torch.randn(2, 2, *[8] * ndim)
        assert conv(x).shape == (2, 3, *[8] * ndim)
        assert ops.conv_transpose(3, 2, 4, 2, 1)(conv(x)).shape == (2, 2, *[16] * ndim)
        assert ops.batch_norm(3)(conv(x)).shape == conv(x).shape
        assert ops.avg_pool(x, 2).shape == (2, 2, *[4] * ndim)
        assert ops.adaptive_avg_pool(1)(x).shape == (2, 2, *[1] * ndim)
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode=ops.linear_mode)
        assert up.shape == (2, 2, *[16] * ndim)
    assert nd.ops(2).conv is torch.nn.Conv2d and nd.ops(3).conv is torch.nn.Conv3d
    assert nd.ops(2).channels_last == torch.channels_last
    assert nd.ops(3).channels_last == torch.channels_last_3d
    with pytest.raises(UserError, match="4 spatial dimensions"):
        nd.ops(4)


def test_models_are_built_for_1d_2d_and_3d_samples_only():
    with pytest.raises(UserError, match="4 spatial dimensions are not supported"):
        build_models(ModelConfig(), (1, 16, 16, 16, 16))
    G, D = build_models(ModelConfig(width=4, z_dim=8), (1, 64))  # 1-D: vectors
    assert G(torch.randn(2, 8)).shape == (2, 1, 64)


@pytest.mark.parametrize(
    "arch,extra",
    [
        ("mlp", {}),
        ("dcgan", {}),
        ("dcgan", {"upsample": "nearest", "spectral_norm": True}),
        ("resnet", {"attention": 8, "depth": 2}),
        ("resnet", {"norm": "none", "spectral_norm": True}),
    ],
)
def test_every_arch_builds_volumes(arch, extra):
    """5-D data: the same keys build 3-D layers, G makes [N, C, D, H, W], D scores it, with
    the projection term and the AC-GAN head."""
    from hpcgan.models.base import SelfAttention

    cfg = ModelConfig(arch=arch, width=4, z_dim=8, conditional=True, **extra)
    G, D = build_models(cfg, (2, 16, 16, 16), ConditionSpec(3), aux_classifier=True)
    convs = [
        m for m in [*G.modules(), *D.modules()] if isinstance(m, torch.nn.modules.conv._ConvNd)
    ]
    assert convs and all(len(m.kernel_size) == 3 for m in convs)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in [*G.modules(), *D.modules()])
    y = Condition(torch.tensor([0, 1, 2]))
    x = G(torch.randn(3, 8), y)
    assert x.shape == (3, 2, 16, 16, 16) and x.abs().max() <= 1
    logits, aux, _ = D(x, y)
    assert logits.shape == (3,) and aux.shape == (3, 3)
    assert not torch.allclose(logits, D(x, Condition(torch.tensor([1, 1, 1])))[0])  # projection
    attention = [m for m in [*G.modules(), *D.modules()] if isinstance(m, SelfAttention)]
    assert len(attention) == (2 if extra.get("attention") else 0)


def test_volume_self_attention_flattens_every_spatial_axis():
    from hpcgan.models.base import SelfAttention

    attn = SelfAttention(8, nd.ops(3))
    attn.gamma.data.fill_(1.0)
    x = torch.randn(2, 8, 4, 4, 4)
    out = attn(x)
    assert out.shape == x.shape
    # Every voxel attends to every other: changing one voxel changes the output everywhere.
    x2 = x.clone()
    x2[:, :, 0, 0, 0] += 1
    assert (attn(x2) - out)[:, :, 3, 3, 3].abs().min() > 0


@pytest.mark.parametrize("shape", [(1, 51, 51, 25), (1, 25, 25, 25), (1, 8, 8, 8), (1, 32, 32, 16)])
def test_non_cubic_or_odd_volumes_build_exactly(shape):
    """Refused in one line before the shape plan; every arch builds them as they are now."""
    for arch in ("mlp", "dcgan", "resnet"):
        G, D = build_models(ModelConfig(arch=arch, width=2, z_dim=4), shape)
        x = G(torch.randn(1, 4))
        assert x.shape == (1, *shape) and D(x)[0].shape == (1,)
