"""Confidence after training: a temperature fitted on val, and a threshold for the positive class.

Both use ``edgecls.runtime.metrics`` (the one metrics implementation), on the validation logits of the model
being saved. The results go into the :class:`~edgecls.runtime.spec.ModelSpec` stored in the checkpoint.
"""
from __future__ import annotations

import dataclasses
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


T_BOUNDS = (0.05, 20.0)


def _with_margin(choice: M.ThresholdChoice, scores: np.ndarray) -> M.ThresholdChoice:
    """Move the threshold from the lowest accepted val score to midway between it and the highest rejected one.

    Every val decision (so the precision and recall reported) stays the same; new images get a margin instead of
    a threshold sitting exactly on one val image's score.
    """
    below = scores[scores < choice.threshold]
    low = float(below.max()) if below.size else 0.0
    return dataclasses.replace(choice, threshold=(low + float(choice.threshold)) / 2.0)


def calibrate(
    logits: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    positive: Optional[str] = None,
    target_precision: float = 0.95,
) -> Calibration:
    """Fit the temperature on ``(logits, y)``; for ``positive``, the threshold reaching ``target_precision``.

    The threshold is on the calibrated positive probability (``softmax(logits / T)[:, positive]``), the same
    score the runtime thresholds; among the thresholds with the same val decisions the midpoint is taken.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    p1 = M.softmax(logits)
    t = float(M.fit_temperature(logits, y, bounds=T_BOUNDS))
    if t <= T_BOUNDS[0] * 1.001 and t < 1.0:
        # the NLL keeps falling as T -> 0: val is perfectly separated. Such a temperature only saturates every
        # probability to 0/1 (and the positive threshold with it), it says nothing about new images: keep T = 1.
        log.warning("val is perfectly separated: the temperature is not identifiable (fit ran to %.3g); keeping "
                    "T = 1", t)
        t = 1.0
    pt = M.softmax(logits, t)
    choice = None
    if positive is not None:
        k = list(classes).index(positive)
        if not np.any(y == k):
            log.warning("no %r images in val: threshold left at 0.5", positive)
        else:
            choice = _with_margin(M.threshold_for_precision(pt[:, k], y == k, target_precision), pt[:, k])
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
