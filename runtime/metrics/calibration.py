"""Probabilities and calibration: softmax with temperature, NLL, temperature fitting, reliability bins, ECE."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

import numpy as np

from edgecls.runtime.metrics.checks import as_labels, as_logits, as_probs


def log_softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable ``log softmax(logits / temperature)`` in float64."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = as_logits(logits) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row-wise, float64 ``(N, C)``."""
    return np.exp(log_softmax(logits, temperature))


def nll(probs: Any, y_true: Any) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12)."""
    p = as_probs(probs)
    y = as_labels(y_true, p.shape[0], p.shape[1])
    if not p.shape[0]:
        return 0.0
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def _nll_logits(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    lp = log_softmax(logits, temperature)
    return float(-np.mean(lp[np.arange(len(y)), y]))


def fit_temperature(
    logits: Any, y_true: Any, bounds: Tuple[float, float] = (0.05, 20.0), grid: int = 81, tol: float = 1e-5
) -> float:
    """The temperature ``T`` minimizing the NLL of ``softmax(logits / T)`` on ``(logits, y_true)``.

    Deterministic and derivative-free: a log-spaced grid over ``bounds`` finds the best bracket, then a
    golden-section search on ``log T`` refines it to ``tol`` (relative). If the NLL keeps falling towards a bound
    (e.g. perfectly separated data wants ``T → 0``) the bound is returned.
    """
    x = as_logits(logits)
    y = as_labels(y_true, x.shape[0], x.shape[1])
    if x.shape[0] == 0:
        raise ValueError("fit_temperature needs at least one sample")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    return float(math.exp(argmin_on_interval(lambda t: _nll_logits(x, y, math.exp(t)), math.log(lo), math.log(hi),
                                              grid, tol)))


def argmin_on_interval(f: Callable[[float], float], lo: float, hi: float, grid: int = 81, tol: float = 1e-5) -> float:
    """argmin of a 1-D function on ``[lo, hi]``: an even grid finds the best bracket, golden-section search refines
    it to ``tol``; the grid point itself wins when it is at least as good (a minimum at a bound). The one line
    search of the toolkit (temperature by NLL here, by KL to a reference in the export's re-fit)."""
    xs = np.linspace(lo, hi, int(max(grid, 3)))
    values = np.array([f(float(t)) for t in xs])
    i = int(np.argmin(values))
    a, b = float(xs[max(i - 1, 0)]), float(xs[min(i + 1, len(xs) - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    best, best_v = (c, fc) if fc <= fd else (d, fd)
    return float(xs[i]) if values[i] <= best_v else float(best)


# ------------------------------------------------------------------------------------------- calibration


def reliability_bins(probs: Any, y_true: Any, n_bins: int = 15) -> Dict[str, Any]:
    """Per-bin top-1 accuracy and mean confidence (equal-width bins), JSON-able.

    Returns ``{"n_bins", "edges" (n_bins+1), "count", "accuracy", "confidence", "ece"}``; ``accuracy`` and
    ``confidence`` are ``None`` for empty bins.
    """
    p = as_probs(probs)
    y = as_labels(y_true, p.shape[0], p.shape[1])
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bin i holds (i/n, (i+1)/n]; ceil(conf*n)-1, with conf == 0 in bin 0
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    n = max(int(count.sum()), 1)
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / n)
    acc = [None if c == 0 else float(s / c) for s, c in zip(acc_sum, count)]
    cmean = [None if c == 0 else float(s / c) for s, c in zip(conf_sum, count)]
    return {
        "n_bins": n_bins,
        "edges": [i / n_bins for i in range(n_bins + 1)],
        "count": [int(c) for c in count],
        "accuracy": acc,
        "confidence": cmean,
        "ece": ece,
    }


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence with ``n_bins`` equal-width bins (0 = perfectly calibrated)."""
    return reliability_bins(probs, y_true, n_bins)["ece"]


# ---------------------------------------------------------------------------------------------- counting
