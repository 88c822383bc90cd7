"""A video file read in order on a background thread (bounded queue: nothing dropped, memory bounded);
with ``loop`` it starts again from the first frame when it ends (frame numbers keep counting)."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

from edgecls.runtime.sources.frame import Frame
from edgecls.runtime.sources.opencv import import_cv2

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp"}
)


class VideoFileSource:
    """A video file read in order on a background thread (bounded queue: nothing dropped, memory bounded)."""

    live = False
    kind = "video"

    def __init__(self, path: Path, name: Optional[str] = None, queue_size: int = 8, loop: bool = False) -> None:
        self.path = Path(path)
        self.name = name or os.fspath(path)
        self.queue_size = queue_size
        self.loop = loop
        self.passes = 0  # completed passes over the file (--loop)
        self.fps: Optional[float] = None
        self.end_reason: Optional[str] = None  # set when the file ended before its frame count (truncated/corrupt)
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
            nonlocal cap
            i = 0
            start = 0  # index of this pass's first frame
            try:
                while not self._stop.is_set():
                    t0 = time.perf_counter()
                    ok, img = cap.read()
                    if not ok or img is None:
                        if not (self.loop and i > start) or self._stop.is_set():
                            break
                        self.passes += 1
                        start = i
                        cap.release()
                        cap = cv2.VideoCapture(os.fspath(self.path))
                        if not cap.isOpened():
                            log.warning("%s: cannot reopen the video for --loop; stopping", self.name)
                            break
                        continue
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
                if expected and i - start < expected - 1 and not self._stop.is_set():
                    self.end_reason = f"read {i - start} of {expected} frames (truncated or corrupt video?)"
                    log.warning("%s: %s", self.name, self.end_reason)
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


class PacedCapture:
    """A video file as a camera delivers it (``--realtime``): ``read()`` returns each frame when it is due at the
    file's frame rate (so a slow model drops frames by the newest-frame policy, as on a camera), replaying with
    ``loop``; at the end ``finished`` is set, which ends its :class:`LiveSource` cleanly instead of reconnecting."""

    def __init__(self, path: Path, loop: bool = False, default_fps: float = 30.0) -> None:
        cv2 = import_cv2(f"reading the video {path}")
        self.cv2, self.path, self.loop = cv2, Path(path), loop
        self.cap = cv2.VideoCapture(os.fspath(path))
        fps = self.cap.get(cv2.CAP_PROP_FPS) if self.cap.isOpened() else 0
        self.fps = float(fps) if fps and 0 < fps < 1000 else default_fps
        self.finished = False
        self.t0: Optional[float] = None
        self.n = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.cap.isOpened() and not self.finished

    def grab(self) -> bool:
        """The next frame, when it is due (demuxed and decoded by OpenCV, not yet converted to BGR)."""
        ok = self.cap.grab()
        if not ok and self.loop and self.n:
            self.cap.release()
            self.cap = self.cv2.VideoCapture(os.fspath(self.path))
            ok = self.cap.grab()
        if not ok:
            self.finished = True
            return False
        if self.t0 is None:
            self.t0 = time.perf_counter()
        wait = self.t0 + self.n / self.fps - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        self.n += 1
        return True

    def retrieve(self):
        """The grabbed frame as BGR pixels (skipped for frames that will not be classified)."""
        ok, img = self.cap.retrieve()
        return (True, img) if ok and img is not None else (False, None)

    def read(self):
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        return self.fps if prop == self.cv2.CAP_PROP_FPS else self.cap.get(prop)

    def release(self) -> None:
        self.cap.release()


def realtime_source(path: Path, name: str, options):
    """``--realtime``: the video file as a live source (newest frame, drops counted, capture → decision latency)."""
    from edgecls.runtime.sources.live import LiveSource

    p = Path(path)
    return LiveSource(name, lambda: PacedCapture(p, loop=options.loop), retry=options.retry,
                      open_timeout=options.open_timeout, hint=" (a video file played in real time: --realtime)")
