"""Continuous conditions in conversion (docs/data.md, "Conditions"): the columns named by
`--conditions KEY[,KEY...]`, and the files whose layout is known well enough to convert
without options: CaloChallenge (`showers` + `incident_energies`) and 3DGAN (`ECAL` + `energy`,
`theta`).

Values keep the file's units (never rescaled): CaloChallenge energies are MeV, 3DGAN's GeV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpcgan.data.conditions import Conditions
from hpcgan.errors import UserError

# CaloChallenge voxel count -> sample shape: datasets 1 (photons, pions) are irregular
# voxelisations, kept as vectors; datasets 2 and 3 are layers x angle bins x radial bins.
CALO_SHAPES = {368: (368,), 533: (533,), 6480: (45, 16, 9), 40500: (45, 50, 18)}
CALO_ANGLE_AXIS = 1  # the angle axis of the (layer, angle, radius) grids: periodic


@dataclass(frozen=True)
class Known:
    """A recognised file: which arrays hold what, and the defaults they imply."""

    what: str  # "CaloChallenge" or "3DGAN", for the summary and the source attribute
    key: str  # the samples
    shape: tuple[int, ...] | None  # of one flat sample, or None
    layout: str  # "auto" or a --layout value
    columns: tuple[tuple[str, str, str], ...]  # (array, condition name, unit)
    periodic: tuple[int, ...] = ()  # spatial axes that wrap around (symmetry default)


def recognise(shapes: dict[str, tuple[int, ...]], key: str | None) -> Known | None:
    """A CaloChallenge or 3DGAN file from its dataset names and shapes (None: neither, or the
    user named another --key)."""
    if "showers" in shapes and "incident_energies" in shapes and key in (None, "showers"):
        voxels = shapes["showers"][1:]
        shape = CALO_SHAPES.get(voxels[0]) if len(voxels) == 1 else None
        periodic = (CALO_ANGLE_AXIS,) if shape is not None and len(shape) == 3 else ()
        columns = (("incident_energies", "incident_energy", "MeV"),)
        return Known("CaloChallenge", "showers", shape, "auto", columns, periodic)
    if "ECAL" in shapes and "energy" in shapes and key in (None, "ECAL"):
        columns = (("energy", "energy", "GeV"),)
        if "theta" in shapes:
            columns += (("theta", "theta", "rad"),)
        layout = "ndhw" if len(shapes["ECAL"]) == 4 else "auto"  # (N, 51, 51, 25): one channel
        return Known("3DGAN", "ECAL", None, layout, columns)
    return None


def read_columns(
    keys: list[str],
    load: Callable[[str], tuple[np.ndarray, dict]],
    n: int,
    where: str,
    named: dict[str, tuple[str, str]] | None = None,
) -> Conditions:
    """The arrays `keys` side by side as conditions of n samples. Each is (N,), (N, 1) or
    (N, K); `load(key)` gives its values and attributes. Names: `named[key]` (name, unit) for
    a recognised file, else the key (key_0.. for K columns, or a `names` attribute), units from
    a `units`/`unit` attribute or empty."""
    columns, names, units = [], [], []
    for key in keys:
        values, attrs = load(key)
        values = np.asarray(values)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or len(values) != n or values.dtype.kind not in "iuf":
            raise UserError(
                f"{where}: conditions {key!r} must be {n} numbers or rows of numbers, one per "
                f"sample, got {values.dtype} {values.shape}"
            )
        k = values.shape[1]
        if named and key in named:
            name, unit = named[key]
            names += [name] if k == 1 else [f"{name}_{i}" for i in range(k)]
            units += [unit] * k
        else:
            names += _attr_strings(attrs.get("names"), k) or (
                [key] if k == 1 else [f"{key}_{i}" for i in range(k)]
            )
            unit = attrs.get("units", attrs.get("unit", ""))
            units += _attr_strings(unit, k) or [_text(unit)] * k
        columns.append(values)
    return Conditions.checked(np.concatenate(columns, axis=1), names, units, n, where)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _attr_strings(value: object, k: int) -> list[str] | None:
    """k strings from an attribute holding a list of them, else None."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    items = [_text(v) for v in np.ravel(value)]
    return items if len(items) == k and all(items) else None
