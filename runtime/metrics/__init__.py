"""Classification metrics, numpy only: one implementation for training (val), ``edgecls eval`` and export.

Conventions (the same everywhere):

- ``probs`` are ``(N, C)`` class probabilities (already temperature-scaled by the caller if wanted), ``y_true``
  integer labels in ``[0, C)``. The top-1 prediction is ``argmax`` (first index on ties).
- Binary decisions for a positive class: predicted positive iff ``score >= threshold``.
- Precision with no predicted positives is reported as 0.0 (and the counts are given beside it); balanced
  accuracy and macro F1 average over the classes that occur in ``y_true`` (support > 0).
- ECE uses ``n_bins`` equal-width bins on the top-1 confidence, bin ``i`` = ``(i/n, (i+1)/n]`` (confidence 0
  falls in bin 0): ``ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|``.

Files: ``calibration.py`` (softmax, NLL, temperature, reliability, ECE), ``threshold.py`` (confusion matrix, binary
metrics, PR curve, threshold choice), ``report.py`` (the classification report); ``checks.py`` validates inputs.
"""
from __future__ import annotations

from edgecls.runtime.metrics.calibration import (
    expected_calibration_error,
    fit_temperature,
    log_softmax,
    nll,
    reliability_bins,
    softmax,
)
from edgecls.runtime.metrics.report import ClassificationReport, ClassMetrics, classification_report
from edgecls.runtime.metrics.threshold import (
    ThresholdChoice,
    average_precision,
    binary_metrics_at,
    confusion_matrix,
    pr_curve,
    threshold_for_precision,
)

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
