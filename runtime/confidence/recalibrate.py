"""Re-fit an artifact's confidence from a labelled folder, without touching its weights (``edgecls calibrate``,
``edgecls train --calib-data``): the temperature (logit models), the threshold guarantee, the conformal scores and
the unknown threshold — all on *this artifact's own outputs* for the folder's images, through any
:class:`~edgecls.runtime.backends.base.Backend` (onnxruntime, TensorRT, the PyTorch reference).

The folder must be images the model never trained on (a calibration set labelled after training: "a team labels
60 phones next week"); that is what makes the promise hold for new photos. Numpy + the runtime only.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.confidence.fitted import ConfidenceSettings
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

T_BOUNDS = (0.05, 20.0)


def labelled_folder(root: os.PathLike, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """``[(path, class index)]`` of ``root/<class>/*`` (every folder must be a class of the model)."""
    from edgecls.core.images import class_folders, list_images

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {os.fspath(root)!r} is not a folder (expected DIR/<class>/*.jpg)")
    folders = class_folders(root)
    unknown = [f.name for f in folders if f.name not in classes]
    if not folders or unknown:
        hint = f" (a split root? try {os.fspath(root / 'val')})" if {"train", "val"} & set(unknown) else ""
        raise InputError(f"--data {os.fspath(root)!r}: class folders {unknown or 'none'} are not the model's classes "
                         f"{list(classes)}{hint}")
    index = {c: i for i, c in enumerate(classes)}
    items = [(str(p), index[f.name]) for f in folders for p in list_images(f)]
    if not items:
        raise InputError(f"--data {os.fspath(root)!r}: no images in its class folders")
    return items


def folder_outputs(backend, items: Sequence[Tuple[str, int]], spec: ModelSpec, batch: int = 32) -> np.ndarray:
    """The backend's raw outputs for the items' images (the spec's own preprocessing), ``(N, C)`` float64."""
    from edgecls.runtime.preprocess import ImageReadError, load_image, preprocess

    out = []
    for i in range(0, len(items), batch):
        try:
            x = preprocess([load_image(p) for p, _ in items[i:i + batch]], spec.preprocess)
        except ImageReadError as e:
            raise InputError(str(e)) from e
        out.append(np.asarray(backend.infer(x), dtype=np.float64))
    return np.concatenate(out)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> Tuple[float, bool]:
    """``(T, identifiable)``: the NLL temperature, or ``(1, False)`` when the images are perfectly separated."""
    from edgecls.runtime import metrics as M

    t = float(M.fit_temperature(logits, y, bounds=T_BOUNDS))
    if t <= T_BOUNDS[0] * 1.001 and t < 1.0:
        return 1.0, False
    return t, True


@dataclass(frozen=True)
class Recalibration:
    spec: ModelSpec  # the artifact's spec with its new confidence (and temperature, threshold)
    before: Optional[str]  # the promise it carried
    temperature_before: float
    images: int  # all the labelled rows it was fitted on
    positives: int
    kept: int = 0  # of which the labelled scores the artifact was certified on before

    @property
    def statement(self) -> Optional[str]:
        g = self.spec.confidence.guarantee if self.spec.confidence is not None else None
        return g.statement() if g is not None else None


def recalibrate_spec(spec: ModelSpec, outputs: Any, y: Any, source: str,
                     settings: Optional[ConfidenceSettings] = None, temperature: bool = True,
                     ids: Optional[Sequence[str]] = None, combine: bool = True) -> Recalibration:
    """``spec`` re-fitted on ``outputs`` of labelled images ``y`` — together with the labelled scores its
    confidence was fitted on (``combine``, when it keeps them: the promise is re-stated with all of them; a stored
    row whose id is among ``ids`` is replaced by its new output). The temperature is re-fitted (a logit model,
    unless ``temperature`` is False; a ``probs`` model has it in its graph) on all the rows — except when the stored
    rows carry margins (an exported artifact certified on its checkpoint's scores): those margins hold at the
    temperature they were measured at, which is then kept. Then :func:`fit_on_scores`."""
    from edgecls.runtime.confidence.fit import fit_on_scores
    from edgecls.runtime.confidence.scores import CalibrationScores

    z = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).ravel()
    if z.shape != (y.size, spec.num_classes) or not y.size:
        raise InputError(f"outputs {z.shape} do not match {y.size} labelled images of {spec.num_classes} classes")
    before = spec.confidence.guarantee.statement() if spec.confidence and spec.confidence.guarantee else None
    if settings is None:  # keep what the artifact was fitted with (coverage, target, δ, ...)
        settings = spec.confidence.settings() if spec.confidence is not None else ConfidenceSettings()
    rows = CalibrationScores(z, y, 0.0, 0.0, tuple(ids or ()))
    stored = spec.confidence.scores if combine and spec.confidence is not None else None
    kept = 0
    if stored is not None:
        stored = stored.without(rows.ids) if rows.ids else stored
        kept = stored.n
        rows = stored.plus(rows)
        source = f"{kept} labelled scores it was certified on ({spec.confidence.source}) + {y.size} from {source}"
    t0 = spec.temperature
    new = spec
    if temperature and spec.output == "logits" and not (stored is not None and stored.has_margin):
        t, ok = fit_temperature(rows.outputs, rows.labels)
        if not ok:
            log.warning("the calibration images are perfectly separated: the temperature is not identifiable; "
                        "keeping T = %.4g", t0)
            t = t0
        new = spec.replace(temperature=t, confidence=None)
    conf = fit_on_scores(rows, new.classes, temperature=new.temperature, output=new.output, positive=new.positive,
                         settings=settings, source=source)
    threshold = conf.guarantee.threshold if conf.guarantee is not None else new.threshold
    new = new.replace(confidence=conf, threshold=float(threshold))
    pos = int(np.sum(rows.labels == spec.positive_index)) if spec.positive is not None else 0
    return Recalibration(new, before, t0, int(rows.n), pos, kept)


def describe(r: Recalibration, name: str) -> List[str]:
    """Lines for the terminal: what changed and what the artifact can now state."""
    s = r.spec
    lines = [f"{name}: {r.images} labelled images" + (f" ({r.positives} {s.positive!r})" if s.positive else "")
             + (f": the {r.kept} it was certified on + {r.images - r.kept} new" if r.kept else ""),
             f"  temperature {r.temperature_before:.4g} -> {s.temperature:.4g}"]
    c = s.confidence
    if c is not None and c.conformal is not None:
        q = c.conformal.quantile()
        lines.append(f"  sets       {100 * c.conformal.coverage:g} % coverage, quantile "
                     + (f"{q:.4g}" if math.isfinite(q) else "inf (too few images: every label)"))
    if c is not None and c.ood is not None:
        lines.append(f"  unknown    {c.ood.kind} score > {c.ood.threshold:.4g}")
    if r.before is not None:
        lines.append(f"  before     {r.before}")
    if r.statement is not None:
        lines.append(f"  promise    {r.statement}")
    return lines
