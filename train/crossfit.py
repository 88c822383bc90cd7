"""Cross-fitted head-phase scores: every labelled image (train + val) scored by a head that never saw it.

In the head phase the backbone is frozen: an image's features are not fitted to it, only the linear head is. So
the head is refitted ``K`` times on cached features (stratified folds over train + val, the same L2, class weights
and L-BFGS as the deployed head), and each image gets the logits of the head fitted without its fold. These
*out-of-fold* scores use every labelled positive (44 phones on ../shared/data/mobile instead of the 5 in half of
val) for the temperature, the threshold guarantee, the conformal scores and the unknown threshold.

What it promises (formally, and what rests on stability):

- Each out-of-fold score comes from a head that never saw that image, so it is honest in the way a held-out score
  is. But the ``K`` fold heads are not the deployed head (fitted on train only, ~the same number of images), and the
  scores of different folds come from different heads. The distribution-free result for this construction is
  CV+ / cross-conformal (Barber, Candès, Ramdas & Tibshirani 2021, "Predictive inference with the jackknife+",
  Ann. Statist. 49(1), Thm. 4; Vovk 2015, "Cross-conformal predictors"): coverage ``>= 1 - 2α - O(K/n)`` in the
  worst case when the test image is scored by the fold heads. Used with the one deployed head it is the
  "K-fold jackknife", whose ``1 - α`` holds under the algorithm's stability (Barber et al. 2021, §5): an
  L2-regularised logistic head on ~1,150 fixed features moves little when 1/K of its images change.
- The precision promise on these scores (Clopper–Pearson Learn-then-Test at δ) is therefore the split guarantee
  *under that stability*, not a worst-case one: ``bench/bench_promise.py`` measures it on 200+ re-samples of the
  mobile data, judged on images outside everything used (the failure rate must stay <= δ).
- The L2 was chosen by cross-validation on train before the folds (a hyper-parameter picked with all train labels);
  a fine-tuned backbone has seen its train images, so its scores on them are never used (:mod:`selection`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

FOLDS = 5
CLAIM = ("cross-fitted (K-fold jackknife; CV+/cross-conformal, Barber et al. 2021: >= 1-2a worst case for the fold "
         "ensemble, ~1-a for the deployed head under stability, measured by bench/bench_promise.py)")


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold logits of every labelled image of the run (train then val), their labels and the folds."""

    logits: np.ndarray  # (N, C) float64
    y: np.ndarray  # (N,) int64
    folds: int
    n_train: int
    n_val: int
    ids: Tuple[str, ...] = ()  # the images' real paths (train then val): calibrate counts an image once

    @property
    def n(self) -> int:
        return int(self.y.size)

    def source(self, positive: Optional[str] = None, classes=()) -> str:
        pos = ""
        if positive is not None and positive in classes:
            pos = f", {int(np.sum(self.y == list(classes).index(positive)))} {positive!r}"
        return (f"cross-fitted head phase: out-of-fold scores of all {self.n} labelled images ({self.n_train} train + "
                f"{self.n_val} val{pos}), {self.folds} folds, frozen backbone; {CLAIM}")

    def to_state(self) -> Dict[str, Any]:
        return {"logits": self.logits.astype(np.float32).tolist(), "y": self.y.tolist(), "folds": self.folds,
                "n_train": self.n_train, "n_val": self.n_val, "ids": list(self.ids)}

    @classmethod
    def from_state(cls, d: Optional[Dict[str, Any]]) -> Optional[CrossFit]:
        if not d:
            return None
        return cls(np.asarray(d["logits"], dtype=np.float64), np.asarray(d["y"], dtype=np.int64), int(d["folds"]),
                   int(d["n_train"]), int(d["n_val"]), tuple(d.get("ids") or ()))


def out_of_fold_logits(feats: np.ndarray, y: np.ndarray, num_classes: int, l2: float, folds: int, seed: int,
                       balanced: bool, max_iter: int) -> np.ndarray:
    """``(N, C)`` logits, each row from a head fitted (as the deployed one: class weights of its own images, ``l2``,
    L-BFGS) on the other folds. Folds are stratified (:func:`~edgecls.train.linear_head._stratified_folds`)."""
    from edgecls.train.data import class_weights
    from edgecls.train.linear_head import _stratified_folds, fit_linear_head

    fold = _stratified_folds(y, num_classes, folds, seed)
    oof = np.zeros((len(y), num_classes), dtype=np.float64)
    for f in range(folds):
        tr = fold != f
        w = class_weights(np.bincount(y[tr], minlength=num_classes)) if balanced else None
        W, b = fit_linear_head(feats[tr], y[tr], num_classes, w, l2, max_iter)
        oof[~tr] = feats[~tr].astype(np.float64) @ W.T.astype(np.float64) + b
    return oof


def crossfit_head(feats_tr: np.ndarray, y_tr: np.ndarray, feats_va: np.ndarray, y_va: np.ndarray, num_classes: int,
                  l2: float, seed: int, balanced: bool, max_iter: int, folds: int = FOLDS) -> Optional[CrossFit]:
    """The :class:`CrossFit` of a head phase, or None when a class has fewer images than folds (logged)."""
    feats = np.concatenate([feats_tr, feats_va]).astype(np.float32)
    y = np.concatenate([y_tr, y_va]).astype(np.int64)
    counts = np.bincount(y, minlength=num_classes)
    k = int(min(folds, counts.min()))
    if k < 2:
        log.info("no cross-fitted scores: a class has fewer than 2 labelled images")
        return None
    oof = out_of_fold_logits(feats, y, num_classes, l2, k, seed + 101, balanced, max_iter)
    return CrossFit(oof, y, k, int(len(y_tr)), int(len(y_va)))
