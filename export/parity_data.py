"""Parity images: the checkpoint's recorded val split or a folder (labelled by class subfolders when they match),
preprocessed by the runtime's one preprocessing function into a :class:`~edgecls.export.parity.ParityData`."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from edgecls.core.errors import InputError
from edgecls.export.parity import ParityData
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def _load_batch(paths: Sequence[Path], spec: ModelSpec) -> np.ndarray:
    from edgecls.runtime.preprocess import ImageReadError, load_image, preprocess_one

    x = np.empty((len(paths), 3, spec.preprocess.crop, spec.preprocess.crop), dtype=np.float32)
    for i, p in enumerate(paths):
        try:
            preprocess_one(load_image(p), spec.preprocess, out=x[i])
        except ImageReadError as e:
            raise InputError(f"parity image cannot be read: {e}") from e
    return x


def _limit(items: List[Tuple[Path, Optional[int]]], limit: Optional[int], seed: int = 0):
    if limit is None or limit >= len(items):
        return items
    from edgecls.export.calib import stratified_sample

    return stratified_sample(items, [str(y) for _, y in items], limit, seed)


def parity_data_from_checkpoint(ckpt, limit: Optional[int] = None) -> ParityData:
    from edgecls.reference.checkpoint import recorded_items

    items = recorded_items(
        ckpt.data, "val", "for the parity check pass --parity-data DIR (held-out images, in class subfolders "
        "when labels are known)",
    )
    n_classes = ckpt.spec.num_classes
    bad = [y for _, y in items if not 0 <= y < n_classes]
    if bad:
        raise InputError(f"checkpoint val labels outside [0, {n_classes}): {sorted(set(bad))[:5]}")
    items = _limit(items, limit)
    x = _load_batch([p for p, _ in items], ckpt.spec)
    y = np.asarray([lab for _, lab in items], dtype=np.int64)
    return ParityData(x, y, tuple(os.fspath(p) for p, _ in items), f"checkpoint val split ({len(items)} images)")


def parity_data_from_folder(folder: PathLike, spec: ModelSpec, limit: Optional[int] = None) -> ParityData:
    """``DIR`` (or ``DIR/val``): labelled when every image sits in a subfolder named after a class, else unlabelled."""
    from edgecls.core.images import list_images
    from edgecls.export.calib import group_of

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--parity-data {os.fspath(folder)!r} is not a folder")
    if (folder / "val").is_dir() and list_images(folder / "val"):
        folder = folder / "val"
    images = list_images(folder)
    if not images:
        raise InputError(f"--parity-data {os.fspath(folder)!r} holds no images")
    groups = [group_of(p, folder) for p in images]
    labelled = all(g in spec.classes for g in groups)
    items: List[Tuple[Path, Optional[int]]] = [
        (p, spec.classes.index(g) if labelled else None) for p, g in zip(images, groups)
    ]
    if not labelled:
        unknown = sorted({g or "." for g in groups if g not in spec.classes})
        log.info("--parity-data %s: folders %s are not classes %s: no labels, agreement only",
                 folder, unknown[:5], list(spec.classes))
    items = _limit(items, limit)
    x = _load_batch([p for p, _ in items], spec)
    y = np.asarray([lab for _, lab in items], dtype=np.int64) if labelled else None
    kind = "labelled" if labelled else "unlabelled"
    return ParityData(x, y, tuple(os.fspath(p) for p, _ in items), f"{os.fspath(folder)} ({len(items)} {kind} images)")


def gate_data(folder: Optional[Path], spec: ModelSpec, parity: ParityData) -> Optional[ParityData]:
    """``--gate-data``: labelled images (class subfolders) for the gates, none of them a parity image."""
    if folder is None:
        return None
    extra = parity_data_from_folder(folder, spec)
    if extra.y is None:
        raise InputError(f"--gate-data {os.fspath(folder)!r} must be labelled: images in subfolders named after "
                         f"the classes ({', '.join(spec.classes[:6])}{', ...' if len(spec.classes) > 6 else ''})")
    seen = {os.path.realpath(p) for p in parity.paths}
    both = [p for p in extra.paths if os.path.realpath(p) in seen]
    if both:
        raise InputError(f"--gate-data holds {len(both)} of the parity images (e.g. {both[0]}): give images the "
                         "export does not already use")
    return extra
