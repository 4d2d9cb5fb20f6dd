"""Distributed evaluation of a generator against the real data.

The training loop builds one :class:`Evaluator` and calls it every ``run.eval_every`` steps;
``python -m hpcgan.evaluate`` and ``python -m hpcgan.report`` use the same class::

    evaluator = Evaluator(info, transform, comm, device, z_dim=cfg.model.z_dim,
                          n=10000, seed=cfg.train.seed, cache_dir=run_dir / "eval")  # collective
    metrics = evaluator.evaluate(trainer.G_ema)  # collective: {"eval/ks": ..., ...} on every rank

Each rank generates and featurises its blocks of samples (hpcgan.metrics.sources), one
allreduce sums the statistics, and every rank computes the same metrics from the totals. The
real data's statistics are computed once, as two halves whose distance to each other is the
noise floor of every metric (``baseline``), and cached in ``cache_dir``. A G conditioned on
/conditions generates sample i at the conditions of real reference sample i, and the result
adds the metrics in bins of each condition (hpcgan.metrics.by_condition).
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

from hpcgan.comm import agree
from hpcgan.comm.base import Comm
from hpcgan.data.format import STAT_KEYS, DatasetInfo
from hpcgan.data.holdout import Split
from hpcgan.data.transforms import ConditionTransform, ValueTransform
from hpcgan.errors import UserError
from hpcgan.files import writing
from hpcgan.metrics import classifier, features, memorisation, sources, stats, table, two_sample
from hpcgan.metrics.by_condition import by_condition_of_rows
from hpcgan.metrics.compare import compare, value_summary
from hpcgan.metrics.inception import InceptionFeatures
from hpcgan.metrics.precision_recall import precision_recall

DEFAULT_N = 10000
KID_ROWS = 1000  # KID on the first 1000 samples of each side, torch-fidelity's subset size
REFERENCE_VERSION = 1  # bump when the statistics change: old caches are then ignored


@dataclass
class Result:
    """Metrics by name, and the curves behind them (for plots) of one evaluation."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    by_condition: dict[str, dict] = field(default_factory=dict)  # hpcgan.metrics.by_condition
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # compare.value_summary


def metric_names(info: DatasetInfo) -> list[str]:
    """The metrics an evaluation during training reports for this dataset (the rows of
    hpcgan.metrics.table that apply to it, without held-out samples or Inception)."""
    return table.names(info)


def best_metric_name(setting: str, info: DatasetInfo) -> str | None:
    """run.best_metric for this dataset: the metric best.pt is kept by (None: off). Checked
    before training starts, so a name that no evaluation reports is an error up front;
    ``auto`` is the applicable row of the metric table with the smallest ``auto`` rank."""
    if setting == "none":
        return None
    reported = metric_names(info)
    if setting == "auto":
        ranked = [m for m in table.METRICS if m.auto > 0 and m.name in reported]
        return min(ranked, key=lambda m: m.auto).name
    if setting not in reported or not table.find(setting).selectable:
        why = table.reason(table.find(setting), info)
        offered = [n for n in reported if table.find(n).selectable]
        raise UserError(
            f"run.best_metric={setting} is not reported for {info.path}"
            + (f" ({why})" if why else "")
            + f"; one of: {', '.join(offered)}, auto, none"
        )
    return setting


def better(name: str, new: float, best: float | None) -> bool:
    """Whether ``new`` improves on ``best`` for metric ``name`` (for run.best_metric)."""
    if best is None or not np.isfinite(best):
        return bool(np.isfinite(new))
    return new > best if table.higher_is_better(name) else new < best


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
        c2st: int = two_sample.SAMPLES,
        split: Split | None = None,
        conditions: ConditionTransform | None = None,
        training: DatasetInfo | None = None,
    ) -> None:
        """``conditions``: the run's encoding of the data's /conditions (data.condition_transform),
        used when the evaluated G is conditioned on them; ``training``: the run's training data
        when ``info`` is another file (--reference), whose value statistics set the features'
        thresholds, so G's numbers do not depend on the reference."""
        self.info, self.transform, self.comm, self.device = info, transform, comm, device
        self.z_dim, self.n, self.seed, self.cache_dir = z_dim, n, seed, cache_dir
        # The real reference and the set its noise floor is measured against: held-out samples
        # and as many training samples (data.holdout), else two halves (even and odd blocks)
        # of picks from the whole file.
        self.split = split if split is not None and split.held else None
        if self.split is not None:
            self.real = sources.RealPicks(info, n, seed, pool=self.split.held_indices)
            self.other = sources.RealPicks(
                info, self.real.n, seed, self.real.block, pool=self.split.train_indices
            )
            side = min(self.real.n, self.other.n)  # samples in the smaller side
        else:
            self.real = self.other = sources.RealPicks(info, n, seed)
            side = self.real.num_blocks // 2 * self.real.block
        self.extractors: list = []
        self.classifier: classifier.Classifier | None = None
        if info.num_classes >= 2:
            self.classifier = classifier.load_or_train(
                info, transform, comm, device, cache_dir, seed, self._classifier_pool()
            )
            self.extractors.append(self.classifier)
        if inception_weights is not None:
            if info.ndim != 2:
                raise UserError(
                    f"Inception features are defined for 2-D images; {info.path} has samples "
                    f"of shape {info.shape}"
                )
            self.extractors.append(InceptionFeatures(inception_weights, device))
        peaks = table.applies("eval/sep/peaks", info)
        self.layout = stats.Layout(
            shape=info.shape,
            spatial=table.applies("eval/ps_rel_err", info),
            features={e.name: e.dim for e in self.extractors},
            num_classes=info.num_classes if self.classifier else 0,
            kid_rows=min(KID_ROWS, n, side),
            highlevel=tuple(features.names(info.ndim, peaks)),
            rows=max(n, self.real.n),
            field=peaks,
            value_stats=tuple((k, float((training or info).stats[k])) for k in STAT_KEYS),
        )
        # The table's rows these data do not meet, with the reason (the evaluation JSON's
        # "skipped"); the layout above accumulates only what the others need.
        self.conditions = self._read_conditions(conditions)
        run = table.Run(
            held_out=self.split is not None,
            inception=inception_weights is not None,
            conditions=self.conditions is not None,
        )
        self.skipped = table.skipped(info, run)
        self.halves = self._reference()
        self.reference = self.halves[0] if self.split else stats.merge(*self.halves)
        # C2ST: samples per side, at most the smaller real side (for the floor)
        self.c2st = min(two_sample.sample_count(info.shape, c2st), n, side)
        self.c2st_wanted = c2st > 0
        self._c2st_real: tuple[torch.Tensor, torch.Tensor] | None = None
        self._c2st_floor: float | None = None
        self._memo_train: np.ndarray | None = None

    # -- real data ----------------------------------------------------------------------

    def _classifier_pool(self) -> np.ndarray | None:
        """The file indices the evaluation classifier learns from: with held-out samples, the
        training samples that the floor does not use, so that the floor compares two sets the
        classifier never saw, as the generated samples are; all training samples when that
        would leave it fewer than half of them (a large data.holdout on a small file)."""
        if self.split is None:
            return None
        train = self.split.train_indices
        unused = np.setdiff1d(train, self.other.indices())
        return unused if 2 * len(unused) >= len(train) else train

    def _read_conditions(
        self, transform: ConditionTransform | None
    ) -> sources.ReferenceConditions | None:
        """Collective: the /conditions of the real reference samples (held-out picks, else all
        picks), in reference order; rank 0 reads them and every rank gets a copy."""
        if transform is None or not self.info.has_conditions:
            return None
        raw = self.real.conditions() if self.comm.rank == 0 else None
        return sources.ReferenceConditions(self.comm.broadcast_object(raw), transform)

    def _reference_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        ident = {
            **sources.dataset_identity(self.info),
            "version": REFERENCE_VERSION,
            "n": self.real.n,
            "seed": self.seed,
            "holdout": self.split.held if self.split else 0,
            "layout": repr(self.layout),
            "extractors": [getattr(e, "key", e.name) for e in self.extractors],
            "transform": repr(self.transform),
        }
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"reference-{key}.npz"

    def _reference(self) -> tuple[stats.Totals, stats.Totals]:
        """Collective: the totals of the held-out and the training picks (or of the even and
        the odd real blocks), from the cache or the file (each rank reads its blocks)."""
        path = self._reference_path()
        cached = _load_halves(path) if self.comm.rank == 0 else None
        cached = self.comm.broadcast_object(cached)
        if cached is not None:
            return cached
        halves = (
            stats.SampleStats(self.layout, self.device),
            stats.SampleStats(self.layout, self.device),
        )

        def add(into: stats.SampleStats, raw: np.ndarray, first: int, row: int) -> None:
            y = torch.from_numpy(self.transform.encode(raw)).to(self.device)  # [B, C, *S]
            x = torch.from_numpy(raw).to(self.device).float()  # physical units
            self._add(into, y, x, first, row)

        block = self.real.block
        if self.split is not None:
            for side, picks in enumerate((self.real, self.other)):
                mine = sources.rank_blocks(picks.num_blocks, self.comm.rank, self.comm.size)
                for b, raw, _labels in picks.read(mine):
                    add(halves[side], raw, b * block, b * block)
        else:
            mine = sources.rank_blocks(self.real.num_blocks, self.comm.rank, self.comm.size)
            for b, raw, _labels in self.real.read(mine):
                add(halves[b % 2], raw, (b // 2) * block, b * block)
        result = (halves[0].reduce(self.comm), halves[1].reduce(self.comm))
        if path is not None:  # rank 0 writes; a full disk ends every rank (exit 2)
            agree(self.comm, lambda: _save_halves(path, result) if self.comm.rank == 0 else None)
        return result

    # -- generated samples --------------------------------------------------------------

    def _add(
        self,
        into: stats.SampleStats,
        y: torch.Tensor,
        x: torch.Tensor,
        first: int,
        row: int | None = None,
    ) -> None:
        found, predicted = {}, None
        for extractor in self.extractors:
            found[extractor.name], guess = extractor(y)
            predicted = guess if guess is not None else predicted
        into.add(y, x, first, found, predicted, row)

    def run(self, G: nn.Module, progress: Callable[[], None] | None = None) -> Result:
        """Collective: metrics and curves of G's first ``n`` evaluation samples; ``progress``
        is called before each block and before the C2ST (the training loop's watchdog beat)."""
        fake = stats.SampleStats(self.layout, self.device)
        blocks = sources.num_fake_blocks(self.n)
        kept: list[tuple[int, torch.Tensor]] = []  # this rank's first c2st samples, for C2ST
        G = sources.for_inference(G)
        for b in sources.rank_blocks(blocks, self.comm.rank, self.comm.size):
            if progress is not None:
                progress()
            y = self.generate(G, b, sources.fake_block_size(self.n, b))
            x = self.transform.decode(y)  # physical units
            if self.info.dtype == "uint8":  # as the real pixels and hpcgan.sample's output
                x = x.round().clamp(0, 255)
                y = self.transform.encode(x.cpu().numpy())
                y = torch.from_numpy(y).to(self.device)
            self._add(fake, y, x, b * sources.BLOCK)
            if b * sources.BLOCK < self.c2st:
                kept.append((b, y[: self.c2st - b * sources.BLOCK].cpu()))
        totals = fake.reduce(self.comm)
        metrics, curves = compare(self.reference, totals, self.layout, self.transform)
        metrics.update(self._extra(self.reference, totals))
        if self.c2st:
            if progress is not None:
                progress()  # ranks 0 and 1 train the C2ST's views while the others wait
            metrics.update(self._c2st_generated(kept))
        elif self.c2st_wanted:  # too few real samples for a C2ST and its floor
            metrics["eval/c2st_auc"] = float("nan")
        result = Result(metrics, curves, values=value_summary(self.reference, totals, self.layout))
        if sources.condition_dim(G):  # sample i and reference sample i: the same conditions
            m = min(self.n, self.real.n)
            result.by_condition = by_condition_of_rows(
                self.reference["highlevel/rows"][:m],
                totals["highlevel/rows"][:m],
                list(self.layout.highlevel),
                self.conditions.physical[:m],
                list(self.info.condition_names),
                list(self.info.condition_units),
                self.seed,
            )
        return result

    def generate(self, G: nn.Module, block: int, size: int) -> torch.Tensor:
        """G's evaluation samples [size, C, *S] of a block (G: a sources.for_inference copy);
        a G conditioned on /conditions makes sample i at reference sample i's conditions."""
        values = None
        if sources.condition_dim(G):
            if self.conditions is None:
                raise UserError(f"G takes conditions; no /conditions given for {self.info.path}")
            values = self.conditions.values(block, size)
        return sources.generate(G, self.z_dim, self.seed, block, size, values)

    def evaluate(
        self, G: nn.Module, progress: Callable[[], None] | None = None
    ) -> dict[str, float]:
        """Collective: the metrics of G (see hpcgan.metrics.compare for their meaning)."""
        return self.run(G, progress).metrics

    def baseline(self) -> Result:
        """The noise floor: the held-out samples against as many training samples, or one
        half of the real picks against the other (empty when they are a single block). Halves
        hold n/2 samples each, so they lie above the floor at n: about 2x for Frechet
        distances (bias ~ 1/n1 + 1/n2)."""
        if not self.halves[1]["count"][0]:
            return Result({})
        metrics, curves = compare(self.halves[0], self.halves[1], self.layout, self.transform)
        metrics.update(self._extra(self.halves[0], self.halves[1]))
        if self.c2st:
            if self._c2st_floor is None:
                self._c2st_floor = self._c2st(self._real_sets)
            metrics["eval/c2st_auc"] = self._c2st_floor
        return Result(metrics, curves)

    # -- high-level features and the classifier two-sample test (docs/evaluation.md) ----

    def _extra(self, real: stats.Totals, fake: stats.Totals) -> dict[str, float]:
        """Separation powers of the high-level features; for fields the spectrum's spread."""
        rows = [t["highlevel/rows"] for t in (fake, real)]
        rows = [r[r[:, -1] == 1.0, :-1] for r in rows]  # the rows that hold a sample
        out = features.compare(rows[0], rows[1], list(self.layout.highlevel))
        if "spread/ps1" in real:
            ref = (real["spread/ps1"], real["spread/ps2"], real["count"][0])
            count = fake["count"][0]
            out["eval/ps_std_rel_err"] = features.spread_error(
                fake["spread/ps1"], fake["spread/ps2"], count, ref
            )
        if self.classifier is not None:  # KID's rows: the first kid_rows samples' features
            name = f"{self.classifier.name}/kid"
            p, r = precision_recall(real[name], fake[name])
            out["eval/precision"], out["eval/recall"] = p, r
        return out

    def _c2st(self, sets: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Collective: the C2ST AUC of the two ``sets()``, the larger of its views
        (two_sample.VIEWS). View i is trained by rank i % world: side by side when there are
        ranks to spare, each a pure function of the sets (docs/evaluation.md)."""
        found = []
        for view, root in self._c2st_views():
            value = None
            if self.comm.rank == root:
                a, b = (x.to(self.device) for x in sets())
                periodic = self.info.symmetry.periodic  # the Laplacian wraps only these axes
                value = two_sample.auc(a, b, self.seed, view=view, periodic=periodic)
            found.append((root, value))
        aucs = [self.comm.broadcast_object(value, root=root) for root, value in found]
        return float("nan") if any(np.isnan(aucs)) else max(aucs)

    def _c2st_views(self) -> list[tuple[str, int]]:
        """(view, the rank that trains it) for each view of the C2ST."""
        return [(view, i % self.comm.size) for i, view in enumerate(two_sample.VIEWS)]

    def _real_sets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first c2st samples of the reference side (held-out picks, or even blocks) and
        of the floor side (training picks, or odd blocks), encoded; read once, by each rank
        that trains a view of the C2ST (and rank 0, for memorisation)."""
        if self._c2st_real is None:
            sides: tuple[list, list] = ([], [])
            need = -(-self.c2st // self.real.block)  # blocks per side
            if self.split is not None:
                for side, picks in enumerate((self.real, self.other)):
                    for _, raw, _ in picks.read(range(min(need, picks.num_blocks))):
                        sides[side].append(torch.from_numpy(self.transform.encode(raw)))
            else:
                for b, raw, _ in self.real.read(range(min(2 * need, self.real.num_blocks))):
                    sides[b % 2].append(torch.from_numpy(self.transform.encode(raw)))
            a, b = (torch.cat(s)[: self.c2st] for s in sides)
            self._c2st_real = (a, b)
        return self._c2st_real

    def _c2st_generated(self, kept: list[tuple[int, torch.Tensor]]) -> dict[str, float]:
        """Collective: C2ST AUC of the first c2st generated samples against the first real
        half (the blocks are gathered, in global order, to the ranks that train its views),
        and memorisation, computed by rank 0."""
        fake = None
        for root in sorted({root for _, root in self._c2st_views()}):
            gathered = self.comm.gather_object(kept, root=root)
            if self.comm.rank == root:
                blocks = sorted((pair for part in gathered for pair in part), key=_first)
                fake = torch.cat([y for _, y in blocks])
        value = {"eval/c2st_auc": self._c2st(lambda: (self._real_sets()[0], fake))}
        if self.split is not None:
            memo = self._memorisation(fake) if self.comm.rank == 0 else None
            value.update(self.comm.broadcast_object(memo))
        return value

    def _memorisation(self, fake: torch.Tensor) -> dict[str, float]:
        """Nearest-neighbour distances of the C2ST's generated and held-out samples to the
        training samples (all, or a seeded subset of memorisation.TRAIN_SAMPLES / TRAIN_BYTES),
        in the encoded [-1, 1] values."""
        if self._memo_train is None:
            pool = self.split.train_indices
            count = memorisation.train_count(self.info.shape, len(pool))
            if count < len(pool):  # a seeded subset: copies of the others go unseen
                pool = np.sort(np.random.default_rng(self.seed).choice(pool, count, False))
            self._memo_train = self.transform.encode(sources.read_samples(self.info, pool))
        held = self._real_sets()[0].numpy()
        found = memorisation.memorisation(self._memo_train, held, fake.numpy())
        return {"eval/memo_ratio": found.ratio, "eval/memo_copy_share": found.copy_share}


def _first(pair: tuple[int, torch.Tensor]) -> int:
    return pair[0]


def _save_halves(path: Path, halves: tuple[stats.Totals, stats.Totals]) -> None:
    """A full disk or a read-only folder is a WriteFailed (exit 2), as for every file of the
    run directory (docs/design.md, section 6)."""
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    stats.save(path, {f"{i}:{k}": v for i, half in enumerate(halves) for k, v in half.items()})


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
