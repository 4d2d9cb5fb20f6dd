"""Distributed evaluation of a generator against the real data.

The training loop builds one :class:`Evaluator` and calls it every ``run.eval_every`` steps;
``python -m hpcgan.evaluate`` and ``python -m hpcgan.report`` use the same class::

    evaluator = Evaluator(info, transform, comm, device, z_dim=cfg.model.z_dim,
                          n=10000, seed=cfg.train.seed, cache_dir=run_dir / "eval")  # collective
    metrics = evaluator.evaluate(trainer.G_ema)  # collective: {"eval/ks": ..., ...} on every rank

Each rank generates and featurises its blocks of samples (hpcgan.metrics.sources), one
allreduce sums the statistics, and every rank computes the same metrics from the totals. The
real data's statistics are computed once, as two halves whose distance to each other is the
noise floor of every metric (``baseline``), and cached in ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcgan.comm.base import Comm
from hpcgan.data.format import DatasetInfo
from hpcgan.data.transforms import ValueTransform
from hpcgan.errors import UserError
from hpcgan.metrics import classifier, minkowski, sources, stats
from hpcgan.metrics.compare import compare
from hpcgan.metrics.inception import InceptionFeatures

DEFAULT_N = 10000
KID_ROWS = 1000  # KID on the first 1000 samples of each side, torch-fidelity's subset size
REFERENCE_VERSION = 1  # bump when the statistics change: old caches are then ignored
HIGHER_IS_BETTER = ("eval/coverage_min",)


@dataclass
class Result:
    """Metrics by name, and the curves behind them (for plots) of one evaluation."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)


def is_spatial(info: DatasetInfo) -> bool:
    """Whether the power spectrum (and, for 2-D and 3-D samples, the Minkowski functionals)
    apply: fields and one-channel images."""
    return info.kind == "field" or info.channels == 1


def metric_names(info: DatasetInfo) -> list[str]:
    """The metrics an evaluation during training reports for this dataset."""
    names = ["eval/ks", "eval/w1", "eval/mean_rel_err", "eval/std_rel_err"]
    if is_spatial(info):
        names += ["eval/ps_rel_err"]
    if is_spatial(info) and info.ndim in (2, 3):  # of pixel squares or voxel cubes
        names += ["eval/minkowski_err"]
        names += [f"eval/minkowski_{name.lower()}_err" for name in minkowski.names(info.ndim)]
    if info.num_classes >= 2:
        names += ["eval/fd_classifier", "eval/kid_classifier", "eval/coverage_min"]
        names += [f"eval/class_frac/{c}" for c in range(info.num_classes)]
    return names


def best_metric_name(setting: str, info: DatasetInfo) -> str | None:
    """run.best_metric for this dataset: the metric best.pt is kept by (None: off). Checked
    before training starts, so a name that no evaluation reports is an error up front."""
    if setting == "none":
        return None
    if setting == "auto":
        if info.num_classes >= 2:
            return "eval/fd_classifier"
        return "eval/ps_rel_err" if is_spatial(info) else "eval/w1"
    if setting not in metric_names(info):
        raise UserError(
            f"run.best_metric={setting} is not reported for {info.path}; one of: "
            f"{', '.join(n for n in metric_names(info) if '/class_frac/' not in n)}, auto, none"
        )
    return setting


def better(name: str, new: float, best: float | None) -> bool:
    """Whether ``new`` improves on ``best`` for metric ``name`` (for run.best_metric)."""
    if best is None or not np.isfinite(best):
        return bool(np.isfinite(new))
    return new > best if name in HIGHER_IS_BETTER else new < best


class Evaluator:
    """Compares a generator's samples with the real data; construction and calls are
    collective (every rank calls them in the same order)."""

    def __init__(
        self,
        info: DatasetInfo,
        transform: ValueTransform,
        comm: Comm,
        device: torch.device,
        z_dim: int,
        n: int = DEFAULT_N,
        seed: int = 0,
        cache_dir: Path | None = None,
        inception_weights: Path | None = None,
    ) -> None:
        self.info, self.transform, self.comm, self.device = info, transform, comm, device
        self.z_dim, self.n, self.seed, self.cache_dir = z_dim, n, seed, cache_dir
        self.extractors: list = []
        self.classifier: classifier.Classifier | None = None
        if info.num_classes >= 2:
            self.classifier = classifier.load_or_train(
                info, transform, comm, device, cache_dir, seed
            )
            self.extractors.append(self.classifier)
        if inception_weights is not None:
            if info.ndim != 2:
                raise UserError(
                    f"Inception features are defined for 2-D images; {info.path} has samples "
                    f"of shape {info.shape}"
                )
            self.extractors.append(InceptionFeatures(inception_weights, device))
        self.real = sources.RealPicks(info, n, seed)
        halves = self.real.num_blocks // 2  # blocks in the smaller half
        self.layout = stats.Layout(
            shape=info.shape,
            spatial=is_spatial(info),
            features={e.name: e.dim for e in self.extractors},
            num_classes=info.num_classes if self.classifier else 0,
            kid_rows=min(KID_ROWS, n, halves * self.real.block),
        )
        self.halves = self._reference()
        self.reference = stats.merge(*self.halves)

    # -- real data ----------------------------------------------------------------------

    def _reference_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        ident = {
            **sources.dataset_identity(self.info),
            "version": REFERENCE_VERSION,
            "n": self.real.n,
            "seed": self.seed,
            "layout": repr(self.layout),
            "extractors": [getattr(e, "key", e.name) for e in self.extractors],
            "transform": repr(self.transform),
        }
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"reference-{key}.npz"

    def _reference(self) -> tuple[stats.Totals, stats.Totals]:
        """Collective: the totals of the even and the odd real blocks, from the cache or the
        file (each rank reads its blocks)."""
        path = self._reference_path()
        cached = _load_halves(path) if self.comm.rank == 0 else None
        cached = self.comm.broadcast_object(cached)
        if cached is not None:
            return cached
        halves = (
            stats.SampleStats(self.layout, self.device),
            stats.SampleStats(self.layout, self.device),
        )
        mine = sources.rank_blocks(self.real.num_blocks, self.comm.rank, self.comm.size)
        for b, raw, _labels in self.real.read(mine):
            y = torch.from_numpy(self.transform.encode(raw)).to(self.device)  # [B, C, *S]
            x = torch.from_numpy(raw).to(self.device).float()  # physical units
            self._add(halves[b % 2], y, x, (b // 2) * self.real.block)
        result = (halves[0].reduce(self.comm), halves[1].reduce(self.comm))
        if self.comm.rank == 0 and path is not None:
            _save_halves(path, result)
        return result

    # -- generated samples --------------------------------------------------------------

    def _add(self, into: stats.SampleStats, y: torch.Tensor, x: torch.Tensor, first: int) -> None:
        features, predicted = {}, None
        for extractor in self.extractors:
            features[extractor.name], guess = extractor(y)
            predicted = guess if guess is not None else predicted
        into.add(y, x, first, features, predicted)

    def run(self, G: nn.Module, progress: Callable[[], None] | None = None) -> Result:
        """Collective: metrics and curves of G's first ``n`` evaluation samples; ``progress``
        is called before each block (the training loop's watchdog beat)."""
        fake = stats.SampleStats(self.layout, self.device)
        blocks = sources.num_fake_blocks(self.n)
        for b in sources.rank_blocks(blocks, self.comm.rank, self.comm.size):
            if progress is not None:
                progress()
            y = sources.generate(G, self.z_dim, self.seed, b, sources.fake_block_size(self.n, b))
            x = self.transform.decode(y)  # physical units
            if self.info.dtype == "uint8":  # as the real pixels and hpcgan.sample's output
                x = x.round().clamp(0, 255)
                y = self.transform.encode(x.cpu().numpy())
                y = torch.from_numpy(y).to(self.device)
            self._add(fake, y, x, b * sources.BLOCK)
        metrics, curves = compare(
            self.reference, fake.reduce(self.comm), self.layout, self.transform
        )
        return Result(metrics, curves)

    def evaluate(
        self, G: nn.Module, progress: Callable[[], None] | None = None
    ) -> dict[str, float]:
        """Collective: the metrics of G (see hpcgan.metrics.compare for their meaning)."""
        return self.run(G, progress).metrics

    def baseline(self) -> Result:
        """The metrics of one half of the real samples against the other: the noise floor
        (empty when the real samples are a single block). Each side has n/2 samples, so it
        lies above the floor at n: about 2x for Frechet distances (bias ~ 1/n1 + 1/n2)."""
        if not self.halves[1]["count"][0]:
            return Result({})
        metrics, curves = compare(self.halves[0], self.halves[1], self.layout, self.transform)
        return Result(metrics, curves)


def _save_halves(path: Path, halves: tuple[stats.Totals, stats.Totals]) -> None:
    """Best effort: an unwritable cache only costs recomputing next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.save(path, {f"{i}:{k}": v for i, half in enumerate(halves) for k, v in half.items()})
    except OSError:
        pass


def _load_halves(path: Path | None) -> tuple[stats.Totals, stats.Totals] | None:
    """The cached halves, or None when absent or unreadable (then they are recomputed)."""
    if path is None or not path.is_file():
        return None
    try:
        flat = stats.load(path)
    except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
        return None
    halves: tuple[stats.Totals, stats.Totals] = ({}, {})
    for key, value in flat.items():
        i, name = key.split(":", 1)
        halves[int(i)][name] = value
    return halves


def evaluate(
    G: nn.Module,
    z_dim: int,
    info: DatasetInfo,
    transform: ValueTransform,
    comm: Comm,
    n: int = DEFAULT_N,
    seed: int = 0,
    device: torch.device | None = None,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """Collective, one-off: build an Evaluator and evaluate G (the loop should keep one)."""
    device = device or next(G.parameters()).device
    return Evaluator(info, transform, comm, device, z_dim, n, seed, cache_dir).evaluate(G)
