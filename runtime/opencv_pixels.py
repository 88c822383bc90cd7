"""OpenCV's share of the one preprocessing, where it gives Pillow's pixels faster (``bench/profile_run.py``):

- **Decode** (:func:`edgecls.runtime.preprocess.open_for`, the one decode path): OpenCV and Pillow both decode
  JPEG with libjpeg-turbo's default (islow) IDCT and fancy upsampling, so the pixels are the same (0 of 2,860
  shared product photos differ); ~20 % less time.
- **Upsampling**: when the resize enlarges the image on both axes, Pillow's bilinear filter is plain bilinear
  interpolation at pixel centres, which ``cv2.resize(INTER_LINEAR)`` computes with exact per-pixel weights
  (11-bit fixed point) and no intermediate rounding: within 1/255 of Pillow (tested against torchvision's pixels).
  Shrinking stays with Pillow: its antialiasing filter has no OpenCV equivalent.

Everything here is optional: without OpenCV (a runtime-only install) Pillow does it all, within 1/255 of this.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

_CV2: Any = False  # not looked up yet


def cv2_or_none() -> Optional[Any]:
    """OpenCV if it imports (looked up once), else None (absent, or broken against this NumPy)."""
    global _CV2
    if _CV2 is False:
        try:
            import cv2
        except Exception as e:  # absent, or a broken install (e.g. JetPack's cv2 against NumPy 2)
            log.debug("OpenCV not used for decoding/resizing (%s: %s); Pillow does it", type(e).__name__, e)
            cv2 = None
        _CV2 = cv2
    return _CV2


def upsample_crop(arr: np.ndarray, new_w: int, new_h: int, left: int, top: int, crop: int) -> Optional[np.ndarray]:
    """``arr`` resized to ``new_w x new_h`` (both at least its size) with bilinear weights at pixel centres, then
    the ``crop`` square at (left, top); None without OpenCV."""
    cv2 = cv2_or_none()
    if cv2 is None:
        return None
    big = cv2.resize(arr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return big[top : top + crop, left : left + crop]
