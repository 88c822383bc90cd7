"""Classification metrics, numpy only: one implementation for training (val), ``edgecls eval`` and export.

Conventions (the same everywhere):

- ``probs`` are ``(N, C)`` class probabilities (already temperature-scaled by the caller if wanted), ``y_true``
  integer labels in ``[0, C)``. The top-1 prediction is ``argmax`` (first index on ties).
- Binary decisions for a positive class: predicted positive iff ``score >= threshold``.
- Precision with no predicted positives is reported as 0.0 (and the counts are given beside it); balanced
  accuracy and macro F1 average over the classes that occur in ``y_true`` (support > 0).
- ECE uses ``n_bins`` equal-width bins on the top-1 confidence, bin ``i`` = ``(i/n, (i+1)/n]`` (confidence 0
  falls in bin 0): ``ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "ClassMetrics",
    "ClassificationReport",
    "ThresholdChoice",
    "average_precision",
    "binary_metrics_at",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_temperature",
    "log_softmax",
    "nll",
    "pr_curve",
    "reliability_bins",
    "softmax",
    "threshold_for_precision",
]


# ----------------------------------------------------------------------------------------------- validation


def _as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _as_probs(probs: Any) -> np.ndarray:
    p = _as_logits(probs, "probs")
    if p.size and (p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise ValueError(f"probs must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}] (logits passed?)")
    return p


def _as_labels(y: Any, n: int, num_classes: Optional[int] = None, name: str = "y_true") -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
    a = a.astype(np.int64)
    if num_classes is not None and a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): min {a.min()}, max {a.max()}")
    return a


def _as_binary(scores: Any, y_binary: Any) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    y = np.asarray(y_binary)
    if y.shape != s.shape:
        raise ValueError(f"y_binary must have the shape of scores {s.shape}, got {y.shape}")
    yb = y.astype(bool)
    if not np.array_equal(yb.astype(np.float64), y.astype(np.float64)):
        raise ValueError("y_binary must hold only 0/1 (or booleans)")
    return s, yb


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


# ------------------------------------------------------------------------------------------ probabilities


def log_softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable ``log softmax(logits / temperature)`` in float64."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = _as_logits(logits) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row-wise, float64 ``(N, C)``."""
    return np.exp(log_softmax(logits, temperature))


def nll(probs: Any, y_true: Any) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12)."""
    p = _as_probs(probs)
    y = _as_labels(y_true, p.shape[0], p.shape[1])
    if not p.shape[0]:
        return 0.0
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def _nll_logits(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    lp = log_softmax(logits, temperature)
    return float(-np.mean(lp[np.arange(len(y)), y]))


def fit_temperature(
    logits: Any, y_true: Any, bounds: Tuple[float, float] = (0.05, 20.0), grid: int = 81, tol: float = 1e-5
) -> float:
    """The temperature ``T`` minimizing the NLL of ``softmax(logits / T)`` on ``(logits, y_true)``.

    Deterministic and derivative-free: a log-spaced grid over ``bounds`` finds the best bracket, then a
    golden-section search on ``log T`` refines it to ``tol`` (relative). If the NLL keeps falling towards a bound
    (e.g. perfectly separated data wants ``T → 0``) the bound is returned.
    """
    x = _as_logits(logits)
    y = _as_labels(y_true, x.shape[0], x.shape[1])
    if x.shape[0] == 0:
        raise ValueError("fit_temperature needs at least one sample")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    logs = np.linspace(math.log(lo), math.log(hi), int(max(grid, 3)))
    values = np.array([_nll_logits(x, y, math.exp(t)) for t in logs])
    i = int(np.argmin(values))
    a, b = logs[max(i - 1, 0)], logs[min(i + 1, len(logs) - 1)]
    f = lambda t: _nll_logits(x, y, math.exp(t))  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    best_t, best_v = (c, fc) if fc <= fd else (d, fd)
    if values[i] <= best_v:  # the grid point itself (e.g. at a bound) is as good as the refined interior
        best_t = logs[i]
    return float(math.exp(best_t))


# ------------------------------------------------------------------------------------------- calibration


def reliability_bins(probs: Any, y_true: Any, n_bins: int = 15) -> Dict[str, Any]:
    """Per-bin top-1 accuracy and mean confidence (equal-width bins), JSON-able.

    Returns ``{"n_bins", "edges" (n_bins+1), "count", "accuracy", "confidence", "ece"}``; ``accuracy`` and
    ``confidence`` are ``None`` for empty bins.
    """
    p = _as_probs(probs)
    y = _as_labels(y_true, p.shape[0], p.shape[1])
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bin i holds (i/n, (i+1)/n]; ceil(conf*n)-1, with conf == 0 in bin 0
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    n = max(int(count.sum()), 1)
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / n)
    acc = [None if c == 0 else float(s / c) for s, c in zip(acc_sum, count)]
    cmean = [None if c == 0 else float(s / c) for s, c in zip(conf_sum, count)]
    return {
        "n_bins": n_bins,
        "edges": [i / n_bins for i in range(n_bins + 1)],
        "count": [int(c) for c in count],
        "accuracy": acc,
        "confidence": cmean,
        "ece": ece,
    }


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence with ``n_bins`` equal-width bins (0 = perfectly calibrated)."""
    return reliability_bins(probs, y_true, n_bins)["ece"]


# ---------------------------------------------------------------------------------------------- counting


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class."""
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = _as_labels(y_true, len(np.asarray(y_true)), num_classes, "y_true")
    p = _as_labels(y_pred, t.shape[0], num_classes, "y_pred")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# ------------------------------------------------------------------------------------- binary / threshold


def binary_metrics_at(scores: Any, y_binary: Any, threshold: float) -> Dict[str, Any]:
    """Counts and rates of the decision ``score >= threshold`` against ``y_binary``."""
    s, y = _as_binary(scores, y_binary)
    pred = s >= float(threshold)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": _div(2 * precision * recall, precision + recall),
        "false_positive_rate": _div(fp, fp + tn),
        "support": tp + fn,
    }


def pr_curve(scores: Any, y_binary: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``score >= t`` for every distinct score ``t`` (ascending thresholds).

    All three arrays have one entry per distinct score; recall is non-increasing along them. With no positives
    in ``y_binary`` recall is 0 everywhere.
    """
    s, y = _as_binary(scores, y_binary)
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


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "support": self.support}


@dataclass(frozen=True)
class ClassificationReport:
    """Everything ``edgecls eval`` and training's validation report, JSON-able via :meth:`to_dict`.

    ``positive_metrics`` is :func:`binary_metrics_at` of the positive class's probability at ``threshold``
    (plus ``average_precision``), present when both ``positive`` and ``threshold`` were given.
    """

    classes: Tuple[str, ...]
    n: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    per_class: Tuple[ClassMetrics, ...]
    confusion: Tuple[Tuple[int, ...], ...]
    ece: float
    nll: float
    positive: Optional[str] = None
    threshold: Optional[float] = None
    positive_metrics: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "classes": list(self.classes),
            "n": self.n,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
            "per_class": [c.to_dict() for c in self.per_class],
            "confusion": [list(r) for r in self.confusion],
            "ece": self.ece,
            "nll": self.nll,
            "positive": self.positive,
            "threshold": self.threshold,
            "positive_metrics": dict(self.positive_metrics) if self.positive_metrics is not None else None,
        }

    def table(self) -> str:
        """A plain-text report for a terminal: summary, per-class table, confusion matrix (rows = true)."""
        names = list(self.classes)
        w = max(8, max(len(c) for c in names))
        lines: List[str] = [
            f"samples {self.n}   accuracy {self.accuracy:.4f}   balanced accuracy {self.balanced_accuracy:.4f}   "
            f"macro F1 {self.macro_f1:.4f}   ECE {self.ece:.4f}   NLL {self.nll:.4f}",
            "",
            f"{'class':<{w}}  {'precision':>9}  {'recall':>7}  {'f1':>7}  {'support':>7}",
        ]
        for c in self.per_class:
            lines.append(f"{c.name:<{w}}  {c.precision:>9.4f}  {c.recall:>7.4f}  {c.f1:>7.4f}  {c.support:>7d}")
        cw = max(6, max(len(c) for c in names), max(len(str(v)) for r in self.confusion for v in r))
        lines += ["", "confusion matrix (rows = true, columns = predicted)",
                  f"{'':<{w}}  " + "  ".join(f"{c:>{cw}}" for c in names)]
        for name, row in zip(names, self.confusion):
            lines.append(f"{name:<{w}}  " + "  ".join(f"{v:>{cw}d}" for v in row))
        if self.positive_metrics is not None:
            m = self.positive_metrics
            lines += [
                "",
                f"positive class {self.positive!r} at threshold {self.threshold:.4f}: precision {m['precision']:.4f}"
                f"  recall {m['recall']:.4f}  f1 {m['f1']:.4f}  (tp {m['tp']}, fp {m['fp']}, fn {m['fn']}, "
                f"tn {m['tn']})  average precision {m['average_precision']:.4f}",
            ]
        return "\n".join(lines)


def classification_report(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    positive: Optional[str] = None,
    threshold: Optional[float] = None,
    n_bins: int = 15,
) -> ClassificationReport:
    """Top-1 (argmax) metrics, calibration (ECE, NLL) and, for ``positive`` at ``threshold``, binary metrics."""
    p = _as_probs(probs)
    classes = tuple(str(c) for c in classes)
    if p.shape[1] != len(classes):
        raise ValueError(f"probs have {p.shape[1]} columns but {len(classes)} classes were given: {list(classes)}")
    y = _as_labels(y_true, p.shape[0], len(classes))
    if positive is not None and positive not in classes:
        raise ValueError(f"positive class {positive!r} is not one of {list(classes)}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, len(classes))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    per_class = []
    f1s = []
    recalls = []
    for k, name in enumerate(classes):
        prec, rec = _div(tp[k], predicted[k]), _div(tp[k], support[k])
        f1 = _div(2 * prec * rec, prec + rec)
        per_class.append(ClassMetrics(name, prec, rec, f1, int(support[k])))
        if support[k] > 0:
            f1s.append(f1)
            recalls.append(rec)
    n = int(p.shape[0])
    positive_metrics = None
    if positive is not None and threshold is not None and n:
        k = classes.index(positive)
        positive_metrics = binary_metrics_at(p[:, k], y == k, float(threshold))
        positive_metrics["average_precision"] = average_precision(p[:, k], y == k)
    return ClassificationReport(
        classes=classes,
        n=n,
        accuracy=_div(tp.sum(), n),
        balanced_accuracy=float(np.mean(recalls)) if recalls else 0.0,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        per_class=tuple(per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        ece=expected_calibration_error(p, y, n_bins) if n else 0.0,
        nll=nll(p, y) if n else 0.0,
        positive=positive,
        threshold=None if threshold is None else float(threshold),
        positive_metrics=positive_metrics,
    )
