"""Cameras and streams as :class:`~edgecls.runtime.sources.live.LiveSource`: V4L2 (``--camera N``,
``v4l2:///dev/videoN``), Jetson CSI (``csi://N``, a GStreamer pipeline), network streams (``rtsp://``, …) and a
GStreamer pipeline of one's own (``gst://PIPELINE``).

``rtsp://`` goes through the Jetson hardware decoder (a GStreamer pipeline with ``nvv4l2decoder``) when this OpenCV
has GStreamer and the pipeline's elements exist; otherwise through OpenCV's FFmpeg backend (software decode), with a
one-line warning saying why.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, List, Optional
from urllib.parse import parse_qs, urlsplit

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.sources import gstreamer as gst
from edgecls.runtime.sources.live import LiveSource
from edgecls.runtime.sources.opencv import gstreamer_enabled, import_cv2
from edgecls.runtime.sources.options import SourceOptions

log = logging.getLogger(__name__)

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


def camera_source(index: int, options: SourceOptions = SourceOptions()) -> LiveSource:
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
    return LiveSource(f"camera:{index}", opener, retry=options.retry, hint=hint, open_timeout=options.open_timeout)


def v4l2_source(device: str, options: SourceOptions = SourceOptions(), name: Optional[str] = None) -> LiveSource:
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
    return LiveSource(name or device, opener, retry=options.retry, hint=hint, open_timeout=options.open_timeout)


def _require_gstreamer(cv2: Any, what: str) -> None:
    if not gstreamer_enabled(cv2):
        raise CapabilityError(
            f"{what} needs OpenCV built with GStreamer, but this cv2 {cv2.__version__} ({getattr(cv2, '__file__', '?')}) "
            "reports 'GStreamer: NO' in cv2.getBuildInformation(). pip's opencv-python(-headless) wheels are built "
            "without GStreamer and shadow JetPack's. On a Jetson: `pip uninstall opencv-python opencv-python-headless "
            "opencv-contrib-python` so that Python imports JetPack's OpenCV (with GStreamer), then retry "
            "(`edgecls doctor` shows which cv2 is imported)"
        )


def csi_source(url: str, options: SourceOptions = SourceOptions()) -> LiveSource:
    """``csi://N[?width=&height=&fps=&flip=]``: a Jetson CSI camera through nvarguscamerasrc (needs GStreamer)."""
    cv2 = import_cv2(url)
    m = re.match(r"^csi://(\d+)", url)
    if not m:
        raise InputError(f"source {url!r}: expected csi://N with a sensor id N (csi://0)")
    _require_gstreamer(cv2, url)
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
    return LiveSource(url, opener, retry=options.retry, hint=hint, open_timeout=options.open_timeout)


def gst_source(url: str, options: SourceOptions = SourceOptions()) -> LiveSource:
    """``gst://PIPELINE``: a GStreamer pipeline of one's own, passed to OpenCV as given (it must end in appsink)."""
    pipeline = gst.check_user_pipeline(url[len("gst://"):])
    cv2 = import_cv2("a gst:// pipeline")
    _require_gstreamer(cv2, "a gst:// pipeline")

    def opener() -> Any:
        return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)

    shown = gst.hide_credentials(url)
    hint = (f": the pipeline did not start. Try it alone: gst-launch-1.0 "
            f"{gst.hide_credentials(pipeline).replace('appsink', 'fakesink', 1)}")
    return LiveSource(shown, opener, retry=options.retry, hint=hint, open_timeout=options.open_timeout)


def _ffmpeg_params(cv2: Any, options: SourceOptions) -> List[int]:
    """Open/read timeouts for OpenCV's FFmpeg backend (OpenCV >= 4.5.2), so an abandoned open ends too."""
    if options.open_timeout is None or not hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        return []
    ms = int(options.open_timeout * 1000)
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]


def _rtsp_hardware_pipeline(cv2: Any, url: str, options: SourceOptions) -> Optional[str]:
    """The hardware-decode pipeline when it can run here; else None, after a one-line warning saying why."""
    shown = gst.hide_credentials(url)
    if not gstreamer_enabled(cv2):
        why = "this OpenCV has no GStreamer (pip's opencv wheels; JetPack's OpenCV has it)"
    else:
        missing = gst.missing_elements(gst.rtsp_elements(options.rtsp_codec))
        why = f"GStreamer element{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found" if missing else ""
    if not why:
        return gst.rtsp_hw_pipeline(url, options.rtsp_latency, options.rtsp_codec)
    log.warning("%s: software decode through OpenCV's FFmpeg: %s", shown, why)
    return None


def stream_source(url: str, options: SourceOptions = SourceOptions()) -> LiveSource:
    """``rtsp://``: the Jetson hardware decoder when possible, else FFmpeg; ``http(s)://``, ``rtmp://``, ``rtsps://``
    … streams opened with OpenCV (FFmpeg or GStreamer, whatever it has)."""
    cv2 = import_cv2(f"the stream {gst.hide_credentials(url)}")
    shown = gst.hide_credentials(url)  # hide credentials in names and messages
    pipeline = _rtsp_hardware_pipeline(cv2, url, options) if url.lower().startswith("rtsp://") else None
    params = _ffmpeg_params(cv2, options)

    def opener() -> Any:
        if pipeline is not None:
            return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        api = cv2.CAP_FFMPEG if url.lower().startswith("rtsp://") else cv2.CAP_ANY
        cap = cv2.VideoCapture(url, api, params) if params else cv2.VideoCapture(url, api)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    decoder = f"GStreamer + nvv4l2decoder ({options.rtsp_codec})" if pipeline is not None else "FFmpeg/GStreamer"
    within = f" within {options.open_timeout:g} s (--open-timeout)" if options.open_timeout is not None else ""
    hint = f": the stream did not open{within} (reachable? credentials? codec supported by {decoder}?)"
    src = LiveSource(shown, opener, retry=options.retry, hint=hint, open_timeout=options.open_timeout)
    src.decoder = "nvv4l2decoder" if pipeline is not None else "opencv"
    return src
