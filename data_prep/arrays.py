"""Arrays as sources of 2D samples (images, maps): .npy files, .npz members, IDX files and
HDF5 datasets.

Nothing is loaded whole when it can be mapped: .npy files and uncompressed .npz members are
memory-mapped, IDX files too (gzip-compressed ones are decompressed once), HDF5 datasets are
read slice by slice. Samples are [N, H, W], [N, H, W, C] or [N, C, H, W] (see `axes`).
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data_prep.errors import reading
from data_prep.shaping import Probe, Target, conform
from hpcgan.errors import UserError, one_line

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_SHAPES = "expected (N, H, W), (N, H, W, C) or (N, C, H, W)"


@dataclass(frozen=True)
class ArraySpec:
    """Which array to read: picklable, so rank 0 can plan and every rank open."""

    fmt: str  # "npy", "npz", "idx" or "hdf5"
    path: str
    key: str | None = None  # npz member / HDF5 dataset; None: the only candidate
    labels: str | None = None  # npz member / HDF5 dataset / IDX label file
    layout: str = "auto"  # "auto", "nchw" or "nhwc" for 4-d arrays

    @property
    def name(self) -> str:
        return self.path


class ArraySource:
    """Samples [N, ...] of an array-like that supports slicing (ndarray, memmap, h5py)."""

    def __init__(self, name: str, images, axes: str, labels: np.ndarray | None) -> None:
        self.name, self.images, self.axes, self.labels = name, images, axes, labels

    def __len__(self) -> int:
        return len(self.images)

    def probe(self, index: np.ndarray) -> Probe:
        channels, height, width = _chw(self.images.shape, self.axes)
        return Probe({(channels, height, width): self.name}, self.images.dtype == np.uint8)

    def read(self, index: np.ndarray, target: Target) -> np.ndarray:
        """Samples at `index` (increasing) as [len(index), *target.shape]."""
        x = self._take(index)
        if self.axes == "nhw":
            x = x[:, None]
        elif self.axes == "nhwc":
            x = x.transpose(0, 3, 1, 2)
        try:
            return conform(x, target)
        except UserError as err:
            raise UserError(f"{self.name}: {one_line(err)}") from err

    def describe(self, i: int) -> str:
        return f"{self.name} sample {i}"

    def _take(self, index: np.ndarray) -> np.ndarray:
        """Contiguous runs as slices: one read each, never a long fancy-index list."""
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        runs = np.split(index, breaks)
        with reading(self.name):
            parts = [np.asarray(self.images[run[0] : run[-1] + 1]) for run in runs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def open_array(spec: ArraySpec) -> ArraySource:
    """Open what `spec` names and check its shape, dtype and labels."""
    if spec.fmt == "npy":
        name, images, labels = spec.path, _npy(spec.path), None
    elif spec.fmt == "npz":
        name, images, labels = _npz(spec)
    elif spec.fmt == "idx":
        name, images = spec.path, read_idx(spec.path)
        labels = None if spec.labels is None else read_idx(spec.labels)
    else:
        name, images, labels = _hdf5(spec)
    if images.dtype.kind not in "biuf":
        raise UserError(f"{name}: holds {images.dtype} values, not real numbers")
    axes = _axes(images.shape, spec.layout, name)
    if len(images) == 0:
        raise UserError(f"{name}: holds no samples (shape {images.shape})")
    return ArraySource(
        name, images, axes, None if labels is None else _labels(labels, name, len(images))
    )


def idx_header(head: bytes) -> tuple[np.dtype, tuple[int, ...], int] | None:
    """(dtype, shape, data offset) from the first bytes of an IDX file, or None if not one.

    IDX (the MNIST format): two zero bytes, a type code, the number of dimensions, then each
    dimension as a big-endian uint32, then the values (big-endian).
    """
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or not 1 <= head[3] <= 4:
        return None
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    return np.dtype(_IDX_TYPES[head[2]]), shape, 4 + 4 * ndim


def idx_head(path: str | Path, size: int = 24) -> bytes:
    """The first bytes of an IDX file, decompressed if it is gzipped."""
    with reading(path), open(path, "rb") as f:
        head = f.read(size)
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path) as f:
                return f.read(size)
        except (OSError, EOFError, zlib.error):
            return b""
    return head


def read_idx(path: str) -> np.ndarray:
    """An IDX file as an array: memory-mapped, or decompressed once if gzipped."""
    header = idx_header(idx_head(path))
    if header is None:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    dtype, shape, offset = header
    need = offset + math.prod(shape) * dtype.itemsize
    with reading(path), open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    if gzipped:
        try:
            with gzip.open(path) as f:
                data = f.read()
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(f"{path}: corrupt gzip data ({one_line(err)})") from err
        size = len(data)
    else:
        size = Path(path).stat().st_size
    if size < need:
        raise UserError(f"{path}: IDX file is truncated ({size} of {need} bytes)")
    if gzipped:
        return np.frombuffer(data, dtype, math.prod(shape), offset).reshape(shape)
    return np.memmap(path, dtype, "r", offset, shape)


def _npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npy file ({one_line(err)})") from err


def _npz(spec: ArraySpec) -> tuple[str, np.ndarray, np.ndarray | None]:
    try:
        with zipfile.ZipFile(spec.path) as archive:
            members = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            key = spec.key or _only_images(spec.path, members, lambda m: _npz_ndim(archive, m))
            if key not in members:
                raise UserError(f"{spec.path}: no array {key!r} (--key); arrays: {_list(members)}")
            labels_key = spec.labels or (
                "labels" if "labels" in members and key != "labels" else None
            )
            if labels_key is not None and labels_key not in members:
                raise UserError(
                    f"{spec.path}: no array {labels_key!r} (--labels-key); arrays: {_list(members)}"
                )
            images = _npz_member(spec.path, archive, key)
            labels = None if labels_key is None else _npz_member(spec.path, archive, labels_key)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as err:
        raise UserError(f"{spec.path}: not a readable .npz file ({one_line(err)})") from err
    return f"{spec.path}:{key}", images, labels


def _npz_ndim(archive: zipfile.ZipFile, member: str) -> int:
    with archive.open(member + ".npy") as f:
        version = np.lib.format.read_magic(f)
        return len(_read_npy_header(f, version)[0])


def _npz_member(path: str, archive: zipfile.ZipFile, member: str) -> np.ndarray:
    """A member, memory-mapped if stored uncompressed (np.savez), else loaded (savez_compressed)."""
    info = archive.getinfo(member + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: fixed part, then name and extra field
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = _read_npy_header(f, version)
        offset = f.tell()
    if dtype.hasobject:
        raise UserError(f"{path}:{member}: holds Python objects, not numbers")
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C")


def _read_npy_header(f, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _hdf5(spec: ArraySpec) -> tuple[str, h5py.Dataset, h5py.Dataset | None]:
    if not h5py.is_hdf5(spec.path):
        raise UserError(f"{spec.path}: not an HDF5 file")
    try:
        f = h5py.File(spec.path, "r", locking=False)  # kept open by the datasets it returns
    except OSError as err:
        raise UserError(f"{spec.path}: unreadable HDF5 file ({one_line(err)})") from err
    datasets: dict[str, h5py.Dataset] = {}

    def note(name: str, obj: object) -> None:  # (a value other than None stops the visit)
        if isinstance(obj, h5py.Dataset):
            datasets[name] = obj

    f.visititems(note)
    names = [f"{name} {datasets[name].shape}" for name in datasets]
    key = (spec.key or _only_images(spec.path, list(datasets), lambda n: datasets[n].ndim)).strip(
        "/"
    )
    if key not in datasets:
        raise UserError(f"{spec.path}: no dataset {key!r} (--key); datasets: {_list(names)}")
    labels_key = spec.labels
    if labels_key is None and "labels" in datasets and key != "labels":
        labels_key = "labels"
    if labels_key is not None and labels_key.strip("/") not in datasets:
        raise UserError(
            f"{spec.path}: no dataset {labels_key!r} (--labels-key); datasets: {_list(names)}"
        )
    labels = None if labels_key is None else datasets[labels_key.strip("/")]
    return f"{spec.path}:{key}", datasets[key], labels


def _only_images(path: str, names: list[str], ndim) -> str:
    """Without --key, the one array of rank 3 or 4; otherwise ask for --key."""
    candidates = [name for name in names if ndim(name) in (3, 4)]
    if len(candidates) == 1:
        return candidates[0]
    found = (
        f"candidates: {_list(candidates)}"
        if candidates
        else f"none of rank 3 or 4 among {_list(names)}"
    )
    raise UserError(f"{path}: pass --key to name the images array ({found})")


def _axes(shape: tuple[int, ...], layout: str, name: str) -> str:
    """Axis order of the samples. Auto: a 4-d array's channel axis is the shorter of axes 1
    and 3 ((N, 64, 64, 3) is NHWC, (N, 3, 64, 64) NCHW), NCHW on a tie."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise UserError(f"{name}: array of shape {shape} has rank {len(shape)}; {_SHAPES}")
    if layout != "auto":
        return layout
    return "nhwc" if shape[3] < shape[1] else "nchw"


def _chw(shape: tuple[int, ...], axes: str) -> tuple[int, int, int]:
    if axes == "nhw":
        return (1, shape[1], shape[2])
    if axes == "nhwc":
        return (shape[3], shape[1], shape[2])
    return (shape[1], shape[2], shape[3])


def _labels(labels, name: str, n: int) -> np.ndarray:
    """Labels loaded whole (8 bytes a sample) and checked: n integers >= 0."""
    values = np.asarray(labels[()])
    if values.shape != (n,) or values.dtype.kind not in "iu":
        raise UserError(f"{name}: labels must be {n} integers, got {values.dtype} {values.shape}")
    if values.min() < 0:
        raise UserError(f"{name}: labels must be >= 0, got {values.min()}")
    return values.astype(np.int64)


def _list(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
