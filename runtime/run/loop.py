"""The ``edgecls run`` loop: sources → decode → preprocess → infer → decide → records, annotated output, summary.

Files and videos: decoding and preprocessing run on a thread pool ahead of inference (in order, nothing dropped),
so the backend is kept busy; ``batch`` images go through the model at once, and on the CPU ``streams`` such calls
are in flight at once (:mod:`.plan`: one-thread calls side by side beat one call spread over the cores). Live
sources go through :mod:`.scheduler`: the newest frame of each source, fair round-robin, calls in flight and
frames of different cameras per call as the plan says (no queue, no stale frames).

Records go to ``out`` (stdout: JSON lines by default, or CSV / a table); the summary goes to ``err`` (stderr), so
stdout stays clean JSONL. Ctrl-C stops the loop, the summary is still printed, and the CLI exits 130.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from edgecls.core.errors import EXIT_TERMINATED
from edgecls.runtime.decision import Prediction, Smoother
from edgecls.runtime.run.config import RunConfig
from edgecls.runtime.run.opened import Opened as _Open
from edgecls.runtime.run.output import AnnotatedOutput
from edgecls.runtime.run.plan import auto_batch, plan_inference
from edgecls.runtime.run.prefetch import ordered_prefetch
from edgecls.runtime.run.records import error_record, prediction_record
from edgecls.runtime.run.saver import Saver
from edgecls.runtime.run.sinks import check_sinks, open_sinks
from edgecls.runtime.run.sources_control import SourceControl
from edgecls.runtime.run.stats import RunStats
from edgecls.runtime.run.viewer import Viewer
from edgecls.runtime.run.webview import start_view
from edgecls.runtime.run.writers import make_writer
from edgecls.runtime.slot.metrics import SlotCollector
from edgecls.runtime.slot.run import model_slot
from edgecls.runtime.slot.watch import sighup_reloads
from edgecls.runtime.sources.files import ImageSource, read_image
from edgecls.runtime.sources.frame import Frame
from edgecls.runtime.sources.live import LiveSource
from edgecls.runtime.sources.parse import parse_sources
from edgecls.runtime.sources.video import VideoFileSource

log = logging.getLogger(__name__)

Item = Tuple[Frame, Optional[np.ndarray], float]  # a frame, its preprocessed CHW array (None: unusable), ms


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Loop:
    """One run's work: the prefetching pool, the inference threads, decisions, records and annotated output."""

    def __init__(self, clf, cfg: RunConfig, writer, output: AnnotatedOutput, stats: RunStats, batch: int = 1,
                 streams: int = 1, collector: Any = None):
        self.clf = clf
        self.cfg = cfg
        self.batch = batch
        self.streams = streams
        self.writer = writer
        self.output = output
        self.stats = stats
        self.smoother = Smoother(cfg.smooth) if cfg.smooth > 1 else None
        self.collector = collector  # --collect: offered each classified frame before its image is dropped
        self.keep_images = output.active or collector is not None
        self.workers = cfg.workers or max(1, min(4, usable_cpus() // 2))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="edgecls-prep")
        self.infer_exec = ThreadPoolExecutor(streams, thread_name_prefix="edgecls-infer")
        self.stopped = False

    # -- per-frame work done on the pool ---------------------------------------------------------------------
    def _prepare(self, frame: Frame) -> Item:
        if frame.error is not None or frame.image is None:
            return frame, None, 0.0
        t0 = time.perf_counter()
        try:
            chw = self.clf.prepare(frame.image, bgr=frame.bgr)
        except Exception as e:  # a decodable but unusable image (e.g. 0-sized)
            frame.error = f"cannot preprocess {frame.path or frame.source}: {e}"
            return frame, None, 0.0
        ms = (time.perf_counter() - t0) * 1e3
        if not self.keep_images:
            frame.image = None
        return frame, chw, ms

    def _read_and_prepare(self, task: Tuple[str, int, Path, str]) -> Item:
        return self._prepare(read_image(*task, max_pixels=self.cfg.max_pixels, spec=self.clf.spec.preprocess))

    # -- emitting --------------------------------------------------------------------------------------------
    def _emit_error(self, frame: Frame) -> None:
        self.stats.add_error(frame.source)
        self.writer.write(error_record(frame))

    def _emit(self, frame: Frame, pred: Prediction, pre_ms: float, infer_ms: float, n: int, live: bool,
              model: Any = None, chw: Optional[np.ndarray] = None) -> None:
        latency = (time.perf_counter() - frame.t_capture) * 1e3 if live else None
        if latency is not None:
            self.stats.latency.append(latency)
        self.stats.add(pred, frame.source, latency)
        self.stats.decode.append(frame.decode_ms)
        self.stats.preprocess.append(pre_ms)
        record = prediction_record(frame, pred, pre_ms, infer_ms, n, self.cfg.probs, latency, model)
        drift = self.stats.drift  # the watch of the model answering now (sinks.py re-points it on a swap), or None
        if drift is not None and chw is not None:
            record["drift"] = drift.observe(frame.source, chw, pred,
                                                 frame.frame if frame.frame is not None else frame.index)
        if self.collector is not None:  # takes a reference to the image, queues it or drops it: never waits
            self.collector.offer(frame, pred, record, live)
        if self.output.active and frame.image is not None and not self.output.emit(frame, pred):
            self.stopped = True
        self.writer.write(record)  # after --save/--show: a record out (then Ctrl-C/SIGTERM) means its frame is saved

    def _decide(self, frames: List[Frame], logits: np.ndarray, sequence: bool, decider: Any = None) -> List[Prediction]:
        d = decider or self.clf.decider
        probs = d.probabilities(logits)
        ood = d.ood_scores(logits)  # per frame (None when the model carries no OOD threshold)
        preds = []
        for i, (f, row) in enumerate(zip(frames, probs)):
            score = None if ood is None else float(ood[i])
            if self.smoother is not None and sequence:
                avg, n = self.smoother.update(f.source, row)
                preds.append(d.from_probs(avg, smoothed=n, ood_score=score))
            else:
                preds.append(d.from_probs(row, ood_score=score))
        return preds

    def _timed_infer(self, batch: np.ndarray) -> Tuple[np.ndarray, float, Any]:
        t0 = time.perf_counter()
        logits, model = self.clf.infer(batch)  # a ModelSlot: the model that answered comes back with its output
        return logits, (time.perf_counter() - t0) * 1e3, model

    def _submit(self, items: List[Item], sync: bool = False) -> _Batch:
        """Start inference of the prepared items (on the inference thread unless ``sync``)."""
        good = [it for it in items if it[1] is not None]
        if not good:
            return _Batch(items, good, None)
        batch = np.stack([chw for _, chw, _ in good])
        if sync:
            return _Batch(items, good, self._timed_infer(batch))
        return _Batch(items, good, self.infer_exec.submit(self._timed_infer, batch))

    def _finish(self, b: _Batch, sequence: bool, live: bool = False) -> None:
        """Wait for a batch's logits, decide, and emit its records in order."""
        preds: Dict[int, Prediction] = {}
        infer_ms = 0.0
        model: Any = None
        if b.good:
            logits, infer_ms, model = b.result.result() if hasattr(b.result, "result") else b.result
            self.stats.infer_batch.append(infer_ms)
            self.stats.infer_image.extend([infer_ms / len(b.good)] * len(b.good))
            try:
                out = self._decide([f for f, _, _ in b.good], logits, sequence, model.clf.decider)
            except ValueError as e:  # non-finite logits: say so per frame, keep going
                for f, _, _ in b.good:
                    f.error = f"model output unusable: {e}"
                out = []
            for (f, _, _), p in zip(b.good, out):
                preds[id(f)] = p
        for f, chw, ms in b.items:
            p = preds.get(id(f))
            if p is None:
                if f.error is None:
                    f.error = "no prediction"
                self._emit_error(f)
            else:
                self._emit(f, p, ms, infer_ms, len(b.good), live, model.identity.to_dict(), chw)

    def _flush(self, items: List[Item], sequence: bool, live: bool = False) -> None:
        """Infer and emit now (live frames: no queue, lowest latency)."""
        self._finish(self._submit(items, sync=True), sequence, live)

    def run_sequence(self, name: str, items: Iterator[Any], fn: Callable, sequence: bool) -> None:
        """Files or a video, in order: ``fn`` decodes/preprocesses on the pool, ``batch`` frames per inference on
        the ``streams`` inference threads, while this thread emits the oldest batch's records (the model never
        waits for the records, and they come out in order)."""
        batch = self.batch
        lookahead = max(2 * batch * self.streams, 2 * self.workers)
        pending: List[Item] = []
        in_flight: deque = deque()
        n_good = 0
        done = 0
        gen = ordered_prefetch(self.pool, fn, items, lookahead)
        try:
            for item in gen:
                pending.append(item)
                if item[1] is not None:
                    n_good += 1
                done += 1
                if n_good >= batch:
                    in_flight.append(self._submit(pending))
                    pending, n_good = [], 0
                    if len(in_flight) > self.streams:
                        self._finish(in_flight.popleft(), sequence)
                if self.stopped or (self.cfg.max_frames is not None and done >= self.cfg.max_frames):
                    break
            if pending:
                in_flight.append(self._submit(pending))
            while in_flight:
                self._finish(in_flight.popleft(), sequence)
        finally:
            gen.close()
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def run_live(self, sources: List[LiveSource], notify: threading.Event) -> None:
        """Live sources (and those added while running) through the scheduler (:mod:`.scheduler`)."""
        from edgecls.runtime.run.scheduler import LiveScheduler, live_batch

        batch = live_batch(self.cfg, self.clf, self.streams, len(sources))
        self.scheduler = LiveScheduler(self, self.streams, batch, self.cfg.max_frames,
                                       keep_running=bool(getattr(self.cfg, "sources_file", None)))
        self.scheduler.run(sources)

    def close(self) -> None:
        for ex in (self.pool, self.infer_exec):
            try:
                ex.shutdown(wait=False, cancel_futures=True)
            except TypeError:  # Python 3.8
                ex.shutdown(wait=False)


@dataclass
class _Batch:
    items: List[Item]
    good: List[Item]
    result: Any  # a Future of (logits, infer_ms), or (logits, infer_ms), or None


def _groups(sources: Sequence[Any]) -> List[Any]:
    """Consecutive live sources become one round-robin group; other sources stay one by one."""
    out: List[Any] = []
    for s in sources:
        if s.live and out and isinstance(out[-1], list):
            out[-1].append(s)
        elif s.live:
            out.append([s])
        else:
            out.append(s)
    return out


def _start_live(sources: Sequence[Any], notify: threading.Event, started: List[LiveSource]) -> None:
    """Open cameras first: one that cannot open fails the run before any work (exit 5)."""
    for s in sources:
        if s.live:
            s.set_notify(notify)
            s.start()
            started.append(s)


def _batch_for(config: RunConfig, clf: Any, sources: Sequence[Any]) -> int:
    """``--batch``, or with ``auto`` the batch measured on this model and machine (1 when every source is live)."""
    if config.batch != "auto":
        return int(config.batch)
    if all(s.live for s in sources):
        return 1
    be = clf.backend
    fixed = be.input_shape[0] if be.input_shape and isinstance(be.input_shape[0], int) else None
    crop = clf.spec.preprocess.crop
    return auto_batch(clf.infer, (3, crop, crop), fixed=fixed, limit=getattr(be, "max_batch", None))


def _warn_unused_options(config: RunConfig, sources: Sequence[Any]) -> None:
    if config.loop and all(s.live for s in sources) and not config.realtime:
        log.warning("--loop has no effect: it replays video files and image folders, and every source here is live")
    if config.smooth > 1 and not any(s.live or isinstance(s, VideoFileSource) for s in sources):
        log.warning("--smooth %d has no effect: it averages over frames of videos and live sources", config.smooth)


def _run_groups(loop: _Loop, sources: Sequence[Any], notify: threading.Event, stats: RunStats) -> None:
    groups = _groups(sources)
    if loop.cfg.sources_file and not any(isinstance(g, list) for g in groups):
        groups.append([])  # the sources file's cameras: they start once the scheduler runs
    for g in groups:
        if isinstance(g, list):
            loop.run_live(g, notify)  # counts the drops of its sources
        elif isinstance(g, ImageSource):
            loop.run_sequence(g.name, g.tasks(), loop._read_and_prepare, sequence=False)
        else:
            loop.run_sequence(g.name, g.frames(), loop._prepare, sequence=True)
            if getattr(g, "end_reason", None):  # a truncated or corrupt video: exit 6 at the end
                stats.incomplete += 1
                stats.notes.append(f"{g.name}: {g.end_reason}")
        if loop.stopped:
            break


def _loader(config: RunConfig, plan: Any) -> Callable[[Any], Any]:
    """How the model slot loads a model file (the first and every swapped-in one): the run's device, threads and
    confidence options."""
    from edgecls.runtime.classifier import Classifier

    def load(path: Any) -> Any:
        return Classifier.load(
            path, device=config.device, threads=plan.threads, allow_fallback=config.allow_fallback,
            threshold=config.threshold, topk=config.topk, max_pixels=config.max_pixels, coverage=config.coverage,
            **({"remote": config.backend} if config.backend else {}),
            **({"session_config": plan.session_config} if plan.session_config else {}),
        )

    return load


def run(
    config: RunConfig,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
    classifier: Any = None,
    sources: Optional[Sequence[Any]] = None,
    on_drift_alarm: Optional[Callable[[str, Tuple[str, ...], bool], None]] = None,
) -> RunStats:
    """Run the loop; return its :class:`RunStats`. ``classifier``/``sources`` may be given (tests, the API);
    ``on_drift_alarm(source, kinds, active)`` is called when the drift kinds firing on a source change."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if sources is None:  # before the (slow) model load: a bad source fails at once
        given = config.sources or config.cameras or not config.sources_file
        sources = parse_sources(config.sources, config.cameras, config.source_options()) if given else []
    control = SourceControl(config, stats=None) if config.sources_file or config.view else None
    check_sinks(config)  # so does a collection folder that cannot be written (exit 2)
    plan = plan_inference(config, sources, usable_cpus())
    t0 = time.perf_counter()
    owns = classifier is None
    slot, watcher = model_slot(config, classifier, _loader(config, plan))  # the model that answers, swapped between two batches
    clf = slot.clf
    load_s = time.perf_counter() - t0
    streams = plan.streams_on(clf.backend)
    log.info("inference: %d call(s) in flight x %s thread(s) (%s)", streams, plan.threads or "default", plan.why)
    opened = _Open()
    try:
        batch = _batch_for(config, clf, sources)
        notify = threading.Event()
        _start_live(sources, notify, opened.started)
        _warn_unused_options(config, sources)
        opened.saver = Saver(Path(config.save)) if config.save else None
        opened.viewer = Viewer() if config.show else None
        writer = make_writer(config.fmt, out)
        stats = opened.stats = RunStats(clf.decider, clf.backend.describe(), batch, load_s, streams)
        if getattr(clf.backend, "fallback", None):
            stats.notes.append(f"FALLBACK: {clf.backend.fallback}")
        stats.sources = len(sources)
        open_sinks(config, slot, stats, opened, err, on_drift_alarm)  # drift watch, --collect: follow swaps
        if config.metrics_port is not None:
            from edgecls.runtime.run.prometheus import MetricsServer

            opened.metrics = MetricsServer(stats, sources, config.metrics_port, config.metrics_host)
            opened.metrics.registry.register(SlotCollector(slot))
            err.write(f"edgecls run: metrics on {opened.metrics.url}\n")
            err.flush()
        opened.web = start_view(config, stats, sources, err)  # --view (None without)
        if control is not None:
            opened.control, control.stats = control, stats
            if opened.web is not None:
                opened.web.control = control
        output = AnnotatedOutput(opened.saver, opened.viewer, stats, opened.web)
        output.sources = {s.name: s for s in sources}
        opened.loop = _Loop(slot, config, writer, output, stats, batch=batch, streams=streams,
                            collector=opened.collector)
        if control is not None:
            control.start(opened.loop)
        try:
            with sighup_reloads(lambda: watcher):
                _run_groups(opened.loop, sources, notify, stats)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (edgecls.core.errors.Terminated): a clean stop
            stats.interrupted = True
            stats.signal = "SIGTERM" if getattr(e, "exit_code", None) == EXIT_TERMINATED else None
        writer.close()
    finally:
        opened.close()
        if watcher is not None:
            watcher.close()
        swaps = slot.summary_lines()
        if owns:
            slot.close()
    stats.finish()
    for line in swaps:
        stats.notes.append(line)
    if config.summary:
        err.write(stats.format())
        err.flush()
    return stats
