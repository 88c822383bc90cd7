"""Exact binomial tails and Clopper–Pearson bounds, numpy + math only (no scipy).

``binomial_sf(k, n, p) = P(X >= k)`` for ``X ~ Binomial(n, p)`` is summed in log space from a table of log
factorials, so it is exact to float precision for any ``n`` a calibration set can have. The Clopper–Pearson bounds
invert it by bisection (the tail is monotone in ``p``): the one-sided lower bound ``L`` with confidence ``1 - δ``
solves ``P(X >= k | L) = δ``, the upper bound ``U`` solves ``P(X <= k | U) = δ``.

``p_value_at_least(k, n, target)`` is the test of "the success rate is below ``target``": reject at level ``δ``
exactly when the Clopper–Pearson lower bound is ``>= target``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

_LOG_FACT = np.zeros(1)


def _log_factorials(n: int) -> np.ndarray:
    """``log(i!)`` for ``i = 0..n`` (cached, grown on demand)."""
    global _LOG_FACT
    if _LOG_FACT.size <= n:
        size = max(n + 1, 2 * _LOG_FACT.size)
        _LOG_FACT = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size, dtype=np.float64)))])
    return _LOG_FACT


def _check(k: int, n: int) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if not (isinstance(k, (int, np.integer)) and 0 <= k <= n):
        raise ValueError(f"k must be an integer in [0, n={n}], got {k!r}")


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``."""
    _check(k, n)
    if k == 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lf = _log_factorials(n)
    i = np.arange(k, n + 1)
    logpmf = lf[n] - lf[i] - lf[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    m = float(logpmf.max())
    return float(min(1.0, math.exp(m) * float(np.exp(logpmf - m).sum())))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    _check(k, n)
    if k == n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lf = _log_factorials(n)
    i = np.arange(0, k + 1)
    logpmf = lf[n] - lf[i] - lf[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    m = float(logpmf.max())
    return float(min(1.0, math.exp(m) * float(np.exp(logpmf - m).sum())))


def _bisect(f, lo: float = 0.0, hi: float = 1.0, iters: int = 56) -> float:
    """The root of an increasing ``f`` on ``[lo, hi]`` (``f(lo) <= 0 <= f(hi)``), to ~1e-17 after 56 halvings."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    return lo


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not (0.0 < d < 1.0):
        raise ValueError(f"delta (the failure probability) must be in (0, 1), got {delta!r}")
    return d


def cp_lower(k: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson lower bound on the success rate: ``P(rate >= bound) >= 1 - delta``."""
    _check(k, n)
    d = _check_delta(delta)
    if k == 0:
        return 0.0
    return _bisect(lambda p: binomial_sf(k, n, p) - d)


def cp_upper(k: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson upper bound on the success rate: ``P(rate <= bound) >= 1 - delta``."""
    _check(k, n)
    d = _check_delta(delta)
    if k == n:
        return 1.0
    return _bisect(lambda p: d - binomial_cdf(k, n, p))


def p_value_at_least(k: int, n: int, target: float) -> float:
    """p-value of H0 "success rate < ``target``" after ``k`` successes in ``n``: ``P(Binomial(n, target) >= k)``.

    ``n = 0`` gives 1 (no evidence). Rejecting H0 when this is ``<= δ`` is the same as ``cp_lower(k, n, δ) >= target``.
    """
    _check(k, n)
    if n == 0:
        return 1.0
    return binomial_sf(k, n, float(target))


def trials_needed(rate: float, target: float, delta: float, limit: int = 10**7) -> Optional[int]:
    """The fewest trials ``n`` whose Clopper–Pearson lower bound reaches ``target`` when a share ``rate`` of them
    succeed (``k = floor(rate * n)``); ``None`` when ``rate <= target`` (no sample size is enough) or beyond
    ``limit``. With ``rate = 1`` (no failure) it is ``ceil(log δ / log target)``: 45 for 95 % at δ = 0.1."""
    rate, target, d = float(rate), float(target), _check_delta(delta)
    if not (0.0 < target < 1.0):
        raise ValueError(f"target must be in (0, 1), got {target!r}")
    if rate <= target:
        return None
    if rate >= 1.0:
        return int(math.ceil(math.log(d) / math.log(target) - 1e-12))

    def ok(n: int) -> bool:
        return cp_lower(int(math.floor(rate * n + 1e-9)), n, d) >= target

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2
    while hi - lo > 1:  # floor(rate * n) makes ok() nearly monotone: the first n found is within a step of it
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
