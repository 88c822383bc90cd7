"""Cameras and streams as :class:`~edgecls.runtime.sources.live.LiveSource`: V4L2 (``--camera N``,
``v4l2:///dev/videoN``), Jetson CSI (``csi://N``, a GStreamer pipeline) and network streams (``rtsp://``, …)."""
from __future__ import annotations

import re
import sys
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.sources.live import LiveSource, RetryPolicy
from edgecls.runtime.sources.opencv import gstreamer_enabled, import_cv2

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline for a Jetson CSI camera through ``nvarguscamerasrc`` (BGR frames to appsink)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, framerate=(fraction){fps}/1, "
        f"format=(string)NV12 ! nvvidconv flip-method={flip} ! video/x-raw, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def _query_ints(url: str) -> dict:
    q = parse_qs(urlsplit(url).query)
    out = {}
    for k, v in q.items():
        try:
            out[k] = int(v[-1])
        except ValueError as e:
            raise InputError(f"source {url!r}: {k}={v[-1]!r} is not an integer") from e
    return out


def camera_source(index: int, retry: RetryPolicy = RetryPolicy()) -> LiveSource:
    """``--camera N``: a V4L2 camera by index (any OpenCV backend off Linux)."""
    cv2 = import_cv2(f"--camera {index}")
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY

    def opener() -> Any:
        cap = cv2.VideoCapture(int(index), api)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    hint = (
        f": no camera at index {index} answered (is it plugged in and not used by another program? `v4l2-ctl "
        "--list-devices` lists cameras; your user needs the `video` group; a Jetson CSI camera is csi://0)"
    )
    return LiveSource(f"camera:{index}", opener, retry=retry, hint=hint)


def v4l2_source(device: str, retry: RetryPolicy = RetryPolicy(), name: Optional[str] = None) -> LiveSource:
    cv2 = import_cv2(f"the camera {device}")
    parts = urlsplit(device) if device.startswith("v4l2://") else None
    path = parts.path if parts else device
    opts = _query_ints(device) if parts else {}

    def opener() -> Any:
        cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if "width" in opts:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, opts["width"])
        if "height" in opts:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, opts["height"])
        if "fps" in opts:
            cap.set(cv2.CAP_PROP_FPS, opts["fps"])
        return cap

    hint = f": {path} could not be opened (does it exist? `v4l2-ctl --list-devices`; permissions: the `video` group)"
    return LiveSource(name or device, opener, retry=retry, hint=hint)


def csi_source(url: str, retry: RetryPolicy = RetryPolicy()) -> LiveSource:
    """``csi://N[?width=&height=&fps=&flip=]``: a Jetson CSI camera through nvarguscamerasrc (needs GStreamer)."""
    cv2 = import_cv2(url)
    m = re.match(r"^csi://(\d+)", url)
    if not m:
        raise InputError(f"source {url!r}: expected csi://N with a sensor id N (csi://0)")
    if not gstreamer_enabled(cv2):
        raise CapabilityError(
            f"{url} needs OpenCV built with GStreamer, but this cv2 {cv2.__version__} ({getattr(cv2, '__file__', '?')}) "
            "reports 'GStreamer: NO' in cv2.getBuildInformation(). pip's opencv-python(-headless) wheels are built "
            "without GStreamer and shadow JetPack's. On a Jetson: `pip uninstall opencv-python opencv-python-headless "
            "opencv-contrib-python` so that Python imports JetPack's OpenCV (python3-opencv, with GStreamer), then retry"
        )
    opts = _query_ints(url)
    pipeline = csi_pipeline(
        int(m.group(1)), opts.get("width", 1280), opts.get("height", 720), opts.get("fps", 30), opts.get("flip", 0)
    )

    def opener() -> Any:
        return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)

    hint = (
        f": the GStreamer pipeline did not start ({pipeline}). Check the camera with `gst-launch-1.0 nvarguscamerasrc "
        f"sensor-id={m.group(1)} num-buffers=1 ! fakesink`; if another program holds it, `sudo systemctl restart "
        "nvargus-daemon`"
    )
    return LiveSource(url, opener, retry=retry, hint=hint)


def stream_source(url: str, retry: RetryPolicy = RetryPolicy()) -> LiveSource:
    """``rtsp://``, ``http(s)://`` … streams opened with OpenCV (FFmpeg or GStreamer, whatever it has)."""
    cv2 = import_cv2(f"the stream {url}")

    def opener() -> Any:
        cap = cv2.VideoCapture(url)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    shown = re.sub(r"//[^/@]*@", "//***@", url)  # hide credentials in messages
    hint = ": the stream did not open (reachable? credentials? codec supported by this OpenCV's FFmpeg/GStreamer?)"
    return LiveSource(shown, opener, retry=retry, hint=hint)
