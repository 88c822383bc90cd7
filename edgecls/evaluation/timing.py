"""Timing on noisy machines: consecutive calls, interleaved rounds with a rotating start, medians over rounds."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np


def _percentiles(ms: Sequence[float]) -> Tuple[float, float, float]:
    a = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def time_calls(fn: Callable[[], Any], iters: int) -> List[float]:
    """Milliseconds of ``iters`` consecutive calls."""
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def interleaved(fns: Sequence[Callable[[], Any]], warmup: int, iters: int, rounds: int) -> List[List[List[float]]]:
    """``result[i][r]`` = per-call ms of ``fns[i]`` in round ``r``; rounds round-robin with a rotating start."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    res: List[List[List[float]]] = [[] for _ in fns]
    n = len(fns)
    for r in range(rounds):
        for j in range(n):
            i = (r + j) % n
            res[i].append(time_calls(fns[i], iters))
    return res


def summarize(rounds_ms: List[List[float]], batch: int) -> Dict[str, Any]:
    """Median over rounds of p50/p90/p99 and of throughput (batch / mean latency)."""
    per = [_percentiles(r) for r in rounds_ms]
    thr = [batch * 1000.0 / float(np.mean(r)) for r in rounds_ms]
    p50s = [p[0] for p in per]
    return {
        "p50_ms": float(np.median(p50s)),
        "p90_ms": float(np.median([p[1] for p in per])),
        "p99_ms": float(np.median([p[2] for p in per])),
        "p50_spread_ms": (float(min(p50s)), float(max(p50s))),
        "images_per_s": float(np.median(thr)),
    }
