"""Unknown products: an out-of-distribution score with a threshold fitted on in-catalog calibration images.

Scores (higher = more likely unknown), from the model's raw outputs:

- ``energy``: ``-logsumexp(logits)`` (Liu et al. 2020, temperature 1: independent of the calibration temperature);
- ``max_logit``: ``-max(logits)`` (Hendrycks et al. 2022);
- ``msp``: ``-max(probability)`` — the only one a model that outputs probabilities (``output="probs"``) allows.

The threshold is the ``k``-th smallest score of ``n`` in-catalog calibration images, ``k = ceil((n + 1) * accept)``:
a new in-catalog image (exchangeable with them) is then flagged unknown with probability at most ``1 - accept``
(a conformal guarantee). Nothing is promised about how many unknown products are caught; ``edgecls eval
--ood-data`` measures it (AUROC, detection rate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

KINDS = ("energy", "max_logit", "msp")
LOGIT_KINDS = ("energy", "max_logit")


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"OOD score {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def ood_scores(outputs: Any, kind: str = "energy", output: str = "logits", temperature: float = 1.0) -> np.ndarray:
    """The OOD score per row of ``outputs`` (logits, or probabilities when ``output == "probs"``)."""
    z = np.asarray(outputs, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"model outputs must be (N, C), got shape {z.shape}")
    _check_kind(kind)
    if output == "probs":
        if kind != "msp":
            raise ValueError(f"a model that outputs probabilities allows only the 'msp' OOD score, not {kind!r}")
        return -z.max(axis=1)
    if kind == "max_logit":
        return -z.max(axis=1)
    if kind == "energy":
        m = z.max(axis=1, keepdims=True)
        return -(m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))
    from edgecls.runtime.metrics import softmax

    return -softmax(z, temperature).max(axis=1)


def fit_ood_threshold(in_scores: Any, accept: float = 0.95) -> float:
    """The threshold above which an image is unknown: ``P(in-catalog image flagged) <= 1 - accept``."""
    s = np.sort(np.asarray(in_scores, dtype=np.float64).ravel())
    a = float(accept)
    if not (0.0 < a < 1.0):
        raise ValueError(f"accept (share of in-catalog images kept) must be in (0, 1), got {accept!r}")
    if not s.size:
        raise ValueError("fitting an OOD threshold needs at least one in-catalog image")
    k = int(math.ceil((s.size + 1) * a - 1e-9))
    return float(s[k - 1]) if k <= s.size else math.inf


def auroc(in_scores: Any, out_scores: Any) -> float:
    """Area under the ROC curve of "score separates unknown (positive) from in-catalog": the probability that a
    random unknown image scores higher than a random in-catalog one (ties count half)."""
    a = np.asarray(in_scores, dtype=np.float64).ravel()
    b = np.asarray(out_scores, dtype=np.float64).ravel()
    if not a.size or not b.size:
        raise ValueError("AUROC needs in-catalog and unknown scores")
    allv = np.concatenate([a, b])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, dtype=np.float64)
    sorted_v = allv[order]
    # average ranks over ties (1-based)
    starts = np.r_[0, np.nonzero(np.diff(sorted_v))[0] + 1]
    ends = np.r_[starts[1:], allv.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + 1 + e)
    r_out = ranks[a.size:].sum()
    return float((r_out - b.size * (b.size + 1) / 2.0) / (a.size * b.size))


@dataclass(frozen=True)
class OODFit:
    """The OOD rule an artifact carries: ``unknown = score(kind) > threshold``."""

    kind: str
    threshold: float
    accept: float
    n: int

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        t = float(self.threshold)
        if math.isnan(t):
            raise ValueError("OOD threshold is NaN")
        object.__setattr__(self, "threshold", t)
        if not 0.0 < float(self.accept) < 1.0:
            raise ValueError(f"OOD accept must be in (0, 1), got {self.accept!r}")

    @classmethod
    def fit(cls, outputs: Any, kind: str = "energy", accept: float = 0.95, output: str = "logits",
            temperature: float = 1.0) -> OODFit:
        s = ood_scores(outputs, kind, output, temperature)
        return cls(kind, fit_ood_threshold(s, accept), float(accept), int(s.size))

    def unknown(self, scores: Any) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64) > self.threshold

    def rates(self, in_scores: Any, out_scores: Any = None) -> Tuple[float, float]:
        """(share of in-catalog images flagged unknown, share of unknown images flagged) — NaN when absent."""
        fi = float(np.mean(self.unknown(in_scores))) if np.size(in_scores) else float("nan")
        fo = float(np.mean(self.unknown(out_scores))) if out_scores is not None and np.size(out_scores) else float("nan")
        return fi, fo

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "threshold": self.threshold if math.isfinite(self.threshold) else None,
                "accept": float(self.accept), "n": int(self.n)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> OODFit:
        t = d.get("threshold")
        return cls(kind=d["kind"], threshold=math.inf if t is None else t, accept=d["accept"], n=int(d.get("n", 0)))
