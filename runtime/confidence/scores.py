"""The labelled scores a confidence was fitted on, kept with it so that the promise can travel and grow.

A :class:`ConfidenceSpec` keeps the outputs (logits, or probabilities for a ``probs`` model) and labels of the
images its promise was certified on — a training run's cross-fitted scores of every labelled image, or the
held-out calibration split, or a labelled folder. With them:

- export re-certifies the *same* promise for an FP16 / INT8 / TensorRT artifact whose outputs differ a little
  from the checkpoint's, by moving every stored score against the promise by the largest difference measured
  (``margin``, :func:`edgecls.runtime.confidence.fit.fit_confidence`), instead of re-fitting it on a small
  calibration split and stating a weaker promise;
- ``edgecls calibrate`` re-states the promise on all of them plus the newly labelled images (``ids`` keep an image
  from being counted twice when a folder is calibrated on again).

``margin`` (per row, probability units): how far this artifact's probabilities may be from the stored ones, and
``ood_margin`` (per row, units of the OOD score: logits for energy / max-logit) how far its OOD score may be —
both 0 for rows that are this artifact's own outputs. Numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError

DECIMALS = 5  # stored outputs are rounded here (1e-5 in logits moves no decision the margin does not cover)


@dataclass(frozen=True, eq=False)
class CalibrationScores:
    """Outputs ``(N, C)``, labels ``(N,)``, per-row margins and (optional) image ids of a confidence fit."""

    outputs: np.ndarray
    labels: np.ndarray
    margin: Any = 0.0
    ood_margin: Any = 0.0
    ids: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        z = np.asarray(self.outputs, dtype=np.float64)
        y = np.asarray(self.labels, dtype=np.int64).ravel()
        if z.ndim != 2 or z.shape[0] != y.size or not y.size:
            raise InputError(f"calibration scores: outputs {z.shape} and labels ({y.size},) do not match")
        try:
            m = np.broadcast_to(np.asarray(self.margin, dtype=np.float64), y.shape).copy()
            mo = np.broadcast_to(np.asarray(self.ood_margin, dtype=np.float64), y.shape).copy()
        except ValueError as e:
            raise InputError(f"calibration scores: margins do not match {y.size} rows") from e
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(m)) and np.all(m >= 0) and np.all(np.isfinite(mo))
                and np.all(mo >= 0)):
            raise InputError("calibration scores: outputs and margins must be finite (margins >= 0)")
        if y.min() < 0 or y.max() >= z.shape[1]:
            raise InputError(f"calibration scores: labels must be in [0, {z.shape[1]})")
        if self.ids and len(self.ids) != y.size:
            raise InputError(f"calibration scores: {len(self.ids)} ids for {y.size} rows")
        object.__setattr__(self, "outputs", z)
        object.__setattr__(self, "labels", y)
        object.__setattr__(self, "margin", m)
        object.__setattr__(self, "ood_margin", mo)
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))

    @property
    def n(self) -> int:
        return int(self.labels.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationScores):
            return NotImplemented
        return (self.ids == other.ids and all(np.array_equal(a, b) for a, b in (
            (self.outputs, other.outputs), (self.labels, other.labels), (self.margin, other.margin),
            (self.ood_margin, other.ood_margin))))

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of(cls, outputs: Any, labels: Any, ids: Optional[Sequence[str]] = None) -> CalibrationScores:
        """An artifact's own outputs (no margins), rounded as stored."""
        return cls(np.round(np.asarray(outputs, dtype=np.float64), DECIMALS), labels, 0.0, 0.0, tuple(ids or ()))

    def with_margin(self, prob: float, ood: float) -> CalibrationScores:
        """The same scores for an artifact whose probabilities differ from these by up to ``prob`` more, and its
        OOD scores by up to ``ood`` more."""
        return CalibrationScores(self.outputs, self.labels, self.margin + float(prob), self.ood_margin + float(ood),
                                 self.ids)

    @property
    def has_margin(self) -> bool:
        return bool(np.any(self.margin > 0) or np.any(self.ood_margin > 0))

    def without(self, ids: Sequence[str]) -> CalibrationScores:
        """The rows whose id is not in ``ids`` (an image calibrated on again is counted once, with its new output)."""
        if not self.ids:
            return self
        drop = set(ids)
        keep = np.array([i not in drop for i in self.ids], dtype=bool)
        if keep.all():
            return self
        if not keep.any():
            raise InputError("every stored calibration image is among the new ones")
        return CalibrationScores(self.outputs[keep], self.labels[keep], self.margin[keep], self.ood_margin[keep],
                                 tuple(i for i, k in zip(self.ids, keep) if k))

    def plus(self, other: CalibrationScores) -> CalibrationScores:
        """Both sets of rows (ids kept only when both have them)."""
        if other.outputs.shape[1] != self.outputs.shape[1]:
            raise InputError(f"calibration scores of {self.outputs.shape[1]} and {other.outputs.shape[1]} classes")
        ids = self.ids + other.ids if (self.ids and other.ids) else ()
        return CalibrationScores(np.concatenate([self.outputs, other.outputs]),
                                 np.concatenate([self.labels, other.labels]),
                                 np.concatenate([self.margin, other.margin]),
                                 np.concatenate([self.ood_margin, other.ood_margin]), ids)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"outputs": np.round(self.outputs, DECIMALS).tolist(), "labels": self.labels.tolist()}
        if self.has_margin:
            d["margin"] = self.margin.tolist()
            d["ood_margin"] = self.ood_margin.tolist()
        if self.ids:
            d["ids"] = list(self.ids)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> CalibrationScores:
        if not isinstance(d, dict) or "outputs" not in d or "labels" not in d:
            raise InputError("spec.confidence.scores must be a mapping with 'outputs' and 'labels'")
        try:
            return cls(np.asarray(d["outputs"], dtype=np.float64), np.asarray(d["labels"], dtype=np.int64),
                       np.asarray(d.get("margin", 0.0), dtype=np.float64),
                       np.asarray(d.get("ood_margin", 0.0), dtype=np.float64), tuple(d.get("ids") or ()))
        except (TypeError, ValueError) as e:
            raise InputError(f"spec.confidence.scores is invalid ({type(e).__name__}: {e})") from e
