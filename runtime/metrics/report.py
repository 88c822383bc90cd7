"""The classification report: top-1 metrics per class, calibration and, for a positive class, binary metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.metrics.calibration import expected_calibration_error, nll
from edgecls.runtime.metrics.checks import as_labels, as_probs, div
from edgecls.runtime.metrics.threshold import average_precision, binary_metrics_at, confusion_matrix


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
    p = as_probs(probs)
    classes = tuple(str(c) for c in classes)
    if p.shape[1] != len(classes):
        raise ValueError(f"probs have {p.shape[1]} columns but {len(classes)} classes were given: {list(classes)}")
    y = as_labels(y_true, p.shape[0], len(classes))
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
        prec, rec = div(tp[k], predicted[k]), div(tp[k], support[k])
        f1 = div(2 * prec * rec, prec + rec)
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
        accuracy=div(tp.sum(), n),
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
