"""A quantized artifact's own confidence: its temperature re-fitted on its own logits only when that helps on
images the fit did not see, then everything fitted at that temperature (conformal sets, OOD threshold, the
positive-class threshold for the checkpoint's target precision) by :func:`edgecls.runtime.confidence.refit_spec` —
the one fitting function training and export share.

INT8 moves logits a little. Whether that calls for another temperature is decided by held-out NLL, cross-fitted on
the selection split (:func:`crossfit_temperature`: K folds, the NLL-optimal temperature of the other folds scored on
each fold, against the checkpoint's temperature on the same images). The re-fit is kept only when it lowers that
held-out NLL; otherwise the artifact keeps the checkpoint's temperature — a re-fit on ~130 images adds its own
sampling noise, and a difference in temperature alone is not a difference in the model. The record says which.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RefitRecord:
    """What the re-fit changed, for ``parity.json``."""

    temperature_before: float
    temperature: float
    threshold_before: float
    threshold: float
    nll_before: float
    nll: float
    ece_before: float
    ece: float
    n: int
    source: str
    refitted: bool = False  # True: the cross-fitted NLL fell, the temperature moved; False: the checkpoint's kept
    nll_heldout_kept: float = float("nan")  # cross-fitted NLL at the checkpoint's temperature ...
    nll_heldout_refit: float = float("nan")  # ... and at the temperature fitted on the other folds

    def describe(self) -> str:
        if self.refitted:
            return (f"re-fitted {self.temperature_before:.3f} -> {self.temperature:.3f} (held-out NLL "
                    f"{self.nll_heldout_kept:.4f} -> {self.nll_heldout_refit:.4f}, {self.n} selection images)")
        why = (f"the re-fit does not lower held-out NLL: {self.nll_heldout_kept:.4f} vs {self.nll_heldout_refit:.4f}"
               if np.isfinite(self.nll_heldout_refit) else "re-fit switched off")
        return f"the checkpoint's {self.temperature:.3f} kept ({why}, {self.n} selection images)"

    def to_dict(self) -> Dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else None if isinstance(v, float)
                    else v) for k, v in self.__dict__.items()}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> Optional[float]:
    """The NLL-optimal temperature (:func:`edgecls.runtime.confidence.recalibrate.fit_temperature`); None when
    the images are perfectly separated (the NLL keeps falling as T → 0, so the fit says nothing about new images)."""
    from edgecls.runtime.confidence.recalibrate import fit_temperature as fit

    t, identifiable = fit(np.asarray(logits, np.float64), np.asarray(y, np.int64))
    return t if identifiable else None


def crossfit_temperature(logits: np.ndarray, y: np.ndarray, t_keep: float, folds: int = 5
                          ) -> Tuple[Optional[float], float, float]:
    """``(T, held-out NLL at t_keep, cross-fitted held-out NLL)``: T is the NLL fit on all images when the
    cross-fitted NLL (each fold scored at the temperature fitted on the others) is lower than at ``t_keep``, else
    None (keep ``t_keep``). Folds interleave the images (fold ``i % folds``)."""
    from edgecls.runtime import metrics as M

    z = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64).ravel()
    n = y.size
    k = max(2, min(int(folds), n))
    fold = np.arange(n) % k
    nll_keep = float(M.nll(M.softmax(z, t_keep), y))
    total = 0.0
    for f in range(k):
        train, test = fold != f, fold == f
        t = fit_temperature(z[train], y[train])
        total += float(M.nll(M.softmax(z[test], t if t is not None else t_keep), y[test])) * int(test.sum())
    nll_cv = total / n
    if nll_cv >= nll_keep:
        return None, nll_keep, nll_cv
    return fit_temperature(z, y), nll_keep, nll_cv


def refit_confidence(spec: ModelSpec, logits: Any, labels: Any, source: str = "") -> ModelSpec:
    """``spec`` with its temperature re-fitted on this artifact's ``logits`` for the labelled images ``labels``
    when that lowers the cross-fitted NLL (see the module), then its confidence (sets, OOD threshold, positive
    threshold) fitted at that temperature."""
    new, _ = refit_with_record(spec, logits, labels, source)
    return new


def refit_with_record(spec: ModelSpec, logits: Any, labels: Any, source: str = "",
                      refit_temperature: bool = True) -> Tuple[ModelSpec, RefitRecord]:
    """:func:`refit_confidence` and what it changed (``refit_temperature=False``: always keep the temperature)."""
    from edgecls.runtime import metrics as M
    from edgecls.runtime.confidence import refit_spec

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if spec.output != "logits":
        raise ValueError(f"refit_confidence needs a logits model, got output={spec.output!r}")
    if z.ndim != 2 or z.shape != (y.size, spec.num_classes) or not y.size:
        raise ValueError(f"logits {z.shape} and labels ({y.size},) do not match {spec.num_classes} classes")
    t_keep = float(spec.temperature)
    t, nll_keep, nll_cv = (None, float("nan"), float("nan"))
    if refit_temperature:
        t, nll_keep, nll_cv = crossfit_temperature(z, y, t_keep)
    refitted = t is not None
    new = refit_spec(spec.replace(temperature=float(t if refitted else t_keep)), z, y, source=source)
    p0, p1 = M.softmax(z, t_keep), M.softmax(z, new.temperature)
    record = RefitRecord(
        temperature_before=t_keep, temperature=float(new.temperature),
        threshold_before=float(spec.threshold), threshold=float(new.threshold),
        nll_before=float(M.nll(p0, y)), nll=float(M.nll(p1, y)),
        ece_before=float(M.expected_calibration_error(p0, y)), ece=float(M.expected_calibration_error(p1, y)),
        n=int(y.size), source=source, refitted=refitted, nll_heldout_kept=nll_keep, nll_heldout_refit=nll_cv,
    )
    return new, record
