"""The HTTP side of ``edgecls run --view`` (:mod:`.webview`): routes, the token check, the MJPEG stream."""
from __future__ import annotations

import json
import logging
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from edgecls.runtime.run import access

log = logging.getLogger(__name__)

BOUNDARY = "edgeclsframe"
ASSETS = {"/": ("view.html", "text/html; charset=utf-8"), "/view.js": ("view.js", "text/javascript; charset=utf-8"),
          "/view.css": ("view.css", "text/css; charset=utf-8")}
KEEPALIVE_S = 2.0  # a stream with no new frame waits this long before checking its client is still there


class ViewServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, view: Any, address: Any, family: int) -> None:
        self.address_family = family
        self.view = view
        self.assets: Dict[str, bytes] = {}
        super().__init__(address, ViewHandler)


def make_server(view: Any, host: str, port: int) -> ViewServer:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = ViewServer(view, (host, port), family)
    from edgecls.runtime.run.webview import STATIC

    for route, (name, _) in ASSETS.items():
        server.assets[route] = (STATIC / name).read_bytes()
    return server


class ViewHandler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "edgecls-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("view %s: " + format, self.address_string(), *args)

    def _headers(self, status: int, ctype: str, length: Optional[int] = None, extra: Optional[Dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in {**access.SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str, extra: Optional[Dict] = None) -> None:
        self._headers(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _authorized(self, query: str) -> Optional[Dict[str, str]]:
        """None when refused (401 sent); else extra headers (a cookie for a browser that came with ?token=)."""
        token = self.server.view.token
        given = access.supplied(self.headers.get("Authorization"), self.headers.get("Cookie"), query)
        if not access.allowed(token, given):
            self._send(HTTPStatus.UNAUTHORIZED, (access.DENIED + "\n").encode(), "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Bearer realm="edgecls"'})
            return None
        return {"Set-Cookie": access.set_cookie_header(token)} if token and access.query_token(query) else {}

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        extra = self._authorized(url.query)
        if extra is None:
            return
        path = url.path
        view = self.server.view
        if path in ASSETS:
            self._send(200, self.server.assets[path], ASSETS[path][1], extra)
        elif path == "/state.json":
            self._json(view.state())
        elif path == "/stream.mjpg":
            self._stream()
        elif path == "/frame.jpg":
            got = view.wait_frame(0, 5.0)
            if got is None:
                self._json({"error": "no frame classified yet"}, 503)
            else:
                self._send(200, got[1], "image/jpeg")
        elif path == "/metrics":
            self._metrics()
        else:
            self._json({"error": f"not found: {path}; try /, /stream.mjpg, /state.json, /metrics"}, 404)

    def _metrics(self) -> None:
        from edgecls.core.errors import CapabilityError

        try:
            body, ctype = self.server.view.metrics()
        except CapabilityError as e:
            self._send(503, (str(e) + "\n").encode(), "text/plain; charset=utf-8")
            return
        self._send(200, body, ctype)

    def _stream(self) -> None:
        """Newest frames as multipart/x-mixed-replace until the client leaves or the run ends."""
        from edgecls.runtime.run.webview import MAX_STREAMS

        view = self.server.view
        with view.cond:
            full = view.streams >= MAX_STREAMS
            if not full:
                view.streams += 1
        if full:
            self._json({"error": f"{MAX_STREAMS} viewers already; close one"}, 503)
            return
        try:
            self._headers(200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", extra={"Pragma": "no-cache"})
            if self.command != "HEAD":
                self._stream_frames(view)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            pass  # the client left
        finally:
            with view.cond:
                view.streams -= 1

    def _stream_frames(self, view: Any) -> None:
        period = 1.0 / view.stream_fps
        seq, sent_at = 0, 0.0
        while not view.closed:
            wait = sent_at + period - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the rate limit: frames in between are never encoded
            got = view.wait_frame(seq, KEEPALIVE_S)
            if got is None:
                if view.closed:
                    return
                continue
            seq, jpeg = got
            sent_at = time.monotonic()
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            self.wfile.write(head.encode() + jpeg + b"\r\n")
            self.wfile.flush()
