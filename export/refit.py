"""A quantized artifact's own confidence: its temperature re-fitted on its own logits, then everything fitted at
that temperature (conformal sets, OOD threshold, the positive-class threshold for the checkpoint's target
precision) by :func:`edgecls.runtime.confidence.refit_spec` — the one fitting function training and export share.

INT8 moves logits (a little, and not uniformly): the checkpoint's temperature fitted on the PyTorch logits no
longer states the artifact's confidence. :func:`refit_confidence` is the one place an artifact's confidence is
re-fitted from held-out images (the *selection* split, never the images the export reports on); extend it rather
than adding a second fit.

The temperature, given PyTorch's logits for the same images (``reference_logits``), is the one whose
probabilities come closest to the checkpoint's calibrated ones (least mean KL): the checkpoint's temperature was
fitted on labelled images by NLL, and this carries that calibration over — a faithful artifact keeps it, an
artifact whose logits shrank or grew gets it corrected — without a second NLL fit on half the images adding its own
sampling noise. Without reference logits, the temperature is the NLL fit on the labels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

T_BOUNDS = (0.05, 20.0)


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
    identifiable: bool = True
    method: str = "match"  # match: PyTorch's calibrated probabilities (least KL); nll: the labels

    def to_dict(self) -> Dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def match_temperature(logits: np.ndarray, reference_logits: np.ndarray, reference_temperature: float) -> float:
    """The temperature T minimising mean KL(softmax(reference / T_ref) || softmax(logits / T))."""
    from edgecls.runtime.metrics.calibration import argmin_on_interval, log_softmax

    z = np.asarray(logits, np.float64)
    lp = log_softmax(np.asarray(reference_logits, np.float64), reference_temperature)
    p = np.exp(lp)

    def kl(log_t: float) -> float:
        return float(np.mean(np.sum(p * (lp - log_softmax(z, float(np.exp(log_t)))), axis=1)))

    return float(np.exp(argmin_on_interval(kl, np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]), grid=61)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> Optional[float]:
    """The NLL-optimal temperature in ``T_BOUNDS``; None when the images are perfectly separated (the NLL keeps
    falling as T → 0, so the fit says nothing about new images)."""
    from edgecls.runtime import metrics as M

    t = float(M.fit_temperature(np.asarray(logits, np.float64), np.asarray(y, np.int64), bounds=T_BOUNDS))
    if t <= T_BOUNDS[0] * 1.001 and t < 1.0:
        return None
    return t


def refit_confidence(spec: ModelSpec, logits: Any, labels: Any, source: str = "",
                     reference_logits: Any = None, reference_temperature: Optional[float] = None) -> ModelSpec:
    """``spec`` with the temperature re-fitted on this artifact's ``logits`` for the labelled images ``labels``
    (matched to PyTorch's calibrated probabilities when ``reference_logits`` are given, see the module), then its
    confidence (sets, OOD threshold, positive threshold) fitted at that temperature."""
    new, _ = refit_with_record(spec, logits, labels, source, reference_logits, reference_temperature)
    return new


def refit_with_record(spec: ModelSpec, logits: Any, labels: Any, source: str = "", reference_logits: Any = None,
                      reference_temperature: Optional[float] = None) -> tuple[ModelSpec, RefitRecord]:
    """:func:`refit_confidence` and what it changed."""
    from edgecls.runtime import metrics as M
    from edgecls.runtime.confidence import refit_spec

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if spec.output != "logits":
        raise ValueError(f"refit_confidence needs a logits model, got output={spec.output!r}")
    if z.ndim != 2 or z.shape != (y.size, spec.num_classes) or not y.size:
        raise ValueError(f"logits {z.shape} and labels ({y.size},) do not match {spec.num_classes} classes")
    if reference_logits is not None:
        t_ref = spec.temperature if reference_temperature is None else float(reference_temperature)
        t: Optional[float] = match_temperature(z, np.asarray(reference_logits), t_ref)
    else:
        t = fit_temperature(z, y)
    identifiable = t is not None
    if t is None:
        log.warning("%s: the images are perfectly separated; the temperature is not identifiable, keeping %.4f",
                    source or "refit", spec.temperature)
        t = spec.temperature
    new = refit_spec(spec.replace(temperature=float(t)), z, y, source=source)
    p0, p1 = M.softmax(z, spec.temperature), M.softmax(z, new.temperature)
    record = RefitRecord(
        temperature_before=float(spec.temperature), temperature=float(new.temperature),
        threshold_before=float(spec.threshold), threshold=float(new.threshold),
        nll_before=float(M.nll(p0, y)), nll=float(M.nll(p1, y)),
        ece_before=float(M.expected_calibration_error(p0, y)), ece=float(M.expected_calibration_error(p1, y)),
        n=int(y.size), source=source, identifiable=identifiable,
        method="match" if reference_logits is not None else "nll",
    )
    return new, record
