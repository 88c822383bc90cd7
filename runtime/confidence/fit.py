"""Fit an artifact's confidence from its own outputs on labelled calibration images — the one function training
(on the checkpoint's logits) and export (on every artifact's: FP32, FP16, INT8, variants, TensorRT engines) call.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from edgecls.runtime.confidence.conformal import ConformalFit, nonconformity, round_up
from edgecls.runtime.confidence.fitted import ConfidenceSettings, ConfidenceSpec
from edgecls.runtime.confidence.guarantee import best_promise, certify_threshold, with_best
from edgecls.runtime.confidence.ood import OODFit, fit_ood_threshold, ood_scores
from edgecls.runtime.confidence.scores import DECIMALS, CalibrationScores

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
    margin: Any = 0.0, ood_margin: Any = 0.0, ids: Optional[Sequence[str]] = None,
) -> ConfidenceSpec:
    """Conformal scores, OOD threshold and (with ``positive``) the precision guarantee, from ``outputs`` (logits,
    or probabilities for ``output="probs"``) of labelled calibration images ``y``; the result keeps them
    (:class:`~edgecls.runtime.confidence.scores.CalibrationScores`, with ``ids`` when given).

    The guarantee is certified for what the runtime answers "yes": ``p >= threshold`` *and* not unknown (an image
    beyond the OOD threshold is never a yes), so the OOD threshold is fitted first (from scores only, no labels).

    ``margin`` / ``ood_margin`` (scalar or per row): the artifact that will state this may have probabilities up to
    ``margin`` and OOD scores up to ``ood_margin`` away from ``outputs`` (an INT8 model certified on its checkpoint's
    scores). Every row is then moved against what is promised: a positive's score down and its OOD score up, a
    negative's score up and its OOD score down, every conformal score up (LAC by ``margin``, APS by ``C * margin``),
    every in-catalog OOD score up — so what is certified on the moved scores holds for any such artifact's."""
    s = settings or ConfidenceSettings()
    z = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).ravel()
    if z.ndim != 2 or z.shape != (y.size, len(classes)) or not y.size:
        raise ValueError(f"outputs {z.shape} and labels ({y.size},) do not match {len(classes)} classes (or are empty)")
    kept = CalibrationScores(z, y, margin, ood_margin, tuple(ids or ()))
    m, mo = kept.margin, kept.ood_margin
    probs = probabilities(z, output, temperature)
    rng = np.random.default_rng(0) if s.method == "aps" else None
    widen = m if s.method == "lac" else np.minimum(1.0, len(classes) * m)
    conformal = ConformalFit(s.method, round_up(nonconformity(probs, y, s.method, rng) + widen), s.coverage)
    kind = s.ood_kind if output == "logits" else "msp"
    oods = ood_scores(z, kind, output, temperature)
    ood = OODFit(kind, fit_ood_threshold(oods + mo, s.ood_accept), float(s.ood_accept), int(y.size))
    guarantee = None
    if positive is not None:
        k = list(classes).index(positive)
        pos = y == k
        unknown = ood.unknown(np.where(pos, oods + mo, oods - mo))
        yes_score = np.where(unknown, -1.0, np.where(pos, probs[:, k] - m, probs[:, k] + m))  # -1: never a yes
        guarantee = best_promise(yes_score, pos, s.delta, positive, below=s.target_precision,
                                 inclusive=True) if s.best else None
        if guarantee is None:  # the requested target (or no ladder target certified): a refusal offers the best
            guarantee = with_best(certify_threshold(yes_score, pos, s.target_precision, s.delta, positive),
                                  yes_score, pos)
        log.debug("%s", guarantee.statement())  # the caller states it, once (training: at the end of the run)
    stored = CalibrationScores(np.round(z, DECIMALS), y, m, mo, kept.ids)
    return ConfidenceSpec(temperature=float(temperature), n=int(y.size), source=source, conformal=conformal,
                          ood=ood, guarantee=guarantee, scores=stored)


def fit_on_scores(scores: CalibrationScores, classes: Sequence[str], *, temperature: float, output: str = "logits",
                  positive: Optional[str] = None, settings: Optional[ConfidenceSettings] = None,
                  source: str = "") -> ConfidenceSpec:
    """:func:`fit_confidence` on stored scores, with their margins and ids."""
    return fit_confidence(scores.outputs, scores.labels, classes, temperature=temperature, output=output,
                          positive=positive, settings=settings, source=source, margin=scores.margin,
                          ood_margin=scores.ood_margin, ids=scores.ids)


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
