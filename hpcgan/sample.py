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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcgan import checkpoint, images
from hpcgan.config import Config, from_dict
from hpcgan.data.builtin import builtin_path
from hpcgan.data.schema import DatasetInfo, SchemaError, read_info, write_dataset
from hpcgan.data.transforms import ValueTransform, make_transform
from hpcgan.errors import EXIT_OK, EXIT_USAGE, UserError
from hpcgan.metrics import sources
from hpcgan.models import build_models


@dataclass
class LoadedRun:
    """A generator ready to sample, with what is needed to read its output."""

    G: nn.Module
    cfg: Config
    info: DatasetInfo
    transform: ValueTransform
    checkpoint: Path
    step: int
    run_dir: Path | None  # None for a checkpoint file outside a run directory
    network: str  # "G_ema" or "G": which weights were loaded


def _read_checkpoint(target: Path) -> tuple[Path, dict, Path | None]:
    if target.is_dir():
        found = checkpoint.load_newest(
            target / "checkpoints", warn=lambda m: print(m, file=sys.stderr)
        )
        if found is None:
            raise UserError(f"{target}: no loadable checkpoint in {target / 'checkpoints'}")
        return found[0], found[1], target
    if not target.is_file():
        raise UserError(f"{target}: no such run directory or checkpoint file")
    try:
        state = checkpoint.load(target)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"{target}: not a loadable checkpoint ({type(e).__name__})") from None
    run_dir = target.parent.parent if target.parent.name == "checkpoints" else None
    return target, state, run_dir


def load_run(target: str, data: str | None = None, device: torch.device | None = None) -> LoadedRun:
    """G (G_ema when saved) of a run directory's newest checkpoint or of a checkpoint file, and
    the dataset it was trained on (``data`` overrides the path saved in its config)."""
    path, state, run_dir = _read_checkpoint(Path(target))
    if not isinstance(state, dict) or "config" not in state or "G" not in state:
        raise UserError(f"{path}: not an hpcgan checkpoint (no config or G)")
    cfg = from_dict(state["config"])
    data_path = data or cfg.data.path or str(builtin_path(cfg.data.root, cfg.data.builtin))
    try:
        info = read_info(data_path)
    except SchemaError as e:
        hint = "" if data else "; pass the training data with --data FILE.h5"
        raise UserError(f"dataset of {path}: {e}{hint}") from None
    transform = make_transform(info, cfg.data.transform)
    G, _ = build_models(cfg.model, info.shape, info.num_classes, cfg.train.aux_classifier)
    network = "G_ema" if "G_ema" in state else "G"
    try:
        G.load_state_dict(state[network])
    except RuntimeError as e:
        detail = (str(e).splitlines()[1:2] or [str(e)])[0].strip()
        raise UserError(f"{path} does not fit {info.path}: {detail}") from None
    G = G.to(device or torch.device("cpu")).eval().requires_grad_(False)
    return LoadedRun(G, cfg, info, transform, path, int(state.get("step", 0)), run_dir, network)


def generate(run: LoadedRun, n: int, seed: int) -> torch.Tensor:
    """Samples 0 .. n-1 [n, C, H, W] in [-1, 1], on the host."""
    blocks = range(sources.num_fake_blocks(n))
    z_dim = run.cfg.model.z_dim
    return torch.cat(
        [
            sources.generate(run.G, z_dim, seed, b, sources.fake_block_size(n, b)).cpu()
            for b in blocks
        ]
    )


def physical(run: LoadedRun, y: torch.Tensor) -> np.ndarray:
    """Samples in the dataset's units and dtype: uint8 0..255 for images stored as uint8."""
    x = run.transform.decode(y).numpy()
    if run.info.dtype == "uint8":
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x.astype(np.float32)


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
        classes = getattr(run.G, "num_classes", 0)  # a conditional G made sample i of class i % K
        labels = np.arange(len(y)) % classes if classes else None
        write_dataset(out, physical(run, y), labels, kind=run.info.kind, source=source)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpcgan.sample",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="RUN_DIR|CHECKPOINT", help="run directory or .pt file")
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--out", required=True, help="grid.png, or samples.h5 (physical units)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    parser.add_argument("--data", help="the training dataset, if not where its config says")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.n < 1:
            raise UserError(f"--n must be at least 1, got {args.n}")
        check_out(Path(args.out))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        run = load_run(args.target, args.data, device)
        write(run, generate(run, args.n, args.seed), Path(args.out), args.seed)
    except (UserError, SchemaError) as e:
        print(f"hpcgan: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.n} samples of {run.checkpoint} (step {run.step}) to {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
