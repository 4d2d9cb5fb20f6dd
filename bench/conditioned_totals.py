"""Mean total per condition bin, generated vs held-out real (issue 22, docs/evaluation.md,
"Conditioned totals (issue 22)").

Loads a run's newest checkpoint (or the checkpoint file given), generates one sample at each
held-out sample's own conditions (real and generated rows share their conditions), decodes both
to the dataset's units and hands the per-sample totals to hpcgan.metrics.by_condition
(docs/evaluation.md, "By condition"): per bin (decades of an energy), the mean total of each,
their relative difference, the matched-halves floor and the verdict. The same comparison that
`hpcgan.evaluate` makes once it generates at the held-out conditions; this script exists
because at the commit it was written for, evaluating a G conditioned on /conditions failed.

    python bench/conditioned_totals.py RUN_DIR [--n N] [--seed 0] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np
import torch

from hpcgan.data.transforms import make_condition_transform
from hpcgan.metrics import sources
from hpcgan.metrics.by_condition import by_condition
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


def totals_by_condition(run: LoadedRun, n: int, seed: int) -> dict[str, dict]:
    """hpcgan.metrics.by_condition of the per-sample totals: held-out real vs generated at the
    same conditions, per bin, with matched-halves floors and verdicts."""
    idx = run.split.held_indices[:n]
    if not len(idx):
        raise SystemExit("the run holds out no samples (data.holdout); nothing to compare")
    real = sources.read_samples(run.info, idx).astype(np.float64)  # [n, C, *S]
    with h5py.File(run.info.path, "r", locking=False) as f:
        physical = f["conditions"][idx].astype(np.float64)  # [n, K]
    encoder = make_condition_transform(run.info, run.cfg.data.condition_transform)
    fake = run.transform.decode(generate_at(run, torch.from_numpy(encoder.encode(physical)), seed))
    axes = tuple(range(1, real.ndim))
    totals_real = {"total": real.sum(axis=axes)}  # [n]
    totals_fake = {"total": fake.double().numpy().sum(axis=axes)}  # [n]
    names, units = list(run.info.condition_names), list(run.info.condition_units)
    return by_condition(totals_real, totals_fake, physical, names, units, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="run directory (newest checkpoint) or checkpoint file")
    parser.add_argument("--n", type=int, default=1 << 30, help="held-out samples (default all)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    run = load_run(args.target)
    result = totals_by_condition(run, args.n, args.seed)
    print(f"{run.checkpoint} (step {run.step}, {run.network}): mean total per bin")
    worst = 0.0
    for name, column in result.items():
        print(f"{name} ({column['unit']}):")
        print(f"{'bin':>19} {'n':>5} {'real':>11} {'generated':>11} {'rel diff':>9} {'floor':>6}")
        for r in column["bins"]:
            real, fake = r["mean_real"]["total"], r["mean_fake"]["total"]
            rel, floor = fake / real - 1.0, r["baseline"]["cond/total_mean_rel_err"]
            worst = max(worst, abs(rel))
            print(
                f"{r['lo']:9.3g}..{r['hi']:<8.3g} {r['count']:5d} {real:11.5g} {fake:11.5g} "
                f"{rel:+9.2%} {floor:6.2%}  {r['verdict']['cond/total_mean_rel_err']}"
            )
    print(f"worst |rel diff| {worst:.2%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(run.checkpoint), "step": run.step, **result}, f)


if __name__ == "__main__":
    main()
