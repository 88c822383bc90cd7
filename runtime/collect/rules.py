"""Which frames are kept: the rules on a prediction, the rate cap per live source and rule, and near-duplicate
suppression (a 64-bit difference hash of a 9×8 grey thumbnail, compared with the source's recent keeps)."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.decision import UNCERTAIN, Prediction

RECENT_HASHES = 512  # per source: how far back a near duplicate is looked for
WINDOW_S = 60.0  # the rate cap counts keeps in the last minute


def margin_of(pred: Prediction) -> Optional[float]:
    """Top-1 minus top-2 probability (None for a one-class model)."""
    if len(pred.probs) < 2:
        return None
    top2 = sorted(pred.probs, reverse=True)[:2]
    return float(top2[0] - top2[1])


def reasons(pred: Prediction, rules: Sequence[str], margin: float) -> List[str]:
    """The rules among ``rules`` that ``pred`` meets, in the order given (empty: nothing to collect)."""
    out = []
    for rule in rules:
        if rule == "unknown":
            hit = bool(pred.unknown)
        elif rule == "empty-set":
            hit = pred.set is not None and len(pred.set) == 0
        elif rule == "multi-set":
            hit = pred.set is not None and len(pred.set) > 1
        elif rule == "uncertain":
            hit = pred.decision == UNCERTAIN or pred.label == UNCERTAIN
        elif rule == "low-margin":
            m = margin_of(pred)
            hit = m is not None and m < margin
        else:  # CollectConfig validated the names
            raise ValueError(f"unknown collection rule {rule!r}")
        if hit:
            out.append(rule)
    return out


class RateCap:
    """At most ``per_min`` keeps in any 60 s per (source, rule); a frame passes when one of its rules has room,
    and a keep counts against each of its rules that had room. Thread-safe (the loop asks, the writer takes)."""

    def __init__(self, per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_min = int(per_min)
        self.clock = clock
        self._keeps: Dict[Tuple[Hashable, str], Deque[float]] = {}
        self._lock = threading.Lock()

    def _room(self, key: Tuple[Hashable, str], now: float) -> bool:
        q = self._keeps.get(key)
        if q is None:
            return True
        while q and now - q[0] >= WINDOW_S:
            q.popleft()
        return len(q) < self.per_min

    def available(self, source: Hashable, rules: Sequence[str]) -> bool:
        if self.per_min <= 0:
            return True
        now = self.clock()
        with self._lock:
            return any(self._room((source, r), now) for r in rules)

    def take(self, source: Hashable, rules: Sequence[str]) -> bool:
        if self.per_min <= 0:
            return True
        now = self.clock()
        with self._lock:
            keys = [(source, r) for r in rules if self._room((source, r), now)]
            for k in keys:
                self._keeps.setdefault(k, deque()).append(now)
            return bool(keys)


def grey_thumbnail(image: Any, bgr: bool, size: Tuple[int, int] = (9, 8)) -> np.ndarray:
    """``image`` (an HxWx3 array, BGR when ``bgr``, or a PIL image) as a ``size`` (w, h) float grey thumbnail,
    each pixel the mean of its area."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L").resize(size, Image.BOX), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim == 3:
        b, g, r = (0, 1, 2) if bgr else (2, 1, 0)
        arr = 0.114 * arr[..., b] + 0.587 * arr[..., g] + 0.299 * arr[..., r]
    arr = arr.astype(np.float32)
    try:
        import cv2

        return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    except ImportError:  # image files need no OpenCV
        return np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.BOX), dtype=np.float32)


def dhash(image: Any, bgr: bool = False) -> int:
    """64-bit difference hash: for each row of a 9×8 grey thumbnail, whether each pixel is brighter than its
    right-hand neighbour. Copies of one photo hash alike; a re-encoded or slightly noisy frame differs by a few bits."""
    t = grey_thumbnail(image, bgr)
    bits = (t[:, :-1] > t[:, 1:]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


class NearDuplicates:
    """The recent keeps' hashes per source; ``seen(source, h)`` says whether ``h`` is within ``bits`` of one."""

    def __init__(self, bits: int, recent: int = RECENT_HASHES) -> None:
        self.bits = int(bits)
        self.recent = int(recent)
        self._hashes: Dict[Hashable, Deque[int]] = {}

    def nearest(self, source: Hashable, h: int) -> Optional[int]:
        """The smallest distance from ``h`` to the source's recent hashes (None: none yet)."""
        q = self._hashes.get(source)
        return min((hamming(h, x) for x in q), default=None) if q else None

    def seen(self, source: Hashable, h: int) -> bool:
        if self.bits < 0:
            return False
        d = self.nearest(source, h)
        return d is not None and d <= self.bits

    def add(self, source: Hashable, h: int) -> None:
        self._hashes.setdefault(source, deque(maxlen=self.recent)).append(h)
