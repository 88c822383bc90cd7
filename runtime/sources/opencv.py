"""OpenCV for video and live sources: imported only when one is used, with advice that keeps JetPack's OpenCV."""
from __future__ import annotations

from typing import Any

from edgecls.core.errors import CapabilityError


def import_cv2(purpose: str):
    """``cv2`` or a CapabilityError that says how to get it without shadowing a Jetson's JetPack OpenCV."""
    try:
        import cv2
    except ImportError as e:
        raise CapabilityError(
            f"{purpose} needs OpenCV (cv2), which is not importable ({e}). Install it with "
            "`pip install 'edgecls[opencv]'`; on a Jetson use JetPack's OpenCV instead (it has GStreamer for CSI "
            "cameras; do not pip-install opencv there). Image files and folders work without OpenCV"
        ) from e
    return cv2


def gstreamer_enabled(cv2: Any) -> bool:
    """Whether this OpenCV was built with GStreamer (``cv2.getBuildInformation()`` → ``GStreamer: YES``)."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False
