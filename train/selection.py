"""What an epoch's val logits say: the report, the class-balanced val loss, the score the best epoch is chosen by,
and the calibration (temperature, threshold, conformal sets, unknown, precision guarantee) every saved checkpoint
carries.

Val is split in two (:func:`edgecls.train.calibrate.calibration_mask`, ``--calib-fraction``): epochs are judged on
the *selection* images only, and the calibration is fitted on the *calibration* images only.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from edgecls.runtime import metrics as M
from edgecls.runtime.spec import ModelSpec
from edgecls.train.calibrate import Calibration, calibrate
from edgecls.train.session import RunSetup


def weighted_ce(logits: np.ndarray, y: np.ndarray, weights: Optional[np.ndarray]) -> float:
    """Cross-entropy as torch computes it with ``weight=``: ``sum(w_y * nll) / sum(w_y)``."""
    if len(y) == 0:
        return float("nan")
    lp = M.log_softmax(logits)
    nll = -lp[np.arange(len(y)), y]
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)[y]
    return float(np.sum(w * nll) / np.sum(w))


def selection_score(report: M.ClassificationReport, select: str, val_loss: float,
                    pos_ap: Optional[float]) -> Tuple[float, ...]:
    """What "better" means: the recipe's metric, then (with a positive class) its average precision — the
    ranking the deployed threshold acts on — then the lower val loss."""
    main = report.balanced_accuracy if select == "balanced_accuracy" else report.macro_f1
    return (float(main), float(pos_ap) if pos_ap is not None else 0.0,
            -float(val_loss) if math.isfinite(val_loss) else -1e30)


@dataclass(frozen=True)
class ValJudgement:
    """One epoch on val (uncalibrated): the report, the class-weighted loss, the positive class's AP, the score."""

    report: M.ClassificationReport
    val_loss: float
    pos_index: Optional[int]  # the positive class's index, None without one
    pos_ap: Optional[float]
    score: Tuple[float, ...]


def split_of(setup: RunSetup, index: np.ndarray, calibration: bool) -> np.ndarray:
    """Positions in ``index`` (val item indices) of the calibration (or selection) images; all of them when the
    run calibrates on the selection images (``--calib-fraction 0``)."""
    if not setup.calibrating_apart:
        return np.arange(len(index))
    return np.nonzero(setup.calib_mask[index] == calibration)[0]


def judge(setup: RunSetup, logits: np.ndarray, index: np.ndarray) -> ValJudgement:
    """The epoch on the selection images (the calibration images never pick an epoch)."""
    keep = split_of(setup, index, calibration=False)
    logits, index = logits[keep], index[keep]
    y = setup.val_y[index]
    report = M.classification_report(y, M.softmax(logits), setup.classes)
    val_loss = weighted_ce(logits, y, setup.class_weights)  # balanced: imbalance cannot fool it
    pos = setup.config.positive
    pk = setup.classes.index(pos) if pos is not None else None
    pos_ap = None
    if pk is not None and np.any(y == pk):
        pos_ap = M.average_precision(M.softmax(logits)[:, pk], y == pk)
    return ValJudgement(report, val_loss, pk, pos_ap,
                        selection_score(report, setup.recipe.select, val_loss, pos_ap))


def calibrate_val(setup: RunSetup, logits: np.ndarray, index: np.ndarray, crossfit=None,
                  announce: bool = False) -> Calibration:
    """Temperature, threshold and confidence fitted on the calibration images of val — or, for the head-phase
    model (frozen backbone) with ``crossfit``, on the out-of-fold scores of every labelled image
    (:mod:`~edgecls.train.crossfit`). A fine-tuned model's scores on its own train images are never used."""
    from edgecls.runtime.confidence import ConfidenceSettings

    cfg = setup.config
    settings = ConfidenceSettings(coverage=cfg.coverage, target_precision=cfg.target_precision, delta=cfg.delta,
                                  best=cfg.best_promise)
    if crossfit is not None:
        return calibrate(crossfit.logits, crossfit.y, setup.classes, cfg.positive, cfg.target_precision,
                         settings=settings, source=crossfit.source(cfg.positive, setup.classes), honest=True,
                         announce=announce, ids=crossfit.ids or None)
    keep = split_of(setup, index, calibration=True)
    honest = setup.calibrating_apart
    source = (f"calibration split of val ({len(keep)} images, never used to pick the epoch), PyTorch checkpoint"
              if honest else f"val ({len(keep)} images, also used to pick the epoch: not an honest split)")
    ids = [os.path.realpath(setup.data.val[int(i)][0]) for i in index[keep]]
    return calibrate(logits[keep], setup.val_y[index[keep]], setup.classes, cfg.positive, cfg.target_precision,
                     settings=settings, source=source, honest=honest, announce=announce, ids=ids)


def split_summary(setup: RunSetup, index: np.ndarray) -> dict:
    """Which images did what, for the summary: train, epoch selection, calibration."""
    cal, sel = split_of(setup, index, calibration=True), split_of(setup, index, calibration=False)

    def count(pos: np.ndarray) -> dict:
        return {c: int(np.sum(setup.val_y[index[pos]] == k)) for k, c in enumerate(setup.classes)}

    return {
        "honest": setup.calibrating_apart,
        "calib_fraction": setup.config.calib_fraction,
        "train": "fits the weights (and the head's L2 by cross-validation)",
        "selection": {"images": len(sel), "counts": count(sel), "used_for": "picking the best epoch"},
        "calibration": {"images": len(cal), "counts": count(cal),
                        "used_for": "temperature, positive threshold and its guarantee, conformal sets, OOD threshold"
                        + ("" if setup.calibrating_apart else " (the same images as selection: not honest)"),
                        "paths": [setup.data.val[int(i)][0] for i in index[cal]]},
    }


def calibrated_report(setup: RunSetup, logits: np.ndarray, index: np.ndarray,
                      cal: Calibration) -> M.ClassificationReport:
    """The val report as deployed: calibrated scores, at the chosen threshold when there is a positive class."""
    pos = setup.config.positive
    return M.classification_report(
        setup.val_y[index], M.softmax(logits, cal.temperature), setup.classes, positive=pos,
        threshold=cal.spec_threshold if pos is not None else None,
    )


def model_spec(setup: RunSetup, cal: Calibration) -> ModelSpec:
    return ModelSpec(
        arch=setup.config.arch,
        classes=setup.classes,
        preprocess=setup.pspec,
        positive=setup.config.positive,
        temperature=cal.temperature,
        threshold=cal.spec_threshold,
        confidence=cal.confidence,
    )
