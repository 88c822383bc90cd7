"""The HTTP side of ``edgecls label DIR``: the page, the images, and a small JSON API (docs/field-loop.md).

``GET /`` the page · ``GET /api/state`` classes, groups, items, counts · ``GET /images/<id>.jpg`` one collected
image · ``POST /api/assign {"ids": [...], "class": "name"}`` (an existing or a new class) · ``POST /api/discard
{"ids": [...]}`` · ``POST /api/reset {"ids": [...]}`` (back to pending). Same access rules as ``run --view``
(:mod:`edgecls.runtime.run.access`): 127.0.0.1 unless a host is given, then ``EDGECLS_TOKEN`` on every request.
A POST must be ``application/json`` (a form on another site cannot send that without the browser asking first)
and, when the browser names an ``Origin``, come from this page's own.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from edgecls.core.errors import InputError
from edgecls.runtime.run.access import check_exposure
from edgecls.runtime.run.webserver import ViewHandler, ViewServer

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"/": ("label.html", "text/html; charset=utf-8"), "/label.js": ("label.js", "text/javascript; charset=utf-8"),
          "/label.css": ("label.css", "text/css; charset=utf-8")}
MAX_BODY = 1 << 20
_IMAGE = re.compile(r"^/images/([A-Za-z0-9_.-]+)\.jpg$")


class LabelHandler(ViewHandler):
    """``run --view``'s handler (headers, token, cookie) with the labelling routes. ``self.server.view`` is the
    :class:`LabelApp` (the base class reads its ``token``)."""

    server_version = "edgecls-label"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        extra = self._authorized(url.query)
        if extra is None:
            return
        app: LabelApp = self.server.view
        m = _IMAGE.match(url.path)
        if url.path in ASSETS:
            self._send(200, app.assets[url.path], ASSETS[url.path][1], extra)
        elif url.path == "/api/state":
            self._json(app.store.state())
        elif m:
            path = app.store.image_path(m.group(1))
            if path is None:
                self._json({"error": f"no collected image {m.group(1)!r}"}, 404)
            else:
                self._send(200, path.read_bytes(), "image/jpeg", {"Cache-Control": "private, max-age=3600"})
        else:
            self._json({"error": f"not found: {url.path}; try /, /api/state, /images/<id>.jpg"}, 404)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if self._authorized(url.query) is None:
            return
        actions = {"/api/assign": "assign", "/api/discard": "discard", "/api/reset": "reset"}
        if url.path not in actions:
            self._json({"error": f"not found: POST {url.path}; try {', '.join(actions)}"}, 404)
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            self._json({"error": "send the body as Content-Type: application/json"}, HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self._json({"error": f"cross-origin request from {origin} refused"}, HTTPStatus.FORBIDDEN)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json({"error": f"the body must be JSON of 1 byte to {MAX_BODY} bytes"}, 400)
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self._json({"error": f"the body is not a JSON object ({e})"}, 400)
            return
        store = self.server.view.store
        try:
            if actions[url.path] == "assign":
                if "class" not in body:
                    raise InputError("'class' is missing: {\"ids\": [...], \"class\": \"name\"}")
                out = store.assign(body.get("ids"), body["class"])
            else:
                out = getattr(store, actions[url.path])(body.get("ids"))
        except InputError as e:
            self._json({"error": str(e)}, 400)
            return
        except LookupError as e:
            self._json({"error": str(e.args[0])}, 404)
            return
        except OSError as e:  # a full or read-only disk: nothing half-written (links and labels.json are atomic)
            self._json({"error": f"cannot write under {store.root}: {e.strerror or e}"}, 507)
            return
        out["counts"] = store.state()["counts"]
        self._json(out)


class LabelApp:
    """The labelling page's server for one collection folder; :attr:`url`, :meth:`close`."""

    def __init__(self, store: Any, host: str = "127.0.0.1", port: int = 0, token: Optional[str] = None) -> None:
        check_exposure(host, token, "edgecls label --host")
        self.store = store
        self.token = token
        self.assets: Dict[str, bytes] = {r: (STATIC / n).read_bytes() for r, (n, _) in ASSETS.items()}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.httpd = ViewServer(self, (host, port), family)
        except (OSError, socket.gaierror) as e:
            raise InputError(f"edgecls label: cannot listen on {host}:{port}: {e}") from e
        self.httpd.RequestHandlerClass = LabelHandler
        self.port = int(self.httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="edgecls-label", daemon=True)
        self.thread.start()
        log.info("labelling page on %s", self.url)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
