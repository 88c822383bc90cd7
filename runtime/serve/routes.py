"""The endpoints of ``edgecls serve`` (added to the app by :func:`add_routes`).

- ``POST /predict[?probs=true]``: image bytes, or a multipart form with one file → the record ``edgecls run``
  prints (plus ``timings_ms.queue``, the time spent waiting for a batch).
- KServe v2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready`` (503 until loaded), ``/v2/models/<name>``
  (metadata), ``/v2/models/<name>/ready``, ``/v2/models/<name>/config`` (Triton's model configuration),
  ``POST /v2/models/<name>/infer``; each also under ``/v2/models/<name>/versions/<v>/...`` (the version loaded
  now: any other is a 404) (:mod:`.kserve`). Responses name the model that answered (``model_version``,
  ``parameters.model_sha256``; ``/predict``: ``model``). Request bodies may be ``Content-Encoding: gzip`` or ``deflate``.
- Triton's model-repository extension: ``POST /v2/repository/index``, ``/v2/repository/models/<name>/load`` and
  ``/unload`` (:mod:`.repository`).
- ``GET /metrics``: Prometheus text (:mod:`.metrics`).

Every error is JSON ``{"error": "..."}``: 4xx for what the client sent, 503 (with ``Retry-After`` when retrying
helps) while loading, shutting down, or holding too many uploads.
(No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations, e.g. ``Request``.)
"""
import asyncio
import logging
import time
from typing import Any, Optional, Tuple

import numpy as np

from edgecls.runtime.serve import kserve
from edgecls.runtime.serve.batching import BatcherClosed
from edgecls.runtime.serve.uploads import Lease, UploadError, read_body
from edgecls.runtime.slot.loaded import SlotEmpty

log = logging.getLogger(__name__)

PLATFORM = "edgecls"
BIG_JSON = 1 << 20  # JSON bodies over this are parsed one at a time


class Responder:
    """JSON replies counted in the metrics, and the guard that maps every failure to a JSON status."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.metrics = state.metrics

    def reply(self, endpoint: str, status: int, content: Any, kind: str = "", headers: Any = None) -> Any:
        from fastapi.responses import JSONResponse

        self.metrics.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(kind or ("client" if status < 500 else "server")).inc()
            content = {"error": content}
        return JSONResponse(content, status_code=status, headers=headers or None)

    async def guarded(self, endpoint: str, work) -> Any:
        """Run ``work()`` (once the model is loaded); every failure becomes a JSON status, the server keeps serving."""
        from starlette.requests import ClientDisconnect

        self.metrics.inflight.inc()
        try:
            if not self.state.ready:
                raise self.state.not_ready()
            return await work()
        except UploadError as e:
            kind = {503: "unavailable", 404: "client", 422: "client", 408: "timeout"}.get(e.status, "upload")
            return self.reply(endpoint, e.status, e.message, kind, e.headers)
        except (BatcherClosed, SlotEmpty) as e:
            return self.reply(endpoint, 503, str(e), "unavailable")
        except ClientDisconnect:
            return self.reply(endpoint, 400, "the client disconnected before the upload was complete", "upload")
        except Exception as e:  # the model or backend failed: a server error, logged with its traceback
            log.exception("%s failed", endpoint)
            return self.reply(endpoint, 500, f"inference failed: {type(e).__name__}: {e}", "inference")
        finally:
            self.metrics.inflight.dec()


def add_routes(app: Any, state: Any, overhead: int) -> None:
    """Every endpoint of the module docstring, and JSON for FastAPI's own errors (422, 404, 405)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    resp = Responder(state)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return resp.reply(request.url.path, 422, f"invalid request: {detail}", "client")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.post("/predict")
    async def predict(request: Request, probs: bool = False):
        t0 = time.perf_counter()

        async def work():
            from edgecls.runtime.serve.app import upload_bytes

            with Lease(state.budget) as lease:
                data, filename = await upload_bytes(request, state, overhead, lease)
                return resp.reply("/predict", 200, await state.classify(data, filename, probs, t0))

        return await resp.guarded("/predict", work)

    _health_routes(app, state)
    _kserve_routes(app, state, resp)
    from edgecls.runtime.serve.repository import add_repository_routes

    add_repository_routes(app, state, resp)


def _health_routes(app: Any, state: Any) -> None:
    from fastapi.responses import JSONResponse, Response

    @app.get("/v2")
    async def server_metadata():
        from edgecls import __version__

        return {"name": "edgecls", "version": __version__, "extensions": ["classification", "binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if state.ready:
            return {"ready": True}
        return JSONResponse({"ready": False, "error": state.not_ready().message}, status_code=503)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: Optional[str] = None):
        if name != state.cfg.model_name:
            return JSONResponse({"error": f"unknown model {kserve.short(name)}"}, status_code=404)
        ready = state.ready and bool(versions(state))
        if version is not None and ready and version not in versions(state):
            return JSONResponse({"error": unknown_version(state, name, version)}, status_code=404)
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus():
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)


def versions(state: Any) -> Tuple[str, ...]:
    """The version loaded now (none after an unload): a swap replaces it, as Triton's default policy (latest 1)."""
    cur = state.slot.current if state.slot is not None else None
    return (cur.identity.version,) if cur is not None else ()


def unknown_version(state: Any, name: str, version: str) -> str:
    return (f"model {kserve.short(name)} has no version {kserve.short(version)} loaded; loaded: "
            f"{', '.join(versions(state)) or 'none'}")


def _kserve_routes(app: Any, state: Any, resp: Responder) -> None:
    from fastapi import Request
    from fastapi.responses import Response

    def check_name(name: str, version: Optional[str] = None) -> None:
        if name != state.cfg.model_name:
            raise UploadError(404, f"unknown model {kserve.short(name)}; this server serves "
                                   f"{state.cfg.model_name!r}")
        if version is not None and version not in versions(state):
            raise UploadError(404, unknown_version(state, name, version))

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: Optional[str] = None):
        async def work():
            check_name(name, version)
            return resp.reply("/v2/models/metadata", 200, kserve.model_metadata(name, state.clf.spec, PLATFORM,
                                                                                versions(state)))

        return await resp.guarded("/v2/models/metadata", work)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: Optional[str] = None):
        async def work():
            check_name(name, version)
            doc = kserve.model_config(name, state.clf.spec, PLATFORM, state.cfg.max_wait_ms, state.max_batch,
                                      versions(state))
            return resp.reply("/v2/models/config", 200, doc)

        return await resp.guarded("/v2/models/config", work)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: Optional[str] = None):
        async def work():
            check_name(name, version)
            return await _infer(state, request, Response)

        return await resp.guarded("/v2/models/infer", work)


async def _infer(state: Any, request: Any, response_cls: Any) -> Any:
    from edgecls.runtime.metrics import softmax

    clf = state.clf
    spec = clf.spec
    loop = asyncio.get_running_loop()
    header_length = request.headers.get(kserve.HEADER_LENGTH)
    with Lease(state.budget) as lease:
        body = await read_body(request, state.cfg.max_bytes, lease)
        json_size = len(body) if header_length is None else min(len(body), kserve.header_size(header_length))
        args = (kserve.parse_infer_request, body, header_length, spec.input_name, spec.output_name,
                spec.preprocess.crop)
        del body
        if json_size > BIG_JSON:  # one at a time (ServeState.parse_lock)
            async with state.parse_lock:
                req = await loop.run_in_executor(state.pool, *args)
        else:
            req = await loop.run_in_executor(state.pool, *args)
        del args  # the buffer goes before inference, and the lease's bytes with it
    for _ in range(3):  # a request's images all answered by one model: again if a swap fell between its batches
        results = await asyncio.gather(*(state.batcher.submit(x) for x in req.batch))
        if len({id(r.model) for r in results}) == 1:
            break
    else:
        raise UploadError(503, "the model was swapped three times while this request ran; retry", {"Retry-After": "1"})
    model = results[0].model
    spec = model.clf.spec  # the answering model's temperature and classes
    outputs = np.stack([r.output for r in results]).astype(np.float32)
    probs = outputs.astype(np.float64) if spec.output == "probs" else softmax(outputs, spec.temperature)
    body, headers = kserve.infer_response(state.cfg.model_name, req, spec.output_name, outputs, probs, spec.classes,
                                          model.identity.version, model.identity.short)
    state.metrics.requests.labels("/v2/models/infer", "200").inc()
    return response_cls(body, status_code=200, headers=headers)


__all__ = ["add_routes"]
