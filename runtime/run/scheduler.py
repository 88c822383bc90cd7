"""Live sources → inference: the newest frame of each source, fair round-robin, several calls in flight.

``streams`` worker threads each take the newest frame of the next sources in round-robin order that have one
(at most ``batch`` of them, from different sources), preprocess them and run the model; the loop's thread decides
and emits the records (the sinks stay on one thread). A source has at most one frame in flight, so its records
come out in capture order and ``--smooth`` averages consecutive frames; a frame that waits in a slot while the
source's previous frame is in flight is replaced by a newer one (never a frame older than the newest of its
camera). On the CPU ``streams`` one-thread calls run side by side (:mod:`.plan`: they beat one call spread over
the cores); on a GPU or TensorRT one call at a time takes ``batch`` frames of different cameras (what pays there).

Sources may be added and removed while it runs (:meth:`LiveScheduler.add`, :meth:`LiveScheduler.remove`: the
HTTP endpoint and the sources file, :mod:`.sources_control`); a source with an ``fps_cap`` is taken at most that
often, and its capture thread skips converting the frames that will not be taken (``LiveSource.wanted``).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgecls.core.errors import InputError

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25  # a worker with nothing to take re-checks the sources at least this often
CAP_SLACK_S = 0.002  # a capped source's frame grabbed this close to its next turn is converted (clock jitter)


class _Wake:
    """What a source's frame slot calls when a frame arrives: wakes the scheduler's workers."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond

    def set(self) -> None:
        with self.cond:
            self.cond.notify_all()


@dataclass(eq=False)
class _Entry:
    source: Any  # a started LiveSource
    stats: Any  # its SourceStats
    period: float = 0.0  # 1 / fps cap (0: no cap)
    next_at: float = 0.0  # earliest time of the next take (fps cap)
    busy: bool = False  # a frame of it is being classified
    taken: int = 0


class LiveScheduler:
    """Runs a set of live sources through a run loop (:class:`~edgecls.runtime.run.loop._Loop`) until every
    source ended (or, with ``keep_running``, until stopped), adding and removing sources on request."""

    def __init__(self, loop: Any, streams: int = 1, batch: int = 1, max_frames: Optional[int] = None,
                 keep_running: bool = False) -> None:
        self.loop = loop
        self.stats = loop.stats
        self.streams = max(1, int(streams))
        self.batch = max(1, int(batch))
        self.max_frames = max_frames
        self.keep_running = keep_running
        self.cond = threading.Condition()
        self.entries: Dict[str, _Entry] = {}
        self.everyone: List[Any] = []  # every source ever run (their drops count in the summary)
        self.rr = 0  # round-robin position
        self.done: queue.Queue[Tuple[Any, Any, Any]] = queue.Queue()
        self.stopping = False
        self.running = False

    # -- sources ---------------------------------------------------------------------------------------------
    def add(self, source: Any) -> None:
        """Schedule a started live source; a name already running is an :class:`InputError`."""
        with self.cond:
            if source.name in self.entries:
                raise InputError(f"source id {source.name!r} is already running; each source once (give another "
                                 "id=NAME to watch the same stream twice)")
            cap = getattr(source, "fps_cap", None)
            e = _Entry(source, self.stats.source(source.name, source), 1.0 / cap if cap else 0.0)
            e.stats.t0, e.stats.t1, e.stats.removed = time.perf_counter(), None, False
            self.entries[source.name] = e
            self.everyone.append(source)
            if e.period:
                source.wanted = lambda now, e=e: now >= e.next_at - CAP_SLACK_S
            source.set_notify(_Wake(self.cond))
            self.cond.notify_all()
        log.info("source %s added (%d running)", source.name, len(self.entries))

    def remove(self, name: str, join: float = 0.5) -> bool:
        """Stop scheduling source ``name`` at once and close it (False: no such source running)."""
        with self.cond:
            e = self.entries.pop(name, None)
            if e is None:
                return False
            e.stats.removed, e.stats.t1 = True, time.perf_counter()
            self.cond.notify_all()
        e.source.close(join=join)
        log.info("source %s removed (%d running)", name, len(self.entries))
        return True

    def names(self) -> List[str]:
        with self.cond:
            return list(self.entries)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    # -- picking (under self.cond) ---------------------------------------------------------------------------
    def _reap(self) -> None:
        for name, e in list(self.entries.items()):
            if not e.busy and e.source.finished:
                del self.entries[name]
                e.stats.t1 = time.perf_counter()
                if e.source.end_reason:  # lost after its reopen attempts: exit 7 at the end
                    self.stats.lost += 1
                    self.stats.notes.append(f"{name}: {e.source.end_reason}")

    def _pick(self, now: float) -> Tuple[List[Tuple[_Entry, Any]], float]:
        """Up to ``batch`` newest frames of different sources, round-robin from :attr:`rr`; and how long to wait
        when there is none (the nearest fps-cap deadline)."""
        names = list(self.entries)
        n, out, wait = len(names), [], IDLE_WAIT_S
        for k in range(n):
            i = (self.rr + k) % n
            e = self.entries[names[i]]
            if e.busy:
                continue
            if e.period and now < e.next_at:
                wait = min(wait, e.next_at - now)
                continue
            f = e.source.get(timeout=0)
            if f is None:
                continue
            if e.period:  # a token bucket one frame deep: the cap holds on average, no burst after a pause
                e.next_at = e.next_at + e.period if now - e.next_at < e.period else now + e.period
            e.busy = True
            out.append((e, f))
            self.rr = (i + 1) % n
            if len(out) >= self.batch:
                break
        return out, wait

    def _next(self) -> Optional[List[Tuple[_Entry, Any]]]:
        with self.cond:
            while True:
                if self.stopping or self.loop.stopped:
                    return None
                self._reap()
                if not self.entries and not self.keep_running:
                    return None
                picked, wait = self._pick(time.perf_counter())
                if picked:
                    return picked
                self.cond.wait(max(0.001, wait))

    # -- the workers and the emitting thread -----------------------------------------------------------------
    def _worker(self) -> None:
        try:
            while True:
                picked = self._next()
                if picked is None:
                    return
                try:
                    items = [self.loop._prepare(f) for _, f in picked]
                    batch = self.loop._submit(items, sync=True)  # preprocessing and the model on this thread
                except BaseException as e:  # handed to the emitting thread, which raises it
                    self.done.put((picked, None, e))
                    return
                self.done.put((picked, batch, None))
        finally:
            self.done.put((None, None, None))  # this worker has ended

    def _release(self, picked: Sequence[Tuple[_Entry, Any]]) -> None:
        closing = []
        with self.cond:
            for e, _ in picked:
                e.busy = False
                e.taken += 1
                if self.max_frames is not None and e.taken >= self.max_frames and \
                        self.entries.get(e.source.name) is e:
                    del self.entries[e.source.name]
                    e.stats.t1 = time.perf_counter()
                    closing.append(e.source)
            self.cond.notify_all()
        for s in closing:
            s.close()

    def run(self, sources: Sequence[Any]) -> None:
        """Run ``sources`` (started) and any added later until the end; records are emitted on this thread."""
        for s in sources:
            self.add(s)
        workers = [threading.Thread(target=self._worker, name=f"edgecls-live-{i}", daemon=True)
                   for i in range(self.streams)]
        self.running = True
        for w in workers:
            w.start()
        alive, error = len(workers), None
        try:
            while alive:
                try:
                    picked, batch, exc = self.done.get(timeout=0.5)  # a timeout: Ctrl-C is seen at once
                except queue.Empty:
                    continue
                if picked is None:
                    alive -= 1
                    continue
                if exc is not None:
                    error = error or exc
                    self.stop()
                    self._release(picked)
                    continue
                try:
                    self.loop._finish(batch, sequence=True, live=True)
                finally:
                    self._release(picked)
            if error is not None:
                raise error
        finally:
            self.stop()
            self.running = False
            for w in workers:
                w.join(timeout=2.0)
            with self.cond:
                left = list(self.entries.values())
                for e in left:
                    e.stats.t1 = e.stats.t1 or time.perf_counter()
            for e in left:  # sources added while running are this scheduler's to close
                e.source.close()
            self.stats.dropped += sum(int(getattr(s, "dropped", 0) or 0) for s in self.everyone)


def live_batch(config: Any, clf: Any, streams: int, n_sources: int) -> int:
    """Frames of different cameras per inference call: ``--batch N`` when N > 1; else 1 where calls run side by
    side (onnxruntime on the CPU: measured, batches do not pay there); else (a GPU, TensorRT, a remote server)
    the batch measured on this model at start (``auto_batch``), at most the number of sources."""
    if config.batch != "auto" and int(config.batch) > 1:
        return int(config.batch)
    if streams > 1 or _cpu_provider(clf.backend) or (n_sources < 2 and not getattr(config, "sources_file", None)):
        return 1
    from edgecls.runtime.run.plan import auto_batch

    be = clf.backend
    fixed = be.input_shape[0] if be.input_shape and isinstance(be.input_shape[0], int) else None
    crop = clf.spec.preprocess.crop
    b = auto_batch(clf.infer, (3, crop, crop), fixed=fixed, limit=getattr(be, "max_batch", None))
    return b if fixed else max(1, min(b, n_sources))


def _cpu_provider(backend: Any) -> bool:
    from edgecls.runtime.backends.onnxruntime import CPU_EP

    return tuple(getattr(backend, "providers", ()))[:1] == (CPU_EP,)
