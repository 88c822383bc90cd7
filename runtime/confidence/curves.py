"""The risk–coverage curve of selective classification: answer only the most confident share of images.

For every coverage ``c`` (share of images answered, most confident first by top-1 probability), the risk is the
error rate among the answered ones. ``AURC`` is the area under it (lower is better); a perfect ranking answers
every correct image before any wrong one.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np


def risk_coverage(probs: Any, y: Any) -> Dict[str, Any]:
    """``{"coverage": [...], "risk": [...], "threshold": [...], "aurc": float}`` — one point per distinct
    confidence (the lowest confidence still answered is ``threshold``), coverage increasing."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).ravel()
    if p.ndim != 2 or p.shape[0] != y.size or not y.size:
        raise ValueError(f"probs {p.shape} and labels ({y.size},) must be (N, C) and (N,), N >= 1")
    conf = p.max(axis=1)
    wrong = (p.argmax(axis=1) != y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    c_sorted, errors = conf[order], np.cumsum(wrong[order])
    last = np.r_[np.nonzero(np.diff(c_sorted))[0], c_sorted.size - 1]  # the end of each tie group
    answered = last + 1
    coverage = answered / y.size
    risk = errors[last] / answered
    aurc = float(np.sum(np.diff(np.r_[0.0, coverage]) * risk))
    return {"coverage": coverage.tolist(), "risk": risk.tolist(), "threshold": c_sorted[last].tolist(), "aurc": aurc}
