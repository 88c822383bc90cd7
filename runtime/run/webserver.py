"""The HTTP side of ``edgecls run --view`` (:mod:`.webview`): routes, the token check, the MJPEG stream."""
from __future__ import annotations

import json
import logging
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from edgecls.runtime.run import access

log = logging.getLogger(__name__)

BOUNDARY = "edgeclsframe"
ASSETS = {"/": ("view.html", "text/html; charset=utf-8"), "/view.js": ("view.js", "text/javascript; charset=utf-8"),
          "/view.css": ("view.css", "text/css; charset=utf-8")}
KEEPALIVE_S = 2.0  # a stream with no new frame waits this long before checking its client is still there
MAX_BODY = 64 * 1024  # bytes of a request body (POST /sources)


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
        elif path == "/frame.jpg" and "source" in parse_qs(url.query):
            name = parse_qs(url.query)["source"][0]
            jpeg = view.source_jpeg(name)
            if jpeg is None:
                self._json({"error": f"no frame of {name!r} classified yet"}, 404)
            else:
                self._send(200, jpeg, "image/jpeg")
        elif path == "/frame.jpg":
            got = view.wait_frame(0, 5.0)
            if got is None:
                self._json({"error": "no frame classified yet"}, 503)
            else:
                self._send(200, got[1], "image/jpeg")
        elif path == "/metrics":
            self._metrics()
        elif path == "/sources":
            control = getattr(view, "control", None)
            self._json({"sources": control.sources() if control is not None else view.state()["per_source"]})
        else:
            self._json({"error": f"not found: {path}; try /, /stream.mjpg, /state.json, /metrics, /sources"}, 404)

    # -- sources added and removed while running (runtime/run/sources_control.py) -----------------------------
    def _control(self) -> Any:
        url = urlsplit(self.path)
        if self._authorized(url.query) is None:
            return None
        control = getattr(self.server.view, "control", None)
        if control is None:
            self._json({"error": "this run cannot add or remove sources"}, 409)
        return control

    def do_POST(self) -> None:
        """``POST /sources`` with JSON ``{"source": "rtsp://…", "id": "door", "fps": 5}``: 201 once its camera is
        open and scheduled; 400 bad request, 409 id already running, 504 it did not open."""
        from edgecls.core.errors import InputError, SourceError
        from edgecls.runtime.run.sources_control import parse_spec

        if urlsplit(self.path).path != "/sources":
            self._json({"error": "POST goes to /sources"}, 404)
            return
        control = self._control()
        if control is None:
            return
        length = int(self.headers.get("Content-Length") or 0)
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            self._json({"error": "send Content-Type: application/json with {\"source\": ..., \"id\": ..., "
                                 "\"fps\": ...}"}, 415)
            return
        if not 0 < length <= MAX_BODY:
            self._json({"error": f"the body must be 1 to {MAX_BODY} bytes of JSON"}, 400)
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            unknown = set(body) - {"source", "id", "fps"}
            if unknown:
                raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}; valid: source, id, fps")
            name = control.add(parse_spec(body.get("source"), body.get("id"), body.get("fps"), "POST /sources"))
        except InputError as e:  # (a ValueError too: first)
            self._json({"error": str(e)}, 409 if "already running" in str(e) else 400)
        except (ValueError, UnicodeDecodeError) as e:
            self._json({"error": f"the body is not a JSON object: {e}"}, 400)
        except SourceError as e:
            self._json({"error": str(e)}, 504)
        else:
            self._json({"id": name, "running": True}, 201)

    def do_DELETE(self) -> None:
        """``DELETE /sources/ID`` (ID URL-encoded): 200 once it is no longer scheduled, 404 when not running."""
        from edgecls.core.errors import SourceError

        path = urlsplit(self.path).path
        if not path.startswith("/sources/"):
            self._json({"error": "DELETE goes to /sources/ID"}, 404)
            return
        control = self._control()
        if control is None:
            return
        name = unquote(path[len("/sources/"):])
        try:
            removed = control.remove(name)
        except SourceError as e:
            self._json({"error": str(e)}, 409)
            return
        if removed:
            self._json({"id": name, "removed": True})
        else:
            self._json({"error": f"no running source {name!r}; GET /sources lists them"}, 404)

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
