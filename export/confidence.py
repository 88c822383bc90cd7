"""Every exported artifact carries its own confidence, fitted on its own outputs (issue 13).

FP16, INT8 and TensorRT change the logits a little; a conformal quantile, an OOD threshold or a certified
precision threshold fitted on the PyTorch model's logits would not be exact for them. So, after an artifact passes
parity, :class:`ArtifactRefit` runs it (through the runtime backend a deployment uses, with the artifact's own
preprocessing) on the labelled calibration images and calls :func:`edgecls.runtime.confidence.refit_spec` — the
one fitting function training uses too — at the artifact's temperature.

Which images: the calibration split the checkpoint recorded (``data["calib"]``: val images that never picked the
epoch) among the parity images; else labelled ``--parity-data`` (independent of training); else the checkpoint's
val images, marked as not an honest split. Without labels nothing can be fitted: the checkpoint's confidence is
kept and a warning says it was fitted on the PyTorch model's logits.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgecls.runtime.spec import ModelSpec, PreprocessSpec

log = logging.getLogger(__name__)


def _real(p: str) -> str:
    return os.path.realpath(p)


def calibration_subset(ckpt_data: Dict, paths: Tuple[str, ...], labelled: bool,
                       from_checkpoint: bool) -> Tuple[Optional[np.ndarray], str]:
    """``(positions among the parity images, what they are)``; ``(None, why)`` when there are no labels."""
    if not labelled:
        return None, "the parity images are unlabelled"
    calib = {_real(p) for p in ckpt_data.get("calib", [])}
    if from_checkpoint and calib:
        pos = np.array([i for i, p in enumerate(paths) if _real(p) in calib], dtype=np.int64)
        if pos.size:
            return pos, (f"calibration split recorded in the checkpoint ({pos.size} val images, never used to "
                         "pick the epoch)")
        return None, "none of the checkpoint's calibration images is among the parity images (--parity-count?)"
    pos = np.arange(len(paths), dtype=np.int64)
    if from_checkpoint:
        return pos, f"checkpoint val ({pos.size} images, also used to pick the epoch: not an honest split)"
    return pos, f"labelled --parity-data ({pos.size} images, independent of training)"


class ArtifactRefit:
    """Call it with an artifact's path and spec after it passed parity: returns the spec with its own confidence."""

    def __init__(self, ckpt_data: Dict, data, threads: Optional[int] = None) -> None:
        from_checkpoint = str(getattr(data, "source", "")).startswith("checkpoint val")
        self.positions, self.source = calibration_subset(ckpt_data, tuple(data.paths), data.y is not None,
                                                         from_checkpoint)
        self.paths: List[str] = [] if self.positions is None else [data.paths[int(i)] for i in self.positions]
        self.y = None if self.positions is None else np.asarray(data.y)[self.positions]
        self.threads = threads
        self._inputs: Dict[PreprocessSpec, np.ndarray] = {}
        self.warned = False

    @property
    def possible(self) -> bool:
        return self.positions is not None and len(self.paths) > 0

    def _batch(self, pspec: PreprocessSpec) -> np.ndarray:
        if pspec not in self._inputs:
            from edgecls.runtime.preprocess import load_image, preprocess

            self._inputs[pspec] = preprocess([load_image(p) for p in self.paths], pspec)
        return self._inputs[pspec]

    def outputs(self, path: os.PathLike, spec: ModelSpec, device: str = "cpu") -> np.ndarray:
        """The artifact's raw outputs on the calibration images (its own input preprocessing)."""
        from edgecls.runtime.backends import load_backend

        x = self._batch(spec.preprocess)
        with load_backend(path, device=device, threads=self.threads, allow_fallback=False, spec=spec) as be:
            return np.concatenate([np.asarray(be.infer(x[i:i + 32]), dtype=np.float64)
                                   for i in range(0, x.shape[0], 32)])

    def __call__(self, path: os.PathLike, spec: ModelSpec, name: Optional[str] = None,
                 device: str = "cpu") -> ModelSpec:
        from edgecls.runtime.confidence import refit_spec

        name = name or Path(path).name
        if not self.possible:
            if not self.warned:
                log.warning("confidence not re-fitted per artifact (%s): the artifacts keep the checkpoint's, "
                            "fitted on the PyTorch model's logits%s", self.source,
                            "" if spec.confidence is not None else " (it has none)")
                self.warned = True
            return spec
        out = self.outputs(path, spec, device)
        new = refit_spec(spec, out, self.y, source=f"{self.source}; outputs of {name} ({spec.precision})")
        log.info("%s: confidence re-fitted on %d calibration images%s", name, len(self.y),
                 f"; {new.confidence.guarantee.statement()}" if new.confidence.guarantee else "")
        return new


def confidence_record(spec: ModelSpec) -> Optional[Dict]:
    """What ``parity.json`` shows about an artifact's confidence (the scores themselves stay in its spec)."""
    c = spec.confidence
    if c is None:
        return None
    q = c.conformal.quantile() if c.conformal else None
    return {
        "source": c.source, "n": c.n, "temperature": c.temperature,
        "coverage": c.conformal.coverage if c.conformal else None,
        "method": c.conformal.method if c.conformal else None,
        "quantile": q if q is not None and np.isfinite(q) else None,
        "ood": c.ood.to_dict() if c.ood else None,
        "threshold": spec.threshold,
        "guarantee": c.guarantee.statement() if c.guarantee else None,
    }


SETS_MARGIN = 0.01  # probabilities further than this from the checkpoint's: the sets are fitted on its own outputs


def _refit_of(exporter) -> ArtifactRefit:
    refit = getattr(exporter, "_confidence_refit", None)
    if refit is None:
        refit = exporter._confidence_refit = ArtifactRefit(exporter.ckpt.data, exporter.data, exporter.cfg.threads)
    return refit


def _own_sets(refit: ArtifactRefit, path: os.PathLike, spec: ModelSpec, name: str, device: str,
              margin: float) -> ModelSpec:
    """``spec`` with its conformal sets fitted on the artifact's own outputs for the labelled calibration images
    (exact split conformal) instead of the checkpoint's scores widened by ``margin`` — chosen by the margin alone
    (no labels), so the choice keeps the coverage guarantee. The precision promise and the unknown threshold stay
    as carried (the promise was certified with that threshold)."""
    import dataclasses

    from edgecls.runtime.confidence.conformal import ConformalFit
    from edgecls.runtime.confidence.fit import probabilities

    conf = spec.confidence
    if not refit.possible or conf is None or conf.conformal is None:
        return spec
    out = refit.outputs(path, spec, device)
    probs = probabilities(out, spec.output, spec.temperature)
    sets = ConformalFit.fit(probs, refit.y, conf.conformal.method, conf.conformal.coverage)
    why = (f"sets fitted on its own outputs for {len(refit.y)} calibration images ({refit.source}): its "
           f"probabilities differ from the checkpoint's by up to {margin:.2g} > {SETS_MARGIN:g}")
    log.info("%s: %s", name, why)
    return spec.replace(confidence=dataclasses.replace(conf, conformal=sets, source=f"{conf.source}; {why}"))


def refit_artifact(exporter, path: os.PathLike, spec: ModelSpec, name: str, device: str = "cpu",
                   report=None) -> ModelSpec:
    """The pipeline's hook for every artifact kind: ``spec`` with the checkpoint's promise carried to it (or
    re-certified where its outputs differ enough to matter, :mod:`edgecls.export.promise`) when the checkpoint
    keeps its calibration scores and parity measured the artifact (``report``); else its own confidence re-fitted
    on the calibration images. Recorded in ``parity.json`` under the artifact's entry."""
    from edgecls.export.promise import carry_promise

    carried = carry_promise(spec, exporter.ckpt.spec, report, name) if report is not None else None
    if carried is not None:
        new = carried.spec
        if carried.margin > SETS_MARGIN:
            new = exporter.timed(f"confidence {name}", _own_sets, _refit_of(exporter), path, new, name, device,
                                 carried.margin)
        entry = exporter.extra.setdefault(name, {})
        entry["confidence"] = confidence_record(new)
        entry["promise"] = carried.to_dict()
        return new
    if report is not None and exporter.ckpt.spec.confidence is not None \
            and exporter.ckpt.spec.confidence.scores is None:
        log.info("%s: the checkpoint keeps no calibration scores (trained before they were kept): the confidence "
                 "is re-fitted on the calibration images", name)
    refit = _refit_of(exporter)
    new = exporter.timed(f"confidence {name}", refit, path, spec, name, device)
    exporter.extra.setdefault(name, {})["confidence"] = confidence_record(new)
    return new
