"""The page of ``edgecls serve``: ``GET /`` lets a person try a photo in a browser (choose, drop, or take one with
the camera), and shows what ``POST /predict`` answers — the page calls that same endpoint, so the page and the
API cannot disagree. No CDN and no build step: three small files in ``static/`` shipped with the package.

``GET /page.json`` gives the page what the records do not carry (threshold, classes, upload limits). Nothing is
stored: an upload lives in memory for its request, as every ``/predict`` upload does.

With ``EDGECLS_TOKEN`` set, every route but the health probes needs the token (:mod:`edgecls.runtime.run.access`):
``Authorization: Bearer TOKEN``, or ``/?token=TOKEN`` once in a browser (an HttpOnly cookie keeps it).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict

from edgecls.runtime.run import access

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})  # probes carry no token


class TokenGate:
    """ASGI middleware: 401 without the token (except :data:`OPEN_PATHS`); a valid ``?token=`` sets the cookie."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        query = scope.get("query_string", b"").decode("latin-1")
        if not access.allowed(self.token, access.supplied(headers.get("authorization"), headers.get("cookie"), query)):
            body = json.dumps({"error": access.DENIED}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="edgecls"')]})
            await send({"type": "http.response.body", "body": body})
            return
        if access.query_token(query) is None:
            await self.app(scope, receive, send)
            return
        cookie = access.set_cookie_header(self.token).encode("latin-1")

        async def send_with_cookie(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def page_info(state: Any) -> Dict[str, Any]:
    """What the page shows beside each record: the model, its threshold and classes, the upload limits."""
    cfg = state.cfg
    info: Dict[str, Any] = {"model": cfg.model_name, "ready": bool(state.ready), "max_bytes": cfg.max_bytes,
                            "max_pixels": cfg.max_pixels}
    if not state.ready:
        info["error"] = state.not_ready().message
        return info
    d = state.clf.decider
    rule = d.confidence
    info.update(classes=list(d.classes), positive=d.spec.positive, threshold=d.threshold, topk=d.topk,
                coverage=rule.coverage, ood=rule.ood is not None, backend=state.clf.backend.describe(),
                confidence=rule.describe(d.threshold))
    cur = state.slot.current if state.slot is not None else None
    if cur is not None:
        info["identity"] = cur.identity.to_dict()  # name, version, sha256 of the model answering now
    return info


def add_page(app: Any, state: Any) -> None:
    """``GET /``, its two assets and ``/page.json``; the token gate when ``EDGECLS_TOKEN`` is set."""
    from fastapi.responses import JSONResponse, Response

    assets = {name: (STATIC / name).read_bytes() for name in (*ASSETS, "index.html")}
    token = access.env_token()
    if token:
        app.add_middleware(TokenGate, token=token)
        log.info("%s is set: every request but the health probes needs it", access.TOKEN_ENV)

    @app.get("/", include_in_schema=False)
    async def page():
        return Response(assets["index.html"], media_type="text/html; charset=utf-8", headers=access.SECURITY_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in ASSETS:
            return JSONResponse({"error": f"no asset {name!r}"}, status_code=404)
        return Response(assets[name], media_type=ASSETS[name], headers=access.SECURITY_HEADERS)

    @app.get("/page.json", include_in_schema=False)
    async def info():
        return JSONResponse(page_info(state), headers={"Cache-Control": "no-store"})
