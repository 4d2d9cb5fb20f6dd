"""The optional /conditions dataset of schema 1 (docs/data.md, "Conditions"): what each sample
was made at (incident energy, angle, cosmological parameters), K float32 columns.

Layout::

    /conditions     [N, K] float32, row i belongs to /images[i]
      attributes:   names, units (K strings each); min, max, mean, std ([K] float64);
                    log10_mean, log10_std ([K] float64, NaN for a column with a value <= 0)
    root attribute: conditions_crc32 (CRC-32 of /conditions as little-endian float32)

The statistics let a reader pick and apply the condition transform (hpcgan.data.transforms)
without reading the values; `read_info` checks them cheaply, `verify` recomputes them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from hpcgan.errors import UserError

DATASET = "conditions"
CHECKSUM = "conditions_crc32"
STAT_KEYS = ("min", "max", "mean", "std", "log10_mean", "log10_std")
_LOG_KEYS = ("log10_mean", "log10_std")
_STATS_RTOL = 1e-5


@dataclass(frozen=True)
class Conditions:
    """Continuous conditions of N samples, as written: values [N, K] and one name and unit
    per column (a unit may be "" when the source does not state it)."""

    values: np.ndarray  # [N, K] float32
    names: tuple[str, ...]
    units: tuple[str, ...]

    @classmethod
    def checked(
        cls,
        values: object,
        names: Sequence[str],
        units: Sequence[str] | None,
        n: int,
        where: str,
        error: type[UserError] = UserError,
    ) -> Conditions:
        """Conditions for n samples; `error` (`where: ...`, one line) if they do not fit."""
        array = np.asarray(values)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] < 1 or array.dtype.kind not in "iuf":
            raise error(
                f"{where}: conditions must be numbers of shape (N,) or (N, K), "
                f"got {array.dtype} {array.shape}"
            )
        if len(array) != n:
            raise error(f"{where}: {len(array)} condition rows for {n} samples")
        array = array.astype(np.float32)
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            raise error(
                f"{where}: conditions hold NaN or Inf (first in sample {int(np.argmax(bad))})"
            )
        k = array.shape[1]
        names = tuple(str(s) for s in names)
        units = tuple(str(s) for s in units) if units is not None else ("",) * k
        if len(names) != k or len(units) != k:
            raise error(
                f"{where}: {k} condition column(s) need {k} names and units, "
                f"got {len(names)} and {len(units)}"
            )
        if len(set(names)) != k or not all(names):
            raise error(f"{where}: condition names must be distinct and non-empty: {names}")
        return cls(array, names, units)

    @property
    def k(self) -> int:
        return self.values.shape[1]


def column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per column: min, max, mean, std; log10 mean and std where every value is positive."""
    x = values.astype(np.float64)  # [N, K]
    stats = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
    }
    positive = stats["min"] > 0
    logs = np.log10(np.where(positive, x, 1.0))
    stats["log10_mean"] = np.where(positive, logs.mean(axis=0), np.nan)
    stats["log10_std"] = np.where(positive, logs.std(axis=0), np.nan)
    return stats


def crc32(dataset: h5py.Dataset) -> int:
    """The conditions_crc32 attribute: CRC-32 of /conditions as little-endian float32."""
    crc = 0
    for start in range(0, len(dataset), 1 << 18):
        crc = zlib.crc32(np.ascontiguousarray(dataset[start : start + (1 << 18)], "<f4"), crc)
    return crc


def write(f: h5py.File, conditions: Conditions) -> None:
    """Add /conditions with its attributes and the root checksum to an open file."""
    dataset = f.create_dataset(DATASET, data=np.ascontiguousarray(conditions.values, "<f4"))
    dataset.attrs["names"] = list(conditions.names)
    dataset.attrs["units"] = list(conditions.units)
    for key, value in column_stats(conditions.values).items():
        dataset.attrs[key] = value
    f.attrs[CHECKSUM] = np.uint32(crc32(dataset))


@dataclass(frozen=True)
class Described:
    """What read_info reports of /conditions (nothing when the file has none)."""

    names: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    stats: dict[str, tuple[float, ...]] | None = None


def describe(f: h5py.File, path: object, n: int, error: type[UserError]) -> Described:
    """Check /conditions' shape, dtype and attributes without reading its values."""
    dataset = f.get(DATASET)
    if dataset is None:
        return Described()
    if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 2 or len(dataset) != n:
        shape = dataset.shape if isinstance(dataset, h5py.Dataset) else "a group"
        raise error(f"{path}: /conditions is {shape}, expected ({n}, K) like /images")
    k = dataset.shape[1]
    if dataset.dtype != np.float32 or k < 1:
        raise error(f"{path}: /conditions is {dataset.dtype} {dataset.shape}, expected float32")
    names = _strings(dataset.attrs.get("names"), k, path, "names", error)
    units = _strings(dataset.attrs.get("units"), k, path, "units", error)
    stats = {}
    for key in STAT_KEYS:
        value = np.asarray(dataset.attrs.get(key, np.nan), dtype=np.float64)
        finite = np.isfinite(value) if value.shape == (k,) else np.zeros(k, bool)
        need = np.asarray(stats["min"]) > 0 if key in _LOG_KEYS else np.ones(k, bool)
        if value.shape != (k,) or not finite[need].all():
            raise error(f"{path}: /conditions attribute {key} is not {k} finite numbers")
        stats[key] = tuple(float(v) for v in value)
    return Described(names, units, stats)


def verify(f: h5py.File, path: object, error: type[UserError]) -> dict | None:
    """Read /conditions whole: finite values, checksum and statistics as stored."""
    if DATASET not in f:
        return None
    dataset = f[DATASET]
    values = dataset[()]  # [N, K]
    if not np.isfinite(values).all():
        first = int(np.argmax(~np.isfinite(values).all(axis=1)))
        raise error(f"{path}: /conditions hold NaN or Inf (first in sample {first})")
    stored = f.attrs.get(CHECKSUM)
    if stored is not None and int(stored) != crc32(dataset):
        raise error(
            f"{path}: /conditions fail their CRC-32 checksum; the file was modified or "
            "damaged after it was written"
        )
    measured = column_stats(values)
    for key, want in measured.items():
        have = np.asarray(dataset.attrs[key], dtype=np.float64)
        close = np.isclose(have, want, rtol=_STATS_RTOL, atol=0, equal_nan=True)
        if not close.all():
            c = int(np.argmin(close))
            raise error(
                f"{path}: stored /conditions {key}[{c}] {have[c]:.9g} does not match the data "
                f"({want[c]:.9g}); the file was modified or damaged after it was written"
            )
    return {key: value.tolist() for key, value in measured.items()}


def _strings(value: object, k: int, path: object, key: str, error: type[UserError]) -> tuple:
    if value is None:
        raise error(f"{path}: /conditions has no {key} attribute")
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in np.ravel(value)]
    if len(items) != k or not all(isinstance(v, str) for v in items):
        raise error(f"{path}: /conditions attribute {key} is not {k} strings")
    return tuple(items)
