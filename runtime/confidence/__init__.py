"""A confidence you can state (numpy only, torch-free): guaranteed precision, conformal sets, unknown products.

- :mod:`~edgecls.runtime.confidence.bounds`: exact binomial tails, Clopper–Pearson bounds, sample sizes needed.
- :mod:`~edgecls.runtime.confidence.guarantee`: the positive-class threshold with "precision >= target with
  probability 1 - δ" (Learn-then-Test, fixed sequence), or a refusal saying how many positives it needs.
- :mod:`~edgecls.runtime.confidence.conformal`: split conformal sets (LAC, APS) at any coverage.
- :mod:`~edgecls.runtime.confidence.ood`: energy / max-logit / max-probability OOD scores, their threshold, AUROC.
- :mod:`~edgecls.runtime.confidence.fitted`: :class:`ConfidenceSpec`, carried in ``ModelSpec.confidence``.
- :mod:`~edgecls.runtime.confidence.fit`: :func:`fit_confidence` / :func:`refit_spec`, the one fitting function
  for the checkpoint (train) and every exported artifact (export).
- :mod:`~edgecls.runtime.confidence.rule`: ``ConfidenceRule``, applying it at run time (sets, ``unknown``).
- :mod:`~edgecls.runtime.confidence.curves`: the risk–coverage curve of ``edgecls eval``.

``rule`` imports :mod:`edgecls.runtime.spec` (which imports ``fitted``): it is not imported here.
"""
from __future__ import annotations

from edgecls.runtime.confidence.bounds import cp_lower, cp_upper, trials_needed
from edgecls.runtime.confidence.conformal import (
    ConformalFit,
    conformal_quantile,
    nonconformity,
    prediction_sets,
)
from edgecls.runtime.confidence.fit import fit_confidence, refit_spec
from edgecls.runtime.confidence.fitted import ConfidenceSettings, ConfidenceSpec
from edgecls.runtime.confidence.guarantee import PrecisionGuarantee, certify_threshold
from edgecls.runtime.confidence.ood import OODFit, auroc, ood_scores

__all__ = [
    "ConfidenceSettings",
    "ConfidenceSpec",
    "ConformalFit",
    "OODFit",
    "PrecisionGuarantee",
    "auroc",
    "certify_threshold",
    "conformal_quantile",
    "cp_lower",
    "cp_upper",
    "fit_confidence",
    "nonconformity",
    "ood_scores",
    "prediction_sets",
    "refit_spec",
    "trials_needed",
]
