"""The INT8 gates: what a deployment relies on, each with its n and a 95 % interval (issue 18).

An INT8 artifact is judged on the images that chose nothing (the *report* split, plus ``--gate-data``):

- **accuracy** against the labels: no worse than the PyTorch model's by more than ``int8_accuracy_drop`` (1 point),
  *with evidence*: the drop fails the artifact when it is above the limit and McNemar's exact one-sided test on the
  images where the two disagree says it is not chance (p < ``SIGNIFICANCE``). On ~130 images 1 point is one image:
  2 hurting flips and none helping (p = 0.25) is a warning, not a refusal; two classes swapped are refused;
- **calibration**: the artifact's own ECE (at its own temperature) <= max(0.03, PyTorch's ECE + 0.015);
- **decisions** (with a ``--positive`` class): its yes / no / uncertain equals PyTorch's on >= 97 % of images.

Fidelity — top-1 agreement and p99 |Δprob| with *both* sides at the checkpoint's temperature — is reported and
warned about (below 99 % / above 0.05) but fails the export only under ``--strict`` or an explicit
``--tol-int8-agreement`` / ``--tol-int8-p99-prob``: a top-1 flip that turns a wrong answer right is not a harm, and
a temperature difference is not one either. Without labels, agreement is the only evidence and is gated.

Intervals: Clopper–Pearson for proportions (agreements), a paired bootstrap (2,000 resamples, fixed seed) for the
accuracy drop and the ECE. A verdict on fewer than ``LOW_EVIDENCE`` images says so.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

LOW_EVIDENCE = 100  # a verdict on fewer images than this is marked "low evidence"
SIGNIFICANCE = 0.05  # an accuracy drop above the limit fails when McNemar's one-sided p-value is below this
BOOTSTRAP = 2000
Interval = Tuple[float, float]


def proportion_interval(k: int, n: int, level: float = 0.95) -> Optional[Interval]:
    """Clopper–Pearson interval of k successes in n (None when n == 0)."""
    from edgecls.runtime.confidence.bounds import cp_lower, cp_upper

    if n <= 0:
        return None
    a = (1.0 - level) / 2.0
    return float(cp_lower(int(k), int(n), a)), float(cp_upper(int(k), int(n), a))


def bootstrap_interval(stat: Callable[[np.ndarray], float], n: int, level: float = 0.95,
                       resamples: int = BOOTSTRAP, seed: int = 0) -> Optional[Interval]:
    """Percentile bootstrap of ``stat(index)`` over ``n`` paired rows (deterministic: fixed seed)."""
    if n <= 1:
        return None
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)])
    a = (1.0 - level) / 2.0
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))


def accuracy_drop(ref_correct: np.ndarray, art_correct: np.ndarray) -> Tuple[float, Optional[Interval]]:
    """PyTorch accuracy − artifact accuracy on the same images, and its paired-bootstrap 95 % interval."""
    d = ref_correct.astype(np.float64) - art_correct.astype(np.float64)
    if not np.any(d):  # identical right/wrong on every image: the interval is a point
        return 0.0, (0.0, 0.0)
    return float(d.mean()), bootstrap_interval(lambda i: float(d[i].mean()), d.size)


def mcnemar_p(ref_correct: np.ndarray, art_correct: np.ndarray) -> float:
    """One-sided exact McNemar p-value that the artifact is less accurate: P(X >= b), X ~ Binomial(b + c, 1/2),
    with b images only PyTorch gets right and c images only the artifact gets right."""
    from edgecls.runtime.confidence.bounds import binomial_sf

    b = int(np.sum(ref_correct & ~art_correct))
    c = int(np.sum(~ref_correct & art_correct))
    return 1.0 if b == 0 else binomial_sf(b, b + c, 0.5)


def ece_interval(probs: np.ndarray, y: np.ndarray) -> Optional[Interval]:
    from edgecls.runtime.metrics import expected_calibration_error

    return bootstrap_interval(lambda i: expected_calibration_error(probs[i], y[i]), len(y))


def int8_checks(check, tolerances, data, reference, ref: np.ndarray,
                 logits: np.ndarray, own: np.ndarray, ece: Optional[float], same_top1: np.ndarray,
                 same_decision: Optional[np.ndarray], p99_prob: float) -> None:
    """The INT8 checks, through ``check(name, value, op, limit, n, interval, gated)`` of
    :func:`edgecls.export.parity.compare`: accuracy, calibration, decisions, then fidelity (gated only when asked,
    or when there are no labels)."""
    n = data.n
    labelled = data.y is not None and reference.accuracy is not None
    if labelled:
        y = np.asarray(data.y)
        ref_ok, art_ok = np.argmax(ref, 1) == y, np.argmax(logits, 1) == y
        drop, ci = accuracy_drop(ref_ok, art_ok)
        p = mcnemar_p(ref_ok, art_ok)
        over = drop > tolerances.int8_accuracy_drop + 1e-12
        check(f"accuracy drop (McNemar p={p:.2g})" if over else "accuracy drop", drop, "<=",
              tolerances.int8_accuracy_drop + 1e-12, n, ci,
              gated=not over or p < SIGNIFICANCE or tolerances.gate_accuracy_point)
        if n >= tolerances.ece_min_images:
            check("ECE", ece, "<=", tolerances.ece_limit(reference.ece), n, ece_interval(own, y))
    if same_decision is not None:
        check("decision agreement", float(np.mean(same_decision)), ">=", tolerances.int8_decision_agreement, n,
              proportion_interval(int(same_decision.sum()), n))
    check("top-1 agreement", float(np.mean(same_top1)), ">=", tolerances.int8_agreement, n,
          proportion_interval(int(same_top1.sum()), n), gated=tolerances.gate_agreement or not labelled)
    check("p99 |Δprob| at the same T", p99_prob, "<=", tolerances.int8_p99_prob, n, gated=tolerances.gate_p99_prob)
