"""A trained generator, loaded from a run directory or a checkpoint, and the samples it draws:
the library behind hpcgan.sample, hpcgan.evaluate and hpcgan.report."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from hpcgan import run_state
from hpcgan.comm.base import Comm
from hpcgan.config import Config, from_dict
from hpcgan.data.builtin import builtin_path
from hpcgan.data.format import DatasetInfo, SchemaError, read_info
from hpcgan.data.holdout import Split, make_split
from hpcgan.data.transforms import (
    ConditionTransform,
    Decoding,
    ValueTransform,
    make_condition_transform,
    make_transform,
)
from hpcgan.errors import ArgumentParser, UserError
from hpcgan.metrics import sources
from hpcgan.metrics.evaluate import Evaluator
from hpcgan.models import build_models
from hpcgan.session import model_options, stage


@dataclass
class LoadedRun:
    """A generator ready to sample, with what is needed to read its output."""

    G: nn.Module
    cfg: Config
    info: DatasetInfo  # the training data (read from its file, or the checkpoint's record)
    transform: ValueTransform  # the training data's: decodes G's output (Decoding.values)
    checkpoint: Path
    step: int
    run_dir: Path | None  # None for a checkpoint file outside a run directory
    network: str  # "G_ema" or "G": which weights were loaded
    split: Split  # data.holdout as the run trained (none for runs from before the key)
    # the training data's /conditions transform (data.condition_transform); None when G takes
    # no continuous conditions (no /conditions, or model.condition=none)
    conditions: ConditionTransform | None = None
    present: bool = True  # the training file is at info.path (False: gone, info from the run)
    reference: DatasetInfo | None = None  # --reference: another set, the real reference, whole
    staged: str = ""  # data.stage: where the file read was staged (a line for the user)

    @property
    def eval_cache(self) -> Path | None:
        """RUN_DIR/eval, where evaluations keep the real statistics and the classifier; None
        (nothing cached, nothing read from it) for a checkpoint outside a run directory and for
        a run directory this process may not write (another user's, a read-only mount). A full
        disk is no reason to skip it: the cache that cannot be written is an error (exit 2)."""
        if self.run_dir is None or not os.access(self.run_dir, os.W_OK):
            return None
        return self.run_dir / "eval"

    def training_file(self, why: str) -> DatasetInfo:
        """The training data, whose file is about to be read (``why``: for what); a
        UserError naming the options when the file is gone."""
        if not self.present:
            raise UserError(
                f"the training data of {self.checkpoint}, {self.info.path}, is gone ({why}): "
                f"pass it with --data FILE.h5 where it has moved{_ALTERNATIVE.get(why, '')}"
            )
        return self.info

    def real_source(self) -> DatasetInfo:
        """The file whose samples are the real reference: --reference (used whole), else the
        training file (its held-out samples when the run holds some out)."""
        return self.reference or self.training_file(REAL_SAMPLES)


REAL_SAMPLES = "evaluation reads its samples"
DEFAULT_CONDITIONS = "samples are made at its conditions by default"
_ALTERNATIVE = {
    REAL_SAMPLES: ", or compare with another set with --reference FILE.h5",
    DEFAULT_CONDITIONS: ", or give --condition NAME=VALUE or --conditions FILE",
}


def load_run(
    target: str,
    data: str | None = None,
    device: torch.device | None = None,
    reference: str | None = None,
) -> LoadedRun:
    """G (G_ema when saved) of a run directory's newest checkpoint or of a checkpoint file,
    its training data (``data``: the training file where it has moved, else where the run's
    config says; checked to be the same data) and the decoding saved with the run
    (docs/evaluation.md, "Which file is which"); ``reference``: another set of real samples."""
    path, ckpt, run_dir = run_state.open_target(Path(target))
    cfg = from_dict(ckpt.config)
    info, present = _training_data(ckpt, path, cfg, data)
    G, _ = build_models(cfg.model, info.shape, **model_options(cfg, info))
    run_state.load_into(G, ckpt.trainer[ckpt.sampler], path, info.path)
    G = G.to(device or torch.device("cpu")).eval().requires_grad_(False)
    split = make_split(ckpt.config["data"].get("holdout", "0"), info.n)
    if ckpt.decoding is not None:
        decoding = Decoding.from_state(ckpt.decoding)
    else:  # format <= 1: recomputed from the training file, as training computed it
        conditions = None
        if G.spec.dim:  # G was built on the file's /conditions columns (session.model_options)
            conditions = make_condition_transform(info, cfg.data.condition_transform)
        decoding = Decoding(make_transform(info, cfg.data.transform), conditions)
    run = LoadedRun(
        G, cfg, info, decoding.values, path, ckpt.step, run_dir, ckpt.sampler, split,
        decoding.conditions, present,
    )  # fmt: skip
    if reference is not None:
        run.reference = _reference_data(run, reference)
    return run


def _training_data(
    ckpt: run_state.Checkpoint, path: Path, cfg: Config, data: str | None
) -> tuple[DatasetInfo, bool]:
    """The training data's description and whether its file is there: read from ``data`` or
    the config's file (refused when it holds other data than the run trained on), else, when
    that file is gone, the checkpoint's record (format >= 2; older ones need the file)."""
    configured = cfg.data.path or str(builtin_path(cfg.data.root, cfg.data.builtin))
    if data is None and not Path(configured).exists():
        if ckpt.data_info is None or ckpt.decoding is None:
            raise UserError(
                f"the training data of {path}, {configured}, is gone, and this checkpoint "
                "(format 1 or older) does not hold the transforms that decode its samples: "
                "pass the training file with --data FILE.h5"
            )
        return DatasetInfo.described(ckpt.data_info, configured), False
    where = data or configured
    try:
        info = read_info(where)
    except SchemaError as e:
        hint = "" if data else "; pass the training data with --data FILE.h5"
        raise UserError(f"dataset of {path}: {e}{hint}") from None
    if ckpt.identity is not None and ckpt.identity != info.identity():
        said = "--data " if data else ""
        raise UserError(
            f"{said}{where} holds other data than {path} was trained on ({info.n} samples of "
            f"{info.shape}, other statistics): --data names the run's own training file where "
            f"it has moved; to compare with another set, use --reference {where}"
        )
    return info, True


def _reference_data(run: LoadedRun, reference: str) -> DatasetInfo:
    """``--reference FILE``, checked to hold samples like the run's: the same shape and dtype,
    and the run's conditions (names and units) when G takes them."""
    where = f"--reference {reference}"
    try:
        ref = read_info(reference)
    except SchemaError as e:
        raise UserError(f"{where}: {e}") from None
    info, spec = run.info, run.G.spec
    if (ref.shape, ref.dtype) != (info.shape, info.dtype):
        raise UserError(
            f"{where}: samples of shape {ref.shape} {ref.dtype}, the run's are {info.shape} "
            f"{info.dtype}"
        )
    if spec.dim and ref.condition_names != spec.names:
        raise UserError(
            f"{where}: holds conditions {', '.join(ref.condition_names) or 'none'}; the run "
            f"takes {', '.join(spec.names)}"
        )
    for name, unit, theirs in zip(spec.names, spec.units, ref.condition_units, strict=False):
        if unit and theirs and unit != theirs:
            raise UserError(f"{where}: {name} is in {theirs}, the run's data in {unit}")
    return ref


def stage_source(
    run: LoadedRun, comm: Comm, setting: str, reads_training: bool = True
) -> LoadedRun:
    """Collective: with data.stage=``setting`` (the run's, or --stage), the file that is read in
    bulk (--reference, else the training file when ``reads_training``) is read from this
    node's verified copy, as training reads it (hpcgan.session.stage)."""
    if not setting:
        return run
    if run.reference is not None:
        path, note = stage(setting, comm, run.reference.path)
        return dataclasses.replace(
            run, reference=dataclasses.replace(run.reference, path=path), staged=note
        )
    if not reads_training or not run.present:
        return run
    path, note = stage(setting, comm, run.info.path)
    return dataclasses.replace(run, info=dataclasses.replace(run.info, path=path), staged=note)


def evaluator(
    run: LoadedRun,
    comm: Comm,
    device: torch.device,
    n: int,
    seed: int,
    inception: Path | None = None,
) -> Evaluator:
    """Collective: the Evaluator of ``run`` against its real reference (:meth:`LoadedRun.
    real_source`), decoding G's samples with the run's own transforms."""
    source = run.real_source()
    return Evaluator(
        source, run.transform, comm, device, run.cfg.model.z_dim, n, seed, run.eval_cache,
        inception, split=None if run.reference else run.split, conditions=run.conditions,
        training=run.info,
    )  # fmt: skip


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
    info = run.training_file(DEFAULT_CONDITIONS)
    pool = run.split.held_indices if run.split.held else np.arange(info.n)
    with h5py.File(info.path, "r", locking=False) as f:
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
    parser.add_argument(
        "--data",
        metavar="FILE.h5",
        help="the run's own training file where it has moved (checked to hold the same data; "
        "default: where the run's config says). Another set of samples is --reference "
        "(hpcgan.evaluate)",
    )
    parser.add_argument(
        "--stage",
        metavar="DIR",
        help="node-local directory to copy the file that is read to, as data.stage (default: "
        "the run's data.stage; '' reads in place)",
    )
    return parser


def stage_setting(run: LoadedRun, args: argparse.Namespace) -> str:
    """--stage, else the run's data.stage."""
    return run.cfg.data.stage if args.stage is None else args.stage
