"""Where evaluation samples come from, in global blocks that do not depend on the world size.

Real samples: the first blocks of a seeded segment order of the file (the training sampler's
:class:`~hpcgan.data.sharding.ShardPlan` with one block per "batch"), so a sorted file is still
sampled evenly and each block is a few contiguous reads. Generated samples: block ``b`` holds
global samples ``b*BLOCK ..``, whose latents come from ``draw(seed, b, STREAM_EVAL_LATENT)`` and
whose classes (conditional G) are ``i % num_classes``, and whose continuous conditions (a G
conditioned on /conditions) are those of real reference sample ``i % n_real``
(:func:`reference_rows`). Block ``b`` is handled by rank ``b % world``; since every statistic
is a sum, the result is the same at any world size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from hpcgan.condition import Condition
from hpcgan.data.format import DatasetInfo
from hpcgan.data.holdout import file_runs
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import ConditionTransform
from hpcgan.rng import STREAM_EVAL_LATENT, draw

BLOCK = 128


def rank_blocks(num_blocks: int, rank: int, world: int) -> range:
    """The global blocks that rank ``rank`` of ``world`` handles (round robin: balanced)."""
    return range(rank, num_blocks, world)


class RealPicks:
    """About ``n`` real samples (whole blocks, at most the file), the same at any world size;
    with ``pool`` (ascending file indices: the held-out or the training samples), picked from
    those only."""

    def __init__(
        self,
        info: DatasetInfo,
        n: int,
        seed: int,
        block: int = BLOCK,
        pool: np.ndarray | None = None,
    ) -> None:
        self.info, self.pool = info, pool
        size = info.n if pool is None else len(pool)
        self.block = min(block, size)
        segment = info.chunk_samples if info.compression else 8  # as training reads
        self.plan = ShardPlan(size, self.block, segment, seed)
        self.num_blocks = max(1, min(math.ceil(n / self.block), self.plan.batches_per_epoch))
        self.n = self.num_blocks * self.block

    def indices(self) -> np.ndarray:
        """The file indices of all the picked samples, ascending."""
        runs = [r for b in range(self.num_blocks) for r in self._runs(b)]
        return np.unique(np.concatenate([np.arange(a, z) for a, z in runs]))

    def _runs(self, block: int) -> list[tuple[int, int]]:
        """The file ranges [a, z) that hold block ``block``."""
        return file_runs(self.plan.runs(block, 0, 1), self.pool)

    def read(self, blocks: range) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(block, samples [block, C, *S] as stored, labels [block] or None) for each block."""
        with h5py.File(self.info.path, "r", locking=False) as f:
            images = f["images"]
            labels = f["labels"] if self.info.has_labels else None
            for b in blocks:
                runs = self._runs(b)
                raw = np.concatenate([images[a:z] for a, z in runs])
                lab = np.concatenate([labels[a:z] for a, z in runs]) if labels is not None else None
                yield b, raw, lab

    def conditions(self) -> np.ndarray:
        """The /conditions rows [n, K] of all the picked samples, as stored (physical units),
        in pick order (row r: sample r % block of block r // block), read in the same
        contiguous runs as the samples."""
        with h5py.File(self.info.path, "r", locking=False) as f:
            values = f["conditions"]
            runs = [r for b in range(self.num_blocks) for r in self._runs(b)]
            return np.concatenate([values[a:z] for a, z in runs])


def reference_rows(block: int, size: int, n_real: int) -> np.ndarray:
    """The real reference rows [size] whose conditions generated samples block*BLOCK ..
    block*BLOCK + size - 1 are made at: sample i at row i, cycling when there are more
    generated samples than real ones."""
    return (np.arange(size) + block * BLOCK) % n_real


def read_samples(info: DatasetInfo, pool: np.ndarray) -> np.ndarray:
    """The samples at the ascending file indices ``pool``, as stored, in contiguous reads."""
    with h5py.File(info.path, "r", locking=False) as f:
        images = f["images"]
        parts = [images[a:z] for a, z in file_runs([(0, len(pool))], pool)]
    return np.concatenate(parts) if parts else np.empty((0, *info.shape), info.dtype)


def latents(seed: int, block: int, z_dim: int, size: int = BLOCK) -> torch.Tensor:
    """Latents [size, z_dim] of global samples block*BLOCK .. block*BLOCK + size - 1."""
    return draw(seed, block, STREAM_EVAL_LATENT, (BLOCK, z_dim))[:size]


class ReferenceConditions:
    """The /conditions of the real reference samples, physical [n_real, K] as stored and
    encoded for G by the run's ConditionTransform: what generated samples are made at."""

    def __init__(self, physical: np.ndarray, transform: ConditionTransform) -> None:
        self.physical = physical  # [n_real, K]
        self.encoding = transform
        self.encoded = torch.from_numpy(transform.encode(physical))  # [n_real, K] float32

    def values(self, block: int, size: int) -> torch.Tensor:
        """Encoded conditions [size, K] of generated samples block*BLOCK .. (reference_rows)."""
        return self.encoded[reference_rows(block, size, len(self.encoded))]


def condition_dim(G: nn.Module) -> int:
    """How many continuous conditions (/conditions columns) G takes per sample."""
    spec = getattr(G, "spec", None)
    return spec.dim if spec is not None else 0


CHUNK = 32  # samples per forward pass of generate(): faster on CPUs than whole blocks


def for_inference(G: nn.Module) -> nn.Module:
    """A copy of G for generating: eval mode (BatchNorm from running statistics, so a sample
    does not depend on the others in its batch), no gradients, and channels-last weights,
    with which CPU convolutions ran 1.1-2x faster (docs/evaluation.md, "Cost"). The samples
    equal G's own to float rounding. Make it once per evaluation, not per block."""
    net = copy.deepcopy(G).eval().requires_grad_(False)
    ndim = max((p.dim() for p in net.parameters()), default=0)
    if ndim in (4, 5):  # convolution weights: 2-D or 3-D samples
        net = net.to(memory_format=torch.channels_last if ndim == 4 else torch.channels_last_3d)
    return net


@torch.no_grad()
def generate(
    G: nn.Module,
    z_dim: int,
    seed: int,
    block: int,
    size: int = BLOCK,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """G's output [size, C, *S] (float32, in [-1, 1]) for the first ``size`` samples of a block,
    where G is a :func:`for_inference` copy of the generator. A G conditioned on /conditions
    needs ``values`` [size, K]: the encoded conditions to generate at (evaluation passes the
    held-out samples' own, so every metric compares like with like)."""
    p = next(G.parameters())
    z = latents(seed, block, z_dim, size).to(p.device, p.dtype)
    classes = getattr(G, "num_classes", 0)
    y = (torch.arange(size, device=p.device) + block * BLOCK) % classes if classes else None
    dim = condition_dim(G)
    if dim and (values is None or values.shape != (size, dim)):
        got = "none" if values is None else tuple(values.shape)
        raise ValueError(f"G takes {dim} conditions per sample: expected {size}, got {got}")
    v = None if values is None else values.to(p.device, p.dtype)
    out = []
    for i in range(0, size, CHUNK):
        rows = slice(i, i + CHUNK)
        cond = Condition(None if y is None else y[rows], None if v is None else v[rows])
        x = G(z[rows], cond) if cond else G(z[rows])
        out.append(x.float().contiguous())
    return torch.cat(out)


def num_fake_blocks(n: int) -> int:
    """Blocks that hold n generated samples (the last one may be partly used)."""
    return math.ceil(n / BLOCK)


def fake_block_size(n: int, block: int) -> int:
    """Samples of block ``block`` among the first n."""
    return min(BLOCK, n - block * BLOCK)


def dataset_identity(info: DatasetInfo) -> dict[str, object]:
    """What names a dataset file's contents cheaply: cache keys change when the file does."""
    stat = Path(info.path).stat()
    return {
        "path": str(Path(info.path).resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
