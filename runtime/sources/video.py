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
