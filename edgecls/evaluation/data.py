"""A labeled ImageFolder (``DIR/<class>/*.jpg``) as ``(path, class index)`` items, and its preprocessed batches.

Images are listed by the one lister (:func:`edgecls.core.images.list_images`: hidden files skipped) and go through
the one preprocessing function (:mod:`edgecls.runtime.preprocess`), as in a deployment.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.images import IMAGE_EXTENSIONS, class_folders, list_images
from edgecls.evaluation.models import PathLike
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


def _check_class_folders(root: Path, folders: Sequence[Path], classes: Sequence[str]) -> None:
    unknown = [p.name for p in folders if p.name not in classes]
    if unknown:
        hint = ""
        if {"train", "val"} & set(unknown):
            hint = f" (it looks like a split root: try --data {os.fspath(root / 'val')})"
        raise InputError(
            f"--data {os.fspath(root)!r}: class folder(s) {unknown} are not classes of the model; "
            f"model classes: {list(classes)}{hint}"
        )


def labeled_images(root: PathLike, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """``[(path, index in classes), ...]`` of an ImageFolder ``root/<class>/*.jpg``, folder names mapped by name.

    Every class folder must be a class of the model; model classes without a folder are allowed (no support).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {os.fspath(root)!r} is not a folder (expected DIR/<class>/*.jpg)")
    folders = class_folders(root)  # visible sub-folders, symbolic-link loops skipped
    if not folders:
        raise InputError(f"--data {os.fspath(root)!r} has no class folders (expected DIR/<class>/*.jpg)")
    _check_class_folders(root, folders, classes)
    index = {c: i for i, c in enumerate(classes)}
    items: List[Tuple[str, int]] = []
    for folder in folders:
        items += [(str(p), index[folder.name]) for p in list_images(folder)]
    if not items:
        raise InputError(f"--data {os.fspath(root)!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    missing = [c for c in classes if c not in {p.name for p in folders}]
    if missing:
        log.warning("model classes without a folder in %s (no support): %s", root, missing)
    return items


PREPROCESS_MODES = ("standard", "deepstream")  # standard: the model's resize + centre crop


def stretched(images: Sequence, spec: ModelSpec) -> np.ndarray:
    """DeepStream nvinfer's input (``maintain-aspect-ratio=0``): the whole image scaled to crop x crop — no centre
    crop, aspect not kept — with the model's filter, then the model's normalization."""
    import dataclasses

    from PIL import Image

    from edgecls.runtime.preprocess import preprocess

    c = spec.preprocess.crop
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[spec.preprocess.interpolation]
    return preprocess([im.resize((c, c), filt) for im in images], dataclasses.replace(spec.preprocess, resize=c))


ROTATIONS = (0, 90, 180, 270)  # eval --rotations: the decoded image turned before the one preprocessing function


def rotated(image, degrees: int):
    """``image`` (PIL) turned counter-clockwise by ``degrees`` (one of :data:`ROTATIONS`), lossless."""
    from PIL import Image

    if degrees not in ROTATIONS:
        raise InputError(f"rotation {degrees!r} is not one of {ROTATIONS} (degrees counter-clockwise)")
    if degrees == 0:
        return image
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return image.transpose(turn[degrees])


def _load_batch(items: Sequence[Tuple[str, int]], spec: ModelSpec, mode: str = "standard",
                rotation: int = 0) -> np.ndarray:
    # open_rgb: the same decoded RGB pixels as load_image, handed to preprocess without a copy into numpy
    from edgecls.runtime.preprocess import ImageReadError, open_rgb, preprocess

    images = []
    for p, _ in items:
        try:
            images.append(rotated(open_rgb(p), rotation))
        except ImageReadError as e:
            raise InputError(str(e)) from e
    return stretched(images, spec) if mode == "deepstream" else preprocess(images, spec.preprocess)


def iter_batches(
    items: Sequence[Tuple[str, int]], spec: ModelSpec, batch: int, workers: int = 2, mode: str = "standard",
    rotation: int = 0,
) -> Iterator[Tuple[int, np.ndarray]]:
    """Preprocessed batches ``(start index, NCHW)`` in order, decoded by ``workers`` threads a few batches ahead;
    each decoded image turned ``rotation`` degrees counter-clockwise first (:func:`rotated`)."""
    starts = list(range(0, len(items), batch))
    ahead = max(1, workers) + 1
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {}
        for k, s in enumerate(starts[:ahead]):
            futures[k] = pool.submit(_load_batch, items[s : s + batch], spec, mode, rotation)
        for k, s in enumerate(starts):
            x = futures.pop(k).result()
            nxt = k + ahead
            if nxt < len(starts):
                futures[nxt] = pool.submit(_load_batch, items[starts[nxt] : starts[nxt] + batch], spec, mode,
                                           rotation)
            yield s, x
