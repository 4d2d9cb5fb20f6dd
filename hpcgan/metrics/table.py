"""The one table of metric facts: name, direction, verdict rule, what the data must have for
the metric to apply, and its place in ``run.best_metric=auto`` (docs/evaluation.md, "The
metric table"). Evaluation (which sums to accumulate, which names to report), the verdict,
the best-checkpoint choice and the report all read it, so a fact is stated once (the plain-table
form of stylegan2-ada's ``@register_metric``).

A metric whose requirements the data do not meet is skipped, and :func:`skipped` says why
(``{"eval/ps_rel_err": "needs a periodic box; axes 0 and 2 are not periodic"}``); a 45x16x9
calorimeter grid gets no radially binned spectrum and no wrap-around of its depth axis.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from hpcgan.data.format import DatasetInfo
from hpcgan.metrics import features, minkowski


@dataclass(frozen=True)
class Run:
    """What the run adds to the data: held-out samples (data.holdout), Inception weights
    (--inception), continuous conditions to bin by (hpcgan.metrics.by_condition)."""

    held_out: bool = False
    inception: bool = False
    conditions: bool = False


Check = Callable[[DatasetInfo, Run], "str | None"]  # None: met; else the reason it is not


def _maps(info: DatasetInfo, run: Run) -> str | None:
    if info.kind == "field" or info.channels == 1:
        return None
    return f"needs fields or one-channel samples; these have {info.channels} channels"


def _periodic_box(info: DatasetInfo, run: Run) -> str | None:
    """Every axis periodic and all sides equal: radial |k| shells in cycles per box, and the
    wrap-around of the FFT, the Minkowski cells and the peak filter, are then exact. Square
    one-channel images keep these metrics as before: an object on its background wraps
    background onto background, so the wrap makes no seam (docs/evaluation.md)."""
    spatial = info.spatial
    if len(set(spatial)) > 1:
        return f"needs a periodic box; sides {'x'.join(map(str, spatial))} are not equal"
    if info.kind == "image" and info.ndim >= 2:
        return None
    off = [str(i) for i, p in enumerate(info.symmetry.periodic) if not p]
    if off:
        axes = (
            f"axes {', '.join(off[:-1])} and {off[-1]} are" if len(off) > 1 else f"axis {off[0]} is"
        )
        return f"needs a periodic box; {axes} not periodic"
    return None


def _two_or_three(info: DatasetInfo, run: Run) -> str | None:
    return None if info.ndim in (2, 3) else f"needs 2-D or 3-D samples; these are {info.ndim}-D"


def _two_d(info: DatasetInfo, run: Run) -> str | None:
    return None if info.ndim == 2 else f"needs 2-D images; these are {info.ndim}-D"


def _field(info: DatasetInfo, run: Run) -> str | None:
    return None if info.kind == "field" else f"needs fields; these are {info.kind}s"


def _labels(info: DatasetInfo, run: Run) -> str | None:
    return None if info.num_classes >= 2 else "needs class labels (2 or more classes)"


def _held_out(info: DatasetInfo, run: Run) -> str | None:
    return None if run.held_out else "needs held-out samples (data.holdout)"


def _inception(info: DatasetInfo, run: Run) -> str | None:
    return None if run.inception else "needs --inception WEIGHTS"


def _conditions(info: DatasetInfo, run: Run) -> str | None:
    return None if run.conditions else "needs continuous conditions"


REQUIREMENTS: dict[str, Check] = {
    "maps": _maps,
    "periodic box": _periodic_box,
    "2-D or 3-D": _two_or_three,
    "2-D": _two_d,
    "field": _field,
    "labels": _labels,
    "held-out": _held_out,
    "inception": _inception,
    "conditions": _conditions,
}
VERDICTS = ("factor", "auc", "fraction", "memo_ratio", "memo_share", "none")  # verdict.judge


@dataclass(frozen=True)
class Metric:
    """One row. ``name`` may hold one ``<placeholder>``: a family whose members ``members``
    lists for a dataset (per feature, per class, per functional)."""

    name: str
    needs: tuple[str, ...] = ()  # keys of REQUIREMENTS, checked in this order
    higher_is_better: bool = False
    verdict: str = "factor"  # the rule of hpcgan.metrics.verdict.judge (VERDICTS)
    auto: int = 0  # run.best_metric=auto: the applicable row with the smallest rank > 0
    selectable: bool = True  # may run.best_metric name it
    members: Callable[[DatasetInfo], list[str]] | None = None  # a family's placeholders


def _minkowski(info: DatasetInfo) -> list[str]:
    return [n.lower() for n in minkowski.names(info.ndim)]


def _features(info: DatasetInfo) -> list[str]:
    return features.names(info.ndim, field=False)  # peaks: a row of its own


def _classes(info: DatasetInfo) -> list[str]:
    return [str(c) for c in range(info.num_classes)]


BOX = ("maps", "periodic box")
METRICS: tuple[Metric, ...] = (
    Metric("eval/ks"),
    Metric("eval/w1", auto=3),
    Metric("eval/mean_rel_err"),
    Metric("eval/std_rel_err"),
    Metric("eval/ps_rel_err", BOX, auto=2),
    Metric("eval/minkowski_err", ("maps", "2-D or 3-D", "periodic box")),
    Metric("eval/minkowski_<v>_err", ("maps", "2-D or 3-D", "periodic box"), members=_minkowski),
    Metric("eval/fd_classifier", ("labels",), auto=1),
    Metric("eval/kid_classifier", ("labels",)),
    Metric("eval/coverage_min", ("labels",), higher_is_better=True, verdict="none"),
    Metric("eval/class_frac/<class>", ("labels",), verdict="none", selectable=False,
           members=_classes),
    Metric("eval/c2st_auc", verdict="auc"),
    Metric("eval/sep_max"),
    Metric("eval/sep/<feature>", members=_features),
    Metric("eval/sep/peaks", ("field", *BOX)),
    Metric("eval/ps_std_rel_err", ("field", *BOX)),
    Metric("eval/precision", ("labels",), higher_is_better=True, verdict="fraction"),
    Metric("eval/recall", ("labels",), higher_is_better=True, verdict="fraction"),
    Metric("eval/memo_ratio", ("held-out",), verdict="memo_ratio", selectable=False),
    Metric("eval/memo_copy_share", ("held-out",), verdict="memo_share", selectable=False),
    Metric("eval/fd_inception", ("2-D", "inception")),
    Metric("eval/kid_inception", ("2-D", "inception")),
    # by condition (hpcgan.metrics.by_condition): per bin, next to the floor in that bin
    Metric("cond/<feature>_mean_rel_err", ("conditions",), selectable=False, members=_features),
    Metric("cond/<feature>_ks", ("conditions",), selectable=False, members=_features),
)  # fmt: skip
DEFAULT = Metric("eval/?")  # a name no row has: a distance, lower is better, rule "factor"


def _pattern(metric: Metric) -> re.Pattern:
    """A row's name as a regular expression: a placeholder stands for one name part."""
    return re.compile(re.sub(r"<\w+>", "[^/]+", re.escape(metric.name)) + "$")


_EXACT = {m.name: m for m in METRICS if m.members is None}
_FAMILIES = [(_pattern(m), m) for m in METRICS if m.members is not None]


def find(name: str) -> Metric:
    """The row of a metric name (a family's member finds its family), else DEFAULT."""
    if name in _EXACT:
        return _EXACT[name]
    for pattern, metric in _FAMILIES:
        if pattern.match(name):
            return metric
    return DEFAULT


def reason(metric: Metric, info: DatasetInfo, run: Run = Run()) -> str | None:
    """Why ``metric`` does not apply to these data (its first unmet requirement), or None."""
    for need in metric.needs:
        why = REQUIREMENTS[need](info, run)
        if why is not None:
            return why
    return None


def applies(name: str, info: DatasetInfo, run: Run = Run()) -> bool:
    """Whether the metric ``name`` (or its family) is computed for these data."""
    return reason(find(name), info, run) is None


def expand(metric: Metric, info: DatasetInfo) -> list[str]:
    """The names a row stands for on these data (a family: one per member)."""
    if metric.members is None:
        return [metric.name]
    return [re.sub(r"<\w+>", m, metric.name) for m in metric.members(info)]


def names(info: DatasetInfo, run: Run = Run(), prefix: str = "eval/") -> list[str]:
    """The metrics an evaluation reports for these data, in table order."""
    return [
        n
        for m in METRICS
        if m.name.startswith(prefix) and reason(m, info, run) is None
        for n in expand(m, info)
    ]


def skipped(info: DatasetInfo, run: Run = Run(), prefix: str = "eval/") -> dict[str, str]:
    """Name -> reason of every row that does not apply (a family under its pattern)."""
    out = {}
    for m in METRICS:
        why = reason(m, info, run) if m.name.startswith(prefix) else None
        if why is not None:
            out[m.name] = why
    return out


def higher_is_better(name: str) -> bool:
    return find(name).higher_is_better
