"""Small synthetic calorimeter files laid out as users have them, for bench/grids.sh.

    python bench/grid_files.py calo --voxels 6480 --n 512 --out calo2.h5  # CaloChallenge ds2
    python bench/grid_files.py calo --voxels 368 --n 512 --out calo1.h5   # ds1 photons: (N, 368)
    python bench/grid_files.py g4 --n 256 --out ecal.h5       # 3DGAN: ECAL (N, 51, 51, 25)
    python bench/grid_files.py calo --voxels 8192 --layout 32,16,16 --out ref.h5  # convert --shape
    python bench/grid_files.py g4 --layout 32,32,64 --out ref.h5  # ECAL (N, 32, 32, 64)
    python bench/grid_files.py check --run runs/calo2   # a training run kept the file's grid

Not physics: showers are sparse, positive, their total proportional to the incident energy
and concentrated in a few layers around an energy-dependent depth, which is enough to give a
GAN something to learn and `data_prep convert` the files it recognises (docs/data.md).
CaloChallenge: `showers` float32 (N, V) in MeV (voxels flat, C order of layers x angle x
radius), `incident_energies` float32 (N, 1) MeV, log-uniform 1e3..1e6. 3DGAN: `ECAL` float32
(N, 51, 51, 25) channels-last without the channel axis, `energy` (N,) GeV 10..500 uniform,
`theta` (N,) rad 60..120 degrees. --layout lays the showers out on another grid (depth
first for calo, last for g4), for power-of-two references of the same kind of data.
`check` loads a run's newest checkpoint, draws 4 samples from its G (at the mean conditions)
and fails unless they have the dataset's shape (no resizing anywhere), then prints images/s
(mean of metrics.jsonl's records after the first) and the last record's losses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

# CaloChallenge dataset 1 (photons) has 5 layers of uneven bins; 368 values flat are all a model
# sees. Dataset 2 is 45 layers x 16 angle bins x 9 radial bins = 6480.
LAYERS_2 = (45, 16, 9)


def _lateral(shape: tuple[int, ...]) -> np.ndarray:
    """The transverse profile [prod(shape)]: with 2 axes of equal sides (3DGAN's x, y) a core
    at the centre; otherwise (angle, radius) falling off along the last (radial) axis."""
    if not shape:
        return np.ones(1)
    if len(shape) == 2 and shape[0] == shape[1]:
        x = np.arange(shape[0]) - (shape[0] - 1) / 2
        r = np.hypot(x[:, None], x[None, :])
    else:
        r = np.broadcast_to(np.arange(shape[-1], dtype=float), shape)
    return np.exp(-r / max(shape[-1] / 6, 1)).reshape(-1)


def _showers(rng: np.random.Generator, energies: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sparse positive deposits [N, *shape] (axis 0 the depth) whose sum is about 0.9 x the
    energy (5% noise), a longitudinal profile peaking deeper for higher energies."""
    n = len(energies)
    depth = shape[0]
    z = np.arange(depth)[:, None]
    peak = depth * (0.2 + 0.08 * np.log10(energies / energies.min() + 1))[None, :]  # [1, N]
    profile = np.exp(-0.5 * ((z - peak) / (0.15 * depth + 1)) ** 2).T  # [N, depth]
    dense = profile[:, :, None] * _lateral(shape[1:])[None, None, :]  # [N, depth, rest]
    dense *= rng.gamma(2.0, 0.5, dense.shape)  # fluctuations
    odds = np.clip(4 * dense / dense.max(axis=(1, 2), keepdims=True), 0, 0.9)
    dense *= rng.random(dense.shape) < odds  # sparse: most voxels far from the core are empty
    total = dense.sum(axis=(1, 2))
    scale = 0.9 * energies * rng.normal(1, 0.05, n) / np.maximum(total, 1e-12)
    return (dense * scale[:, None, None]).astype(np.float32).reshape(n, *shape)


def calochallenge(path: str, n: int, voxels: int, shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    energies = 10 ** rng.uniform(3, 6, n)  # MeV, log-uniform 1 GeV..1 TeV
    showers = _showers(rng, energies, shape).reshape(n, voxels)
    with h5py.File(path, "w") as f:
        f["incident_energies"] = energies.astype(np.float32)[:, None]
        f["showers"] = showers


def g4(path: str, n: int, shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    energy = rng.uniform(10, 500, n)  # GeV
    theta = np.deg2rad(rng.uniform(60, 120, n))
    x, y, depth = shape
    vol = _showers(rng, energy, (depth, x, y))  # [N, depth, x, y]; the shower runs along depth
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.ascontiguousarray(vol.transpose(0, 2, 3, 1))  # [N, 51, 51, 25]
        f["energy"] = energy.astype(np.float32)
        f["theta"] = theta.astype(np.float32)


def check(run_dir: str) -> None:
    import torch

    from hpcgan.metrics import sources
    from hpcgan.trained import load_run

    run = load_run(run_dir)
    spec = getattr(run.G, "spec", None)
    values = torch.zeros(4, spec.dim) if spec is not None and spec.dim else None  # encoded: mean
    y = sources.generate(sources.for_inference(run.G), run.cfg.model.z_dim, 0, 0, 4, values)
    want = (4, *run.info.shape)
    if tuple(y.shape) != want:
        raise SystemExit(f"{run_dir}: G makes {tuple(y.shape)}, the data are {want}")
    records = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    train = [r for r in records if "loss/D" in r]
    rate = np.mean([r["throughput/img_s"] for r in train[1:] or train])
    last = train[-1]
    pngs = sorted(p.name for p in (Path(run_dir) / "samples").glob("*.png"))
    print(
        f"{run_dir}: step {run.step}, G makes {'x'.join(map(str, y.shape[1:]))} = the data's; "
        f"{rate:.1f} img/s; step {last['step']} loss D {last['loss/D']:.3f} G {last['loss/G']:.3f}"
        f"; sample grids {', '.join(pngs) or 'none'}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("calo", "g4", "check"))
    p.add_argument("--run", help="check: the run directory")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--voxels", type=int, default=6480, help="calo: values per shower")
    p.add_argument("--layout", help="the grid the showers are made on, e.g. 32,16,16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    a = p.parse_args()
    if a.kind == "check":
        return check(a.run) if a.run else p.error("check needs --run")
    if not a.out:
        p.error("--out is required")
    if a.layout:
        shape = tuple(int(s) for s in a.layout.split(","))
    elif a.kind == "g4":
        shape = (51, 51, 25)
    else:  # dataset 2's layers x angle x radius; dataset 1's 368 bins: a depth of 8-value layers
        shape = LAYERS_2 if a.voxels == 6480 else (a.voxels // 8, 8) if a.voxels % 8 == 0 else ()
    if a.kind == "g4":
        g4(a.out, a.n, shape, a.seed)
    else:
        if shape and int(np.prod(shape)) != a.voxels:
            p.error(f"--layout {a.layout} does not hold {a.voxels} voxels")
        calochallenge(a.out, a.n, a.voxels, shape or (a.voxels,), a.seed)


if __name__ == "__main__":
    main()
