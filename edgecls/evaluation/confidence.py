"""``edgecls eval``'s confidence section: conformal coverage and set size, the risk–coverage curve, OOD AUROC
(with ``--ood-data``) and the precision promise checked on the evaluation images.

Everything is computed from the same logits as the rest of the evaluation, with the artifact's own fitted
confidence (``spec.confidence``) — what ``edgecls run`` would say on these images.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


def _finite(v: Optional[float]) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else float(v)


def _ood_kind(spec: ModelSpec) -> str:
    if spec.confidence is not None and spec.confidence.ood is not None:
        return spec.confidence.ood.kind
    return "energy" if spec.output == "logits" else "msp"


def _ood_scores(spec: ModelSpec, logits: np.ndarray) -> np.ndarray:
    from edgecls.runtime.confidence.ood import ood_scores

    # eval's logits of a probs model are T·log p: only the probability score means the same thing there
    return ood_scores(logits, _ood_kind(spec), "logits", spec.temperature)


def _conformal(spec: ModelSpec, probs: np.ndarray, y: np.ndarray, coverage: Optional[float]) -> Optional[Dict]:
    from edgecls.runtime.confidence.conformal import coverage_and_size

    fit = spec.confidence.conformal if spec.confidence is not None else None
    if fit is None:
        if coverage is not None:
            raise InputError("--coverage needs a model that carries conformal calibration (spec.confidence); this "
                             "one has none: retrain with this edgecls and re-export")
        return None
    target = fit.coverage if coverage is None else float(coverage)
    if not 0.0 < target < 1.0:
        raise InputError(f"--coverage must be in (0, 1), e.g. 0.9, got {coverage!r}")
    sets = fit.sets(probs, target)
    cov, size = coverage_and_size(sets, y)
    sizes = sets.sum(axis=1)
    per_class = {}
    for k, c in enumerate(spec.classes):
        m = y == k
        if m.any():
            per_class[c] = float(np.mean(sets[m, k]))
    return {
        "method": fit.method, "target": target, "coverage": cov, "average_size": size,
        "singletons": float(np.mean(sizes == 1)), "empty": float(np.mean(sizes == 0)),
        "singleton_accuracy": _finite(float(np.mean(sets[sizes == 1].argmax(axis=1) == y[sizes == 1]))
                                      if np.any(sizes == 1) else None),
        "size_histogram": {int(s): int(n) for s, n in zip(*np.unique(sizes, return_counts=True))},
        "per_class_coverage": per_class, "quantile": _finite(fit.quantile(target)), "calibration_images": fit.n,
    }


def _ood(spec: ModelSpec, logits: np.ndarray, ood_logits: Optional[np.ndarray]) -> Dict[str, Any]:
    from edgecls.runtime.confidence.ood import auroc

    fit = spec.confidence.ood if spec.confidence is not None else None
    s_in = _ood_scores(spec, logits)
    out: Dict[str, Any] = {"kind": _ood_kind(spec), "threshold": _finite(fit.threshold) if fit else None,
                           "accept": fit.accept if fit else None}
    if fit is not None:
        out["in_catalog_flagged"] = float(np.mean(fit.unknown(s_in)))
    if ood_logits is not None and len(ood_logits):
        s_out = _ood_scores(spec, ood_logits)
        out["unknown_images"] = int(len(s_out))
        out["auroc"] = auroc(s_in, s_out)
        if fit is not None:
            out["unknown_flagged"] = float(np.mean(fit.unknown(s_out)))
    return out


def _guarantee(spec: ModelSpec, probs: np.ndarray, y: np.ndarray, logits: np.ndarray) -> Optional[Dict[str, Any]]:
    from edgecls.runtime.confidence.bounds import cp_lower

    g = spec.confidence.guarantee if spec.confidence is not None else None
    if g is None or spec.positive is None:
        return None
    k = spec.positive_index
    accepted = probs[:, k] >= spec.threshold  # the runtime's "yes": at or above the threshold, and not unknown
    if spec.confidence.ood is not None:
        accepted &= ~spec.confidence.ood.unknown(_ood_scores(spec, logits))
    tp, n = int(np.sum(accepted & (y == k))), int(np.sum(accepted))
    return {
        "statement": g.statement(), "certified": g.certified, "target": g.target, "delta": g.delta,
        "threshold": spec.threshold, "accepted": n, "precision": tp / n if n else None,
        "recall": tp / int(np.sum(y == k)) if np.any(y == k) else None,
        # what these images alone would certify at the threshold (one threshold, fixed in advance: plain CP)
        "precision_lower_bound_here": cp_lower(tp, n, g.delta) if n else None,
    }


def confidence_metrics(spec: ModelSpec, logits: np.ndarray, y: np.ndarray, coverage: Optional[float] = None,
                       ood_logits: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """The confidence section of ``eval.json`` (``risk_coverage`` keeps its curve for the plot)."""
    from edgecls.runtime.confidence.curves import risk_coverage
    from edgecls.runtime.metrics import softmax

    probs = softmax(logits, spec.temperature)
    return {
        "fitted_on": spec.confidence.source if spec.confidence is not None else None,
        "conformal": _conformal(spec, probs, y, coverage),
        "risk_coverage": risk_coverage(probs, y),
        "ood": _ood(spec, logits, ood_logits),
        "guarantee": _guarantee(spec, probs, y, logits),
    }


def confidence_lines(c: Dict[str, Any]) -> List[str]:
    """The table lines of the confidence section."""
    lines = []
    cf = c.get("conformal")
    if cf:
        lines.append(f"sets ({cf['method'].upper()}, target {100 * cf['target']:g} %): coverage "
                     f"{100 * cf['coverage']:.1f} %, average size {cf['average_size']:.2f}, singletons "
                     f"{100 * cf['singletons']:.0f} %, empty {100 * cf['empty']:.0f} %")
    rc = c.get("risk_coverage")
    if rc:
        lines.append(f"risk-coverage: AURC {rc['aurc']:.4f}")
    o = c.get("ood") or {}
    if "auroc" in o:
        lines.append(f"unknown ({o['kind']}): AUROC {o['auroc']:.3f} on {o['unknown_images']} unknown images"
                     + (f"; flagged: {100 * o['unknown_flagged']:.1f} % of unknown, "
                        f"{100 * o['in_catalog_flagged']:.1f} % of in-catalog" if "unknown_flagged" in o else ""))
    elif "in_catalog_flagged" in o:
        lines.append(f"unknown ({o['kind']}): {100 * o['in_catalog_flagged']:.1f} % of these in-catalog images "
                     f"flagged (promised <= {100 * (1 - o['accept']):g} %; --ood-data DIR measures detection)")
    g = c.get("guarantee")
    if g:
        p = "-" if g["precision"] is None else f"{g['precision']:.3f}"
        lines.append(f"promise: {g['statement']}")
        lines.append(f"  here: precision {p} on {g['accepted']} accepted images at threshold {g['threshold']:.4g}")
    return lines


def ood_logits_of(opened, folder: str, batch: int, workers: int, preprocess: str = "standard") -> np.ndarray:
    """Logits of every image under ``folder`` (any layout, labels ignored): the unknown products."""
    from edgecls.core.images import list_images
    from edgecls.evaluation.evaluate import predict_logits

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--ood-data {folder!r} is not a folder (expected images of products the model does not know)")
    items = [(str(p), 0) for p in list_images(root)]
    if not items:
        raise InputError(f"--ood-data {folder!r} holds no images")
    return predict_logits(opened, items, batch, workers, False, preprocess)


def write_risk_coverage(c: Dict[str, Any], out: Path, title: str) -> Optional[str]:
    from edgecls.core import plots

    rc = c.get("risk_coverage")
    if not rc or not plots.available():
        return None
    return str(plots.plot_risk_coverage(rc["coverage"], rc["risk"], out / "risk_coverage.png", rc["aurc"], title))
