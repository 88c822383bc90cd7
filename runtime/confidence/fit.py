"""Fit an artifact's confidence from its own outputs on labelled calibration images — the one function training
(on the checkpoint's logits) and export (on every artifact's: FP32, FP16, INT8, variants, TensorRT engines) call.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from edgecls.runtime.confidence.conformal import ConformalFit
from edgecls.runtime.confidence.fitted import ConfidenceSettings, ConfidenceSpec
from edgecls.runtime.confidence.guarantee import best_promise, certify_threshold, with_best
from edgecls.runtime.confidence.ood import OODFit, ood_scores

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


def probabilities(outputs: Any, output: str, temperature: float) -> np.ndarray:
    """The runtime's probabilities: ``softmax(logits / T)``, or the outputs as they are for a ``probs`` model."""
    from edgecls.runtime.metrics import softmax

    z = np.asarray(outputs, dtype=np.float64)
    if output == "probs":
        return z
    return softmax(z, temperature)


def fit_confidence(
    outputs: Any, y: Any, classes: Sequence[str], *, temperature: float, output: str = "logits",
    positive: Optional[str] = None, settings: Optional[ConfidenceSettings] = None, source: str = "",
) -> ConfidenceSpec:
    """Conformal scores, OOD threshold and (with ``positive``) the precision guarantee, from ``outputs`` (logits,
    or probabilities for ``output="probs"``) of labelled calibration images ``y``.

    The guarantee is certified for what the runtime answers "yes": ``p >= threshold`` *and* not unknown (an image
    beyond the OOD threshold is never a yes), so the OOD threshold is fitted first (from scores only, no labels)."""
    s = settings or ConfidenceSettings()
    z = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).ravel()
    if z.ndim != 2 or z.shape != (y.size, len(classes)) or not y.size:
        raise ValueError(f"outputs {z.shape} and labels ({y.size},) do not match {len(classes)} classes (or are empty)")
    probs = probabilities(z, output, temperature)
    conformal = ConformalFit.fit(probs, y, s.method, s.coverage)
    kind = s.ood_kind if output == "logits" else "msp"
    ood = OODFit.fit(z, kind, s.ood_accept, output, temperature)
    guarantee = None
    if positive is not None:
        k = list(classes).index(positive)
        unknown = ood.unknown(ood_scores(z, kind, output, temperature))
        yes_score = np.where(unknown, -1.0, probs[:, k])  # below every threshold: never accepted
        guarantee = best_promise(yes_score, y == k, s.delta, positive, below=s.target_precision,
                                 inclusive=True) if s.best else None
        if guarantee is None:  # the requested target (or no ladder target certified): a refusal offers the best
            guarantee = with_best(certify_threshold(yes_score, y == k, s.target_precision, s.delta, positive),
                                  yes_score, y == k)
        log.debug("%s", guarantee.statement())  # the caller states it, once (training: at the end of the run)
    return ConfidenceSpec(temperature=float(temperature), n=int(y.size), source=source, conformal=conformal,
                          ood=ood, guarantee=guarantee)


def refit_spec(spec: ModelSpec, outputs: Any, y: Any, source: str,
               settings: Optional[ConfidenceSettings] = None) -> ModelSpec:
    """``spec`` with its confidence fitted on this artifact's ``outputs`` (its temperature as it is) and, with a
    positive class, its threshold set to the guaranteed one (or the visible point-estimate fallback).

    ``settings`` default to the ones the spec's current confidence was fitted with (else the defaults)."""
    if settings is None:
        settings = spec.confidence.settings() if spec.confidence is not None else ConfidenceSettings()
    conf = fit_confidence(outputs, y, spec.classes, temperature=spec.temperature, output=spec.output,
                          positive=spec.positive, settings=settings, source=source)
    threshold = conf.guarantee.threshold if conf.guarantee is not None else spec.threshold
    return spec.replace(confidence=conf, threshold=float(threshold))
