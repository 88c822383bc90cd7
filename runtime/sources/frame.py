"""One frame to classify, as every source produces it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class Frame:
    """One image to classify, or a record of why it could not be read (``error``)."""

    source: str  # the source as given on the command line ("val/", "clip.mp4", "camera:0")
    index: int  # running index within that source
    image: Optional[Any] = None  # HxWx3 uint8 array (BGR when ``bgr``, as OpenCV decodes) or an RGB PIL image
    bgr: bool = False
    path: Optional[str] = None  # image file path
    save_name: Optional[str] = None  # relative name under --save DIR
    frame: Optional[int] = None  # video/live: frame number (live: capture sequence, gaps = dropped frames)
    t_capture: float = 0.0  # time.perf_counter() when the frame was read
    decode_ms: float = 0.0
    error: Optional[str] = None
