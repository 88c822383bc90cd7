"""What an epoch's val logits say: the report, the class-balanced val loss, the score the best epoch is chosen by,
and the calibration (temperature, threshold) every saved checkpoint carries.
"""
from __future__ import annotations

import math
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


def judge(setup: RunSetup, logits: np.ndarray, index: np.ndarray) -> ValJudgement:
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


def calibrate_val(setup: RunSetup, logits: np.ndarray, index: np.ndarray) -> Calibration:
    cfg = setup.config
    return calibrate(logits, setup.val_y[index], setup.classes, cfg.positive, cfg.target_precision)


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
    )
