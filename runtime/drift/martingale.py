"""A conformal test martingale (Vovk, Petej, Nouretdinov, Ahlberg, Carlsson, Gammerman, "Retrain or not retrain:
conformal test martingales for change-point detection", 2021), betting that new values are larger than before.

Each new value gets a smoothed conformal p-value: its rank among the reference values *and every value seen since*
(ties broken at random). While the values are exchangeable with the reference, these p-values are independent and
uniform, so any product of calibrators ``f(p)`` with ``∫ f = 1`` is a test martingale, and by Ville's inequality it
ever reaches ``1/alpha`` with probability at most ``alpha``: the stated false-alarm level holds for the whole run,
however long, not per look.

The bet is a mixture in the style of the paper's Simple Jumper: capital is split between not betting (f = 1) and
power calibrators ``f(p) = k p^(k-1)`` for a few k (small k: bold bets on very small p-values), and each step a
fraction ``jump`` of the capital is spread again over all of them, so capital lost while nothing changed does not
keep the martingale from rising quickly after a change. The mixture weights depend only on the past, so the product
stays a test martingale.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable, List, Optional, Sequence

import numpy as np

KAPPAS: Sequence[float] = (0.1, 0.25, 0.5)
MAX_VALUES = 200_000  # values kept for ranking (a week of one value per 3 s); later ones are ranked, not kept


class ConformalMartingale:
    """``update(x)`` ranks ``x`` (larger = more unusual) and returns the martingale's value."""

    def __init__(self, reference: Iterable[float], alpha: float, jump: float = 0.02,
                 kappas: Sequence[float] = KAPPAS, seed: Optional[int] = 0, max_values: int = MAX_VALUES) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if not 0.0 <= jump <= 1.0:
            raise ValueError(f"jump must be in [0, 1], got {jump!r}")
        self.values: List[float] = sorted(float(v) for v in reference)
        if not self.values:
            raise ValueError("a conformal martingale needs reference values")
        self.alpha = float(alpha)
        self.threshold = 1.0 / self.alpha
        self.jump = float(jump)
        self.kappas = np.asarray(kappas, dtype=np.float64)
        self.capital = np.full(len(self.kappas) + 1, 1.0 / (len(self.kappas) + 1))  # [no bet, k1, k2, ...]
        self.rng = np.random.default_rng(seed)
        self.max_values = int(max_values)
        self.steps = 0
        self.last_p: Optional[float] = None

    @property
    def value(self) -> float:
        return float(self.capital.sum())

    def p_value(self, x: float) -> float:
        """Smoothed conformal p-value of ``x`` among the values so far (small: ``x`` is larger than most)."""
        lo = bisect.bisect_left(self.values, x)
        hi = bisect.bisect_right(self.values, x)
        greater = len(self.values) - hi
        return (greater + float(self.rng.random()) * (hi - lo + 1)) / (len(self.values) + 1)

    def update(self, x: float) -> float:
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"conformal martingale got a non-finite value {x!r}")
        p = max(self.p_value(x), 1e-12)
        if len(self.values) < self.max_values:
            bisect.insort(self.values, x)
        total = self.capital.sum()
        self.capital = (1.0 - self.jump) * self.capital + self.jump * total / self.capital.size
        bets = np.empty_like(self.capital)
        bets[0] = 1.0
        bets[1:] = self.kappas * p ** (self.kappas - 1.0)
        self.capital = self.capital * bets
        self.steps += 1
        self.last_p = p
        return self.value

    def restart(self) -> None:
        """Start a new test martingale at 1 (after an alarm ended); the values seen stay in the ranking."""
        self.capital[:] = 1.0 / self.capital.size
