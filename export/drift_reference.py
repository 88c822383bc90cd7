"""Build the drift reference of an artifact (:mod:`edgecls.runtime.drift.reference`) on its calibration images.

The artifact runs through the runtime backend a deployment uses, with its own preprocessing, on the images its
promise was stated on: the calibration split the checkpoint recorded (``data["calib"]``: val images that never
picked the epoch), else the images given; the scores are the artifact's own (temperature, OOD score, conformal
sets). Image statistics do not depend on the model: they are taken on every image the model learned from and was
calibrated on (train and the calibration split: about ten times more, so the image checks' tails are pinned down),
on the very input the model sees, as the monitor takes them on live frames.
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
                    device: str = "cpu", threads: Optional[int] = None,
                    stats_paths: Optional[Sequence[os.PathLike | str]] = None,
                    stats_source: str = "") -> DriftReference:
    """Run ``model_path`` on ``paths`` and return its drift reference (not yet saved); image statistics on
    ``stats_paths`` (default: ``paths``)."""
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
            if stats_paths is None:
                stats.extend(frame_stats(x, pspec.mean, pspec.std)[0] for x in chw)
            for pred in clf.decider.decide(clf.infer(chw)):
                scores["max_prob"].append(pred.confidence)
                scores["ood_score"].append(np.nan if pred.ood_score is None else pred.ood_score)
                scores["p_positive"].append(np.nan if pred.p_positive is None else pred.p_positive)
                scores["set_size"].append(np.nan if pred.set is None else float(len(pred.set)))
                classes[pred.label] += 1
        ood_kind = getattr(getattr(clf.decider.confidence, "ood", None), "kind", None)
        for p in stats_paths or ():
            stats.append(frame_stats(clf.prepare(load_image(p)), pspec.mean, pspec.std)[0])
    cols = np.stack(stats)
    kept = {k: tuple(v) for k, v in scores.items() if not np.any(np.isnan(np.asarray(v, dtype=np.float64)))}
    return DriftReference(model_sha256=file_sha256(model_path), source=source,
                          stats={s: tuple(float(x) for x in cols[:, j]) for j, s in enumerate(STATS)},
                          scores=kept, classes=dict(classes), ood_kind=ood_kind,
                          stats_source=stats_source if stats_paths is not None else source)


def calibration_images(ckpt_data: Dict[str, Any]) -> tuple:
    """``(paths, what they are)``: the checkpoint's calibration split, else its val images (said so)."""
    calib = [p for p in ckpt_data.get("calib", []) if os.path.isfile(p)]
    if calib:
        return calib, f"calibration split recorded in the checkpoint ({len(calib)} val images)"
    val = [p for p, *_ in ckpt_data.get("val", []) if os.path.isfile(p)]
    return val, f"checkpoint val ({len(val)} images, also used to pick the epoch)"


def learned_images(ckpt_data: Dict[str, Any], calib: Sequence[str]) -> tuple:
    """``(paths, what they are)``: the training images and the calibration split (not the other val images)."""
    train = [p for p, *_ in ckpt_data.get("train", []) if os.path.isfile(p)]
    return train + list(calib), f"train ({len(train)}) and calibration ({len(calib)}) images"


def write_references(exporter: Any) -> List[str]:
    """The export's hook: a ``.drift.json`` beside each artifact that passed parity; returns warnings."""
    data = getattr(exporter.ckpt, "data", None) or {}
    paths, source = calibration_images(data)
    stats_paths, stats_source = learned_images(data, paths)
    if len(paths) < MIN_IMAGES:
        return [f"no drift reference written: {source} are fewer than {MIN_IMAGES} (edgecls run will watch no drift)"]
    out = []
    for r in exporter.reports:
        p = Path(r.path)
        if not r or not p.is_file():
            continue
        device = "cpu" if p.suffix == ".onnx" else "auto"
        ref = exporter.timed(f"drift reference {p.name}", build_reference, p, paths, source, device,
                             exporter.cfg.threads, stats_paths, stats_source)
        ref.save(p)
        log.info("%s: drift reference: scores on %d images (%s), image statistics on %d (%s)", p.name,
                 ref.n_scores, source, ref.n, stats_source)
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


def restate_reference(model_path: os.PathLike | str, folder: os.PathLike | str, device: str = "cpu",
                      threads: Optional[int] = None) -> Optional[DriftReference]:
    """After ``edgecls calibrate`` re-stated ``model_path``'s promise on ``folder``: its reference from the same
    images. A checkpoint has none; when the folder is too small, the old reference (now another model's: the file
    changed) is removed, with a warning, so that the run goes on without drift signals instead of refusing."""
    from edgecls.runtime.drift.reference import reference_path
    from edgecls.runtime.model_io import model_kind

    try:
        kind = model_kind(model_path)
    except InputError:
        return None
    if kind not in ("onnx", "engine"):
        return None
    try:
        return folder_reference(model_path, folder, device, threads)
    except InputError as e:
        old = reference_path(model_path)
        had = old.is_file()
        if had:
            old.unlink()
        log.warning("%s: no drift reference (%s)%s", os.fspath(model_path), e,
                    f"; the old {old.name} was another model's and is removed" if had else "")
        return None
