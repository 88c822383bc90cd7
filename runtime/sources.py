"""Where frames come from: image files, folders, globs, video files, cameras and streams.

- Image files, folders (recursive, sorted) and globs are decoded with Pillow (no OpenCV needed), in order.
- Video files are read in order on a background thread with a bounded queue: nothing is dropped.
- Live sources (``--camera N``, ``csi://N``, ``v4l2:///dev/videoN``, ``rtsp://``, ``http(s)://``) are read on a
  background thread that keeps only the newest frame in a one-frame slot, so the consumer never sees a stale
  buffered frame; a stream that drops is reopened with bounded exponential backoff, then ends cleanly.

OpenCV (``cv2``) is imported only for video and live sources. On a Jetson use JetPack's OpenCV (built with
GStreamer, needed for ``csi://``); pip's opencv wheels have no GStreamer and would shadow it.
"""
from __future__ import annotations

import glob as globmod
import logging
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

from edgecls.errors import CapabilityError, InputError, SourceError
from edgecls.runtime.preprocess import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset(IMAGE_EXTENSIONS)
VIDEO_EXTS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp"}
)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")


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


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline for a Jetson CSI camera through ``nvarguscamerasrc`` (BGR frames to appsink)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, framerate=(fraction){fps}/1, "
        f"format=(string)NV12 ! nvvidconv flip-method={flip} ! video/x-raw, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


# --------------------------------------------------------------------------------------------- file sources


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def list_images(folder: Path) -> List[Path]:
    """Image files under ``folder``, recursive, sorted by relative path (hidden files and folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTS:
                found.append(Path(root) / f)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


class ImageSource:
    """Image files (one, a folder, or a glob), decoded in order by the caller's workers (see :func:`read_image`)."""

    live = False
    kind = "images"

    def __init__(self, name: str, items: Sequence[Tuple[Path, str]]) -> None:
        self.name = name
        self.items = list(items)  # (path, save_name)

    def __len__(self) -> int:
        return len(self.items)

    def tasks(self) -> Iterator[Tuple[str, int, Path, str]]:
        for i, (path, save_name) in enumerate(self.items):
            yield self.name, i, path, save_name

    def close(self) -> None:
        pass


def read_image(source: str, index: int, path: Path, save_name: str) -> Frame:
    """Decode one image file (Pillow, RGB) into a Frame; an unreadable file gives a Frame with ``error``."""
    import importlib

    P = importlib.import_module("edgecls.runtime.preprocess")  # the module (the package exports a function too)

    # a decoded PIL image goes to preprocessing without a round trip through numpy (same pixels)
    read = getattr(P, "open_rgb", P.load_image)
    t0 = time.perf_counter()
    try:
        image = read(path)
        error = None
    except P.ImageReadError as e:
        image, error = None, str(e)
    t1 = time.perf_counter()
    return Frame(
        source=source, index=index, image=image, path=os.fspath(path), save_name=save_name,
        t_capture=t0, decode_ms=(t1 - t0) * 1e3, error=error,
    )


class VideoFileSource:
    """A video file read in order on a background thread (bounded queue: nothing dropped, memory bounded)."""

    live = False
    kind = "video"

    def __init__(self, path: Path, name: Optional[str] = None, queue_size: int = 8) -> None:
        self.path = Path(path)
        self.name = name or os.fspath(path)
        self.queue_size = queue_size
        self.fps: Optional[float] = None
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        cv2 = import_cv2(f"reading the video {self.name}")
        cap = cv2.VideoCapture(os.fspath(self.path))
        if not cap.isOpened():
            cap.release()
            yield Frame(source=self.name, index=0, path=os.fspath(self.path), error=f"cannot open video {self.name!r}")
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        q: queue.Queue[Optional[Frame]] = queue.Queue(maxsize=self.queue_size)

        def reader() -> None:
            i = 0
            try:
                while not self._stop.is_set():
                    t0 = time.perf_counter()
                    ok, img = cap.read()
                    if not ok or img is None:
                        break
                    f = Frame(
                        source=self.name, index=i, image=img, bgr=True, frame=i, t_capture=t0,
                        decode_ms=(time.perf_counter() - t0) * 1e3, save_name=self.path.stem,
                    )
                    while not self._stop.is_set():
                        try:
                            q.put(f, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    i += 1
            finally:
                cap.release()
                if expected and i < expected - 1 and not self._stop.is_set():
                    log.warning("%s: read %d of %d frames (truncated or corrupt video?)", self.name, i, expected)
                while True:  # the end marker must arrive even if the queue is full
                    try:
                        q.put(None, timeout=0.1)
                        break
                    except queue.Full:
                        if self._stop.is_set():
                            break

        t = threading.Thread(target=reader, name=f"edgecls-video:{self.path.name}", daemon=True)
        t.start()
        try:
            while True:
                f = q.get()
                if f is None:
                    return
                yield f
        finally:
            self._stop.set()
            t.join(timeout=2.0)

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------- live sources


class LatestFrameSlot:
    """A one-frame mailbox: the producer overwrites, the consumer takes the newest frame, never the same twice."""

    def __init__(self, notify: Optional[threading.Event] = None) -> None:
        self._cond = threading.Condition()
        self._frame: Optional[Frame] = None
        self._fresh = False
        self._closed = False
        self.puts = 0
        self.overwritten = 0  # frames replaced before anyone took them (dropped as stale)
        self.notify = notify

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._fresh:
                self.overwritten += 1
            self._frame, self._fresh = frame, True
            self.puts += 1
            self._cond.notify_all()
        if self.notify is not None:
            self.notify.set()

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame not yet taken, waiting up to ``timeout`` s; None on timeout or when closed and empty."""
        with self._cond:
            if not self._fresh and not self._closed:
                self._cond.wait_for(lambda: self._fresh or self._closed, timeout=timeout)
            if self._fresh:
                self._fresh = False
                return self._frame
            return None

    def close(self, discard: bool = False) -> None:
        """No more frames will come; ``discard`` also drops the one not yet taken."""
        with self._cond:
            self._closed = True
            if discard:
                self._fresh = False
            self._cond.notify_all()
        if self.notify is not None:
            self.notify.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def empty(self) -> bool:
        return not self._fresh


@dataclass(frozen=True)
class RetryPolicy:
    """Reopen a dropped stream up to ``retries`` times, waiting ``initial * factor**k`` s (at most ``max_delay``)."""

    retries: int = 5
    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0

    def delays(self) -> List[float]:
        return [min(self.initial * self.factor**k, self.max_delay) for k in range(max(0, self.retries))]


def _is_opened(cap: Any) -> bool:
    try:
        return cap is not None and bool(cap.isOpened())
    except Exception:
        return False


class LiveSource:
    """A camera or stream read on a background thread into a :class:`LatestFrameSlot`.

    ``opener()`` returns a ``cv2.VideoCapture``-like object (``isOpened``, ``read``, ``release``). The first open must
    succeed (else :class:`SourceError`, exit 5); later drops are retried per ``retry`` and then the source ends.
    ``sleep(seconds) -> bool`` (True = stop requested) is injectable for tests; by default it waits on the stop
    event so a retry wait ends at once on shutdown.
    """

    live = True
    kind = "live"

    def __init__(
        self,
        name: str,
        opener: Callable[[], Any],
        retry: RetryPolicy = RetryPolicy(),
        bgr: bool = True,
        hint: str = "",
        sleep: Optional[Callable[[float], Any]] = None,
        notify: Optional[threading.Event] = None,
    ) -> None:
        self.name = name
        self.opener = opener
        self.retry = retry
        self.bgr = bgr
        self.hint = hint
        self.slot = LatestFrameSlot(notify)
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: Optional[threading.Thread] = None
        self._cap: Any = None
        self.fps: Optional[float] = None
        self.end_reason: Optional[str] = None
        self.reconnects = 0
        self.captured = 0

    def set_notify(self, event: threading.Event) -> None:
        self.slot.notify = event

    def start(self) -> LiveSource:
        try:
            cap = self.opener()
        except (CapabilityError, SourceError):
            raise
        except Exception as e:
            raise SourceError(f"cannot open {self.name}: {type(e).__name__}: {e}{self.hint}") from e
        if not _is_opened(cap):
            if cap is not None:
                cap.release()
            raise SourceError(f"cannot open {self.name}{self.hint}")
        self._cap = cap
        fps = _cap_fps(cap)
        self.fps = fps
        self._thread = threading.Thread(target=self._loop, name=f"edgecls-live:{self.name}", daemon=True)
        self._thread.start()
        return self

    def _reopen(self) -> Any:
        for attempt, delay in enumerate(self.retry.delays(), start=1):
            log.warning("%s: stream dropped; reopening in %.1f s (attempt %d/%d)", self.name, delay, attempt, self.retry.retries)
            if self._sleep(delay) is True or self._stop.is_set():
                return None
            try:
                cap = self.opener()
            except Exception as e:
                log.warning("%s: reopen failed: %s", self.name, e)
                continue
            if _is_opened(cap):
                self.reconnects += 1
                log.info("%s: reopened", self.name)
                return cap
            if cap is not None:
                cap.release()
        return None

    def _loop(self) -> None:
        cap = self._cap
        seq = 0
        try:
            while not self._stop.is_set():
                try:
                    ok, img, t0, decode_ms = _read(cap)
                except Exception as e:
                    log.warning("%s: read failed: %s", self.name, e)
                    ok, img, t0, decode_ms = False, None, 0.0, 0.0
                if self._stop.is_set():
                    break
                if not ok or img is None:
                    cap.release()
                    cap = self._reopen()
                    self._cap = cap
                    if cap is None:
                        if not self._stop.is_set():
                            self.end_reason = f"stream lost; gave up after {self.retry.retries} reopen attempts"
                            log.warning("%s: %s", self.name, self.end_reason)
                        return
                    continue
                self.captured += 1
                self.slot.put(
                    Frame(
                        source=self.name, index=seq, image=img, bgr=self.bgr, frame=seq, t_capture=t0,
                        decode_ms=decode_ms, save_name=_safe_name(self.name),
                    )
                )
                seq += 1
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:
                    pass
            self._cap = None
            self.slot.close()

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        return self.slot.get(timeout)

    @property
    def finished(self) -> bool:
        """The source ended (closed, or gave up reconnecting) and its last frame was taken."""
        return self.slot.closed and self.slot.empty

    @property
    def dropped(self) -> int:
        return self.slot.overwritten

    def close(self) -> None:
        self._stop.set()
        self.slot.close(discard=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


def _read(cap: Any) -> Tuple[bool, Any, float, float]:
    """(ok, image, capture time, decode ms). With OpenCV, ``grab()`` waits for the frame and ``retrieve()``
    decodes it, so the capture time is when the frame arrived and the decode time excludes the wait."""
    if hasattr(cap, "grab") and hasattr(cap, "retrieve"):
        if not cap.grab():
            return False, None, time.perf_counter(), 0.0
        t0 = time.perf_counter()
        ok, img = cap.retrieve()
        return ok, img, t0, (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    ok, img = cap.read()
    t1 = time.perf_counter()
    return ok, img, t1, (t1 - t0) * 1e3


def _cap_fps(cap: Any) -> Optional[float]:
    try:
        import cv2

        fps = float(cap.get(cv2.CAP_PROP_FPS))
        return fps if 0 < fps < 1000 else None
    except Exception:
        return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "live"


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


# --------------------------------------------------------------------------------------------- parsing


def parse_source(arg: str, retry: RetryPolicy = RetryPolicy()):
    """One SOURCE argument → an :class:`ImageSource`, :class:`VideoFileSource` or (unstarted) :class:`LiveSource`."""
    text = str(arg)
    low = text.lower()
    if low.startswith("csi://"):
        return csi_source(text, retry)
    if low.startswith("v4l2://"):
        return v4l2_source(text, retry)
    scheme = low.split("://", 1)[0] if "://" in low else ""
    if scheme in STREAM_SCHEMES:
        return stream_source(text, retry)
    if scheme:
        raise InputError(
            f"source {text!r}: unknown scheme {scheme!r}; valid: csi://N, v4l2:///dev/videoN, "
            f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, a file, a folder or a glob"
        )
    if re.fullmatch(r"/dev/video\d+", text):
        return v4l2_source(text, retry)
    p = Path(text)
    if p.is_dir():
        images = list_images(p)
        if not images:
            raise InputError(f"folder {text!r} holds no images (looked recursively for {', '.join(sorted(IMAGE_EXTS))})")
        base = p.resolve().name or "images"
        return ImageSource(text, [(f, (Path(base) / f.relative_to(p)).as_posix()) for f in images])
    if p.is_file():
        if p.suffix.lower() in VIDEO_EXTS:
            return VideoFileSource(p, name=text)
        return ImageSource(text, [(p, p.name)])
    if _is_glob(text):
        matches = sorted(Path(m) for m in globmod.glob(text, recursive=True))
        files = [m for m in matches if m.is_file()]
        videos = [m for m in files if m.suffix.lower() in VIDEO_EXTS]
        images = [m for m in files if m.suffix.lower() in IMAGE_EXTS]
        if videos and not images:
            return [VideoFileSource(v, name=os.fspath(v)) for v in videos]
        if not images:
            raise InputError(f"the glob {text!r} matches no image or video files")
        if videos:
            log.warning("the glob %r matches videos too; give them separately (using its %d images)", text, len(images))
        return ImageSource(text, [(m, m.name) for m in images])
    raise InputError(f"source {text!r} does not exist (valid: a file, a folder, a glob, --camera N, csi://N, rtsp://…)")


def parse_sources(args: Sequence[str], cameras: Sequence[int] = (), retry: RetryPolicy = RetryPolicy()) -> list:
    """All SOURCE arguments and ``--camera`` indices, in the order given (cameras last)."""
    out: list = []
    for a in args:
        s = parse_source(a, retry)
        out.extend(s if isinstance(s, list) else [s])
    for c in cameras:
        out.append(camera_source(int(c), retry))
    if not out:
        raise InputError("no source: give image files, folders, globs, videos, streams, csi://N or --camera N")
    return out
