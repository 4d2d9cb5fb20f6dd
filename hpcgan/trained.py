"""A trained generator, loaded from a run directory or a checkpoint, and the samples it draws:
the library behind hpcgan.sample, hpcgan.evaluate and hpcgan.report."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from hpcgan import run_state
from hpcgan.config import Config, from_dict
from hpcgan.data.builtin import builtin_path
from hpcgan.data.format import DatasetInfo, SchemaError, read_info
from hpcgan.data.holdout import Split, make_split
from hpcgan.data.transforms import (
    ConditionTransform,
    ValueTransform,
    make_condition_transform,
    make_transform,
)
from hpcgan.errors import ArgumentParser, UserError
from hpcgan.metrics import sources
from hpcgan.models import build_models
from hpcgan.session import model_options


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
    split: Split  # data.holdout as the run trained (none for runs from before the key)
    # the training data's /conditions transform (data.condition_transform); None when G takes
    # no continuous conditions (no /conditions, or model.condition=none)
    conditions: ConditionTransform | None = None

    @property
    def eval_cache(self) -> Path | None:
        """RUN_DIR/eval, where evaluations keep the real statistics and the classifier; None
        (nothing cached, nothing read from it) for a checkpoint outside a run directory and for
        a run directory this process may not write (another user's, a read-only mount). A full
        disk is no reason to skip it: the cache that cannot be written is an error (exit 2)."""
        if self.run_dir is None or not os.access(self.run_dir, os.W_OK):
            return None
        return self.run_dir / "eval"


def load_run(target: str, data: str | None = None, device: torch.device | None = None) -> LoadedRun:
    """G (G_ema when saved) of a run directory's newest checkpoint or of a checkpoint file, and
    the dataset it was trained on (``data`` overrides the path saved in its config)."""
    path, ckpt, run_dir = run_state.open_target(Path(target))
    cfg = from_dict(ckpt.config)
    data_path = data or cfg.data.path or str(builtin_path(cfg.data.root, cfg.data.builtin))
    try:
        info = read_info(data_path)
    except SchemaError as e:
        hint = "" if data else "; pass the training data with --data FILE.h5"
        raise UserError(f"dataset of {path}: {e}{hint}") from None
    transform = make_transform(info, cfg.data.transform)
    G, _ = build_models(cfg.model, info.shape, **model_options(cfg, info))
    run_state.load_into(G, ckpt.trainer[ckpt.sampler], path, info.path)
    G = G.to(device or torch.device("cpu")).eval().requires_grad_(False)
    split = make_split(ckpt.config["data"].get("holdout", "0"), info.n)
    conditions = None
    if G.spec.dim:  # G was built on the file's /conditions columns (session.model_options)
        conditions = make_condition_transform(info, cfg.data.condition_transform)
    return LoadedRun(
        G, cfg, info, transform, path, ckpt.step, run_dir, ckpt.sampler, split, conditions
    )


def encode_conditions(run: LoadedRun, values: np.ndarray, where: str) -> torch.Tensor:
    """Conditions [n, K] in physical units (columns as ``run.G.spec.names``) -> the encoded
    values G takes [n, K]; a UserError (``where: ...``) for a value that is not a finite number
    or that the training data's transform cannot encode (<= 0 in a log10 column)."""
    spec, transform = run.G.spec, run.conditions
    if transform is None:
        raise UserError(f"{where}: {run.checkpoint} was not trained on conditions")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != spec.dim:
        raise UserError(f"{where}: expected {spec.dim} condition(s) per sample, got {values.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):  # refused below, in one line
        encoded = transform.encode(values)  # log10 of a value <= 0 is NaN or -inf
    bad = ~np.isfinite(encoded)
    if bad.any():
        i, k = (int(a[0]) for a in np.nonzero(bad))
        row = f" (row {i})" if len(values) > 1 else ""
        why = "its log10 encoding needs values > 0" if transform.log[k] else "not a finite number"
        raise UserError(f"{where}: {spec.names[k]}={values[i, k]:g}{row} cannot be encoded: {why}")
    return torch.from_numpy(encoded)


def data_conditions(run: LoadedRun, n: int) -> np.ndarray:
    """Conditions [n, K] (physical units, float32) to generate at by default: row i is those
    of the training file's sample i, counted in the held-out split when there is one (the
    samples evaluation compares with), cyclically when n exceeds them."""
    pool = run.split.held_indices if run.split.held else np.arange(run.info.n)
    with h5py.File(run.info.path, "r", locking=False) as f:
        column = f["conditions"][()]  # [N, K]: small (K floats per sample), read whole
    return column[pool[np.arange(n) % len(pool)]].astype(np.float32)


def generate(run: LoadedRun, n: int, seed: int, values: np.ndarray | None = None) -> torch.Tensor:
    """Samples 0 .. n-1 [n, C, *S] in [-1, 1], on the host; a G conditioned on /conditions
    makes sample i at ``values[i]`` ([n, K], physical units, checked by
    :func:`encode_conditions`), by default at :func:`data_conditions`."""
    if values is None and run.conditions is not None:
        values = data_conditions(run, n)
    if values is not None and len(values) != n:
        raise ValueError(f"{len(values)} rows of conditions for {n} samples")
    encoded = None if values is None else encode_conditions(run, values, "conditions")
    blocks = range(sources.num_fake_blocks(n))
    z_dim, G = run.cfg.model.z_dim, sources.for_inference(run.G)
    out = []
    for b in blocks:
        size = sources.fake_block_size(n, b)
        v = None if encoded is None else encoded[b * sources.BLOCK : b * sources.BLOCK + size]
        out.append(sources.generate(G, z_dim, seed, b, size, v).cpu())
    return torch.cat(out)


def physical(run: LoadedRun, y: torch.Tensor) -> np.ndarray:
    """Samples in the dataset's units and dtype: uint8 0..255 for images stored as uint8."""
    x = run.transform.decode(y).numpy()
    if run.info.dtype == "uint8":
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x.astype(np.float32)


def command_line(prog: str, doc: str, target: str = "RUN_DIR|CHECKPOINT") -> ArgumentParser:
    """The command line of a command that reads a trained run: the run directory (or a
    checkpoint file) and ``--data``; bad usage is a UserError."""
    parser = ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    what = "a training run directory" + ("" if target == "RUN_DIR" else ", or a .pt file")
    parser.add_argument("target", metavar=target, help=what)
    parser.add_argument("--data", help="the training dataset, if not where the run's config says")
    return parser
