"""The exact symmetries of a dataset's samples: one attribute of the file, read by the models
(circular padding on periodic axes) and the metrics that assume a periodic box; augmentation
by exact symmetries is to read it too (docs/data.md, "Symmetries").

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

    def override(
        self,
        periodic: str | None = None,
        flips: str | None = None,
        rotations: str | None = None,
    ) -> Symmetry:
        """This symmetry with the parts given as text replaced (data_prep convert's
        --periodic AXES, --flips AXES, --rotations I:J,...; AXES is a comma list of axes, or
        `all`, or `none`)."""
        ndim = self.ndim
        return Symmetry(
            self.periodic if periodic is None else parse_axes(periodic, ndim, "--periodic"),
            self.flips if flips is None else parse_axes(flips, ndim, "--flips"),
            self.rotations if rotations is None else parse_planes(rotations, "--rotations"),
        )


def parse_axes(text: str, ndim: int, option: str) -> tuple[bool, ...]:
    """`0,2` -> (True, False, True) for ndim 3; `all` and `none` as they say."""
    text = text.strip().lower()
    if text in ("all", "none", ""):
        return (text == "all",) * ndim
    try:
        axes = {int(part) for part in text.split(",")}
    except ValueError:
        axes = {-1}
    if not axes <= set(range(ndim)):
        raise UserError(
            f"{option} {text!r}: give spatial axes 0..{ndim - 1} separated by commas, "
            "or all, or none"
        )
    return tuple(i in axes for i in range(ndim))


def parse_planes(text: str, option: str) -> tuple[tuple[int, int], ...]:
    """`0:1,1:2` -> ((0, 1), (1, 2)); `none` -> ()."""
    text = text.strip().lower()
    if text in ("none", ""):
        return ()
    try:
        planes = tuple(tuple(int(a) for a in part.split(":")) for part in text.split(","))
    except ValueError:
        planes = ((),)
    if any(len(p) != 2 for p in planes):
        raise UserError(f"{option} {text!r}: give planes as I:J separated by commas, or none")
    return planes  # type: ignore[return-value]
