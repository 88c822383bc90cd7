"""Counting and the binary decision ``score >= threshold``: confusion matrix, precision/recall, PR curve, AP, and
the threshold that reaches a target precision."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from edgecls.runtime.metrics.checks import as_binary, as_labels, div


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class."""
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = as_labels(y_true, len(np.asarray(y_true)), num_classes, "y_true")
    p = as_labels(y_pred, t.shape[0], num_classes, "y_pred")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# ------------------------------------------------------------------------------------- binary / threshold


def binary_metrics_at(scores: Any, y_binary: Any, threshold: float) -> Dict[str, Any]:
    """Counts and rates of the decision ``score >= threshold`` against ``y_binary``."""
    s, y = as_binary(scores, y_binary)
    pred = s >= float(threshold)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": div(2 * precision * recall, precision + recall),
        "false_positive_rate": div(fp, fp + tn),
        "support": tp + fn,
    }


def pr_curve(scores: Any, y_binary: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``score >= t`` for every distinct score ``t`` (ascending thresholds).

    All three arrays have one entry per distinct score; recall is non-increasing along them. With no positives
    in ``y_binary`` recall is 0 everywhere.
    """
    s, y = as_binary(scores, y_binary)
    if s.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    tps = np.cumsum(y_desc)
    fps = np.cumsum(~y_desc)
    last = np.r_[np.nonzero(np.diff(s_desc))[0], s_desc.size - 1]  # last index of each distinct score
    tp, fp, thr = tps[last].astype(np.float64), fps[last].astype(np.float64), s_desc[last]
    pos = float(y.sum())
    precision = tp / (tp + fp)
    recall = tp / pos if pos else np.zeros_like(tp)
    return precision[::-1].copy(), recall[::-1].copy(), thr[::-1].copy()


def average_precision(scores: Any, y_binary: Any) -> float:
    """Area under the PR curve as the step sum ``sum (R_k - R_{k-1}) P_k`` (sklearn's definition)."""
    precision, recall, _ = pr_curve(scores, y_binary)
    if not recall.size or recall[0] == 0:
        return 0.0
    p, r = precision[::-1], recall[::-1]  # descending thresholds: recall increasing
    return float(np.sum(np.diff(np.r_[0.0, r]) * p))


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold on the positive score and what it achieves on the data it was chosen on."""

    threshold: float
    precision: float
    recall: float
    achieved: bool
    target_precision: float = float("nan")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "achieved": self.achieved,
            "target_precision": self.target_precision,
        }


def threshold_for_precision(scores: Any, y_binary: Any, target_precision: float) -> ThresholdChoice:
    """The smallest threshold whose precision is ``>= target_precision`` (so the one with the most recall).

    When no threshold reaches the target, returns the one with the best precision (the smallest of those on
    ties) with ``achieved=False``. Needs at least one positive sample.
    """
    target = float(target_precision)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target_precision must be in [0, 1], got {target_precision!r}")
    precision, recall, thr = pr_curve(scores, y_binary)
    if not thr.size or not np.any(np.asarray(y_binary).astype(bool)):
        raise ValueError("threshold_for_precision needs at least one positive sample")
    ok = np.nonzero(precision >= target - 1e-12)[0]
    if ok.size:
        i, achieved = int(ok[0]), True
    else:
        i, achieved = int(np.argmax(precision)), False  # argmax: first (smallest threshold) on ties
    return ThresholdChoice(float(thr[i]), float(precision[i]), float(recall[i]), achieved, target)


# ------------------------------------------------------------------------------------------------ report
