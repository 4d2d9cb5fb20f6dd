"""1D samples and /conditions in schema 1: written, described, verified (a flipped byte is
caught), read with exactly their samples at any world size and held-out split, and encoded by
the condition transform."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from hpcgan.condition import Condition
from hpcgan.data.format import DatasetInfo, SchemaError, read_info
from hpcgan.data.holdout import make_split
from hpcgan.data.reader import Prefetcher, ShardReader
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import make_condition_transform, make_transform
from hpcgan.data.verify import scan
from hpcgan.data.write import write_dataset
from hpcgan.errors import UserError
from hpcgan.symmetry import Symmetry

RNG = np.random.default_rng(7)
N = 96


def _showers(path, n=N, length=368, chunk=8):
    """1D samples whose first value is their index, with energies over three decades and an
    angle column that takes negative values."""
    x = RNG.exponential(size=(n, 1, length)).astype(np.float32)
    x[:, 0, 0] = np.arange(n)
    energy = 10 ** RNG.uniform(3, 6, n)  # MeV
    theta = RNG.uniform(-0.5, 0.5, n)
    cond = np.stack([energy, theta], axis=1)
    info = write_dataset(
        path,
        x,
        None,
        kind="field",
        source="t",
        chunk_samples=chunk,
        conditions=cond,
        condition_names=("incident_energy", "theta"),
        condition_units=("MeV", "rad"),
    )
    return info, x, cond.astype(np.float32)


def test_1d_conditions_written_described_and_verified(tmp_path):
    info, x, cond = _showers(tmp_path / "s.h5")
    assert info.spatial == (368,) and info.ndim == 1 and info.shape == (1, 368)
    assert info.condition_names == ("incident_energy", "theta")
    assert info.condition_units == ("MeV", "rad")
    assert info.condition_stats["max"][0] == pytest.approx(cond[:, 0].max())
    assert info.condition_stats["log10_mean"][0] == pytest.approx(
        np.log10(cond[:, 0].astype(np.float64)).mean()
    )
    assert np.isnan(info.condition_stats["log10_mean"][1])  # theta has negative values
    assert info.identity()["conditions"] == ["incident_energy", "theta"]
    summary = scan(tmp_path / "s.h5")
    assert summary["conditions"]["std"][1] == pytest.approx(cond[:, 1].astype(np.float64).std())
    with h5py.File(tmp_path / "s.h5", "r") as f:
        np.testing.assert_array_equal(f["images"][()], x)
        np.testing.assert_array_equal(f["conditions"][()], cond)


def test_identity_without_conditions_is_unchanged(tmp_path):
    info = write_dataset(
        tmp_path / "p.h5", np.zeros((4, 1, 8, 8), np.uint8), None, kind="image", source="t"
    )
    assert "conditions" not in info.identity() and not info.has_conditions
    # positional construction, as before the condition fields
    DatasetInfo("x", 1, 1, (4,), "uint8", "image", "t", {}, False, 0, 1, None, Symmetry.none(1))


def test_flipped_byte_in_conditions_is_caught_by_verify(tmp_path):
    path = tmp_path / "s.h5"
    _showers(path)
    with h5py.File(path, "r+") as f:
        row = f["conditions"][17]
        raw = row.view(np.uint8).copy()
        raw[1] ^= 0x10  # one bit of the energy's mantissa: still finite, stats barely move
        f["conditions"][17] = raw.view(np.float32)
    read_info(path)  # metadata only: still fine
    with pytest.raises(SchemaError, match="/conditions fail their CRC-32"):
        scan(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda f: f["conditions"].attrs.__delitem__("units"), "no units attribute"),
        (lambda f: f["conditions"].attrs.__setitem__("names", ["a"]), "names is not 2 strings"),
        (lambda f: f["conditions"].attrs.__setitem__("mean", [1.0, np.nan]), "mean is not 2"),
        (
            lambda f: (f.__delitem__("conditions"), f.create_dataset("conditions", (5, 2), "f4")),
            r"expected \(96, K\)",
        ),
    ],
)
def test_read_info_checks_conditions_cheaply(tmp_path, edit, match):
    path = tmp_path / "s.h5"
    _showers(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(SchemaError, match=match):
        read_info(path)


@pytest.mark.parametrize(
    ("cond", "names", "match"),
    [
        (np.full((N, 1), np.nan), ("e",), "NaN or Inf"),
        (np.ones((N - 1, 1)), ("e",), "95 condition rows for 96 samples"),
        (np.ones((N, 2, 2)), ("e",), r"shape \(N,\) or \(N, K\)"),
        (np.ones((N, 2)), ("e",), "need 2 names"),
    ],
)
def test_write_refuses_bad_conditions_and_leaves_no_file(tmp_path, cond, names, match):
    with pytest.raises(SchemaError, match=match):
        write_dataset(
            tmp_path / "x.h5",
            np.zeros((N, 1, 5), np.float32),
            None,
            kind="field",
            source="t",
            conditions=cond,
            condition_names=names,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("holdout", ["0", "0.2"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_reader_returns_the_conditions_of_its_own_samples(tmp_path, world, holdout):
    info, x, cond = _showers(tmp_path / "s.h5")
    split = make_split(holdout, info.n)
    plan = ShardPlan(n=split.train_count, batch_size=12, segment=5, seed=1)
    transform = make_transform(info, "linear")
    codec = make_condition_transform(info)
    held = set(split.held_indices.tolist())
    seen = []
    for rank in range(world):
        reader = ShardReader(info, plan, rank, world, transform, split)
        for b in range(plan.batches_per_epoch + 1):
            images, labels, values = reader.read(b)
            raw = transform.decode(torch.from_numpy(images)).numpy()
            index = np.rint(raw[:, 0, 0]).astype(int)  # each sample's first value: its index
            assert labels is None and values.dtype == np.float32
            np.testing.assert_allclose(values, codec.encode(cond[index]), rtol=1e-6, atol=1e-6)
            assert not held & set(index.tolist())
            seen += index.tolist() if b < plan.batches_per_epoch else []
        reader.close()
    assert len(seen) == len(set(seen)) == plan.batches_per_epoch * 12


def test_condition_transform_log_for_decades_linear_otherwise(tmp_path):
    info, _, cond = _showers(tmp_path / "s.h5")
    codec = make_condition_transform(info, "auto")
    assert codec.log == (True, False)
    encoded = codec.encode(cond)
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(encoded.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(encoded.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(codec.decode(encoded), cond, rtol=1e-5, atol=1e-6)
    as_torch = codec.decode(codec.encode(torch.from_numpy(cond)))
    np.testing.assert_allclose(as_torch.numpy(), cond, rtol=1e-5, atol=1e-6)
    assert make_condition_transform(info, "linear").log == (False, False)
    with pytest.raises(UserError, match="condition theta .* has min"):
        make_condition_transform(info, "log")
    assert make_condition_transform(read_info(_plain(tmp_path)), "auto") is None


def _plain(tmp_path):
    path = tmp_path / "plain.h5"
    write_dataset(path, np.zeros((4, 1, 6), np.float32) + 1, None, kind="field", source="t")
    return path


def test_prefetcher_hands_out_images_and_a_condition(tmp_path):
    info, _, cond = _showers(tmp_path / "s.h5")
    plan = ShardPlan(n=info.n, batch_size=8, segment=4, seed=0)
    reader = ShardReader(info, plan, 0, 1, make_transform(info, "linear"))
    feed = Prefetcher(reader, first_batch=0)
    try:
        images, condition = feed.next()
        assert isinstance(condition, Condition) and condition.labels is None
        assert images.shape == (8, 1, 368) and condition.values.shape == (8, 2)
        assert condition.values.dtype == torch.float32
        np.testing.assert_array_equal(condition.values.numpy(), reader.read(0)[2])
    finally:
        feed.close()


def test_staging_checks_the_conditions_of_the_copy(tmp_path):
    from hpcgan.data.stage import check_copy

    source, copy = tmp_path / "s.h5", tmp_path / "copy.h5"
    _showers(source)
    shutil.copyfile(source, copy)
    assert check_copy(source, copy, True) is None
    with h5py.File(copy, "r+") as f:
        f["conditions"][3, 1] = f["conditions"][3, 1] + 0.25
    assert check_copy(source, copy, True) == "conditions"
