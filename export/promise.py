"""The promise training certified, carried to every exported artifact — re-certified only where it must change.

Training certifies its promise on many labelled scores (the cross-fitted scores of every labelled image, or the
held-out calibration split) and the checkpoint keeps them (``spec.confidence.scores``). Re-fitting each artifact
on the ~130 calibration images alone would state a different, weaker promise for the same model. Instead:

1. parity measures how far the artifact's probabilities (at the checkpoint's temperature) and logits are from the
   checkpoint's, over the parity images (``max_abs_prob``, ``max_abs_logit``, n);
2. the checkpoint's scores are re-certified with every row moved that far *against* the promise
   (:func:`edgecls.runtime.confidence.fit.fit_confidence` ``margin``): a positive's score down and its OOD score
   up, a negative's score up and its OOD score down, every conformal score up;
3. when that worst case certifies the same threshold at the same target (or, for a refusal, refuses in the same
   words), the artifact states the checkpoint's promise word for word (its outputs do not differ enough to matter); otherwise it states the re-certified one,
   and the log and ``parity.json`` say why, with the numbers.

What rests on measurement: the margins are the largest differences seen on the parity images, not a bound over
every possible image (an INT8 artifact far from its checkpoint on some unseen photo could exceed them).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional

from edgecls.export.parity import ParityReport
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Carried:
    """The artifact's spec and what was decided, for ``parity.json``."""

    spec: ModelSpec
    kept: bool  # True: the checkpoint's promise word for word
    margin: float  # probability units
    ood_margin: float  # OOD-score units
    n: int  # parity images the margins were measured on
    why: str

    def to_dict(self) -> Dict[str, Any]:
        return {"kept": self.kept, "margin": self.margin, "ood_margin": self.ood_margin, "n": self.n,
                "why": self.why}


def margins(report, spec: ModelSpec, fitted_temperature: float) -> Optional[tuple]:
    """``(probability margin, OOD margin)`` of an artifact from its parity ``report``; None when not measured.

    At the checkpoint's temperature the measured ``max_abs_prob`` is used; at another temperature ``T`` the softmax
    bound ``max|dz| / (2T)`` (each probability's gradient has L1 norm <= 1/2 per unit of logit). The OOD margin is
    ``max|dz|`` for energy / max-logit scores (both 1-Lipschitz in the largest logit change)."""
    dz, dp = getattr(report, "max_abs_logit", None), getattr(report, "max_abs_prob", None)
    if dz is None or dp is None or not (math.isfinite(dz) and math.isfinite(dp)):
        return None
    t = float(spec.temperature)
    prob = float(dp) if abs(t - fitted_temperature) <= 1e-12 else min(1.0, 0.5 * float(dz) / t)
    return prob, float(dz)


def carry_promise(spec: ModelSpec, checkpoint: ModelSpec, report, name: str) -> Optional[Carried]:
    """``spec`` (an artifact's, passed parity) with the checkpoint's promise carried or re-certified; None when
    the checkpoint keeps no scores or the artifact is not comparable (other classes, a probabilities output)."""
    from edgecls.runtime.confidence.fit import fit_on_scores

    conf = checkpoint.confidence
    if (conf is None or conf.scores is None or tuple(spec.classes) != tuple(checkpoint.classes)
            or spec.output != checkpoint.output or spec.positive != checkpoint.positive):
        return None
    m = margins(report, spec, conf.temperature)
    if m is None:
        return None
    prob, dz = m
    ood = dz if (conf.ood is None or conf.ood.kind != "msp") else prob
    n = int(getattr(report, "n", 0))
    settings = conf.settings()
    moved = fit_on_scores(conf.scores.with_margin(prob, ood), spec.classes, temperature=spec.temperature,
                          output=spec.output, positive=spec.positive, settings=settings, source="")
    g0, g1 = conf.guarantee, moved.guarantee
    same_t = abs(float(spec.temperature) - conf.temperature) <= 1e-12
    # the same promise: a certified one at the same target and threshold; a refusal stated word for word (its
    # threshold is a point estimate midway between scores, which the margin moves without changing what is said)
    same = same_t and (g0 is None) == (g1 is None) and (g0 is None or (
        g0.certified == g1.certified and g0.target == g1.target
        and (g0.threshold == g1.threshold if g0.certified else g0.statement() == g1.statement())))
    measured = f"its probabilities are within {prob:.2g} of the checkpoint's (logits {dz:.2g}) on {n} parity images"
    if same:
        why = (f"{measured}: with every calibration score moved that far against it, the promise holds unchanged"
               if g0 is not None else f"{measured}: no precision promise to carry (no positive class)")
        new_conf = replace(moved, guarantee=g0, source=f"{conf.source}; carried to {name}: {why}")
        out = spec.replace(confidence=new_conf, threshold=float(g0.threshold) if g0 is not None else spec.threshold)
        log.info("%s: the checkpoint's promise carried (%s)", name, why)
        return Carried(out, True, prob, ood, n, why)
    why = (f"{measured}" + ("" if same_t else f" (temperature {spec.temperature:.4g}, not the checkpoint's "
                             f"{conf.temperature:.4g})")
           + ": re-certified with every calibration score moved that far against the promise")
    new_conf = replace(moved, source=f"{conf.source}; re-certified for {name}: {why}")
    threshold = float(g1.threshold) if g1 is not None else spec.threshold
    out = spec.replace(confidence=new_conf, threshold=threshold)
    log.warning("%s: %s; it states: %s (the checkpoint's: %s)", name, why,
                g1.statement() if g1 is not None else "no precision promise",
                g0.statement() if g0 is not None else "none")
    return Carried(out, False, prob, ood, n, why)


def with_promise(report: ParityReport, spec: ModelSpec, promise: Optional[Dict[str, Any]]) -> ParityReport:
    """The report's note on the promise the artifact states, and its final threshold (the carried one)."""
    if not promise:
        return report
    note = ("promise: the checkpoint's, word for word" if promise["kept"] else "promise: re-certified") + \
        f" ({promise['why']})" + (f"; threshold {spec.threshold:.4g}" if spec.positive is not None else "")
    return replace(report, notes=tuple(report.notes) + (note,),
                               threshold=spec.threshold if spec.positive is not None else report.threshold)
