"""Sufficient statistics of a set of samples: sums that add across batches and ranks.

Every metric (hpcgan.metrics.compare) is computed from these sums of real and of generated
samples, so a rank accumulates its blocks and one ``allreduce_sum`` makes the totals; the
result equals the one-rank result up to the order of floating-point additions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpcgan import spectrum
from hpcgan.comm.base import Comm
from hpcgan.files import atomic_write_file
from hpcgan.metrics import features as highlevel
from hpcgan.metrics import histogram, minkowski

Totals = dict[str, np.ndarray]  # reduced sums by name, on the host
VOLUME_VALUES = 1 << 24  # volumes are summed a few at a time: at most this many values at once


@dataclass(frozen=True)
class Layout:
    """What is accumulated: fixed by the dataset and the feature extractors, not by the data."""

    shape: tuple[int, ...]  # (C, *S)
    spatial: bool  # power spectrum, and in 2-D/3-D Minkowski functionals (fields, one channel)
    features: dict[str, int] = field(default_factory=dict)  # extractor name -> feature size
    num_classes: int = 0  # classes the classifier predicts (coverage); 0 = none
    kid_rows: int = 0  # features of the first kid_rows samples, kept for KID
    bins: int = histogram.BINS
    highlevel: tuple[str, ...] = ()  # per-sample features (hpcgan.metrics.features), kept as rows
    rows: int = 0  # rows of those features: samples per set (indexed by position in the set)
    field: bool = False  # fields: peak counts, and sums of each sample's spectrum and its square
    value_stats: tuple[tuple[str, float], ...] = ()  # the file's min/max/mean/std (features)

    @property
    def ndim(self) -> int:
        """Spatial dimensions of a sample."""
        return len(self.shape) - 1

    @property
    def minkowski(self) -> bool:
        """Whether Minkowski functionals (of pixel squares or voxel cubes) are accumulated."""
        return self.spatial and self.ndim in (2, 3)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every sum (``/kid`` rows are kept, not summed, but add as zeros)."""
        out: dict[str, tuple[int, ...]] = {"count": (1,), "moments": (2,), "pixels": (self.bins,)}
        if self.spatial:
            out["power"] = (spectrum.num_bins(self.shape[1:]),)
        if self.minkowski:
            out["minkowski"] = (minkowski.rows(self.ndim), self.bins)
        for name, dim in self.features.items():
            out[f"{name}/sum"] = (dim,)
            out[f"{name}/outer"] = (dim, dim)
            out[f"{name}/kid"] = (self.kid_rows, dim)
        if self.num_classes:
            out["classes"] = (self.num_classes,)
        if self.highlevel:
            out["highlevel/rows"] = (self.rows, len(self.highlevel) + 1)  # last column: 1 = set
        if self.field and self.spatial:
            out["spread/ps1"] = out["spread/ps2"] = (spectrum.num_bins(self.shape[1:]),)
        return out


class SampleStats:
    """Accumulates the sums of one set of samples (real or generated) on one rank."""

    def __init__(self, layout: Layout, device: torch.device) -> None:
        self.layout = layout
        self.sums = {
            k: torch.zeros(s, dtype=torch.float64, device=device)
            for k, s in layout.shapes().items()
        }

    def add(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        first: int,
        features: dict[str, torch.Tensor],
        predicted: torch.Tensor | None = None,
        row: int | None = None,
    ) -> None:
        """One batch: ``y`` [b, C, *S] in the networks' coordinate, ``x`` the same samples in
        physical units, ``first`` the position of y[0] in this set (for KID's rows),
        ``features`` [b, d] per extractor, ``predicted`` classes [b], ``row`` the row of y[0]
        among the high-level feature rows (default ``first``)."""
        s, lay = self.sums, self.layout
        row = first if row is None else row
        per_sample = y[0].numel() if len(y) else 0
        if lay.ndim == 3 and len(y) > 1 and len(y) * per_sample > VOLUME_VALUES:
            step = max(1, VOLUME_VALUES // per_sample)  # bounds the temporaries of big volumes
            for i in range(0, len(y), step):
                part = {k: f[i : i + step] for k, f in features.items()}
                guess = predicted[i : i + step] if predicted is not None else None
                self.add(y[i : i + step], x[i : i + step], first + i, part, guess, row + i)
            return
        index = histogram.bin_index(y, lay.bins)  # [b, C, *S]
        s["count"] += y.shape[0]
        s["pixels"] += histogram.count(index, lay.bins)
        xd = x.double()
        s["moments"] += torch.stack([xd.sum(), xd.square().sum()])
        if lay.spatial:
            s["power"] += spectrum.power_sums(x)
        if lay.minkowski and lay.ndim == 3:
            s["minkowski"] += minkowski.cell_counts_3d(index, lay.bins)
        elif lay.minkowski:
            s["minkowski"] += minkowski.edge_vertex_counts(index, lay.bins)
        for name, f in features.items():
            f = f.double()  # [b, d]
            s[f"{name}/sum"] += f.sum(dim=0)
            s[f"{name}/outer"] += f.T @ f
            rows = max(0, min(len(f), lay.kid_rows - first))
            s[f"{name}/kid"][first : first + rows] = f[:rows]  # others stay 0: the sum keeps it
        if predicted is not None and lay.num_classes:
            s["classes"] += torch.bincount(predicted, minlength=lay.num_classes).double()
        if lay.highlevel and len(y):
            self._add_highlevel(x, row)

    def _add_highlevel(self, x: torch.Tensor, row: int) -> None:
        """Per-sample features into their rows (other rows stay 0, so sums across ranks fill
        them all), and for fields the sums of each sample's P(k) and P(k)^2."""
        s, lay = self.sums, self.layout
        stats = dict(lay.value_stats)
        f = highlevel.per_sample(x, stats, lay.field)  # [b, F]
        rows = max(0, min(len(f), lay.rows - row))
        s["highlevel/rows"][row : row + rows, :-1] = f[:rows]
        s["highlevel/rows"][row : row + rows, -1] = 1.0
        if "spread/ps1" in s:
            p = highlevel.spectra(x)  # [b, bins]
            s["spread/ps1"] += p.sum(0)
            s["spread/ps2"] += p.square().sum(0)

    def reduce(self, comm: Comm) -> Totals:
        """Collective: the sums over all ranks, on the host (one allreduce)."""
        names = list(self.sums)
        flat = torch.cat([self.sums[k].flatten() for k in names]).cpu().numpy()
        total = comm.allreduce_sum(flat)
        out, pos = {}, 0
        for k in names:
            size = self.sums[k].numel()
            out[k] = total[pos : pos + size].reshape(self.sums[k].shape)
            pos += size
        return out


def merge(a: Totals, b: Totals) -> Totals:
    """Totals of the union of two disjoint sets; KID's rows are the first set's."""
    return {k: a[k] if k.endswith("/kid") else a[k] + b[k] for k in a}


def save(path: Path, totals: Totals) -> None:
    """Write atomically (hpcgan.files): readers never see half a file."""
    atomic_write_file(path, lambda f: np.savez(f, **totals))


def load(path: Path) -> Totals:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
