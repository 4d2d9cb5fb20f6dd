"""Draw samples from a trained generator: a PNG grid to look at, or an HDF5 file in physical units.

    python -m hpcgan.sample runs/grf --n 64 --out grid.png
    python -m hpcgan.sample runs/grf/checkpoints/step-00002000.pt --n 10000 --out maps.h5 --seed 1
    python -m hpcgan.sample runs/calo --n 1000 --condition incident_energy=50000 --out e50gev.h5
    python -m hpcgan.sample runs/calo --conditions wanted.h5 --out showers.h5

RUN_DIR means its newest loadable checkpoint; G_ema is used when the checkpoint holds it, else G.
Sample i depends only on --seed and i (not on --n), and is sample i of python -m hpcgan.evaluate
with the same seed. The .h5 file is a schema-1 dataset like the training data, in physical
units (the inverse of the training normalisation; uint8 for image datasets, float32 for fields),
ready for the same analysis as the data or for python -m data_prep verify. PNG grids show the
networks' [-1, 1] scale (log scale for positive fields).

Physical units are the training data's: G's output is decoded with the transforms saved in the
checkpoint (docs/evaluation.md, "Which file is which"), so no data file is needed to sample,
except for the default conditions below. Checkpoints from before that record (format 1 and
older) recompute them from the training file: the one the run's config names, or --data
FILE.h5 where it has moved (checked to hold the same data; another file is refused).
With data.stage in the run's config (or --stage DIR), the training file is read from a
node-local copy when it is read (the default conditions), as training reads it.

A run trained on continuous conditions (/conditions, e.g. incident_energy in MeV) generates at
the conditions you give, in the units of its training data:
  --condition NAME=VALUE  once for every condition of the run: all --n samples at that point.
  --conditions FILE       sample i at row i of FILE: an HDF5 file with /conditions (n, K) and
                          its names attribute, as hpcgan writes them (this command's output
                          too), or an .npz/.h5 with one array of n values per name. --n is
                          taken from the file (if given, it must equal the file's rows).
  neither                 sample i at the conditions of the training file's sample i (of its
                          held-out samples when the run holds some out), cyclically.
The .h5 output stores them as /conditions (names and units as the data's) beside the samples;
a PNG grid of a run with one condition shows its samples in increasing order of it.
Exit codes: 0 done, 2 bad input or a file that cannot be written (a full disk; one line
"hpcgan: error: ..."), 75 stopped by SIGUSR1 or SIGTERM (nothing to save: run it again),
1 anything else.
"""

from __future__ import annotations

from hpcgan import stop_signals

if __name__ == "__main__":  # before the heavy imports below: an early signal gives exit 75
    stop_signals.catch(interrupting=True)
    stop_signals.pause_for_test("entry")

import argparse
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from hpcgan import images
from hpcgan.comm import agree, control
from hpcgan.data.write import write_dataset
from hpcgan.errors import Command, UserError, run_command
from hpcgan.files import writing
from hpcgan.session import inference_device
from hpcgan.trained import (
    LoadedRun,
    command_line,
    data_conditions,
    encode_conditions,
    generate,
    load_run,
    physical,
    stage_setting,
    stage_source,
)

DEFAULT_N = 64


def check_out(out: Path) -> None:
    """Refuse a bad output name before any work."""
    if out.suffix.lower() not in (".png", ".h5", ".hdf5"):
        raise UserError(f"--out {out}: expected a .png or .h5 file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")


def parse_pairs(pairs: list[str]) -> dict[str, float]:
    """``--condition NAME=VALUE`` options -> {name: value}; each name once, each value a
    finite number (which names the run takes is checked once it is loaded)."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or not name:
            raise UserError(f"--condition {pair!r}: expected NAME=VALUE")
        if name in out:
            raise UserError(f"--condition {name} is given twice")
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--condition {pair!r}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise UserError(f"--condition {pair!r}: {text!r} is not a finite number")
        out[name] = value
    return out


def conditioned(run: LoadedRun, option: str) -> tuple[str, ...]:
    """The names of the run's conditions; refuses ``option`` for a run without any."""
    names = run.G.spec.names
    if not names:
        raise UserError(f"{option}: {run.checkpoint} was not trained on conditions")
    return names


def at_point(run: LoadedRun, given: dict[str, float], n: int) -> np.ndarray:
    """Conditions [n, K] (physical units) of ``--condition`` options: one value per name."""
    names = conditioned(run, "--condition")
    unknown = [name for name in given if name not in names]
    missing = [name for name in names if name not in given]
    if unknown or missing:
        what = "; ".join(
            f"{word} {', '.join(which)}"
            for word, which in (("unknown", unknown), ("missing", missing))
            if which
        )
        raise UserError(
            f"--condition: {what}; give each of the run's conditions once: "
            + " ".join(f"{name}=VALUE" for name in names)
        )
    point = np.array([[given[name] for name in names]], np.float64)  # [1, K]
    encode_conditions(run, point, "--condition")
    return np.tile(point, (n, 1))


def from_file(run: LoadedRun, path: Path) -> np.ndarray:
    """Conditions [n, K] (physical units, columns as the run's) of a ``--conditions`` file."""
    names = conditioned(run, "--conditions")
    where = f"--conditions {path}"
    if not path.is_file():
        raise UserError(f"{where}: no such file")
    try:
        arrays, units = _read_arrays(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{where}: not a readable HDF5 or .npz file ({e})") from None
    if sorted(arrays) != sorted(names):
        raise UserError(
            f"{where}: holds conditions {', '.join(sorted(arrays)) or 'none'}; "
            f"the run takes {', '.join(names)}"
        )
    for name, unit in zip(names, run.G.spec.units, strict=True):
        if units.get(name) and unit and units[name] != unit:
            raise UserError(f"{where}: {name} is in {units[name]}, the run's data in {unit}")
    columns = []
    for name in names:
        a = np.asarray(arrays[name])
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1 or len(a) == 0 or a.dtype.kind not in "iuf":
            raise UserError(f"{where}: {name} must be n numbers, got {a.dtype} {a.shape}")
        columns.append(a.astype(np.float64))
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise UserError(f"{where}: the conditions have different lengths {sorted(lengths)}")
    values = np.stack(columns, axis=1)  # [n, K]
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise UserError(f"{where}: NaN or Inf in row {int(np.argmax(bad))}")
    return values


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """{name: values} and {name: unit} of a conditions file: the columns of /conditions (our
    schema: names and units attributes), else every top-level array by its name."""
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}, {}
    with h5py.File(path, "r", locking=False) as f:
        table = f.get("conditions")
        if isinstance(table, h5py.Dataset) and table.ndim == 2 and "names" in table.attrs:
            names = [_text(s) for s in np.ravel(table.attrs["names"])]
            units = [_text(s) for s in np.ravel(table.attrs.get("units", [""] * len(names)))]
            if len(names) != table.shape[1] or len(set(names)) != len(names):
                raise ValueError(f"/conditions {table.shape} has names {names}")
            values = table[()]
            return {name: values[:, k] for k, name in enumerate(names)}, dict(zip(names, units))
        return {k: v[()] for k, v in f.items() if isinstance(v, h5py.Dataset)}, {}


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def conditions_for(run: LoadedRun, args: argparse.Namespace) -> tuple[np.ndarray | None, str]:
    """The conditions [n, K] to generate at (None for a run without any), checked to encode,
    and a phrase that says where they come from."""
    given = parse_pairs(args.condition)
    if args.conditions:
        values = from_file(run, Path(args.conditions))
        if args.n is not None and args.n != len(values):
            raise UserError(f"--n {args.n}, but --conditions {args.conditions} has {len(values)}")
        where, said = f"--conditions {args.conditions}", f"at the conditions of {args.conditions}"
    elif given:
        values = at_point(run, given, args.n or DEFAULT_N)
        where = said = "at " + " ".join(f"{k}={v:g}" for k, v in given.items())
    elif run.G.spec.dim:
        n = args.n or DEFAULT_N
        values = data_conditions(run, n)
        which = "held-out samples" if run.split.held else "samples"
        where = said = f"at the conditions of the training file's {which} 0..{n - 1} (cyclically)"
    else:
        return None, ""
    encode_conditions(run, values, where)  # refuse what cannot be encoded before any work
    return values.astype(np.float32), said


def write(run: LoadedRun, y: torch.Tensor, out: Path, seed: int, values: np.ndarray | None) -> None:
    """The samples ``y`` [n, C, *S] in [-1, 1] (made at ``values`` [n, K], physical units)."""
    if out.suffix.lower() == ".png":
        if values is not None and values.shape[1] == 1:  # one condition: in increasing order
            y = y[torch.from_numpy(np.argsort(values[:, 0], kind="stable"))]
        images.save_grid(y, out)
        return
    source = f"hpcgan.sample {run.checkpoint} step={run.step} seed={seed}"
    classes = run.G.spec.num_classes  # a conditional G made sample i of class i % K
    labels = np.arange(len(y)) % classes if classes else None
    columns = {}
    if values is not None:
        spec = run.G.spec
        columns = dict(conditions=values, condition_names=spec.names, condition_units=spec.units)
    write_dataset(out, physical(run, y), labels, kind=run.info.kind, source=source, **columns)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line("python -m hpcgan.sample", __doc__)
    parser.add_argument(
        "--n", type=int, help=f"number of samples (default {DEFAULT_N}, or the --conditions rows)"
    )
    parser.add_argument("--out", required=True, help="grid.png, or samples.h5 (physical units)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    parser.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="generate at this value of condition NAME, in the data's units (once per name)",
    )
    parser.add_argument(
        "--conditions", metavar="FILE", help="generate sample i at row i of FILE (.h5 or .npz)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        comm = command.comm = control()
        out = Path(args.out)

        def check() -> None:
            if args.n is not None and args.n < 1:
                raise UserError(f"--n must be at least 1, got {args.n}")
            if args.condition and args.conditions:
                raise UserError("--condition and --conditions: give one of them, not both")
            parse_pairs(args.condition)
            check_out(out)

        agree(comm, check)
        run = agree(comm, lambda: load_run(args.target, args.data, inference_device(comm)))
        reads = bool(run.G.spec.dim) and not (args.condition or args.conditions)
        run = stage_source(run, comm, stage_setting(run, args), reads_training=reads)
        values, said = agree(comm, lambda: conditions_for(run, args))
        n = len(values) if values is not None else args.n or DEFAULT_N

        def write_out() -> None:  # one process writes; under mpirun the others wait for it
            if comm.rank == 0:
                with writing(out):  # a full disk: one line naming --out, exit 2 on every rank
                    write(run, generate(run, n, args.seed, values), out, args.seed, values)

        agree(comm, write_out)
        if comm.rank == 0:
            at = f" {said}" if said else ""
            print(f"wrote {n} samples of {run.checkpoint} (step {run.step}){at} to {args.out}")

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
