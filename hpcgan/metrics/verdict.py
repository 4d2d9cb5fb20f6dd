"""Is a metric's value distinguishable from its noise floor? The rule of the verdict table
(docs/evaluation.md, "Verdict"):
  eval/c2st_auc                distinguishable when AUC > max(floor, 0.5) + AUC_MARGIN
  eval/precision, eval/recall  distinguishable when value < floor - FRACTION_MARGIN
  every other distance         distinguishable when value > FACTOR x floor
  eval/memo_ratio, eval/memo_copy_share  "copies the training data" past memorisation's flags
A metric without a positive, finite floor (or a per-class share, or coverage) gets no verdict.
"""

from __future__ import annotations

import math

from hpcgan.metrics.memorisation import RATIO_FLAG, SHARE_FLAG

AUC_MARGIN = 0.05
FRACTION_MARGIN = 0.1
FACTOR = 3.0
FRACTIONS = ("eval/precision", "eval/recall")
NO_VERDICT = ("eval/coverage_min", "/class_frac/")


def judge(name: str, value: float, floor: float | None) -> str:
    """'distinguishable', 'within noise' or 'no floor' (memorisation: 'copies the training
    data' or 'not copying')."""
    if name == "eval/memo_ratio" and math.isfinite(value):  # its floor is 1 by construction
        return "copies the training data" if value < RATIO_FLAG else "not copying"
    if name == "eval/memo_copy_share" and math.isfinite(value):
        return "copies the training data" if value > SHARE_FLAG else "not copying"
    if floor is None or not math.isfinite(floor) or not math.isfinite(value):
        return "no floor"
    if any(part in name for part in NO_VERDICT):
        return "no floor"
    if name == "eval/c2st_auc":
        hit = value > max(floor, 0.5) + AUC_MARGIN
    elif name in FRACTIONS:
        hit = value < floor - FRACTION_MARGIN
    elif floor <= 0:
        return "no floor"
    else:
        hit = value > FACTOR * floor
    return "distinguishable" if hit else "within noise"


def verdicts(metrics: dict[str, float], floors: dict[str, float]) -> dict[str, str]:
    """judge() of every metric against its floor (per-class shares left out)."""
    return {
        name: judge(name, value, floors.get(name))
        for name, value in metrics.items()
        if "/class_frac/" not in name
    }
