"""The confidence an artifact carries, applied at run time: the conformal set of each image and whether it is
unknown. Used by :class:`edgecls.runtime.decision.Decider` (so ``edgecls run``, the Python API and the records).
"""
from __future__ import annotations

import logging
import math
from typing import Any, List, Optional

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec, SpecError

log = logging.getLogger(__name__)


class ConfidenceRule:
    """Sets at ``coverage`` (default: the artifact's) and the OOD rule, from ``spec.confidence``.

    An artifact without confidence gives no sets and no unknowns (old artifacts run as before); asking for
    ``coverage`` from one is an error that says how to get it.
    """

    def __init__(self, spec: ModelSpec, coverage: Optional[float] = None, threshold: Optional[float] = None):
        conf = spec.confidence
        if coverage is not None:
            c = float(coverage)
            if not (math.isfinite(c) and 0.0 < c < 1.0):
                raise InputError(f"--coverage must be in (0, 1), e.g. 0.9, got {coverage!r}")
            if conf is None or conf.conformal is None:
                raise InputError(
                    "--coverage needs a model that carries conformal calibration (spec.confidence); this one has "
                    "none: retrain with this edgecls (it fits it on a calibration split) and re-export"
                )
        if conf is not None and not math.isclose(conf.temperature, spec.temperature, rel_tol=1e-6):
            raise SpecError(
                f"the model's confidence calibration was fitted at temperature {conf.temperature:.6g} but its "
                f"temperature is {spec.temperature:.6g}: its sets, unknown threshold and precision guarantee no "
                "longer apply; re-fit them (edgecls.runtime.confidence.refit_spec, which edgecls export runs for "
                "every artifact) after changing the temperature"
            )
        self.spec = spec
        self.conformal = conf.conformal if conf is not None else None
        self.ood = conf.ood if conf is not None else None
        self.guarantee = conf.guarantee if conf is not None else None
        self.coverage = None if self.conformal is None else (self.conformal.coverage if coverage is None else c)
        self.qhat = None if self.conformal is None else self.conformal.quantile(self.coverage)
        if self.qhat is not None and not math.isfinite(self.qhat):
            from edgecls.runtime.confidence.conformal import min_calibration_size

            log.warning("%d calibration images are too few for %g coverage: every set holds every label (it needs "
                        "at least %d)", self.conformal.n, self.coverage, min_calibration_size(1 - self.coverage))
        # the promise holds at the threshold it was certified for, not at one given on the command line
        self.guaranteed = bool(self.guarantee is not None and self.guarantee.certified and (
            threshold is None or math.isclose(float(threshold), self.guarantee.threshold, rel_tol=1e-9)))

    @property
    def active(self) -> bool:
        return self.conformal is not None or self.ood is not None

    def sets(self, probs: Any) -> Optional[np.ndarray]:
        """Boolean ``(N, C)`` membership of the conformal sets; None without conformal calibration."""
        if self.conformal is None:
            return None
        from edgecls.runtime.confidence.conformal import prediction_sets

        return prediction_sets(np.atleast_2d(np.asarray(probs, dtype=np.float64)), self.qhat, self.conformal.method)

    def ood_scores(self, outputs: Any) -> Optional[np.ndarray]:
        """The OOD score per row of the raw model outputs; None without OOD calibration."""
        if self.ood is None:
            return None
        from edgecls.runtime.confidence.ood import ood_scores

        return ood_scores(outputs, self.ood.kind, self.spec.output, self.spec.temperature)

    def unknown(self, score: Optional[float]) -> Optional[bool]:
        if self.ood is None or score is None:
            return None
        return bool(score > self.ood.threshold)

    def describe(self, threshold: float) -> List[str]:
        """One line per part, for the run summary and the logs."""
        lines = []
        if self.conformal is not None:
            q = "inf (every label)" if not math.isfinite(self.qhat) else f"{self.qhat:.4g}"
            lines.append(f"sets: {100 * self.coverage:g} % coverage ({self.conformal.method.upper()}, "
                         f"{self.conformal.n} calibration images, quantile {q})")
        if self.ood is not None:
            lines.append(f"unknown: {self.ood.kind} score > {self.ood.threshold:.4g} (keeps >= "
                         f"{100 * self.ood.accept:g} % of in-catalog images)")
        if self.guarantee is not None:
            g = self.guarantee
            if self.guaranteed or not g.certified:
                lines.append(f"precision: {g.statement()}")
            else:
                lines.append(f"precision: threshold {threshold:.4g} was given by hand; the certified one is "
                             f"{g.threshold:.4g} ({g.statement()}): no guarantee at {threshold:.4g}")
        return lines
