"""From logits to what the runtime says: softmax with the model's temperature, top-k, a threshold, ``uncertain``.

Rules (the same for ``edgecls run`` and :class:`edgecls.runtime.classifier.Classifier`):

- probabilities are ``softmax(logits / temperature)`` with the temperature stored in the model's spec;
- the *label* is the top class when its probability is ``>= threshold``, else ``"uncertain"``;
- with a positive class (one-vs-rest, e.g. "mobile"), ``p = P(positive)`` and the *decision* is ``"yes"`` when
  ``p >= threshold``, ``"no"`` when ``p < min(threshold, 1 - threshold)``, else ``"uncertain"``. Without a positive
  class the decision is the label;
- ``smooth=N`` averages the probabilities of the last ``N`` frames of one live source before deciding;
- with the confidence an artifact carries (``spec.confidence``, :mod:`edgecls.runtime.confidence`): ``set`` is the
  conformal set of labels that holds the true one with probability ``>= coverage`` (default: the artifact's, e.g.
  0.9); without a positive class the decision is that label when the set has exactly one, else ``"uncertain"``.
  ``unknown`` is true when the OOD score is beyond the threshold fitted on in-catalog images, and then the
  decision is ``"unknown"`` (whatever the class). Artifacts without it decide as above and have no set.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec

UNCERTAIN = "uncertain"
UNKNOWN = "unknown"
YES = "yes"
NO = "no"


@dataclass(frozen=True)
class Prediction:
    """What the classifier says about one image."""

    label: str  # the top class, or "uncertain" when its probability is below the threshold
    confidence: float  # probability of the top class
    class_index: int  # index of the top class (whatever the threshold)
    class_name: str  # name of the top class (whatever the threshold)
    probs: Tuple[float, ...]  # one probability per class, in spec.classes order
    topk: Tuple[Tuple[str, float], ...]  # (class, probability), most probable first
    decision: str  # positive class: yes / no / uncertain; otherwise the label
    threshold: float
    positive: Optional[str] = None
    p_positive: Optional[float] = None
    smoothed: int = 1  # how many frames were averaged (1 = this frame only)
    set: Optional[Tuple[str, ...]] = None  # conformal set (most probable first); None: the model carries none
    unknown: Optional[bool] = None  # beyond the OOD threshold; None: the model carries none
    ood_score: Optional[float] = None

    @property
    def uncertain(self) -> bool:
        return self.label == UNCERTAIN

    def to_dict(self, probs: bool = False, ndigits: int = 6) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "label": self.label,
            "confidence": round(self.confidence, ndigits),
            "topk": [{"label": c, "p": round(p, ndigits)} for c, p in self.topk],
            "decision": self.decision,
        }
        if self.positive is not None:
            d["positive"] = self.positive
            d["p_positive"] = round(float(self.p_positive), ndigits)
        if self.smoothed > 1:
            d["smoothed"] = self.smoothed
        if self.set is not None:
            d["set"] = list(self.set)
        if self.unknown is not None:
            d["unknown"] = self.unknown
            d["ood_score"] = round(float(self.ood_score), ndigits)
        if probs:
            d["probs"] = [round(p, ndigits) for p in self.probs]
        return d


def check_threshold(threshold: float, what: str = "threshold") -> float:
    t = float(threshold)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise InputError(f"{what} must be a probability in [0, 1], got {threshold!r}")
    return t


def positive_decision(p: float, threshold: float) -> str:
    """One-vs-rest: yes if ``p >= thr``; no if ``p < min(thr, 1 - thr)``; else uncertain."""
    if p >= threshold:
        return YES
    if p < min(threshold, 1.0 - threshold):
        return NO
    return UNCERTAIN


def positive_decisions(p: Any, threshold: float) -> np.ndarray:
    """:func:`positive_decision` for an array of positive-class probabilities (an array of yes / no / uncertain)."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(p >= threshold, YES, np.where(p < min(threshold, 1.0 - threshold), NO, UNCERTAIN))


class Smoother:
    """Per-source moving average of probabilities over the last ``window`` frames."""

    def __init__(self, window: int) -> None:
        if int(window) < 1:
            raise InputError(f"smooth window must be >= 1 frame, got {window!r}")
        self.window = int(window)
        self._hist: Dict[Hashable, Deque[np.ndarray]] = {}

    def update(self, key: Hashable, probs: np.ndarray) -> Tuple[np.ndarray, int]:
        """Add one frame's probabilities for ``key``; return (mean over the window, frames in it)."""
        h = self._hist.setdefault(key, deque(maxlen=self.window))
        h.append(np.asarray(probs, dtype=np.float64))
        return np.mean(np.stack(h), axis=0), len(h)

    def reset(self, key: Optional[Hashable] = None) -> None:
        if key is None:
            self._hist.clear()
        else:
            self._hist.pop(key, None)


class Decider:
    """Turns logits into :class:`Prediction` objects with the spec's temperature and a threshold."""

    def __init__(self, spec: ModelSpec, threshold: Optional[float] = None, topk: int = 3,
                 coverage: Optional[float] = None) -> None:
        from edgecls.runtime.confidence.rule import ConfidenceRule

        if UNCERTAIN in spec.classes:
            raise InputError(
                f"the model has a class named {UNCERTAIN!r}, which the runtime reports for low-confidence results;"
                " rename that class and retrain/re-export"
            )
        if int(topk) < 1:
            raise InputError(f"topk must be >= 1, got {topk!r}")
        self.spec = spec
        self.classes = spec.classes
        self.threshold = check_threshold(spec.threshold if threshold is None else threshold)
        self.topk = min(int(topk), len(spec.classes))
        self.temperature = spec.temperature
        self.positive_index = spec.positive_index
        self.confidence = ConfidenceRule(spec, coverage, threshold)
        if self.confidence.ood is not None and UNKNOWN in spec.classes:
            raise InputError(f"the model has a class named {UNKNOWN!r}, which the runtime reports beyond its OOD "
                             "threshold; rename that class and retrain/re-export")

    def probabilities(self, logits: Any) -> np.ndarray:
        """``softmax(logits / temperature)``, float64 (N, C). Raises ValueError on non-finite logits.

        A model whose spec says ``output="probs"`` already ends in that softmax: its outputs are taken as they are.
        """
        from edgecls.runtime.metrics import softmax

        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ValueError(
                f"model output has shape {logits.shape}; expected (N, {len(self.classes)}) for classes {list(self.classes)}"
            )
        if self.spec.output == "probs":
            if not np.all(np.isfinite(logits)):
                raise ValueError("model output contains NaN or inf probabilities")
            return logits.astype(np.float64)
        return softmax(logits, temperature=self.temperature)

    def ood_scores(self, outputs: Any) -> Optional[np.ndarray]:
        """The OOD score of each row of the model's outputs (None when the model carries no OOD threshold)."""
        return self.confidence.ood_scores(outputs)

    def from_probs(self, probs: Sequence[float], smoothed: int = 1, ood_score: Optional[float] = None) -> Prediction:
        p = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-p, kind="stable")
        top = int(order[0])
        conf = float(p[top])
        label = self.classes[top] if conf >= self.threshold else UNCERTAIN
        topk = tuple((self.classes[int(i)], float(p[int(i)])) for i in order[: self.topk])
        if self.positive_index is not None:
            pp = float(p[self.positive_index])
            decision = positive_decision(pp, self.threshold)
            positive = self.spec.positive
        else:
            pp, decision, positive = None, label, None
        members = self.confidence.sets(p)
        label_set = None
        if members is not None:
            label_set = tuple(self.classes[int(i)] for i in order if members[0, int(i)])
            if positive is None:
                decision = label_set[0] if len(label_set) == 1 else UNCERTAIN
        unknown = self.confidence.unknown(ood_score)
        if unknown:
            decision = UNKNOWN
        return Prediction(
            label=label,
            confidence=conf,
            class_index=top,
            class_name=self.classes[top],
            probs=tuple(float(x) for x in p),
            topk=topk,
            decision=decision,
            threshold=self.threshold,
            positive=positive,
            p_positive=pp,
            smoothed=int(smoothed),
            set=label_set,
            unknown=unknown,
            ood_score=None if ood_score is None else float(ood_score),
        )

    def decide(self, logits: Any) -> List[Prediction]:
        probs = self.probabilities(logits)
        ood = self.ood_scores(logits)
        return [self.from_probs(row, ood_score=None if ood is None else float(ood[i])) for i, row in enumerate(probs)]

    def decision_names(self) -> Tuple[str, ...]:
        """All values a decision can take, in display order."""
        tail = (UNKNOWN,) if self.confidence.ood is not None else ()
        if self.positive_index is not None:
            return (YES, NO, UNCERTAIN) + tail
        return tuple(self.classes) + (UNCERTAIN,) + tail
