"""The exact symmetries of a dataset's samples: one attribute of the file, read by the models
(circular padding on periodic axes), augmentation and the metrics that assume a periodic box
(docs/data.md, "Symmetries").

Axes are the spatial axes of a sample ``(C, *S)``, numbered 0..len(S)-1. Stored in the HDF5
file as the root attribute ``symmetry``, a JSON object::

    {"periodic": [true, false], "flips": [true, true], "rotations": [[0, 1]]}

- ``periodic[i]``: axis i wraps around (every axis of a periodic simulation box; the angle
  axis of a cylindrical calorimeter grid);
- ``flips[i]``: reversing axis i maps a sample to an equally likely one;
- ``rotations``: planes (i, j) of equal side lengths in which 90-degree rotations are exact.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from hpcgan.errors import UserError

ATTRIBUTE = "symmetry"


@dataclass(frozen=True)
class Symmetry:
    periodic: tuple[bool, ...]
    flips: tuple[bool, ...]
    rotations: tuple[tuple[int, int], ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.periodic)

    @classmethod
    def none(cls, ndim: int) -> Symmetry:
        """No exact symmetry (images of objects, calorimeter depth axes)."""
        return cls((False,) * ndim, (False,) * ndim, ())

    @classmethod
    def periodic_box(cls, spatial: tuple[int, ...]) -> Symmetry:
        """A statistically homogeneous and isotropic periodic box (the grf built-ins): every
        axis periodic and flippable, 90-degree rotations in every plane of equal sides."""
        ndim = len(spatial)
        planes = tuple(
            (i, j) for i, j in itertools.combinations(range(ndim), 2) if spatial[i] == spatial[j]
        )
        return cls((True,) * ndim, (True,) * ndim, planes)

    @property
    def all_periodic(self) -> bool:
        return bool(self.periodic) and all(self.periodic)

    def check(self, spatial: tuple[int, ...], where: str = "symmetry") -> Symmetry:
        """This symmetry, if it fits samples of spatial shape ``spatial``; else a UserError."""
        ndim = len(spatial)
        if len(self.periodic) != ndim or len(self.flips) != ndim:
            raise UserError(
                f"{where}: periodic and flips need one entry per spatial axis ({ndim}), "
                f"got {len(self.periodic)} and {len(self.flips)}"
            )
        for plane in self.rotations:
            i, j = plane
            if not (0 <= i < ndim and 0 <= j < ndim and i != j):
                raise UserError(f"{where}: rotation plane {list(plane)} names no two axes")
            if spatial[i] != spatial[j]:
                raise UserError(
                    f"{where}: rotation plane {list(plane)} joins axes of sides "
                    f"{spatial[i]} and {spatial[j]}; 90-degree rotations need equal sides"
                )
        return self

    def to_json(self) -> str:
        return json.dumps(
            {
                "periodic": list(self.periodic),
                "flips": list(self.flips),
                "rotations": [list(p) for p in self.rotations],
            }
        )

    @classmethod
    def from_json(cls, text: str, spatial: tuple[int, ...], where: str = "symmetry") -> Symmetry:
        """Parse and check the stored attribute."""
        try:
            tree = json.loads(text)
            sym = cls(
                tuple(bool(v) for v in tree["periodic"]),
                tuple(bool(v) for v in tree["flips"]),
                tuple((int(p[0]), int(p[1])) for p in tree.get("rotations", ())),
            )
        except (ValueError, KeyError, TypeError, IndexError):
            raise UserError(f"{where}: not a symmetry description: {text!r}") from None
        return sym.check(spatial, where)
