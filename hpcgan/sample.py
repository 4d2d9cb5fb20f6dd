"""Draw samples from a trained generator: a PNG grid to look at, or an HDF5 file in physical units.

    python -m hpcgan.sample runs/grf --n 64 --out grid.png
    python -m hpcgan.sample runs/grf/checkpoints/step-00002000.pt --n 10000 --out maps.h5 --seed 1

RUN_DIR means its newest loadable checkpoint; G_ema is used when the checkpoint holds it, else G.
Sample i depends only on --seed and i (not on --n), and is sample i of python -m hpcgan.evaluate
with the same seed. The .h5 file is a schema-1 dataset like the training data, in physical
units (the inverse of the training normalisation; uint8 for image datasets, float32 for fields),
ready for the same analysis as the data or for python -m data_prep verify. PNG grids show the
networks' [-1, 1] scale (log scale for positive fields).
Exit codes: 0 done, 2 bad input (one line "hpcgan: error: ..."), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from hpcgan import images
from hpcgan.comm import agree, control
from hpcgan.data.write import write_dataset
from hpcgan.errors import Command, UserError, run_command
from hpcgan.session import inference_device
from hpcgan.trained import LoadedRun, command_line, generate, load_run, physical


def check_out(out: Path) -> None:
    """Refuse a bad output name before any work."""
    if out.suffix.lower() not in (".png", ".h5", ".hdf5"):
        raise UserError(f"--out {out}: expected a .png or .h5 file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")


def write(run: LoadedRun, y: torch.Tensor, out: Path, seed: int) -> None:
    if out.suffix.lower() == ".png":
        images.save_grid(y, out)
    else:
        source = f"hpcgan.sample {run.checkpoint} step={run.step} seed={seed}"
        classes = run.G.spec.num_classes  # a conditional G made sample i of class i % K
        labels = np.arange(len(y)) % classes if classes else None
        write_dataset(out, physical(run, y), labels, kind=run.info.kind, source=source)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line("python -m hpcgan.sample", __doc__)
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--out", required=True, help="grid.png, or samples.h5 (physical units)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        comm = command.comm = control()
        out = Path(args.out)

        def check() -> None:
            if args.n < 1:
                raise UserError(f"--n must be at least 1, got {args.n}")
            check_out(out)

        agree(comm, check)
        run = agree(comm, lambda: load_run(args.target, args.data, inference_device(comm)))
        if comm.rank == 0:  # one process writes; under mpirun the others have nothing to do
            write(run, generate(run, args.n, args.seed), out, args.seed)
            print(f"wrote {args.n} samples of {run.checkpoint} (step {run.step}) to {args.out}")

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
