"""Behaviour check for refactors: hashes of a seeded run's final checkpoint tensors.

    python tools/equivalence.py [--root REPO] [--np 2] [--steps 200] [--only digits,grf]
                                [key=value ...]

Trains each case for ``--steps`` steps at ``--np`` ranks (mpi engine, one thread per rank, a
fixed seed) with the code of ``--root`` (default: this checkout), then prints one JSON line
per case with the SHA-256 of the G, D, G_ema, opt_G and opt_D tensors of the last checkpoint.
Run it on the commit before a restructure and on the one after: equal hashes mean the same
computation, bit for bit (docs/architecture.md, "Keeping behaviour").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from quality import RECIPES as CASES  # noqa: E402 - the quality recipes (docs/evaluation.md)

GROUPS = ("G", "D", "G_ema", "opt_G", "opt_D")


def digest(tree, h) -> None:
    """Feed every tensor of a nested state (in sorted key order) into ``h``."""
    if isinstance(tree, torch.Tensor):
        h.update(str((tuple(tree.shape), tree.dtype)).encode())
        h.update(tree.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(tree, dict):
        for key in sorted(tree, key=str):
            h.update(str(key).encode())
            digest(tree[key], h)
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            digest(item, h)


def run_case(root: Path, name: str, np_: int, steps: int, work: Path, extra: list[str]) -> dict:
    run_dir, data = work / f"run-{name}", work / "data"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root), HDF5_USE_FILE_LOCKING="FALSE")
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(OMPI_MCA_mpi_yield_when_idle="1")
    mpirun = Path(sys.executable).parent / "mpirun"
    cmd = [str(mpirun), "--oversubscribe", "--bind-to", "none", "-np", str(np_)]
    cmd += [sys.executable, "-m", "hpcgan.train", *CASES[name], f"run.dir={run_dir}"]
    cmd += [f"data.root={data}", f"train.steps={steps}", "train.seed=1", "dist.backend=mpi"]
    cmd += ["run.tensorboard=false", "run.eval_every=0", "train.threads=1", *extra]
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{name}: training failed ({out.returncode}):\n{out.stderr[-3000:]}")
    path = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(path, map_location="cpu", weights_only=True)
    hashes = {}
    for group in GROUPS:
        h = hashlib.sha256()
        digest(state[group], h)
        hashes[group] = h.hexdigest()[:16]
    return {"case": name, "np": np_, "steps": steps, "extra": extra, **hashes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=str(ROOT))
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--only", default="digits,grf", help=f"cases, of: {', '.join(CASES)}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="added to every case")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcgan-equiv-") as tmp:
        for name in args.only.split(","):
            case = run_case(Path(args.root), name, args.np, args.steps, Path(tmp), args.overrides)
            print(json.dumps(case))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
