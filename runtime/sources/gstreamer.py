"""GStreamer pipelines for OpenCV's GStreamer backend: the Jetson hardware-decode RTSP pipeline, checks on a user's
own ``gst://`` pipeline, and whether a GStreamer element exists on this machine.

:func:`element_exists` asks GStreamer itself: ``Gst.ElementFactory.find(name)`` when PyGObject is installed, else
``gst-inspect-1.0 --exists NAME`` (exit status 0 when the element exists); None when neither can be asked.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from typing import Dict, Optional, Sequence, Tuple

from edgecls.core.errors import InputError

log = logging.getLogger(__name__)

APPSINK_TAIL = "appsink drop=true max-buffers=1 sync=false"
# per codec: RTP depayloader and parser in front of the Jetson hardware decoder (nvv4l2decoder, NVDEC)
_CODEC_ELEMENTS = {"h264": ("rtph264depay", "h264parse"), "h265": ("rtph265depay", "h265parse")}
_cache: Dict[str, Optional[bool]] = {}


def _gi_find(name: str) -> Optional[bool]:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError):
        return None
    try:
        Gst.init(None)
        return Gst.ElementFactory.find(name) is not None
    except Exception as e:  # a broken GStreamer install
        log.debug("Gst.ElementFactory.find(%r) failed: %s", name, e)
        return None


def _gst_inspect(name: str) -> Optional[bool]:
    exe = shutil.which("gst-inspect-1.0")
    if exe is None:
        return None
    try:
        return subprocess.run([exe, "--exists", name], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("gst-inspect-1.0 --exists %s failed: %s", name, e)
        return None


def element_exists(name: str) -> Optional[bool]:
    """Whether the GStreamer element ``name`` is installed (True/False), or None when GStreamer cannot be asked."""
    if name not in _cache:
        found = _gi_find(name)
        _cache[name] = found if found is not None else _gst_inspect(name)
    return _cache[name]


def missing_elements(names: Sequence[str]) -> Tuple[str, ...]:
    """The elements of ``names`` that are not known to exist (missing, or GStreamer could not be asked)."""
    return tuple(n for n in names if element_exists(n) is not True)


def rtsp_elements(codec: str) -> Tuple[str, ...]:
    depay, parse = _CODEC_ELEMENTS[codec]
    return ("rtspsrc", depay, parse, "nvv4l2decoder", "nvvidconv")


def rtsp_hw_pipeline(url: str, latency_ms: int = 200, codec: str = "h264") -> str:
    """RTSP through the Jetson hardware decoder to BGR frames in an appsink that keeps only the newest frame."""
    if '"' in url:
        raise InputError(f"RTSP URL {hide_credentials(url)!r} contains a double quote, which cannot be passed to rtspsrc")
    depay, parse = _CODEC_ELEMENTS[codec]
    return (
        f'rtspsrc location="{url}" latency={int(latency_ms)} ! {depay} ! {parse} ! nvv4l2decoder ! '
        "nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
        + APPSINK_TAIL
    )


def check_user_pipeline(pipeline: str) -> str:
    """A ``gst://`` pipeline as given (stripped); InputError when it cannot feed OpenCV (no appsink at the end)."""
    text = pipeline.strip()
    if not text:
        raise InputError("gst:// needs a GStreamer pipeline after it, e.g. 'gst://videotestsrc ! videoconvert ! "
                         f"video/x-raw,format=BGR ! {APPSINK_TAIL}'")
    last = text.split("!")[-1].strip().split()
    if not last or last[0] != "appsink":
        raise InputError(
            f"gst:// pipeline must end with an appsink that OpenCV reads BGR frames from, e.g. '... ! videoconvert ! "
            f"video/x-raw,format=BGR ! {APPSINK_TAIL}' (it ends with {text.split('!')[-1].strip()!r})"
        )
    if "format=BGR" not in text.replace(" ", "").replace("(string)", ""):
        log.warning("gst:// pipeline has no 'video/x-raw,format=BGR' caps before its appsink; OpenCV expects BGR frames")
    return text


def hide_credentials(text: str) -> str:
    """``rtsp://user:secret@host`` → ``rtsp://***@host`` (in names, messages and logs)."""
    return re.sub(r"//[^/@\s\"']*@", "//***@", text)
