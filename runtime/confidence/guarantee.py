"""A threshold with a guarantee: "precision >= target with probability 1 - δ", or a refusal that says what it needs.

Method (Learn-then-Test with fixed-sequence testing, Clopper–Pearson p-values). The candidate thresholds are a
grid fixed in advance (:data:`GRID`: logit-spaced from 0.0003 to 0.999999). For each threshold ``t`` the
calibration images with ``score >= t`` are the ``n_t`` accepted ones, ``k_t`` of them truly positive; given
``n_t`` their labels are independent draws with the true precision of ``t``, so ``P(Binomial(n_t, target) >= k_t)``
is a valid p-value for "precision(t) < target". The scan goes from high to low thresholds and stops at the first
one that cannot be certified at level δ; the lowest certified threshold is kept. Testing in a fixed order at full
level δ controls the chance that *any* certified threshold has precision below the target at δ, so choosing
among them is allowed (no multiple-testing penalty, unlike picking the best of many bounds).

The scan starts at the highest threshold that accepts at least ``m0`` calibration images, ``m0`` being the fewest
accepted images that could certify the target at all (all positive: ``ceil(log δ / log target)``, 45 for 95 % at
δ = 0.1). That count looks at scores only, never at labels.

:func:`edgecls.runtime.confidence.fit.fit_confidence` certifies what the runtime answers "yes": images beyond
the OOD threshold get a score of -1 here (never accepted), as the runtime never says "yes" for an unknown product.

When no threshold is certified, the result refuses: it says how many labelled positives the promise would take
(at the precision and recall of the point-estimate threshold) and the threshold falls back to that point estimate,
marked as not guaranteed. It also says the best promise the images allow (:func:`best_promise`): the highest
target of a ladder fixed in advance (:data:`LADDER`, below the requested one) that Learn-then-Test certifies when
each of its ``m`` targets is tested at ``δ / m`` (Bonferroni), so that taking the highest certified one still
holds with probability ``1 - δ``. ``ConfidenceSettings(best=True)`` (``--best-promise``) deploys that one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional

import numpy as np

from edgecls.runtime.confidence.bounds import cp_lower, p_value_at_least, trials_needed

GRID = 1.0 / (1.0 + np.exp(-np.linspace(14.0, -8.0, 441)))  # descending; step 0.05 in logit
METHOD = "Clopper-Pearson, fixed-sequence Learn-then-Test over a fixed threshold grid"
LADDER = (0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.5)  # targets a best promise is chosen from


@dataclass(frozen=True)
class PrecisionGuarantee:
    """What the calibration images allow to promise about ``score >= threshold`` for the positive class."""

    positive: str
    target: float
    delta: float
    certified: bool
    threshold: float  # the certified threshold, or the point-estimate fallback when not certified
    precision_bound: float  # Clopper-Pearson lower bound at the threshold (refused: the best any single one reaches)
    precision: float  # on the calibration images, at the threshold
    recall: float  # on the calibration images, at the threshold
    n: int  # calibration images
    positives: int  # labelled positives among them
    accepted: int  # calibration images at or above the threshold
    predictions_needed: Optional[int] = None  # refused: accepted images the promise needs at the precision seen
    positives_needed: Optional[int] = None  # refused: labelled positives that takes at the recall seen
    ladder: int = 0  # > 0: the highest certified of this many ladder targets, each tested at delta / ladder
    # refused: the best promise the images allow (the highest ladder target certified, each at delta / m)
    best_target: Optional[float] = None
    best_threshold: Optional[float] = None
    best_recall: Optional[float] = None
    requested: Optional[float] = None  # a best promise (ladder > 0): the highest target it was allowed to reach

    @property
    def confidence(self) -> float:
        return 1.0 - self.delta

    def statement(self) -> str:
        pos, conf = self.positive, f"{100 * self.confidence:g} %"
        if self.certified:
            how = (f"; the highest of {self.ladder} fixed targets certified, each tested at delta/{self.ladder}"
                   if self.ladder else "")
            return (f"precision >= {self.target:g} for {pos!r} with {conf} confidence at threshold "
                    f"{self.threshold:.4g} (recall {self.recall:.2f} on the {self.n} calibration images, "
                    f"{self.positives} {pos!r}{how})")
        head = (f"NOT GUARANTEED: {self.positives} labelled {pos!r} among {self.n} calibration images cannot "
                f"certify precision >= {self.target:g} with {conf} confidence")
        if self.positives == 0:
            return head + f"; threshold {self.threshold:.4g} is a default"
        if self.positives_needed is not None:
            more = max(self.positives_needed - self.positives, 1)
            need = (f"; it would take about {self.positives_needed} labelled {pos!r} images, ~{more} more (at least "
                    f"{self.predictions_needed} accepted at the precision seen here)")
        else:
            need = (f"; the precision seen here ({self.precision:.3f}) is not above the target, so more images "
                    "alone will not make the promise")
        return (head + f" (the best bound any threshold reaches is {self.precision_bound:.3f})" + need
                + f"; threshold {self.threshold:.4g} is a point estimate (precision {self.precision:.3f}, recall "
                f"{self.recall:.3f} on the calibration images)" + self.best_statement())

    def best_statement(self) -> str:
        """A refusal's offer: the best promise these images allow, and how to choose it ('' when there is none)."""
        if self.certified or self.best_target is None:
            return ""
        return (f". BEST PROMISE these images allow: precision >= {self.best_target:g} for {self.positive!r} with "
                f"{100 * self.confidence:g} % confidence at threshold {self.best_threshold:.4g} (recall "
                f"{self.best_recall:.2f}; the highest fixed target up to {self.target:g} certified, each tested "
                f"at delta/m); choose it with --best-promise")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["statement"] = self.statement()
        d["method"] = METHOD
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PrecisionGuarantee:
        fields = {k: v for k, v in d.items() if k not in ("statement", "method")}
        return cls(**fields)


def _counts(scores: np.ndarray, y: np.ndarray, grid: np.ndarray):
    """Accepted (``score >= t``) and accepted-positive counts per grid threshold."""
    order = np.argsort(-scores, kind="stable")
    s_desc, tp_cum = scores[order], np.concatenate([[0], np.cumsum(y[order])])
    n_t = np.searchsorted(-s_desc, -grid, side="right")  # number of scores >= t
    return n_t, tp_cum[n_t]


def _best_single_bound(k_t: np.ndarray, n_t: np.ndarray, delta: float) -> float:
    """The highest Clopper–Pearson lower bound any one threshold reaches (information for a refusal: not a promise,
    the best of many bounds is not a bound). Pairs are visited by decreasing ``k / n``, which caps the bound."""
    pairs = sorted({(int(k), int(a)) for k, a in zip(k_t, n_t) if a > 0}, key=lambda p: (-p[0] / p[1], -p[1]))
    best = 0.0
    for k, a in pairs:
        if k / a <= best:
            break
        best = max(best, cp_lower(k, a, delta))
    return best


def point_threshold(scores: np.ndarray, y: np.ndarray, target: float):
    """The point estimate (no guarantee): the lowest threshold whose calibration precision reaches ``target``
    (else the most precise one), moved midway to the highest rejected score so new images get a margin.

    Returns ``(threshold, precision, recall)``.
    """
    from edgecls.runtime.metrics import threshold_for_precision

    choice = threshold_for_precision(scores, y, target)
    if choice.threshold <= 0.0:  # only "accept everything" reaches it: every image the runtime can accept
        accepted = scores >= 0.0  # negative scores: never-accepted images (unknown)
        tp = int(np.sum(accepted & y))
        return 0.0, tp / max(int(accepted.sum()), 1), tp / max(int(y.sum()), 1)
    below = scores[(scores < choice.threshold) & (scores >= 0.0)]
    low = float(below.max()) if below.size else 0.0
    return (low + float(choice.threshold)) / 2.0, float(choice.precision), float(choice.recall)


def _scan(n_t: np.ndarray, k_t: np.ndarray, target: float, delta: float) -> Optional[int]:
    """The fixed-sequence scan: the grid index of the lowest certified threshold, or None."""
    chosen = None
    # precision 1 cannot be certified from any finite sample: only the point estimate is left
    starts = np.nonzero(n_t >= trials_needed(1.0, target, delta))[0] if target < 1.0 else []
    last, p = None, 1.0
    for j in starts:
        if (k_t[j], n_t[j]) != last:  # neighbouring grid thresholds often accept the same images
            last, p = (k_t[j], n_t[j]), p_value_at_least(int(k_t[j]), int(n_t[j]), target)
        if p > delta:
            break
        chosen = int(j)
    return chosen


def certify_threshold(scores: Any, is_positive: Any, target: float, delta: float, positive: str = "positive",
                      grid: Optional[np.ndarray] = None) -> PrecisionGuarantee:
    """The lowest threshold on ``scores`` whose precision is ``>= target`` with probability ``1 - delta``.

    ``scores``: the runtime's positive-class probability per calibration image; ``is_positive``: its true label.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_positive).astype(bool).ravel()
    if s.shape != y.shape or not s.size:
        raise ValueError(f"scores and labels must be non-empty and the same length, got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    target, delta = float(target), float(delta)
    if not (0.0 < target <= 1.0 and 0.0 < delta < 1.0):
        raise ValueError(f"target must be in (0, 1] and delta in (0, 1), got {target!r} and {delta!r}")
    g = GRID if grid is None else np.sort(np.asarray(grid, dtype=np.float64))[::-1]
    n, pos = int(s.size), int(y.sum())
    base = dict(positive=str(positive), target=target, delta=delta, n=n, positives=pos)
    if pos == 0:
        return PrecisionGuarantee(certified=False, threshold=0.5, precision_bound=0.0, precision=0.0, recall=0.0,
                                  accepted=int(np.sum(s >= 0.5)), **base)
    n_t, k_t = _counts(s, y, g)
    chosen = _scan(n_t, k_t, target, delta)
    if chosen is not None:
        k, a = int(k_t[chosen]), int(n_t[chosen])
        return PrecisionGuarantee(certified=True, threshold=float(g[chosen]), precision_bound=cp_lower(k, a, delta),
                                  precision=k / a, recall=k / pos, accepted=a, **base)
    best = _best_single_bound(k_t, n_t, delta)
    t, prec, rec = point_threshold(s, y, target)
    m = trials_needed(prec, target, delta) if prec > target else None
    need = int(math.ceil(m * prec / rec)) if m is not None and rec > 0 else None
    return PrecisionGuarantee(certified=False, threshold=t, precision_bound=best, precision=prec, recall=rec,
                              accepted=int(np.sum(s >= t)), predictions_needed=m, positives_needed=need, **base)


def best_promise(scores: Any, is_positive: Any, delta: float, positive: str = "positive", below: float = 1.0,
                 inclusive: bool = False, ladder=LADDER, grid: Optional[np.ndarray] = None
                 ) -> Optional[PrecisionGuarantee]:
    """The highest target of ``ladder`` (those ``< below``, or ``<= below`` with ``inclusive``) that Learn-then-Test
    certifies when each of the ``m`` targets is tested at ``delta / m`` — so that taking the highest certified one
    still fails with probability at most ``delta`` (Bonferroni over the ladder). ``None`` when none is certified.

    The result records ``delta`` (the level of the promise as chosen) and ``ladder = m``."""
    levels = sorted({float(t) for t in ladder if (t <= below + 1e-12 if inclusive else t < below - 1e-12)},
                    reverse=True)
    if not levels:
        return None
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_positive).astype(bool).ravel()
    if not y.any():
        return None
    n_t, k_t = _counts(s, y, GRID if grid is None else np.sort(np.asarray(grid, dtype=np.float64))[::-1])
    for t in levels:  # only the certified one is built in full (a refusal's bounds are not needed here)
        if t < 1.0 and _scan(n_t, k_t, t, float(delta) / len(levels)) is not None:
            g = certify_threshold(s, y, t, float(delta) / len(levels), positive, grid)
            return replace(g, delta=float(delta), ladder=len(levels), requested=float(below))
    return None


def with_best(g: PrecisionGuarantee, scores: Any, is_positive: Any, grid: Optional[np.ndarray] = None
              ) -> PrecisionGuarantee:
    """A refusal ``g`` with the best promise its images allow attached (unchanged when certified or none)."""
    if g.certified or g.positives == 0:
        return g
    b = best_promise(scores, is_positive, g.delta, g.positive, below=g.target, inclusive=True, grid=grid)
    if b is None:
        return g
    return replace(g, best_target=b.target, best_threshold=b.threshold, best_recall=b.recall)
