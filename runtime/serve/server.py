"""The HTTP server around the app: uvicorn (h11) with the limits a hostile or careless client meets.

- **Header timeout** (``--header-timeout``, 10 s): a request line and headers must arrive within it from their first
  byte (or from the connection's start); a connection that trickles headers gets a JSON 408 and is closed, one that
  sends nothing is closed. Idle keep-alive connections close after uvicorn's 5 s. The rest of a body answered
  early (413, 503) is read and dropped under the body timeout's terms, so the client gets to read the answer.
- **Body timeout** (``--body-timeout`` 10 s + 1 s per ``--min-upload-rate`` bytes received, as Apache's
  mod_reqtimeout): a body that stalls or trickles, or is shorter than its Content-Length, gets a JSON 408.
- **Connections** (``--max-connections``): past the cap a connection is answered a JSON 503 with ``Retry-After``
  and closed. **Buffered bytes** (``--max-buffered-bytes``): :class:`~edgecls.runtime.serve.uploads.ByteBudget`.
- **Malformed HTTP** (a bad Content-Length, an oversized header): a JSON 400, not uvicorn's plain text.
- **Shutdown** (SIGTERM/SIGINT): listening stops, idle connections close, requests still sending their body get a
  JSON 503 (``Connection: close``), the others are answered; whatever still runs after ``--shutdown-timeout`` is
  cancelled and answered a JSON 503 (no traceback). :func:`build_server` records the signal, and
  ``edgecls serve`` exits with the documented code (143 for SIGTERM, 130 for SIGINT) instead of re-raising it.

:class:`Guard` (ASGI middleware, added by ``create_app``) does the body deadlines and turns anything that escaped a
route into JSON; :class:`EdgeclsH11Protocol` does the rest at the connection level.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterator, List, Optional

from edgecls.runtime.serve.uploads import UploadError

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.25  # how often a request waiting for its body looks at the shutdown flag
REFUSED_HEADER_TIMEOUT_S = 1.0  # a connection over --max-connections gets this long to send its request
KEEP_ALIVE_S = 5


def json_error_bytes(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> bytes:
    """A complete HTTP/1.1 response with ``{"error": message}``, closing the connection (written raw, outside h11:
    for a request h11 could not parse, or one whose headers never completed)."""
    body = json.dumps({"error": message}).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def send_json(send: Callable, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
    body = json.dumps({"error": message}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Guard:
    """ASGI middleware: the body deadlines, the shutdown of requests still uploading, and JSON for whatever a route
    did not answer (an escaped exception is a logged JSON 500; a cancellation at shutdown a JSON 503)."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cfg, state = self.state.cfg, self.state
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        received = 0
        body_done = False
        started = False

        async def receive_body() -> Dict[str, Any]:
            nonlocal received, body_done
            if body_done:
                return await receive()
            while True:
                if state.draining:
                    raise UploadError(503, "the server is shutting down; send the request again (to another "
                                           "instance, or once this one is back)",
                                      {"Connection": "close", "Retry-After": "1"})
                remaining = t0 + cfg.body_timeout_s + received / cfg.min_upload_rate - loop.time()
                if remaining <= 0:
                    raise UploadError(408, f"the request body was not received in time ({received} bytes after "
                                           f"{loop.time() - t0:.1f} s; --body-timeout {cfg.body_timeout_s:g} s plus "
                                           f"1 s per {cfg.min_upload_rate} bytes, --min-upload-rate)",
                                      {"Connection": "close"})
                try:
                    message = await asyncio.wait_for(receive(), min(remaining, DRAIN_POLL_S))
                except asyncio.TimeoutError:
                    continue
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    body_done = not message.get("more_body", False)
                else:
                    body_done = True  # http.disconnect
                return message

        async def send_tracked(message: Dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive_body, send_tracked)
        except UploadError as e:  # raised where no route guard was (e.g. a body read by FastAPI itself)
            if not started:
                await send_json(send, e.status, e.message, e.headers)
        except asyncio.CancelledError:  # uvicorn cancels what still runs after --shutdown-timeout
            if not started:
                with contextlib.suppress(BaseException):
                    await send_json(send, 503, "the server stopped before this request was answered; send it "
                                               "again", {"Connection": "close", "Retry-After": "1"})
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(send, 500, "internal server error (logged)")
        finally:
            state.budget.settle()  # big bodies gone and nothing held: give the memory back (malloc_trim)


class _Deadlines:
    """The timer of :func:`_protocol_class`'s protocol: one deadline per connection (a request head's, or a refused
    body's rest), re-armed as bytes arrive."""

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(max(0.0, seconds), self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _deadline(self) -> float:
        if self._tail is not None:  # the rest of a refused body: the body timeout's terms
            return self._tail[0] + self.body_timeout + self._tail[1] / self.min_rate
        return self._head_deadline


def _protocol_class(limits: Dict[str, Any]) -> type:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class EdgeclsH11Protocol(_Deadlines, H11Protocol):
        """uvicorn's h11 protocol plus the header timeout, the connection cap and JSON for malformed requests."""

        header_timeout = float(limits["header_timeout"])
        body_timeout = float(limits["body_timeout"])
        min_rate = float(limits["min_upload_rate"])
        max_connections = int(limits["max_connections"])

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._timer: Optional[asyncio.TimerHandle] = None
            self._head_bytes = False
            self._tail: Optional[List[float]] = None  # [start, bytes] of a body discarded after an early answer
            self._head_deadline = self.loop.time() + self.header_timeout
            if len(self.connections) > self.max_connections:
                self.app = _refuse  # answered (JSON 503 + Retry-After) and closed as soon as its request is in
                self._head_deadline = self.loop.time() + min(REFUSED_HEADER_TIMEOUT_S, self.header_timeout)
            self._arm(self._head_deadline - self.loop.time())

        def data_received(self, data: bytes) -> None:
            if self._idle():
                if self.cycle is not None and self.conn.our_state is h11.DONE:  # answered early; rest discarded
                    if self._tail is None:
                        self._tail = [self.loop.time(), 0.0]
                    self._tail[1] += len(data)
                elif not self._head_bytes:  # the first bytes of a new request: its head has a deadline
                    self._tail = None
                    self._head_bytes = True
                    self._head_deadline = self.loop.time() + self.header_timeout
                if self._timer is None:
                    self._arm(self._deadline() - self.loop.time())
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before and not self._idle():  # its headers are in; the body has its own timeout
                self._disarm()
                self._head_bytes = False
                self._tail = None

        def _on_timer(self) -> None:
            self._timer = None
            if self.transport.is_closing() or not self._idle():
                return
            left = self._deadline() - self.loop.time()
            if left > 0:  # a discarded body still arriving fast enough
                self._arm(left)
                return
            if self._head_bytes and self.conn.our_state is h11.IDLE:  # part of a request head: say why
                self.transport.write(json_error_bytes(408, f"the request headers did not arrive within "
                                                           f"{self.header_timeout:g} s (--header-timeout)"))
            self.transport.close()

        def on_response_complete(self) -> None:
            self._head_bytes = False
            super().on_response_complete()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._disarm()
            self.transport.write(json_error_bytes(400, "malformed HTTP request (request line, a header, or "
                                                       "Content-Length/Transfer-Encoding); send HTTP/1.1"))
            self.transport.close()

    return EdgeclsH11Protocol


async def _refuse(scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
    await send_json(send, 503, "too many connections (--max-connections); retry shortly",
                    {"Retry-After": "1", "Connection": "close"})


def connection_limit(wanted: int) -> int:
    """``wanted``, or fewer if the open-files limit cannot be raised to fit it (64 descriptors kept spare)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        if soft < need:
            log.warning("open-files limit %d: serving at most %d connections (--max-connections %d)", soft,
                        max(1, soft - 64), wanted)
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft - 64))


def build_server(app: Any, cfg: Any, announce: Optional[Callable[[str], None]] = None,
                 access_log: bool = False) -> Any:
    """A uvicorn server for ``app`` (from ``create_app``) with ``cfg``'s limits; after ``run()``, its ``signals``
    lists the signals that stopped it (SIGTERM/SIGINT; uvicorn's re-raise of them is not done)."""
    import uvicorn

    limits = {"header_timeout": cfg.header_timeout_s, "body_timeout": cfg.body_timeout_s,
              "min_upload_rate": cfg.min_upload_rate, "max_connections": connection_limit(cfg.max_connections)}
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=cfg.shutdown_timeout_s, server_header=False,
                            http=_protocol_class(limits), timeout_keep_alive=KEEP_ALIVE_S, ws="none")

    class Server(uvicorn.Server):
        signals: List[int] = []

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and announce is not None:
                port = self.servers[0].sockets[0].getsockname()[1]
                host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
                announce(f"http://{host}:{port}")

        async def shutdown(self, sockets=None):
            edgecls_state = getattr(getattr(app, "state", None), "edgecls", None)
            if edgecls_state is not None:
                edgecls_state.draining = True  # requests still uploading get a 503 (Guard)
            await super().shutdown(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.signals.append(sig)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's, without re-raising the signal afterwards: the CLI exits with its documented code."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(config)
    server.signals = []
    return server
