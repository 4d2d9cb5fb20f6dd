"""Arrays as sources of samples (images, maps, volumes): .npy files, .npz members, IDX files
and HDF5 datasets.

Nothing is loaded whole when it can be mapped: .npy files and uncompressed .npz members are
memory-mapped, IDX files too (gzip-compressed ones are decompressed once), HDF5 datasets are
read slice by slice. Samples are [N, H, W], [N, H, W, C] or [N, C, H, W]; volumes [N, D, H, W]
(--layout ndhw), [N, C, D, H, W] or [N, D, H, W, C]; or flat vectors [N, V] given a shape
(--shape L, H,W or D,H,W). See `_axes`. Conditions come from the arrays `--conditions` names,
or from a recognised file's (data_prep.conditions).
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data_prep.conditions import Known, read_columns, recognise
from data_prep.errors import reading
from data_prep.shaping import Probe, Target, conform
from data_prep.volumes import LAYOUTS, sample_shape, to_ncs
from hpcgan.data.conditions import Conditions
from hpcgan.errors import UserError, one_line

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_SHAPES = (
    "expected (N, H, W), (N, H, W, C) or (N, C, H, W); volumes (N, C, D, H, W), "
    "(N, D, H, W, C) or (N, D, H, W) with --layout ndhw; flat (N, V) with --shape L, H,W or D,H,W"
)
# Without --layout, a channel axis holds at most this many channels (grey, RGB, RGBA): an
# array whose candidate channel axes are both longer, such as (12, 32, 32, 32), could be
# images of many channels or volumes, and is refused rather than guessed.
AUTO_MAX_CHANNELS = 4


# An input's array by name -> (values, attributes), for --conditions.
Loader = Callable[[str], tuple[np.ndarray, dict]]


@dataclass(frozen=True)
class ArraySpec:
    """Which array to read: picklable, so rank 0 can plan and every rank open."""

    fmt: str  # "npy", "npz", "idx" or "hdf5"
    path: str
    key: str | None = None  # npz member / HDF5 dataset; None: the only candidate
    labels: str | None = None  # npz member / HDF5 dataset / IDX label file
    layout: str = "auto"  # "auto" or a key of data_prep.volumes.LAYOUTS
    shape: tuple[int, ...] | None = None  # of one flat sample (--shape), for [N, V] arrays
    conditions: tuple[str, ...] | None = None  # arrays holding conditions (--conditions)

    @property
    def name(self) -> str:
        return self.path


class ArraySource:
    """Samples [N, ...] of an array-like that supports slicing (ndarray, memmap, h5py)."""

    def __init__(
        self,
        name: str,
        images,
        axes: str,
        labels: np.ndarray | None,
        flat: tuple[int, ...] | None = None,
        conditions: Conditions | None = None,
        known: Known | None = None,
    ) -> None:
        self.name, self.images, self.axes, self.labels = name, images, axes, labels
        self.flat = flat  # the sample shape of flat [N, V] arrays
        self.conditions = conditions  # [N, K] with names and units, checked
        self.known = known  # a recognised CaloChallenge or 3DGAN file

    def __len__(self) -> int:
        return len(self.images)

    def probe(self, index: np.ndarray) -> Probe:
        shape = sample_shape(self.images.shape, self.axes, self.flat)
        return Probe({shape: self.name}, self.images.dtype == np.uint8)

    def read(self, index: np.ndarray, target: Target) -> np.ndarray:
        """Samples at `index` (increasing) as [len(index), *target.shape]."""
        x = to_ncs(self._take(index), self.axes, self.flat)
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
    load, known = None, None
    if spec.fmt == "npy":
        name, images, labels = spec.path, _npy(spec.path), None
    elif spec.fmt == "npz":
        name, images, labels, load = _npz(spec)
    elif spec.fmt == "idx":
        name, images = spec.path, read_idx(spec.path)
        labels = None if spec.labels is None else read_idx(spec.labels)
    else:
        name, images, labels, load, known = _hdf5(spec)
    if images.dtype.kind not in "biuf":
        raise UserError(f"{name}: holds {images.dtype} values, not real numbers")
    flat = spec.shape or (known.shape if known else None)
    layout = known.layout if known and spec.layout == "auto" else spec.layout
    axes = _axes(images.shape, layout, flat, name)
    if len(images) == 0:
        raise UserError(f"{name}: holds no samples (shape {images.shape})")
    labels = None if labels is None else _labels(labels, name, len(images))
    conditions = None
    if spec.conditions is not None or (known and load):
        if load is None:
            raise UserError(f"{name}: --conditions needs an npz or HDF5 input")
        named = {key: (c, unit) for key, c, unit in known.columns} if known else None
        keys = list(spec.conditions or (key for key, _, _ in known.columns))
        conditions = read_columns(keys, load, len(images), spec.path, named)
    flat = flat if axes == "flat" else None
    return ArraySource(name, images, axes, labels, flat, conditions, known)


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


def _npz(spec: ArraySpec) -> tuple[str, np.ndarray, np.ndarray | None, Loader]:
    try:
        with zipfile.ZipFile(spec.path) as archive:
            members = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            key = spec.key or _only_images(
                spec.path, members, lambda m: _npz_shape(archive, m), spec.shape
            )
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
            columns = {}
            for column in spec.conditions or ():
                if column not in members:
                    raise UserError(
                        f"{spec.path}: no array {column!r} (--conditions); arrays: {_list(members)}"
                    )
                columns[column] = np.asarray(_npz_member(spec.path, archive, column))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as err:
        raise UserError(f"{spec.path}: not a readable .npz file ({one_line(err)})") from err
    return f"{spec.path}:{key}", images, labels, lambda column: (columns[column], {})


def _npz_shape(archive: zipfile.ZipFile, member: str) -> tuple[int, ...]:
    with archive.open(member + ".npy") as f:
        version = np.lib.format.read_magic(f)
        return _read_npy_header(f, version)[0]


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


def _hdf5(
    spec: ArraySpec,
) -> tuple[str, h5py.Dataset, h5py.Dataset | None, Loader, Known | None]:
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
    shape_of = lambda n: datasets[n].shape  # noqa: E731
    known = recognise({n: d.shape for n, d in datasets.items()}, spec.key)
    key = (
        spec.key
        or (known.key if known and not spec.shape else None)
        or _only_images(spec.path, list(datasets), shape_of, spec.shape)
    ).strip("/")
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

    def load(column: str) -> tuple[np.ndarray, dict]:
        dataset = datasets.get(column.strip("/"))
        if dataset is None:
            raise UserError(
                f"{spec.path}: no dataset {column!r} (--conditions); datasets: {_list(names)}"
            )
        with reading(spec.path):
            return dataset[()], dict(dataset.attrs)

    return (
        f"{spec.path}:{key}",
        datasets[key],
        labels,
        load,
        known if known and key == known.key else None,
    )


def _only_images(path: str, names: list[str], shape, flat: tuple[int, ...] | None) -> str:
    """Without --key, the one array of rank 3 or 4, else of rank 5 (volumes); with --shape, the
    one of shape (N, V) with V = D*H*W (CaloChallenge files also hold (N, 1) energies);
    otherwise ask for --key."""
    if flat is not None:
        candidates = [n for n in names if shape(n)[1:] == (math.prod(flat),)]
        ranks = f"shape (N, {math.prod(flat)}) for --shape"
    else:
        candidates = [name for name in names if len(shape(name)) in (3, 4)]
        candidates = candidates or [name for name in names if len(shape(name)) == 5]
        ranks = "rank 3, 4 or 5"
    if len(candidates) == 1:
        return candidates[0]
    found = (
        f"candidates: {_list(candidates)}"
        if candidates
        else f"none of {ranks} among {_list(names)}"
    )
    raise UserError(f"{path}: pass --key to name the images array ({found})")


def _axes(shape: tuple[int, ...], layout: str, flat: tuple[int, ...] | None, name: str) -> str:
    """Axis order of the samples. Auto: a 4-d array is 2D, its channel axis the shorter of axes
    1 and 3 ((N, 64, 64, 3) is NHWC, (N, 3, 64, 64) NCHW), NCHW on a tie; a 5-d array is a
    volume, its channel axis the shorter of axes 1 and 4 ((N, 25, 25, 25, 1) is NDHWC), NCDHW
    on a tie. A channel axis found so must hold at most AUTO_MAX_CHANNELS: (12, 32, 32, 32)
    could be 32-channel images or volumes and is refused, naming --layout. 4-d volumes
    (N, D, H, W) need --layout ndhw (recognised 3DGAN files get it); flat (N, V) arrays need
    --shape (recognised CaloChallenge files get it)."""
    if len(shape) == 2 and flat is not None:
        if shape[1] != math.prod(flat):
            sides = "x".join(map(str, flat))
            raise UserError(
                f"{name}: samples of {shape[1]} values cannot be reshaped to --shape {sides} "
                f"({math.prod(flat)} values)"
            )
        return "flat"
    if flat is not None:
        raise UserError(f"{name}: --shape applies to flat (N, V) arrays, not shape {shape}")
    if len(shape) == 3 and LAYOUTS[layout] != 5 and layout != "ndhw":
        return "nhw"  # (--layout nchw or nhwc does not matter here, as before)
    if len(shape) not in (3, 4, 5):
        raise UserError(f"{name}: array of shape {shape} has rank {len(shape)}; {_SHAPES}")
    if layout == "auto":
        last = len(shape) - 1
        if min(shape[1], shape[last]) > AUTO_MAX_CHANNELS:
            n, sides = shape[0], "x".join(map(str, shape[1:]))
            could = (
                f"{n} images of {shape[1]} channels or {n} volumes of {sides}; "
                "pass --layout nchw, nhwc or ndhw"
                if last == 3
                else f"volumes with {shape[1]} channels first or {shape[4]} last; "
                "pass --layout ncdhw or ndhwc"
            )
            raise UserError(
                f"{name}: shape {shape} is ambiguous (no axis of at most {AUTO_MAX_CHANNELS} "
                f"channels): it could be {could}"
            )
        if len(shape) == 4:
            return "nhwc" if shape[3] < shape[1] else "nchw"
        return "ndhwc" if shape[4] < shape[1] else "ncdhw"
    if LAYOUTS[layout] != len(shape):
        raise UserError(
            f"{name}: --layout {layout} is for arrays of rank {LAYOUTS[layout]}, not shape {shape}"
        )
    return layout


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
