"""Mean total per condition bin, generated vs held-out real (issue 22, docs/evaluation.md,
"Conditioned totals (issue 22)").

Loads a run's newest checkpoint (or the checkpoint file given), generates one sample at each
held-out sample's own condition (so real and generated share their conditions row for row),
decodes both to the dataset's units and prints, per bin of the first condition (decades when
it is encoded in log10, else equal widths), the mean total of each, their relative difference,
and a floor: the same ratio between two halves of the held-out real samples, each half's mean
total divided by its mean condition (the halves have different conditions, which this
normalisation takes out for a total proportional to the condition).

    python bench/conditioned_totals.py RUN_DIR [--n N] [--seed 0] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math

import h5py
import numpy as np
import torch

from hpcgan.data.transforms import make_condition_transform
from hpcgan.metrics import sources
from hpcgan.trained import LoadedRun, load_run


def generate_at(run: LoadedRun, values: torch.Tensor, seed: int) -> torch.Tensor:
    """G's samples [n, C, *S] in [-1, 1] at the encoded conditions ``values`` [n, K]."""
    G, z_dim, n = sources.for_inference(run.G), run.cfg.model.z_dim, len(values)
    out = []
    for b in range(sources.num_fake_blocks(n)):
        size = sources.fake_block_size(n, b)
        rows = values[b * sources.BLOCK : b * sources.BLOCK + size]
        out.append(sources.generate(G, z_dim, seed, b, size, values=rows).cpu())
    return torch.cat(out)


def bin_edges(energy: np.ndarray, log: bool) -> np.ndarray:
    """Decades of a log-encoded condition (covering its range), else 4 equal bins."""
    lo, hi = energy.min(), energy.max()
    if log:
        return 10.0 ** np.arange(math.floor(np.log10(lo)), math.ceil(np.log10(hi)) + 1)
    return np.linspace(lo, hi, 5)


def totals_by_bin(run: LoadedRun, n: int, seed: int) -> list[dict]:
    """Per bin: count, edges, mean real and generated totals, relative difference, floor."""
    idx = run.split.held_indices[:n]
    if not len(idx):
        raise SystemExit("the run holds out no samples (data.holdout); nothing to compare")
    real = sources.read_samples(run.info, idx).astype(np.float64)  # [n, C, *S]
    with h5py.File(run.info.path, "r", locking=False) as f:
        physical = f["conditions"][idx].astype(np.float64)  # [n, K]
    encoder = make_condition_transform(run.info, run.cfg.data.condition_transform)
    fake = run.transform.decode(generate_at(run, torch.from_numpy(encoder.encode(physical)), seed))
    axes = tuple(range(1, real.ndim))
    t_real, t_fake = real.sum(axis=axes), fake.double().numpy().sum(axis=axes)  # [n]
    energy = physical[:, 0]
    edges = bin_edges(energy, encoder.log[0])
    halves = np.random.default_rng(seed).permutation(len(idx)) % 2  # fixed random halves
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (energy >= a) & (energy < b) if b < edges[-1] else (energy >= a) & (energy <= b)
        h0, h1 = m & (halves == 0), m & (halves == 1)
        per_e0 = t_real[h0].mean() / energy[h0].mean()
        per_e1 = t_real[h1].mean() / energy[h1].mean()
        rows.append(
            {
                "bin": [float(a), float(b)],
                "n": int(m.sum()),
                "real": float(t_real[m].mean()),
                "generated": float(t_fake[m].mean()),
                "rel_diff": float(t_fake[m].mean() / t_real[m].mean() - 1.0),
                "floor": float(abs(per_e0 / per_e1 - 1.0)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="run directory (newest checkpoint) or checkpoint file")
    parser.add_argument("--n", type=int, default=1 << 30, help="held-out samples (default all)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    run = load_run(args.target)
    rows = totals_by_bin(run, args.n, args.seed)
    name = run.info.condition_names[0]
    print(f"{run.checkpoint} (step {run.step}, {run.network}), by {name}:")
    print(f"{'bin':>17} {'n':>5} {'real':>12} {'generated':>12} {'rel diff':>9} {'floor':>7}")
    for r in rows:
        a, b = r["bin"]
        print(
            f"{a:8.3g}..{b:<7.3g} {r['n']:5d} {r['real']:12.5g} {r['generated']:12.5g} "
            f"{r['rel_diff']:+9.2%} {r['floor']:7.2%}"
        )
    worst = max(abs(r["rel_diff"]) for r in rows)
    print(f"worst |rel diff| {worst:.2%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(run.checkpoint), "step": run.step, "bins": rows}, f)


if __name__ == "__main__":
    main()
