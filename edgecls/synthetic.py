"""Small generated image folders: the embedded default for ``edgecls demo`` and the tests (no download).

``mobile`` images draw a phone-like shape (a dark portrait slab with a bright screen); ``other`` images draw
round or wide objects. Sizes, colours, positions and noise vary, so a model has something real to learn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = rng.integers(150, 256, size=3)
    noise = rng.normal(0, 12, size=(h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def draw_sample(cls: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    w = int(size * rng.uniform(0.8, 1.4))
    h = int(size * rng.uniform(0.8, 1.4))
    im = _background(rng, w, h)
    d = ImageDraw.Draw(im)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    s = min(w, h) * rng.uniform(0.5, 0.8)
    dark = tuple(int(v) for v in rng.integers(0, 70, size=3))
    if cls == "mobile":
        bw, bh = s * 0.45, s * 0.9
        box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
        d.rounded_rectangle(box, radius=max(2, int(bw * 0.15)), fill=dark)
        m = bw * 0.1
        screen = tuple(int(v) for v in rng.integers(120, 256, size=3))
        d.rectangle([box[0] + m, box[1] + 2 * m, box[2] - m, box[3] - 2 * m], fill=screen)
    else:
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=colour)
        elif kind == 1:
            d.rectangle([cx - s / 2, cy - s / 5, cx + s / 2, cy + s / 5], fill=colour)
        else:
            d.polygon([(cx, cy - s / 2), (cx - s / 2, cy + s / 2), (cx + s / 2, cy + s / 2)], fill=colour)
    return im


def make_image_folder(
    root: Union[str, Path],
    counts: Dict[str, int] = None,
    splits: Sequence[str] = ("train", "val"),
    val_counts: Dict[str, int] = None,
    size: int = 96,
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<class>/NNNN.jpg`` (or ``root/<class>/`` when ``splits`` is empty); return root.

    ``counts`` are per class for train (and for the single folder); ``val_counts`` default to a third of them.
    """
    root = Path(root)
    counts = counts or {"mobile": 24, "other": 48}
    val_counts = val_counts or {c: max(2, n // 3) for c, n in counts.items()}
    rng = np.random.default_rng(seed)
    plan = [(root / s, val_counts if s == "val" else counts) for s in splits] or [(root, counts)]
    for folder, per_class in plan:
        for cls, n in per_class.items():
            out = folder / cls
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_sample(cls, rng, size).save(out / f"{cls}_{i:04d}.jpg", quality=90)
    return root
