"""Fixed-size latency statistics for runs that last weeks: memory does not grow with the number of frames.

:class:`LatencySketch` keeps the first :data:`EXACT` values as they are (percentiles exact, as ``np.percentile``)
and every value in a log-spaced histogram (bins 0.5 % wide from 1 µs to ~2.8 h), which gives the percentiles of a
longer stream within 0.5 % — far finer than the summary prints. Memory: under 100 KB per sketch, whatever the run length.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional

import numpy as np

EXACT = 4096  # values kept exactly (short runs: exact percentiles)
_LO_MS = 1e-3  # histogram range, ms: 1 µs ...
_HI_MS = 1e7  # ... to ~2.8 hours
_STEP = math.log1p(0.005)  # bin width: 0.5 % of the value
_NBINS = int(math.ceil(math.log(_HI_MS / _LO_MS) / _STEP)) + 1
_LOG_LO = math.log(_LO_MS)


class LatencySketch:
    """A stream of non-negative values (milliseconds) in fixed memory: ``append``/``extend``, ``len``, ``percentile``."""

    __slots__ = ("n", "_exact", "_counts", "_min", "_max")

    def __init__(self) -> None:
        self.n = 0
        self._exact: List[float] = []  # at most EXACT values
        self._counts: List[int] = [0] * _NBINS  # a list: += 1 on it is ~20x cheaper than on a numpy array
        self._min = math.inf
        self._max = -math.inf

    def append(self, value: float) -> None:
        v = float(value)
        if not v >= 0.0:  # NaN or negative: a clock glitch, not a latency
            v = 0.0
        if self.n < EXACT:
            self._exact.append(v)
        self.n += 1
        if v < self._min:
            self._min = v
        if v > self._max:
            self._max = v
        i = int((math.log(v) - _LOG_LO) / _STEP) if v > _LO_MS else 0
        self._counts[i if i < _NBINS else _NBINS - 1] += 1

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.append(v)

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    @property
    def exact(self) -> bool:
        """Whether :meth:`percentile` is exact (every value kept)."""
        return self.n <= EXACT

    def percentile(self, q: float) -> Optional[float]:
        """The ``q``-th percentile (0..100); None when empty. Exact up to :data:`EXACT` values, else within 0.5 %."""
        if self.n == 0:
            return None
        if self.n <= EXACT:
            return float(np.percentile(np.asarray(self._exact, dtype=np.float64), q))
        rank = q / 100.0 * (self.n - 1)
        i = int(np.searchsorted(np.cumsum(np.asarray(self._counts, dtype=np.int64)), rank, side="right"))
        i = min(i, _NBINS - 1)
        centre = math.exp(_LOG_LO + (i + 0.5) * _STEP) if i > 0 else _LO_MS
        return float(min(max(centre, self._min), self._max))
