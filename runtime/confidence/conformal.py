"""Split conformal prediction sets for any number of classes: LAC and APS.

Nonconformity score of an image with true label ``y`` (from the calibrated probabilities ``p``):

- ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019): ``1 - p[y]``. The set is every label with
  ``p >= 1 - q``. Smallest sets on average; a set may be empty (no label is plausible enough: "uncertain").
- ``aps`` (adaptive prediction sets, Romano et al. 2020): the probability mass of the labels ranked above ``y``
  plus ``U * p[y]``, ``U`` uniform — drawn once per calibration image at fit time (seeded), so the sets served
  stay deterministic: labels by decreasing probability while the mass ranked above them is below ``q`` (the
  label that crosses ``q`` is in). Never empty, larger sets for harder images. Valid: the true label is in the set
  whenever its randomized score is ``<= q``; it over-covers when the top label alone is right more often than
  ``1 - α`` (a set is never empty).

With ``n`` calibration scores and miscoverage ``α``, the quantile ``q`` is the ``k``-th smallest score,
``k = ceil((n + 1)(1 - α))`` (``q = inf`` — every label — when ``k > n``). For a new image exchangeable with the
calibration images, ``P(true label in set) >= 1 - α``; with LAC (continuous scores) it is also
``<= 1 - α + 1 / (n + 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

METHODS = ("lac", "aps")
SCORE_DECIMALS = 6  # stored scores are rounded *up* at this many decimals: sets can only grow (still valid)


def _probs(probs: Any) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, C) with C >= 2, got shape {p.shape}")
    return p


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"conformal method {method!r} is not one of {', '.join(METHODS)}")
    return method


def _ranked_mass(p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per row: label order by decreasing probability (ties by index) and the cumulative mass in that order."""
    order = np.argsort(-p, axis=1, kind="stable")
    return order, np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)


def nonconformity(probs: Any, y: Any, method: str = "lac", rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Score of each image's true label (higher = less conforming), ``(N,)`` float64. For ``aps``, ``rng`` draws
    the ``U * p[y]`` term (without it: the whole mass up to and including ``y``, ``U = 1``)."""
    p = _probs(probs)
    y = np.asarray(y, dtype=np.int64).ravel()
    if y.shape[0] != p.shape[0] or (y.size and (y.min() < 0 or y.max() >= p.shape[1])):
        raise ValueError(f"labels must be {p.shape[0]} integers in [0, {p.shape[1]})")
    if _check_method(method) == "lac":
        return 1.0 - p[np.arange(len(y)), y]
    order, cum = _ranked_mass(p)
    rank = np.argmax(order == y[:, None], axis=1)
    mass = cum[np.arange(len(y)), rank]
    if rng is None:
        return mass
    py = p[np.arange(len(y)), y]
    return mass - py + rng.random(len(y)) * py


def quantile_index(n: int, alpha: float) -> int:
    """``k = ceil((n + 1)(1 - α))``: the rank (1-based) of the calibration score used as the quantile."""
    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise ValueError(f"alpha (miscoverage) must be in (0, 1), got {alpha!r}")
    return int(math.ceil((n + 1) * (1.0 - a) - 1e-9))


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The finite-sample conformal quantile of calibration ``scores`` (``inf`` when ``n`` is too small for α)."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    k = quantile_index(s.size, alpha)
    return float(s[k - 1]) if k <= s.size else math.inf


def min_calibration_size(alpha: float) -> int:
    """The fewest calibration images for which the quantile at ``α`` is finite: ``ceil(1/α) - 1``."""
    return int(math.ceil(1.0 / float(alpha) - 1e-9)) - 1


def prediction_sets(probs: Any, qhat: float, method: str = "lac") -> np.ndarray:
    """Boolean ``(N, C)``: label ``j`` is in image ``i``'s set."""
    p = _probs(probs)
    if _check_method(method) == "lac":
        return p >= 1.0 - qhat - 1e-12
    if not math.isfinite(qhat):
        return np.ones_like(p, dtype=bool)
    order, cum = _ranked_mass(p)
    before = cum - np.take_along_axis(p, order, axis=1)  # mass ranked strictly above each position
    take = before < qhat - 1e-12
    take[:, 0] = True
    out = np.zeros_like(p, dtype=bool)
    np.put_along_axis(out, order, take, axis=1)
    return out


def round_up(scores: Sequence[float]) -> Tuple[float, ...]:
    """Sorted scores rounded up at :data:`SCORE_DECIMALS` (for storage: a larger quantile is still valid)."""
    f = 10.0 ** SCORE_DECIMALS
    return tuple(float(math.ceil(float(v) * f - 1e-6) / f) for v in np.sort(np.asarray(scores, dtype=np.float64)))


@dataclass(frozen=True)
class ConformalFit:
    """What an artifact carries to serve sets at any coverage: the method and its sorted calibration scores.

    Storing the ``n`` scores (a few KB) instead of one quantile lets ``--coverage`` pick any level at run time with
    the exact finite-sample quantile; ``coverage`` is the level served by default.
    """

    method: str
    scores: Tuple[float, ...]
    coverage: float = 0.9

    def __post_init__(self) -> None:
        _check_method(self.method)
        s = tuple(float(v) for v in self.scores)
        if not s or any(not math.isfinite(v) for v in s) or list(s) != sorted(s):
            raise ValueError("conformal scores must be a non-empty sorted list of finite numbers")
        object.__setattr__(self, "scores", s)
        c = float(self.coverage)
        if not 0.0 < c < 1.0:
            raise ValueError(f"conformal coverage must be in (0, 1), got {self.coverage!r}")
        object.__setattr__(self, "coverage", c)

    @classmethod
    def fit(cls, probs: Any, y: Any, method: str = "lac", coverage: float = 0.9, seed: int = 0) -> ConformalFit:
        rng = np.random.default_rng(seed) if method == "aps" else None
        return cls(method, round_up(nonconformity(probs, y, method, rng)), coverage)

    @property
    def n(self) -> int:
        return len(self.scores)

    def quantile(self, coverage: Optional[float] = None) -> float:
        c = self.coverage if coverage is None else float(coverage)
        return conformal_quantile(self.scores, 1.0 - c)

    def sets(self, probs: Any, coverage: Optional[float] = None) -> np.ndarray:
        return prediction_sets(probs, self.quantile(coverage), self.method)

    def to_dict(self) -> Dict[str, Any]:
        q = self.quantile()
        return {"method": self.method, "coverage": self.coverage, "n": self.n,
                "quantile": q if math.isfinite(q) else None, "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ConformalFit:
        return cls(method=d["method"], scores=tuple(d["scores"]), coverage=d.get("coverage", 0.9))


def coverage_and_size(sets: np.ndarray, y: Any) -> Tuple[float, float]:
    """Empirical coverage (share of images whose true label is in their set) and average set size."""
    y = np.asarray(y, dtype=np.int64).ravel()
    if not y.size:
        return float("nan"), float("nan")
    return float(np.mean(sets[np.arange(len(y)), y])), float(np.mean(sets.sum(axis=1)))
