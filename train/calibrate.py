"""Confidence after training: a temperature fitted on val, and a threshold for the positive class.

Both use ``edgecls.runtime.metrics`` (the one metrics implementation), on the validation logits of the model
being saved. The results go into the :class:`~edgecls.runtime.spec.ModelSpec` stored in the checkpoint.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

from edgecls.runtime import metrics as M

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    positive: Optional[str] = None
    threshold: Optional[M.ThresholdChoice] = None

    @property
    def spec_threshold(self) -> float:
        """The threshold for the ModelSpec (0.5 when there is no positive class)."""
        return float(self.threshold.threshold) if self.threshold is not None else 0.5

    def to_dict(self) -> Dict[str, Any]:
        return {
            "temperature": self.temperature,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
            "positive": self.positive,
            "threshold": self.threshold.to_dict() if self.threshold is not None else None,
        }


def calibrate(
    logits: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    positive: Optional[str] = None,
    target_precision: float = 0.95,
) -> Calibration:
    """Fit the temperature on ``(logits, y)``; for ``positive``, the threshold reaching ``target_precision``."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    p1 = M.softmax(logits)
    t = float(M.fit_temperature(logits, y))
    pt = M.softmax(logits, t)
    choice = None
    if positive is not None:
        k = list(classes).index(positive)
        if not np.any(y == k):
            log.warning("no %r images in val: threshold left at 0.5", positive)
        else:
            choice = M.threshold_for_precision(pt[:, k], y == k, target_precision)
            if not choice.achieved:
                log.warning(
                    "no threshold reaches precision %.3f for %r on val; using the most precise one %.4f "
                    "(precision %.3f, recall %.3f)",
                    target_precision, positive, choice.threshold, choice.precision, choice.recall,
                )
    cal = Calibration(
        temperature=t,
        ece_before=float(M.expected_calibration_error(p1, y)),
        ece_after=float(M.expected_calibration_error(pt, y)),
        nll_before=float(M.nll(p1, y)),
        nll_after=float(M.nll(pt, y)),
        positive=positive,
        threshold=choice,
    )
    log.info(
        "temperature %.4f: ECE %.4f -> %.4f, NLL %.4f -> %.4f", t, cal.ece_before, cal.ece_after,
        cal.nll_before, cal.nll_after,
    )
    return cal
