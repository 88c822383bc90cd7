"""Agreement on unlabelled images: the calibration folder's images that were not sampled for the ranges.

They chose nothing (neither the ranges nor the recipe), so each INT8 artifact's top-1 and yes / no / uncertain
agreement with PyTorch on them is more evidence of fidelity, with its n and a 95 % interval — reported beside the
gates (warned below the fidelity limit), never a substitute for the labelled gates.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_AGREEMENT_IMAGES = 256


class UnlabelledAgreement:
    """PyTorch's logits on up to ``limit`` unused calibration-folder images, computed once; then per artifact."""

    def __init__(self, ex, calib_set, limit: int = DEFAULT_AGREEMENT_IMAGES) -> None:
        self.ex = ex
        unused = list(calib_set.unused)
        step = max(1, len(unused) // max(int(limit), 1))
        self.paths = [str(p) for p in unused[::step][:limit]]  # spread over the folder (its classes, if any)
        self.x: Optional[np.ndarray] = None
        self.ref: Optional[np.ndarray] = None

    def _prepare(self) -> None:
        from edgecls.export.parity_data import _load_batch
        from edgecls.reference.torch_backend import TorchBackend

        ex = self.ex
        self.x = _load_batch(self.paths, ex.spec)
        with TorchBackend(ex.ckpt.build_model(), spec=ex.spec, threads=ex.cfg.threads) as be:
            self.ref = np.asarray(be.infer(self.x), dtype=np.float32)

    def __call__(self, path, form: str, spec) -> Optional[Dict[str, Any]]:
        """``{"n", "agreement", "interval", "decision_agreement", "line"}`` for one published artifact."""
        from edgecls.export.gates import proportion_interval
        from edgecls.export.int8_flow import artifact_logits
        from edgecls.runtime.decision import positive_decisions
        from edgecls.runtime.metrics import softmax

        if not self.paths:
            return None
        if self.x is None:
            self.ex.timed("unlabelled agreement", self._prepare)
        logits = self.ex.timed("unlabelled agreement", artifact_logits, path, form, spec, self.x, self.ex.cfg.threads)
        n = len(self.paths)
        same = int(np.sum(np.argmax(logits, 1) == np.argmax(self.ref, 1)))
        out: Dict[str, Any] = {"n": n, "agreement": same / n, "interval": proportion_interval(same, n)}
        lo, hi = out["interval"]
        line = (f"on {n} unlabelled calibration-folder images not used for ranges: top-1 agreement "
                f"{100 * same / n:.2f}% [95% CI {100 * lo:.1f}..{100 * hi:.1f}]")
        k = spec.positive_index
        if k is not None:
            base = self.ex.spec
            mine = positive_decisions(softmax(logits, spec.temperature)[:, k], spec.threshold)
            theirs = positive_decisions(softmax(self.ref, base.temperature)[:, k], base.threshold)
            out["decision_agreement"] = float(np.mean(mine == theirs))
            line += f", decisions {100 * out['decision_agreement']:.2f}%"
        out["line"] = line
        return out
