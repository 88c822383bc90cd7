"""Fixed-bucket histograms of each frame's confidence and OOD (unknown) score, for ``/metrics``.

Cumulative counts per upper bound, as Prometheus histograms want them; one bisect per value (a frame costs about a
microsecond). The OOD score's buckets span what energy and max-probability scores take; beyond them, ``+Inf``.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Dict, List, Sequence, Tuple

CONFIDENCE_BUCKETS: Tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
OOD_BUCKETS: Tuple[float, ...] = (-12.0, -10.0, -8.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf only)
        self.total = 0.0
        self.n = 0

    def observe(self, x: float) -> None:
        if not math.isfinite(x):
            return
        self.counts[bisect.bisect_left(self.bounds, x)] += 1
        self.total += x
        self.n += 1

    def cumulative(self) -> List[Tuple[str, int]]:
        """``[(le, count <= le)]`` ending with ``+Inf``, as prometheus_client's HistogramMetricFamily takes."""
        out, acc = [], 0
        for b, c in zip(self.bounds + (math.inf,), self.counts):
            acc += c
            out.append(("+Inf" if math.isinf(b) else repr(b), acc))
        return out


class ScoreHistograms:
    """``confidence`` (top-class probability) and ``ood_score`` (when the model carries an OOD threshold)."""

    def __init__(self) -> None:
        self.confidence = Histogram(CONFIDENCE_BUCKETS)
        self.ood_score = Histogram(OOD_BUCKETS)

    def observe(self, pred: Any) -> None:
        self.confidence.observe(float(pred.confidence))
        if getattr(pred, "ood_score", None) is not None:
            self.ood_score.observe(float(pred.ood_score))

    def items(self) -> Dict[str, Histogram]:
        return {"confidence": self.confidence, "ood_score": self.ood_score}
