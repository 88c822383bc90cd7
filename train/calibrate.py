"""Confidence after training, fitted on images that did not select the model (honest splits).

Val is split once per run (per class, seeded, :func:`calibration_mask`): the **selection** images judge every
epoch and pick the best one; the **calibration** images (``--calib-fraction`` of val, default half) fit what the
checkpoint carries about its confidence — the temperature, the conformal scores, the OOD threshold and, with a
positive class, the threshold with its precision guarantee (:mod:`edgecls.runtime.confidence`, the same fitting
function export runs for every artifact). ``--calib-fraction 0`` fits them on the selection images as before,
and the summary says the split is not honest.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

from edgecls.runtime import metrics as M
from edgecls.runtime.confidence import ConfidenceSettings, ConfidenceSpec, fit_confidence

log = logging.getLogger(__name__)


def calibration_mask(y: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """Which val images (``y``: their labels) form the calibration split: per class, ``round(n * fraction)`` chosen
    at random with ``seed``, leaving at least one for selection when the class has two or more."""
    y = np.asarray(y, dtype=np.int64)
    mask = np.zeros(y.size, dtype=bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng([int(seed), 13])
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        k = int(np.floor(idx.size * float(fraction) + 0.5))
        k = min(k, idx.size - 1) if idx.size >= 2 else k
        mask[idx[rng.permutation(idx.size)[:k]]] = True
    return mask


@dataclass(frozen=True)
class Calibration:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    positive: Optional[str] = None
    threshold: Optional[M.ThresholdChoice] = None  # the deployed threshold and what it does on the calibration images
    confidence: Optional[ConfidenceSpec] = None
    images: int = 0  # calibration images
    honest: bool = True  # fitted on images that did not select the model

    @property
    def spec_threshold(self) -> float:
        """The threshold for the ModelSpec (0.5 when there is no positive class)."""
        return float(self.threshold.threshold) if self.threshold is not None else 0.5

    @property
    def statement(self) -> Optional[str]:
        g = self.confidence.guarantee if self.confidence is not None else None
        return g.statement() if g is not None else None

    def to_dict(self) -> Dict[str, Any]:
        conf = self.confidence.to_dict() if self.confidence is not None else None
        if conf and conf.get("conformal"):  # the scores live in the spec; the summary keeps the fitted numbers
            conf["conformal"] = {k: v for k, v in conf["conformal"].items() if k != "scores"}
        if conf:
            conf.pop("scores", None)
        return {
            "temperature": self.temperature,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
            "positive": self.positive,
            "threshold": self.threshold.to_dict() if self.threshold is not None else None,
            "images": self.images,
            "honest": self.honest,
            "confidence": conf,
        }


def fit_temperature(logits: np.ndarray, y: np.ndarray, announce: bool = True) -> float:
    from edgecls.runtime.confidence.recalibrate import fit_temperature as fit

    t, identifiable = fit(logits, y)
    if not identifiable:
        # the NLL keeps falling as T -> 0: the images are perfectly separated. Such a temperature only saturates
        # every probability to 0/1 (and the positive threshold with it), it says nothing about new images.
        log.log(logging.WARNING if announce else logging.DEBUG, "the calibration images are perfectly separated: "
                "the temperature is not identifiable; keeping T = 1")
    return t


def calibrate(
    logits: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    positive: Optional[str] = None,
    target_precision: float = 0.95,
    settings: Optional[ConfidenceSettings] = None,
    source: str = "",
    honest: bool = True,
    announce: bool = True,
    ids: Optional[Sequence[str]] = None,
) -> Calibration:
    """Fit the temperature on ``(logits, y)``, then the confidence the checkpoint carries (sets, OOD threshold and,
    for ``positive``, the threshold with its guarantee for ``target_precision`` — or the visible fallback).

    ``announce``: log the fit and the promise (or its refusal) — once per run, for the model the run ends with;
    the per-epoch calibrations of the checkpoints are logged at debug level."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if not y.size:
        raise ValueError("calibration needs at least one image")
    settings = settings or ConfidenceSettings(target_precision=target_precision)
    p1 = M.softmax(logits)
    t = fit_temperature(logits, y, announce)
    pt = M.softmax(logits, t)
    conf = fit_confidence(logits, y, classes, temperature=t, positive=positive, settings=settings, source=source,
                          ids=ids)
    choice = None
    level = logging.WARNING if announce else logging.DEBUG
    g = conf.guarantee
    if g is not None:
        if g.positives == 0:
            log.log(level, "no %r images among the calibration images: threshold left at 0.5", positive)
        elif announce:
            log.log(logging.INFO if g.certified else logging.WARNING, "%s", g.statement())
        choice = M.ThresholdChoice(g.threshold, g.precision, g.recall, g.precision >= g.target - 1e-12, g.target)
    cal = Calibration(
        temperature=t,
        ece_before=float(M.expected_calibration_error(p1, y)),
        ece_after=float(M.expected_calibration_error(pt, y)),
        nll_before=float(M.nll(p1, y)),
        nll_after=float(M.nll(pt, y)),
        positive=positive,
        threshold=choice,
        confidence=conf,
        images=int(y.size),
        honest=honest,
    )
    log.log(logging.INFO if announce else logging.DEBUG, "temperature %.4f: ECE %.4f -> %.4f, NLL %.4f -> %.4f (%d calibration images)", t, cal.ece_before,
             cal.ece_after, cal.nll_before, cal.nll_after, y.size)
    return cal
