"""Micro-batching: concurrent requests share one inference call.

Requests put their preprocessed image on an asyncio queue and await a future. One task takes the first waiting
image, then whatever else is queued, up to ``max_batch``; if the batch is not full it waits at most
``max_wait_ms`` for more. Up to ``streams`` batches run at once on inference threads (the event loop stays free;
on the CPU, one-thread calls side by side, as ``edgecls run`` does: :mod:`edgecls.runtime.run.plan`), and while
they run the next batch fills up, so under load batches grow by themselves and with one client nothing waits longer
than ``max_wait_ms``. :meth:`MicroBatcher.close` refuses new work and finishes everything already queued.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The server is shutting down: no new work is taken."""


@dataclass(frozen=True)
class BatchResult:
    """One request's row of the batch output and how it was computed."""

    output: np.ndarray  # (C,) the model's output row
    infer_ms: float  # the whole batch's inference time
    queue_ms: float  # time spent waiting in the queue before the batch started
    batch: int  # images in the batch
    model: Any = None  # the model that answered, when ``infer`` returns ``(output, model)`` (a model slot)


@dataclass
class _Item:
    chw: np.ndarray
    future: asyncio.Future
    t_queued: float


class MicroBatcher:
    """Collects single images into batches for ``infer(batch NCHW) -> (N, C)``; see the module docstring."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float,
                 on_batch: Optional[Callable[[int, float], Any]] = None, streams: int = 1) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.infer = infer
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1e3
        self.on_batch = on_batch  # called with (batch size, infer ms) after each batch (metrics)
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self.streams = max(1, int(streams))
        self._executor = ThreadPoolExecutor(self.streams, thread_name_prefix="edgecls-serve-infer")
        self._slots: Optional[asyncio.Semaphore] = None
        self._running: set = set()
        self._closing = False
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.streams)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="edgecls-batcher")

    async def warm_up(self, shape) -> None:
        """Run ``streams`` full batches of zeros side by side, as under full load: the backend allocates its working
        memory now (onnxruntime's arena grows once to the biggest batch and keeps it) rather than under the first
        burst, so the memory a loaded server settles back to is the memory it started with."""
        x = np.zeros((self.max_batch, *shape), np.float32)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, self.infer, x) for _ in range(self.streams)))

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, chw: np.ndarray) -> BatchResult:
        """Queue one preprocessed CHW image; the result when its batch is done (the batch's exception if it failed)."""
        if self._closing or self._queue is None:
            raise BatcherClosed("the server is shutting down")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(chw, fut, time.perf_counter()))
        return await fut

    async def _collect(self, first: _Item) -> List[_Item]:
        items = [first]
        while len(items) < self.max_batch and not self._queue.empty():
            items.append(self._queue.get_nowait())
        deadline = time.perf_counter() + self.max_wait
        while len(items) < self.max_batch and not self._closing:
            timeout = deadline - time.perf_counter()
            if timeout <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), timeout))
            except asyncio.TimeoutError:
                break
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._slots.acquire()  # a free inference thread: the next batch is collected only now
                first = await self._queue.get()
                if first is None:  # close(): everything queued before it is being served
                    self._slots.release()
                    return
                items = await self._collect(first)
                stop = any(it is None for it in items)
                items = [it for it in items if it is not None]
                task = loop.create_task(self._serve_and_release(loop, items))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                if stop:
                    return
        finally:
            if self._running:
                await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _serve_and_release(self, loop: asyncio.AbstractEventLoop, items: List[_Item]) -> None:
        try:
            await self._serve(loop, items)
        finally:
            self._slots.release()

    async def _serve(self, loop: asyncio.AbstractEventLoop, items: List[_Item]) -> None:
        t0 = time.perf_counter()
        try:
            batch = np.stack([it.chw for it in items])
            out = await loop.run_in_executor(self._executor, self.infer, batch)
            model = None
            if isinstance(out, tuple):  # a model slot names the model that answered
                out, model = out
            out = np.asarray(out)
            if out.ndim != 2 or out.shape[0] != len(items):
                raise RuntimeError(f"model returned shape {out.shape} for a batch of {len(items)}")
        except Exception as e:  # every request of the batch gets the error; the batcher keeps going
            log.error("inference failed for a batch of %d: %s", len(items), e)
            for it in items:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.batches += 1
        self.images += len(items)
        if self.on_batch is not None:
            self.on_batch(len(items), infer_ms)
        for it, row in zip(items, out):
            if not it.future.done():  # a client that went away leaves a cancelled future
                it.future.set_result(BatchResult(row, infer_ms, (t0 - it.t_queued) * 1e3, len(items), model))

    async def close(self) -> None:
        """Refuse new work, finish every queued image, stop the inference thread."""
        if self._task is None:
            self._executor.shutdown(wait=True)
            return
        self._closing = True
        self._queue.put_nowait(None)
        try:
            await self._task
        finally:
            self._task = None
            self._executor.shutdown(wait=True)
