"""Live sources: a capture read on a background thread into a one-frame slot, reopened with bounded backoff.

The consumer always takes the newest frame (never a stale buffered one); frames it did not take in time are counted
as dropped. A stream that drops is reopened per :class:`RetryPolicy`, then the source ends cleanly. With an
``open_timeout`` every open runs on a helper thread and is abandoned after that many seconds, and the first frame
must arrive within the same time: a server that accepts the connection but never answers (or never sends a frame)
fails the run with :class:`SourceError` instead of hanging it.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from edgecls.core.errors import CapabilityError, SourceError
from edgecls.runtime.sources.frame import Frame

log = logging.getLogger(__name__)


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
        open_timeout: Optional[float] = None,
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
        self.open_timeout = open_timeout
        self.decoder: Optional[str] = None  # what decodes a stream, when it matters (e.g. "nvv4l2decoder")
        self.fps_cap: Optional[float] = None  # classify at most this many frames/s of it (the scheduler's rule)
        # wanted(now) -> False: the frame just grabbed will not be classified (an fps cap), so it is not converted
        self.wanted: Optional[Callable[[float], bool]] = None
        self.skipped = 0  # frames grabbed but never converted (not wanted)
        self._first = threading.Event()  # set at the first frame, or when the reader ends

    def set_notify(self, event: threading.Event) -> None:
        self.slot.notify = event

    def _open(self) -> Any:
        """``opener()``, bounded by ``open_timeout`` (then SourceError; a capture that opens later is released)."""
        if self.open_timeout is None:
            return self.opener()
        box: dict = {}
        abandoned = threading.Event()

        def attempt() -> None:
            try:
                box["cap"] = self.opener()
            except BaseException as e:  # handed to the caller below
                box["error"] = e
            if abandoned.is_set() and box.get("cap") is not None:
                box["cap"].release()

        t = threading.Thread(target=attempt, name=f"edgecls-open:{self.name}", daemon=True)
        t.start()
        t.join(self.open_timeout)
        if t.is_alive():
            abandoned.set()
            raise SourceError(
                f"cannot open {self.name}: no answer within {self.open_timeout:g} s (--open-timeout){self.hint}"
            )
        if "error" in box:
            raise box["error"]
        return box.get("cap")

    def start(self) -> LiveSource:
        t0 = time.monotonic()
        try:
            cap = self._open()
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
        if self.open_timeout is not None:
            left = max(0.0, self.open_timeout - (time.monotonic() - t0))
            if not self._first.wait(left):
                self.close(join=0.2)
                raise SourceError(
                    f"cannot open {self.name}: it opened but sent no frame within {self.open_timeout:g} s "
                    f"(--open-timeout){self.hint}"
                )
        return self

    def _reopen(self) -> Any:
        for attempt, delay in enumerate(self.retry.delays(), start=1):
            log.warning("%s: stream dropped; reopening in %.1f s (attempt %d/%d)", self.name, delay, attempt, self.retry.retries)
            if self._sleep(delay) is True or self._stop.is_set():
                return None
            try:
                cap = self._open()
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
                    ok, img, t0, decode_ms = _read(cap, self.wanted)
                except Exception as e:
                    log.warning("%s: read failed: %s", self.name, e)
                    ok, img, t0, decode_ms = False, None, 0.0, 0.0
                if self._stop.is_set():
                    break
                if img is SKIPPED:
                    self.skipped += 1
                    self._first.set()
                    seq += 1
                    continue
                if not ok or img is None:
                    if getattr(cap, "finished", False):  # a file played in real time has ended: a clean end
                        return
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
                self._first.set()
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
            self._first.set()

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        return self.slot.get(timeout)

    @property
    def finished(self) -> bool:
        """The source ended (closed, or gave up reconnecting) and its last frame was taken."""
        return self.slot.closed and self.slot.empty

    @property
    def dropped(self) -> int:
        """Frames captured and never classified: replaced in the slot by a newer one, or not wanted (not converted)."""
        return self.slot.overwritten + self.skipped

    def close(self, join: float = 2.0) -> None:
        self._stop.set()
        self.slot.close(discard=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=join)


SKIPPED = object()  # _read's image for a frame grabbed and not converted


def _read(cap: Any, wanted: Optional[Callable[[float], bool]] = None) -> Tuple[bool, Any, float, float]:
    """(ok, image, capture time, decode ms). With OpenCV, ``grab()`` waits for the frame and ``retrieve()``
    decodes it, so the capture time is when the frame arrived and the decode time excludes the wait. A frame that
    is not ``wanted`` is grabbed (the stream goes on) but not retrieved: image :data:`SKIPPED`."""
    if hasattr(cap, "grab") and hasattr(cap, "retrieve"):
        if not cap.grab():
            return False, None, time.perf_counter(), 0.0
        t0 = time.perf_counter()
        if wanted is not None and not wanted(t0):
            return True, SKIPPED, t0, 0.0
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
