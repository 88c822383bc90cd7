"""Cheap image statistics of one frame, computed on the model's own preprocessed input (no second resize).

The network's input (CHW float, normalized with the spec's mean/std) is sampled every other pixel and turned back
into a grey image in 0..255: 56 x 56 for a 224 input (about 30 µs a frame; the full statistics about 100 µs,
computed when a scene starts and every few frames of a held scene, :mod:`.monitor`). On that thumbnail:

- ``brightness``: mean grey level;
- ``white``: the 98th percentile grey level (the white point: a darkened or under-exposed scene lowers it even when
  the scene itself is dark);
- ``contrast``: standard deviation of the grey levels;
- ``sharpness``: log of the Laplacian's energy over the grey variance (scale-free: a darker frame is not a blurrier
  one; a blurred frame loses high frequencies whatever its brightness);
- ``orientation``: log of horizontal over vertical gradient energy (a camera turned by 90 degrees flips its sign).

The thumbnail itself is returned too: consecutive frames of a live camera differ by sensor noise, so a bit-identical
thumbnail means a frozen picture, and the mean absolute difference to a scene's first frame tells a held scene from
a new one (:mod:`.segments`).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

STATS: Tuple[str, ...] = ("brightness", "white", "contrast", "sharpness", "orientation")
STEP = 4  # thumbnail = every STEP-th pixel of the model input
_EPS = 1e-6


def grey_thumbnail(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The model input (3, H, W), normalized, back to one grey channel in 0..255, every :data:`STEP`-th pixel."""
    a = [np.float32(s * 255.0 / 3.0) for s in std]
    g = chw[0, ::STEP, ::STEP] * a[0]
    g += chw[1, ::STEP, ::STEP] * a[1]
    g += chw[2, ::STEP, ::STEP] * a[2]
    g += np.float32(float(sum(mean)) * 255.0 / 3.0)
    return g


def thumbnail_stats(g: np.ndarray) -> np.ndarray:
    """:data:`STATS` of a grey thumbnail, float64 (len(STATS),)."""
    flat = g.reshape(-1)
    n = flat.size
    mean = float(flat.sum()) / n
    var = max(float(np.dot(flat, flat)) / n - mean * mean, 0.0)
    lap = (g[1:-1, 2:] + g[1:-1, :-2] + g[2:, 1:-1] + g[:-2, 1:-1] - 4.0 * g[1:-1, 1:-1]).reshape(-1)
    dx = (g[:, 1:] - g[:, :-1]).reshape(-1)
    dy = (g[1:, :] - g[:-1, :]).reshape(-1)
    ex, ey = float(np.dot(dx, dx)) / dx.size, float(np.dot(dy, dy)) / dy.size
    k = int(0.98 * (n - 1))
    white = float(np.partition(flat, k)[k])
    return np.array([
        mean,
        white,
        var ** 0.5,
        np.log((float(np.dot(lap, lap)) / lap.size + _EPS) / (var + _EPS)),
        np.log((ex + _EPS) / (ey + _EPS)),
    ], dtype=np.float64)


def frame_stats(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """``(stats, thumbnail)`` of one preprocessed frame."""
    g = grey_thumbnail(chw, mean, std)
    return thumbnail_stats(g), g
