"""``edgecls run --view [HOST:]PORT``: the run in a browser while it runs.

``GET /`` the page (with two or more cameras, a grid: each camera's newest frame and its own numbers);
``/stream.mjpg`` the newest annotated frame as MJPEG (``multipart/x-mixed-replace``: any browser plays it without a
library); ``/frame.jpg`` one frame (``?source=ID``: that camera's newest); ``/state.json`` counts per decision,
frames/s, latency per stage, per source, and the latest decisions; ``/metrics`` the Prometheus metrics of
``--metrics-port``; ``/sources`` (GET, POST, DELETE ``/sources/ID``) the sources, added and removed while running.

It never slows the run loop: per frame the loop only hands over a reference to the frame's image and its
prediction (:meth:`WebView.publish`); drawing the overlay and encoding the JPEG happen on the thread of a client
that asks, at most :data:`STREAM_FPS` times a second, once per frame whatever the number of clients, and not at
all when nobody watches. The standard library's threading HTTP server (no FastAPI needed for ``run``), bound to
127.0.0.1 unless a host is given; beyond this machine it needs ``EDGECLS_TOKEN`` (:mod:`.access`).
"""
from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.run.access import check_exposure

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STREAM_FPS = 10.0  # most frames per second sent to a viewer
MAX_SIDE = 640  # streamed frames are scaled down to this longest side (bandwidth, encode time)
JPEG_QUALITY = 80
MAX_STREAMS = 8  # concurrent MJPEG clients; more get 503
RECENT = 15  # latest decisions shown


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # image files need no OpenCV: Pillow then
        return None
    return cv2


def render_jpeg(image: Any, bgr: bool, pred: Any, fps: Optional[float], max_side: int = MAX_SIDE) -> bytes:
    """``image`` (RGB or BGR array, or a PIL image) scaled to ``max_side``, annotated as ``--save`` does, as JPEG
    (OpenCV's encoder where there is one: it releases the GIL, so the run loop's threads keep going)."""
    from PIL import Image

    from edgecls.runtime.run.annotate import DECISION_COLORS, annotate, overlay_text

    arr = np.asarray(image)
    arr = np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr[:, :, :3]
    h, w = arr.shape[:2]
    scale = max_side / max(h, w)
    cv2 = _cv2()
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = (cv2.resize(arr, size, interpolation=cv2.INTER_AREA) if cv2 is not None else
               np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(size, Image.BILINEAR)))
    color = DECISION_COLORS.get(pred.decision, (255, 255, 255))
    if cv2 is not None and bgr:  # drawn on the BGR pixels as they are, with the colour reversed: no channel flips
        out = annotate(arr, overlay_text(pred, fps), color=color[::-1])
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            return buf.tobytes()
    out = annotate(arr, overlay_text(pred, fps), bgr=bgr, color=color)  # in the channel order it was given
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(out[:, :, ::-1] if bgr else out)).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class WebView:
    """The newest frame, the latest decisions and the HTTP server that shows them; :attr:`url`, :meth:`close`."""

    def __init__(self, stats: Any, sources: Sequence[Any], host: str = "127.0.0.1", port: int = 0,
                 token: Optional[str] = None, stream_fps: float = STREAM_FPS) -> None:
        from edgecls.runtime.run.webserver import make_server

        check_exposure(host, token)
        self.stats = stats
        self.sources = list(sources)
        self.token = token
        self.stream_fps = float(stream_fps)
        self.cond = threading.Condition()
        self.seq = 0  # frames published
        self.latest: Optional[Tuple[int, Any, bool, Any, Optional[float]]] = None
        self.by_source: Dict[str, Tuple[int, Any, bool, Any, Optional[float]]] = {}  # each source's newest
        self._jpeg_by: Dict[str, Tuple[int, bytes]] = {}
        self.control: Any = None  # SourceControl: /sources can add and remove sources (sources_control.py)
        self.recent: Deque[Tuple[float, Any, Any]] = deque(maxlen=RECENT)
        self.encoded = 0  # JPEGs encoded (0 while nobody watches)
        self.encode_s = 0.0  # time spent drawing and encoding them
        self.streams = 0
        self.closed = False
        self._jpeg: Tuple[int, bytes] = (0, b"")
        self._encode_lock = threading.Lock()
        self._rate: Deque[Tuple[float, int]] = deque(maxlen=64)  # (time, frames) at each /state.json
        self.httpd: ThreadingHTTPServer = make_server(self, host, port)
        self.port = int(self.httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="edgecls-view", daemon=True)
        self.thread.start()
        log.info("run view on %s", self.url)

    # -- the run loop's side: a reference, nothing drawn or encoded ------------------------------------------
    def publish(self, frame: Any, pred: Any, fps: Optional[float] = None) -> None:
        """The loop's newest classified frame (its image is only referenced; the loop drops its own reference)."""
        with self.cond:
            self.seq += 1
            self.latest = (self.seq, frame.image, bool(frame.bgr), pred, fps)
            self.by_source[frame.source] = self.latest
            self.recent.append((time.time(), frame, pred))
            self.cond.notify_all()

    # -- the clients' side ------------------------------------------------------------------------------------
    def wait_frame(self, after: int, timeout: float) -> Optional[Tuple[int, bytes]]:
        """The newest frame as ``(seq, JPEG)`` once one newer than ``after`` exists (None on timeout or close)."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.closed or self.seq > after, timeout):
                return None
            if self.closed or self.latest is None:
                return None
            latest = self.latest
        return latest[0], self.jpeg(latest)

    def jpeg(self, latest: Tuple[int, Any, bool, Any, Optional[float]]) -> bytes:
        """The JPEG of ``latest``, encoded once however many clients ask."""
        with self._encode_lock:
            if self._jpeg[0] != latest[0]:
                seq, image, bgr, pred, fps = latest
                t0 = time.perf_counter()
                self._jpeg = (seq, render_jpeg(image, bgr, pred, fps))
                self.encode_s += time.perf_counter() - t0
                self.encoded += 1
            return self._jpeg[1]

    def source_jpeg(self, name: str) -> Optional[bytes]:
        """The JPEG of source ``name``'s newest classified frame (None: none yet), encoded once per frame."""
        with self.cond:
            latest = self.by_source.get(name)
        if latest is None:
            return None
        with self._encode_lock:
            cached = self._jpeg_by.get(name)
            if cached is None or cached[0] != latest[0]:
                seq, image, bgr, pred, fps = latest
                t0 = time.perf_counter()
                cached = self._jpeg_by[name] = (seq, render_jpeg(image, bgr, pred, fps, max_side=MAX_SIDE // 2))
                self.encode_s += time.perf_counter() - t0
                self.encoded += 1
            return cached[1]

    def per_source(self) -> List[Dict[str, Any]]:
        """Each source's numbers (the summary's table) and its newest decision."""
        s = self.stats
        with self.cond:
            newest = {k: v[3] for k, v in self.by_source.items()}
        out = []
        for st in list(getattr(s, "per_source", {}).values()):
            d = st.to_dict(s.decision_names)
            p = newest.get(st.name)
            if p is not None:
                d["last"] = {"label": p.label, "decision": p.decision, "confidence": round(float(p.confidence), 4)}
            out.append(d)
        return out

    def frames_per_s(self) -> Optional[float]:
        """Frames/s over the last few seconds (the run's average until two polls are ~1 s apart)."""
        now, frames = time.perf_counter(), self.stats.frames
        self._rate.append((now, frames))
        while len(self._rate) > 2 and now - self._rate[0][0] > 5.0:
            self._rate.popleft()
        t0, f0 = self._rate[0]
        return (frames - f0) / (now - t0) if now - t0 >= 1.0 else self.stats.fps

    def state(self) -> Dict[str, Any]:
        s = self.stats
        try:
            stages = s.stages()
        except (ValueError, IndexError, RuntimeError):  # a sketch read while the loop appends: next poll
            stages = {}
        recent: List[Dict[str, Any]] = []
        for t, frame, pred in reversed(list(self.recent)):
            r = {"time": round(t, 3), "source": frame.source, "label": pred.label, "decision": pred.decision,
                 "confidence": round(float(pred.confidence), 4)}
            r.update({k: v for k, v in (("frame", frame.frame), ("path", frame.path)) if v is not None})
            recent.append(r)
        return {
            "frames": s.frames, "errors": s.errors, "elapsed_s": round(s.elapsed, 3),
            "frames_per_s": round(self.frames_per_s() or 0.0, 2), "frames_per_s_run": round(s.fps, 2),
            "decisions": {k: s.decisions.get(k, 0) for k in s.decision_names}, "positive": s.positive,
            "threshold": s.threshold, "backend": s.backend_desc, "confidence": list(s.confidence),
            "latency_ms": stages, "recent": recent, "viewers": self.streams, "encoded": self.encoded,
            "encode_ms_total": round(self.encode_s * 1e3, 1),
            "sources": [str(getattr(src, "name", src)) for src in self.sources],
            "drift": ({src: list(k) for src, k in dict(s.drift.firing).items() if k}
                      if getattr(s, "drift", None) is not None else None),
            "per_source": self.per_source(),
            "model": getattr(s, "model", None),  # name, version, sha256 of the model answering now
        }

    def metrics(self) -> Tuple[bytes, str]:
        """Prometheus text of the run (the collector of ``--metrics-port``); raises CapabilityError without it."""
        from edgecls.runtime.run.prometheus import RunCollector
        from edgecls.runtime.serve.metrics import import_prometheus

        pc = import_prometheus()
        if not hasattr(self, "_registry"):
            self._registry = pc.CollectorRegistry(auto_describe=False)
            self._registry.register(RunCollector(self.stats, self.sources))
        return pc.generate_latest(self._registry), pc.CONTENT_TYPE_LATEST

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


def start_view(config: Any, stats: Any, sources: Sequence[Any], err: Any) -> Optional[WebView]:
    """``--view [HOST:]PORT`` (a RunConfig's ``view``): start the view and say where it is on ``err``."""
    from edgecls.core.errors import InputError
    from edgecls.runtime.run.access import parse_address

    if config.view is None:
        return None
    address, token = config.view, config.view_token
    host, port = parse_address(address)
    try:
        view = WebView(stats, sources, host, port, token)
    except (OSError, socket.gaierror) as e:
        raise InputError(f"--view {address}: cannot listen on {host}:{port}: {e}") from e
    err.write(f"edgecls run: view on {view.url}{'?token=$EDGECLS_TOKEN' if token else ''}\n")
    err.flush()
    return view
