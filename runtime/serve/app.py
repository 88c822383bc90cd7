"""The FastAPI app of ``edgecls serve``: :func:`create_app` (see the package docstring for the endpoints).

The model loads in the background after startup (``/v2/health/live`` answers at once, ``/v2/health/ready`` is
503 until the model is in); decoding and preprocessing run on a thread pool, inference on the micro-batcher's
thread, so the event loop only moves bytes. Whatever a client sends, it gets JSON: a 4xx naming what was wrong
for a bad request, 503 while loading or shutting down; the server keeps serving.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from edgecls.core.errors import CapabilityError
from edgecls.runtime.run.plan import InferencePlan, plan_inference
from edgecls.runtime.serve.batching import MicroBatcher
from edgecls.runtime.serve.config import DEFAULT_MAX_BATCH, ServeConfig
from edgecls.runtime.serve.uploads import (
    ByteBudget,
    Lease,
    UploadError,
    decode_image,
    image_from_multipart,
    read_body,
)

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # form headers and boundaries on top of --max-bytes


def import_fastapi():
    try:
        import fastapi
    except ImportError as e:
        raise CapabilityError("edgecls serve needs FastAPI and uvicorn: pip install 'edgecls[serve]'") from e
    return fastapi


class ServeState:
    """The loaded model, the batcher, the pools and the counters of one app."""

    def __init__(self, config: ServeConfig, load: Callable[[Any], Any], metrics: Any,
                 on_load_error: Optional[Callable[[BaseException], None]] = None) -> None:
        from edgecls.runtime.run.loop import usable_cpus

        self.cfg = config
        self._load = load
        self.metrics = metrics
        self.on_load_error = on_load_error
        self.slot: Any = None  # the model slot (runtime.slot): which model answers, swapped between two batches
        self.watcher: Any = None
        self.handed: Any = None  # a classifier handed to create_app (never reloaded)
        self.batcher: Optional[MicroBatcher] = None
        self.load_error: Optional[str] = None
        self.ready = False
        self.draining = False  # set when shutdown starts: requests still uploading get a 503 (server.Guard)
        self.count = 0
        self.budget = ByteBudget(config.buffer_budget)  # request bodies held at once (--max-buffered-bytes)
        self.parse_lock: Optional[asyncio.Lock] = None  # one big JSON parse at a time (made on the server's loop)
        workers = config.workers or max(1, min(4, usable_cpus() // 2))
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="edgecls-serve-prep")

    @property
    def clf(self) -> Any:
        """The slot (it answers ``prepare``, ``spec``, ``decider``, ``backend`` for the current model); None before
        the first load."""
        return self.slot

    @property
    def max_batch(self) -> int:
        be = self.clf.backend
        fixed = be.input_shape[0] if be.input_shape else None
        limit = fixed or getattr(be, "max_batch", None)
        want = self.cfg.max_batch or limit or DEFAULT_MAX_BATCH
        return min(want, limit) if limit else want

    async def load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.slot, self.watcher = await asyncio.get_running_loop().run_in_executor(self.pool, self._open_slot)
        except Exception as e:  # any load failure makes the server unready, with the reason
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("model %s could not be loaded: %s", self.cfg.model, self.load_error)
            if self.on_load_error is not None:
                self.on_load_error(e)
            return
        clf = self.slot.loaded.clf
        self.parse_lock = asyncio.Lock()  # json.loads holds the GIL anyway, and needs ~3x the text
        # default_loader's plan; a classifier handed in (tests, the Python API) runs --streams, else 1
        plan = getattr(clf, "plan", None) or InferencePlan(self.cfg.threads, self.cfg.streams or 1)
        streams = plan.streams_on(clf.backend)
        self.batcher = MicroBatcher(self.slot.infer, self.max_batch, self.cfg.max_wait_ms,
                                    on_batch=lambda n, ms: self.metrics.batch.observe(n), streams=streams)
        self.batcher.start()
        spec = clf.spec
        try:
            await self.batcher.warm_up((3, spec.preprocess.crop, spec.preprocess.crop))
        except Exception as e:  # the first requests will say what is wrong; the warm-up only saves them time
            log.warning("warm-up inference failed (%s: %s)", type(e).__name__, e)
        self.metrics.watch_slot(self.slot)
        self.metrics.ready.set(1)
        self.ready = True
        log.info("model %s (%s) loaded in %.2f s (%s, max batch %d x %d in flight, max wait %g ms)", self.cfg.model,
                 self.slot.identity, time.perf_counter() - t0, clf.backend.describe(), self.max_batch, streams, self.cfg.max_wait_ms)

    async def close(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        if self.batcher is not None:
            await self.batcher.close()  # everything already queued is served first
        self.pool.shutdown(wait=True)
        if self.watcher is not None:
            self.watcher.close()
        if self.slot is not None:
            self.slot.close()

    def _open_slot(self) -> Tuple[Any, Any]:
        from edgecls.runtime.slot import ModelSlot
        from edgecls.runtime.slot.config import open_slot

        if self.handed is not None:
            return ModelSlot.around(self.handed, name=self.cfg.model_name), None
        return open_slot(self.cfg.slot, self.cfg.model, self._load, name=self.cfg.model_name,
                         warm_batch=self.cfg.max_batch or DEFAULT_MAX_BATCH)

    def not_ready(self) -> UploadError:
        if self.load_error:
            return UploadError(503, f"the model could not be loaded: {self.load_error}")
        return UploadError(503, "the model is loading; retry when /v2/health/ready says ready")

    # -- the work of one image ---------------------------------------------------------------------------
    def decode_and_prepare(self, data: bytes) -> Tuple[np.ndarray, float, float]:
        t0 = time.perf_counter()
        image = decode_image(data, self.cfg.max_pixels)
        t1 = time.perf_counter()
        try:
            chw = self.clf.prepare(image)
        except (ValueError, OSError) as e:
            raise UploadError(400, f"cannot preprocess the image: {e}") from None
        return chw, (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3

    async def classify(self, data: bytes, filename: Optional[str], probs: bool, t_start: float) -> Dict[str, Any]:
        from edgecls.runtime.run.records import prediction_record
        from edgecls.runtime.sources.frame import Frame

        loop = asyncio.get_running_loop()
        chw, decode_ms, pre_ms = await loop.run_in_executor(self.pool, self.decode_and_prepare, data)
        res = await self.batcher.submit(chw)
        d = res.model.clf.decider  # the model that answered (a swap may have happened since the request came)
        pred = d.decide(res.output[None, :])[0]  # probabilities, conformal set and the unknown flag
        frame = Frame(source="http", index=self.count, path=filename, decode_ms=decode_ms)
        self.count += 1
        total = (time.perf_counter() - t_start) * 1e3
        rec = prediction_record(frame, pred, pre_ms, res.infer_ms, res.batch, probs, total,
                                res.model.identity.to_dict())
        rec["timings_ms"]["queue"] = round(res.queue_ms, 3)
        self.metrics.observe_stages({"decode": decode_ms, "preprocess": pre_ms, "queue": res.queue_ms,
                                     "infer": res.infer_ms, "total": total})
        self.metrics.decisions.labels(pred.decision).inc()
        return rec


def default_loader(cfg: ServeConfig) -> Callable[[Any], Any]:
    def load(path):
        from edgecls.runtime.classifier import Classifier
        from edgecls.runtime.run.loop import usable_cpus

        plan = plan_inference(cfg, (), usable_cpus())
        options = {"remote": cfg.backend} if cfg.backend else {}
        if plan.session_config:
            options["session_config"] = plan.session_config
        clf = Classifier.load(path, device=cfg.device, threads=plan.threads, allow_fallback=cfg.allow_fallback,
                              threshold=cfg.threshold, topk=cfg.topk, **options)
        clf.plan = plan  # the micro-batcher's batches in flight (ServeState.load)
        return clf

    return load


def create_app(config: ServeConfig, classifier: Any = None,
               on_load_error: Optional[Callable[[BaseException], None]] = None):
    """The FastAPI app serving ``config.model`` (or an already loaded ``classifier``: tests, the Python API)."""
    fastapi = import_fastapi()
    from edgecls.runtime.serve.metrics import ServeMetrics
    from edgecls.runtime.serve.page import add_page
    from edgecls.runtime.serve.routes import add_routes
    from edgecls.runtime.serve.server import Guard

    metrics = ServeMetrics()
    state = ServeState(config, default_loader(config), metrics, on_load_error)
    state.handed = classifier

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.get_running_loop().create_task(state.load())
        try:
            yield
        finally:
            if not task.done():
                await task  # a load in progress finishes (a thread cannot be interrupted), then everything closes
            await state.close()

    app = fastapi.FastAPI(title="edgecls serve", version=_version(), lifespan=lifespan, docs_url=None,
                          redoc_url=None, openapi_url=None)
    app.state.edgecls = state
    app.add_middleware(Guard, state=state)  # body deadlines, shutdown of uploads, JSON for anything unanswered
    add_routes(app, state, MULTIPART_OVERHEAD)
    add_page(app, state)  # GET /: try a photo in a browser (page.py)
    return app


def _version() -> str:
    from edgecls import __version__

    return __version__


def is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


async def upload_bytes(request: Any, state: ServeState, overhead: int, lease: Lease) -> Tuple[Any, Optional[str]]:
    """The image bytes of a ``/predict`` request: the raw body, or the one file of a multipart form (held in
    ``lease``'s share of the server's buffer budget)."""
    ctype = request.headers.get("content-type", "")
    limit = state.cfg.max_bytes + (overhead if is_multipart(ctype) else 0)
    body = await read_body(request, limit, lease)
    if is_multipart(ctype):
        lease.take(len(body))  # the form parser's copy
        data, filename = await image_from_multipart(request.headers, body, state.cfg.max_bytes)
        del body
        if len(data) > state.cfg.max_bytes:
            raise UploadError(413, f"image is {len(data)} bytes; this server accepts at most "
                                   f"{state.cfg.max_bytes} (--max-bytes)")
        return data, (os.path.basename(filename) if filename else None)
    base = ctype.split(";", 1)[0].strip().lower()
    if base == "application/json":  # any other type is taken as image bytes (curl --data-binary sends a form type)
        raise UploadError(415, f"Content-Type {base!r} is not an image: POST the image bytes "
                               "(e.g. curl --data-binary @photo.jpg) or a multipart form with one file "
                               "(curl -F file=@photo.jpg); preprocessed tensors go to /v2/models/<name>/infer")
    return body, None
