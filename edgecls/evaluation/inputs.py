"""Bench inputs: photo-like generated frames, or the images of ``--images`` (listed by the one image lister)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.images import IMAGE_EXTENSIONS, list_images
from edgecls.runtime.spec import PreprocessSpec


def natural_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB frame (gradients, shapes, noise): JPEG-compresses like a real one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([
        128 + 90 * np.sin(xx / (37 + 11 * c) + yy / (53 + 7 * c) + c) for c in range(3)
    ], axis=2)
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def image_files(folder: Optional[str], limit: int = 64) -> List[str]:
    """The first ``limit`` images under ``folder`` (none without a folder); InputError when it holds none."""
    if not folder:
        return []
    files = [str(p) for p in list_images(folder)]
    if not files:
        raise InputError(f"--images {folder!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files[:limit]


def input_batch(spec: PreprocessSpec, batch: int, files: List[str]) -> np.ndarray:
    """A preprocessed NCHW batch of ``batch`` images: ``files`` cycled, or generated frames without files."""
    from edgecls.runtime.preprocess import load_image, preprocess

    if files:
        return preprocess([load_image(files[i % len(files)]) for i in range(batch)], spec)
    frames = [natural_frame(320, 240, seed=i) for i in range(batch)]
    return preprocess(frames, spec)
