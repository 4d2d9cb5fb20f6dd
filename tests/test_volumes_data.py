"""Volumes in schema 1: [N, C, D, H, W] files written, described, scanned and read in shards
like 2D ones; the grf3d synthetic and built-in data."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from data_prep.__main__ import main
from hpcgan.data.builtin import builtin_path, prepare_builtin
from hpcgan.data.format import SchemaError, read_info
from hpcgan.data.reader import ShardReader
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import make_transform
from hpcgan.data.verify import scan
from hpcgan.data.write import write_dataset


def _volumes(dtype: str, n: int = 24, c: int = 2, spatial=(4, 6, 5)) -> np.ndarray:
    rng = np.random.default_rng(1)
    if dtype == "uint8":
        return rng.integers(0, 256, size=(n, c, *spatial), dtype=np.uint8)
    return rng.lognormal(size=(n, c, *spatial)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_volume_file_is_described_scanned_and_sharded(tmp_path, dtype):
    path = tmp_path / "vol.h5"
    volumes = _volumes(dtype)
    labels = np.arange(len(volumes)) % 3
    info = write_dataset(path, volumes, labels, kind="field", source="t", chunk_samples=5)
    assert read_info(path) == info
    assert (info.n, info.channels, info.spatial, info.ndim) == (24, 2, (4, 6, 5), 3)
    assert info.shape == (2, 4, 6, 5) and info.dtype == dtype and info.num_classes == 3
    assert info.chunk_samples == 5
    with h5py.File(path, "r") as f:
        assert f["images"].chunks == (5, 2, 4, 6, 5)
        np.testing.assert_array_equal(f["images"][()], volumes)
    values = volumes.astype(np.float64)
    assert info.stats["mean"] == pytest.approx(values.mean())
    summary = scan(path)
    assert summary["checksums"] == 5  # ceil(24 / 5) chunk CRC-32s
    assert summary["stats"]["max"] == pytest.approx(values.max())
    np.testing.assert_allclose(summary["channel_stats"]["channel_mean"], values.mean((0, 2, 3, 4)))

    transform = make_transform(info, "linear")
    plan = ShardPlan(n=info.n, batch_size=8, segment=4, seed=3)
    for batch in range(plan.batches_per_epoch + 1):  # into the second epoch
        whole, whole_labels, _ = ShardReader(info, plan, 0, 1, transform).read(batch)
        parts = [ShardReader(info, plan, rank, 2, transform).read(batch) for rank in range(2)]
        assert whole.shape == (8, 2, 4, 6, 5) and whole.dtype == np.float32
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole_labels)
        assert set(whole_labels) <= {0, 1, 2}


def test_damaged_volume_is_caught_by_scan(tmp_path):
    path = tmp_path / "vol.h5"
    write_dataset(path, _volumes("float32"), None, kind="field", source="t", chunk_samples=4)
    with h5py.File(path, "r+") as f:
        f["images"][9, 1, 2, 3, 4] += 1.0
    with pytest.raises(SchemaError, match=r"first samples 8\.\.11"):
        scan(path)


@pytest.mark.parametrize("shape", [(4, 1, 2, 3, 4, 5), (4, 3)])  # (rank 3 is 1D: valid)
def test_rank_6_and_rank_2_are_refused_in_one_line(tmp_path, shape):
    with pytest.raises(SchemaError, match=r"\[N, C, D, H, W\]") as err:
        write_dataset(tmp_path / "w.h5", np.zeros(shape, np.uint8), None, kind="image", source="t")
    assert "\n" not in str(err.value)
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros(shape, np.uint8), chunks=(1, *shape[1:]))
        f.attrs.update(hpcgan_schema=1, kind="image", source="t", count=4)
    with pytest.raises(SchemaError, match=r"expected rank 3 .* or rank 5") as err:
        read_info(path)
    assert "\n" not in str(err.value)


def test_synth_grf3d_writes_a_valid_volume_file(tmp_path, capsys):
    out = tmp_path / "g.h5"
    assert main(["synth", "--kind", "grf3d", "--out", str(out), "--n", "8", "--size", "16"]) == 0
    assert f"wrote {out}: 8 x 1x16x16x16 float32 field" in capsys.readouterr().out
    info = read_info(out)
    assert info.spatial == (16, 16, 16) and info.kind == "field" and not info.has_labels
    assert info.source == "grf3d slope=-3 sigma=0.8 seed=0"
    assert scan(out)["checksums"] >= 1
    assert info.stats["min"] > 0  # lognormal
    assert main(["synth", "--kind", "grf3d", "--out", str(tmp_path / "b.h5"), "--size", "12"]) == 2
    assert "power of two" in capsys.readouterr().err


def test_builtin_grf3d_is_prepared_once(tmp_path, monkeypatch):
    from hpcgan.data import builtin

    monkeypatch.setattr(builtin, "GRF3D_N", 8)
    monkeypatch.setattr(builtin, "GRF3D_SIZE", 16)
    path = prepare_builtin(str(tmp_path), "grf3d")
    assert path == builtin_path(str(tmp_path), "grf3d") == tmp_path / "grf3d-32.h5"
    info = read_info(path)
    assert (info.n, info.shape) == (8, (1, 16, 16, 16))
    assert info.source.startswith("grf3d ")
    mtime = path.stat().st_mtime_ns
    assert prepare_builtin(str(tmp_path), "grf3d") == path and path.stat().st_mtime_ns == mtime
