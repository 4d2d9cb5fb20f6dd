"""Write a synthetic conditioned dataset whose total follows its condition (issue 22).

Each sample is a 1x16x16 positive field: a Gaussian shower-like blob of random width and
centre on a faint lognormal floor, scaled so that its total is

    total = RESPONSE * E * (1 + 0.05 * N(0, 1))

with the condition `incident_energy` E (MeV) log-uniform over 1e3..1e6. So the data's mean
total per energy bin is known (RESPONSE * mean E of the bin) and a model can be checked
against it (docs/evaluation.md, "Conditioned totals (issue 22)"). The pattern is not periodic,
so the file's symmetry is none. Deterministic for a given --seed.

    python bench/conditioned_fields.py data/conditioned.h5 --n 8192 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np

from hpcgan.data.write import write_dataset
from hpcgan.symmetry import Symmetry

RESPONSE = 0.9  # total deposited / incident energy
RESOLUTION = 0.05  # relative spread of the total at fixed energy
E_RANGE = (1e3, 1e6)  # MeV, drawn log-uniformly
SIDE = 16
FLOOR = 0.01  # the floor's share of a voxel relative to the blob's peak (before noise)


def make_fields(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fields [n, 1, SIDE, SIDE] (float32, positive) and energies [n] (MeV)."""
    rng = np.random.default_rng(seed)
    energy = 10.0 ** rng.uniform(np.log10(E_RANGE[0]), np.log10(E_RANGE[1]), n)  # [n]
    centre = rng.uniform(SIDE * 0.3, SIDE * 0.7, (n, 2))  # [n, 2] row, column
    width = rng.uniform(1.0, 3.0, n)  # [n] voxels
    axis = np.arange(SIDE) + 0.5
    dy = axis[None, :, None] - centre[:, 0, None, None]  # [n, SIDE, 1]
    dx = axis[None, None, :] - centre[:, 1, None, None]  # [n, 1, SIDE]
    blob = np.exp(-(dy**2 + dx**2) / (2 * width[:, None, None] ** 2))  # [n, SIDE, SIDE]
    floor = FLOOR * rng.lognormal(0.0, 0.5, (n, SIDE, SIDE))
    pattern = blob * rng.lognormal(0.0, 0.1, (n, SIDE, SIDE)) + floor
    pattern /= pattern.sum(axis=(1, 2), keepdims=True)  # each sums to 1
    total = RESPONSE * energy * (1.0 + RESOLUTION * rng.standard_normal(n))  # [n]
    fields = (pattern * total[:, None, None])[:, None].astype(np.float32)  # [n, 1, S, S]
    return fields, energy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="HDF5 file to write (schema 1)")
    parser.add_argument("--n", type=int, default=8192, help="samples (default 8192)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    fields, energy = make_fields(args.n, args.seed)
    info = write_dataset(
        args.path,
        fields,
        None,
        kind="field",
        source=f"bench/conditioned_fields.py --n {args.n} --seed {args.seed}",
        conditions=energy,
        condition_names=["incident_energy"],
        condition_units=["MeV"],
        symmetry=Symmetry.none(2),
    )
    print(f"wrote {args.path}: {info.n} fields {info.shape}, incident_energy 1e3..1e6 MeV")


if __name__ == "__main__":
    main()
