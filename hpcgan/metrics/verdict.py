"""Is a metric's value distinguishable from its noise floor? The rules of the verdict table
(docs/evaluation.md, "Verdict"); which rule a metric follows is its row's ``verdict`` in
hpcgan.metrics.table:
  auc          (eval/c2st_auc) distinguishable when AUC > max(floor, 0.5) + AUC_MARGIN
  fraction     (eval/precision, eval/recall) distinguishable when value < floor - FRACTION_MARGIN
  factor       (every other distance) distinguishable when value > FACTOR x floor
  memo_ratio, memo_share  (memorisation) "copies the training data" past memorisation's flags
  none         (per-class shares, coverage) no verdict
A metric without a positive, finite floor gets no verdict.
"""

from __future__ import annotations

import math

from hpcgan.metrics import table
from hpcgan.metrics.memorisation import RATIO_FLAG, SHARE_FLAG

AUC_MARGIN = 0.05
FRACTION_MARGIN = 0.1
FACTOR = 3.0


def judge(name: str, value: float, floor: float | None) -> str:
    """'distinguishable', 'within noise' or 'no floor' (memorisation: 'copies the training
    data' or 'not copying')."""
    rule = table.find(name).verdict
    if rule == "memo_ratio" and math.isfinite(value):  # its floor is 1 by construction
        return "copies the training data" if value < RATIO_FLAG else "not copying"
    if rule == "memo_share" and math.isfinite(value):
        return "copies the training data" if value > SHARE_FLAG else "not copying"
    if floor is None or not math.isfinite(floor) or not math.isfinite(value):
        return "no floor"
    if rule == "none":
        return "no floor"
    if rule == "auc":
        hit = value > max(floor, 0.5) + AUC_MARGIN
    elif rule == "fraction":
        hit = value < floor - FRACTION_MARGIN
    elif floor <= 0:
        return "no floor"
    else:
        hit = value > FACTOR * floor
    return "distinguishable" if hit else "within noise"


def verdicts(metrics: dict[str, float], floors: dict[str, float]) -> dict[str, str]:
    """judge() of every metric against its floor; families without a verdict (per-class
    shares) left out."""
    return {
        name: judge(name, value, floors.get(name))
        for name, value in metrics.items()
        if not per_member_without_verdict(name)
    }


def per_member_without_verdict(name: str) -> bool:
    """A member of a family whose rule is "none" (eval/class_frac/<class>): too many lines to
    list in a verdict table, and none of them judged."""
    row = table.find(name)
    return row.members is not None and row.verdict == "none"
