"""Build the drift reference of an artifact (:mod:`edgecls.runtime.drift.reference`) on its calibration images.

The artifact runs through the runtime backend a deployment uses, with its own preprocessing, on the images its
promise was stated on: the calibration split the checkpoint recorded (``data["calib"]``: val images that never
picked the epoch), else the images given. Each image's statistics are taken on the very input the model sees, as the
monitor takes them on live frames; its scores are the artifact's own (temperature, OOD score, conformal sets).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.drift.image_checks import STATS, frame_stats
from edgecls.runtime.drift.reference import MIN_IMAGES, DriftReference

log = logging.getLogger(__name__)
BATCH = 32


def build_reference(model_path: os.PathLike | str, paths: Sequence[os.PathLike | str], source: str,
                    device: str = "cpu", threads: Optional[int] = None) -> DriftReference:
    """Run ``model_path`` on ``paths`` and return its drift reference (not yet saved)."""
    from edgecls.core.fileio import file_sha256
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.preprocess import load_image

    if len(paths) < MIN_IMAGES:
        raise InputError(f"a drift reference needs at least {MIN_IMAGES} calibration images, got {len(paths)}")
    stats: List[np.ndarray] = []
    scores: Dict[str, List[float]] = {"max_prob": [], "ood_score": [], "p_positive": [], "set_size": []}
    classes: Counter = Counter()
    with Classifier.load(model_path, device=device, threads=threads) as clf:
        pspec = clf.spec.preprocess
        for i in range(0, len(paths), BATCH):
            chw = np.stack([clf.prepare(load_image(p)) for p in paths[i:i + BATCH]])
            stats.extend(frame_stats(x, pspec.mean, pspec.std)[0] for x in chw)
            for pred in clf.decider.decide(clf.infer(chw)):
                scores["max_prob"].append(pred.confidence)
                scores["ood_score"].append(np.nan if pred.ood_score is None else pred.ood_score)
                scores["p_positive"].append(np.nan if pred.p_positive is None else pred.p_positive)
                scores["set_size"].append(np.nan if pred.set is None else float(len(pred.set)))
                classes[pred.label] += 1
        ood_kind = getattr(getattr(clf.decider.confidence, "ood", None), "kind", None)
    cols = np.stack(stats)
    kept = {k: tuple(v) for k, v in scores.items() if not np.any(np.isnan(np.asarray(v, dtype=np.float64)))}
    return DriftReference(model_sha256=file_sha256(model_path), source=source,
                          stats={s: tuple(float(x) for x in cols[:, j]) for j, s in enumerate(STATS)},
                          scores=kept, classes=dict(classes), ood_kind=ood_kind)


def calibration_images(ckpt_data: Dict[str, Any]) -> tuple:
    """``(paths, what they are)``: the checkpoint's calibration split, else its val images (said so)."""
    calib = [p for p in ckpt_data.get("calib", []) if os.path.isfile(p)]
    if calib:
        return calib, f"calibration split recorded in the checkpoint ({len(calib)} val images)"
    val = [p for p, *_ in ckpt_data.get("val", []) if os.path.isfile(p)]
    return val, f"checkpoint val ({len(val)} images, also used to pick the epoch)"


def write_references(exporter: Any) -> List[str]:
    """The export's hook: a ``.drift.json`` beside each artifact that passed parity; returns warnings."""
    paths, source = calibration_images(getattr(exporter.ckpt, "data", None) or {})
    if len(paths) < MIN_IMAGES:
        return [f"no drift reference written: {source} are fewer than {MIN_IMAGES} (edgecls run will watch no drift)"]
    out = []
    for r in exporter.reports:
        p = Path(r.path)
        if not r or not p.is_file():
            continue
        device = "cpu" if p.suffix == ".onnx" else "auto"
        ref = exporter.timed(f"drift reference {p.name}", build_reference, p, paths, source, device,
                             exporter.cfg.threads)
        ref.save(p)
        log.info("%s: drift reference on %d images (%s)", p.name, ref.n, source)
    return out


def folder_reference(model_path: os.PathLike | str, folder: os.PathLike | str, device: str = "cpu",
                     threads: Optional[int] = None) -> DriftReference:
    """The reference of ``model_path`` on every image under ``folder``, saved beside the model."""
    from edgecls.core.images import list_images

    paths = list_images(folder)
    if not paths:
        raise InputError(f"no images under {os.fspath(folder)!r} for the drift reference")
    ref = build_reference(model_path, paths, f"folder {os.fspath(folder)} ({len(paths)} images)", device, threads)
    ref.save(model_path)
    return ref
