"""Input checks shared by the metrics: shapes, finiteness, label ranges (``ValueError`` with what was wrong)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np


def as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def as_probs(probs: Any) -> np.ndarray:
    p = as_logits(probs, "probs")
    if p.size and (p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise ValueError(f"probs must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}] (logits passed?)")
    return p


def as_labels(y: Any, n: int, num_classes: Optional[int] = None, name: str = "y_true") -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
    a = a.astype(np.int64)
    if num_classes is not None and a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): min {a.min()}, max {a.max()}")
    return a


def as_binary(scores: Any, y_binary: Any) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    y = np.asarray(y_binary)
    if y.shape != s.shape:
        raise ValueError(f"y_binary must have the shape of scores {s.shape}, got {y.shape}")
    yb = y.astype(bool)
    if not np.array_equal(yb.astype(np.float64), y.astype(np.float64)):
        raise ValueError("y_binary must hold only 0/1 (or booleans)")
    return s, yb


def div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0
