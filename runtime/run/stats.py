"""Counts and latencies of one run: the summary printed to stderr and its JSON (``--summary-json``)."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgecls.core.errors import EXIT_INTERRUPTED, EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, EXIT_TERMINATED
from edgecls.core.fileio import write_text
from edgecls.runtime.decision import Prediction
from edgecls.runtime.run.histograms import ScoreHistograms
from edgecls.runtime.run.quantiles import LatencySketch
from edgecls.runtime.run.records import rounded

MAX_NOTES = 50  # a run that lasts weeks keeps the first notes and counts the rest
SOURCE_ROWS = 32  # the summary's per-source table shows this many rows (busiest first), then one line for the rest


class _Rate:
    """Frames per second over the time from ``t0`` to ``t1`` (now, while running)."""

    frames: int
    t0: float
    t1: Optional[float]

    @property
    def elapsed(self) -> float:
        return (self.t1 or time.perf_counter()) - self.t0

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


class SourceStats(_Rate):
    """One source's numbers: frames classified, errors, decisions, capture→decision latency, the time it ran (from
    when it was added to when it ended or was removed), and its live source (drops, reconnects) when it has one."""

    def __init__(self, name: str, source: Any = None) -> None:
        self.name = name
        self.source = source
        self.frames = 0
        self.errors = 0
        self.decisions: Counter = Counter()
        self.latency = LatencySketch()
        self.t0 = time.perf_counter()
        self.t1: Optional[float] = None
        self.removed = False

    @property
    def dropped(self) -> int:
        return int(getattr(self.source, "dropped", 0) or 0)

    @property
    def reconnects(self) -> int:
        return int(getattr(self.source, "reconnects", 0) or 0)

    def to_dict(self, decision_names: Sequence[str]) -> Dict[str, Any]:
        d: Dict[str, Any] = {"source": self.name, "frames": self.frames, "errors": self.errors,
                             "frames_per_s": rounded(self.fps, 2), "elapsed_s": rounded(self.elapsed),
                             "decisions": {k: self.decisions.get(k, 0) for k in decision_names}}
        if self.source is not None and getattr(self.source, "live", False):
            d.update(dropped=self.dropped, reconnects=self.reconnects, removed=self.removed)
            for q in (50, 99):
                d[f"latency_p{q}_ms"] = rounded(self.latency.percentile(q))
        return d


def _pct(values: Any, q: float) -> Optional[float]:
    if isinstance(values, LatencySketch):
        return values.percentile(q)
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


class BoundedNotes(list):
    """The run's notes: the first :data:`MAX_NOTES` kept, later ones only counted (``more``)."""

    def __init__(self) -> None:
        super().__init__()
        self.more = 0

    def append(self, note: str) -> None:
        if len(self) < MAX_NOTES:
            super().append(note)
        else:
            self.more += 1


class RunStats(_Rate):
    """Counts and latencies of one run; ``format()`` is the summary printed to stderr, ``to_dict()`` its JSON."""

    def __init__(self, decider, backend_desc: str, batch: int, load_s: float, streams: int = 1) -> None:
        self.positive = decider.spec.positive
        self.threshold = decider.threshold
        self.decision_names = decider.decision_names()
        rule = getattr(decider, "confidence", None)  # sets / unknown / precision promise the model carries
        self.confidence: List[str] = rule.describe(decider.threshold) if rule is not None else []
        self.backend_desc = backend_desc
        self.batch = batch
        self.streams = streams  # inference calls in flight (runtime.run.plan)
        self.load_s = load_s
        self.decisions: Counter = Counter()
        self.labels: Counter = Counter()
        self.frames = 0
        self.errors = 0
        self.dropped = 0
        self.sources = 0
        # fixed-size latency statistics (exact percentiles up to 4096 values, within 0.5 % beyond): flat memory
        self.decode = LatencySketch()
        self.preprocess = LatencySketch()
        self.infer_batch = LatencySketch()
        self.infer_image = LatencySketch()
        self.latency = LatencySketch()
        self.notes: List[str] = BoundedNotes()
        self.saved: List[str] = []
        self.collect: Optional[Any] = None  # --collect: the Collector (its counts in the summary and metrics)
        self.incomplete = 0  # video files that ended early (truncated or corrupt)
        self.lost = 0  # live sources lost after their reopen attempts
        self.interrupted = False
        self.signal: Optional[str] = None  # "SIGTERM" when a SIGTERM stopped the run (else Ctrl-C)
        self.t0 = time.perf_counter()
        self.t1: Optional[float] = None
        self.t_last: Optional[float] = None
        self.per_source: Dict[str, SourceStats] = {}  # by source name, in the order first seen
        self.scores = ScoreHistograms()  # confidence and OOD score per frame (/metrics)
        self.drift: Any = None  # runtime.drift.watch.DriftWatch when the model has a drift reference

    def source(self, name: str, source: Any = None) -> SourceStats:
        """The numbers of source ``name`` (made on first use; ``source``: its object, for drops and reconnects)."""
        st = self.per_source.get(name)
        if st is None:
            st = self.per_source[name] = SourceStats(name, source)
        elif source is not None and st.source is None:
            st.source = source
        return st

    def add(self, pred: Prediction, source: Optional[str] = None, latency: Optional[float] = None) -> None:
        self.count(pred.decision, pred.label)
        self.scores.observe(pred)
        if source is not None:
            st = self.source(source)
            st.frames += 1
            st.decisions[pred.decision] += 1
            if latency is not None:
                st.latency.append(latency)

    def add_error(self, source: Optional[str] = None) -> None:
        self.errors += 1
        if source is not None:
            self.source(source).errors += 1

    def count(self, decision: str, label: str) -> None:
        """One classified frame (``add``'s counts; ``edgecls ray`` counts records read back from its shards)."""
        self.t_last = time.perf_counter()  # the last classified frame (--metrics-port: last-frame age)
        self.frames += 1
        self.decisions[decision] += 1
        self.labels[label] += 1

    def finish(self) -> None:
        self.t1 = time.perf_counter()
        for st in self.per_source.values():
            st.t1 = st.t1 or self.t1

    def sources_table(self, limit: int = SOURCE_ROWS) -> List[str]:
        """The per-source table of the summary (two or more sources): the busiest ``limit`` rows, then the rest
        in one line, so that it reads the same at 2 sources and at 200."""
        rows = list(self.per_source.values())
        if len(rows) < 2:
            return []
        live = any(getattr(r.source, "live", False) for r in rows)
        width = min(40, max(6, *(len(r.name) for r in rows)))
        head = f"{'source':<{width}}{'frames':>8}{'fps':>8}{'errors':>7}"
        if live:
            head += f"{'dropped':>9}{'reconn':>7}{'p50 ms':>9}{'p99 ms':>9}"
        lines = [head]
        shown = sorted(rows, key=lambda r: -r.frames)[:limit] if len(rows) > limit else rows
        for r in shown:
            name = r.name if len(r.name) <= width else "…" + r.name[-(width - 1):]
            line = f"{name:<{width}}{r.frames:>8}{r.fps:>8.1f}{r.errors:>7}"
            if live:
                p50, p99 = r.latency.percentile(50), r.latency.percentile(99)
                line += (f"{r.dropped:>9}{r.reconnects:>7}{'-' if p50 is None else f'{p50:.1f}':>9}"
                         f"{'-' if p99 is None else f'{p99:.1f}':>9}")
            lines.append(line + ("  (removed)" if r.removed else ""))
        if len(rows) > limit:
            rest = [r for r in rows if r not in shown]
            fps = [r.fps for r in rows]
            lines.append(f"... {len(rest)} more sources ({sum(r.frames for r in rest)} frames); frames/s per source "
                         f"min {min(fps):.1f} · median {float(np.median(fps)):.1f} · max {max(fps):.1f}")
        return lines

    def exit_code(self) -> int:
        """What ``edgecls run`` exits with (:mod:`edgecls.core.errors`): 130/143 interrupted, 7 nothing classified
        or a live source lost, 6 some inputs failed (error records, a truncated video), else 0."""
        if self.interrupted:
            return EXIT_TERMINATED if self.signal == "SIGTERM" else EXIT_INTERRUPTED
        if self.lost or self.frames == 0:
            return EXIT_NOTHING
        if self.errors or self.incomplete:
            return EXIT_PARTIAL
        return EXIT_OK

    def status(self) -> str:
        """One line saying what :meth:`exit_code` means for this run."""
        code = self.exit_code()
        if code == EXIT_OK:
            return "ok: every input classified"
        if self.interrupted:
            return f"interrupted by {self.signal or 'Ctrl-C'}"
        if self.lost:
            return f"{self.lost} live source(s) lost after their reopen attempts"
        if code == EXIT_NOTHING:
            return f"nothing classified: every input failed ({self.errors} error records)"
        parts = [f"{self.errors} of {self.frames + self.errors} inputs failed"] if self.errors else []
        if self.incomplete:
            parts.append(f"{self.incomplete} video(s) ended early")
        return "partial: " + ", ".join(parts)

    def stages(self) -> Dict[str, Dict[str, Optional[float]]]:
        out = {}
        for name, vals in (
            ("decode", self.decode), ("preprocess", self.preprocess), ("infer_batch", self.infer_batch),
            ("infer_per_image", self.infer_image), ("latency_live", self.latency),
        ):
            if vals:
                out[name] = {"p50": rounded(_pct(vals, 50)), "p95": rounded(_pct(vals, 95)),
                             "p99": rounded(_pct(vals, 99)), "n": len(vals)}
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {
            "frames": self.frames,
            "errors": self.errors,
            "dropped_live_frames": self.dropped,
            "elapsed_s": rounded(self.elapsed),
            "frames_per_s": rounded(self.fps, 2),
            "model_load_s": rounded(self.load_s),
            "backend": self.backend_desc,
            "batch": self.batch,
            "streams": self.streams,
            "positive": self.positive,
            "threshold": self.threshold,
            "decisions": {k: self.decisions.get(k, 0) for k in self.decision_names},
            "labels": dict(sorted(self.labels.items())),
            "latency_ms": self.stages(),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code(),
            "status": self.status(),
            "saved": self.saved,
            "notes": self.notes,
            "notes_not_shown": getattr(self.notes, "more", 0),
            "confidence": self.confidence,
            "sources": [st.to_dict(self.decision_names) for st in self.per_source.values()],
            **({"drift": self.drift.to_dict()} if self.drift is not None else {}),
            **({"collect": self.collect.to_dict()} if self.collect is not None else {}),
        }

    def format(self) -> str:
        lines = [
            f"edgecls run: {self.frames} frames, {self.errors} errors from {max(self.sources, len(self.per_source))} "
            f"source(s) in "
            f"{self.elapsed:.2f} s → {self.fps:.1f} frames/s  ({self.backend_desc}, batch {self.batch}"
            f"{f' x {self.streams} streams' if self.streams > 1 else ''}, model load "
            f"{self.load_s:.2f} s){'  [INTERRUPTED]' if self.interrupted else ''}"
        ]
        dec = " · ".join(f"{k} {self.decisions.get(k, 0)}" for k in self.decision_names)
        head = f"{self.positive}" if self.positive else "decisions"
        lines.append(f"{head}: {dec} · errors {self.errors}   (threshold {self.threshold:.2f})")
        if self.positive:
            lines.append("labels: " + " · ".join(f"{k} {v}" for k, v in sorted(self.labels.items())))
        if self.dropped:
            lines.append(f"live: {self.dropped} stale frames skipped (newest-frame policy)")
        st = self.stages()
        if st:
            lines.append(f"{'latency ms':<22}{'p50':>9}{'p95':>9}{'p99':>9}")
            names = {"decode": "decode", "preprocess": "preprocess", "infer_batch": "infer (per batch)",
                     "infer_per_image": "infer (per image)", "latency_live": "capture→result (live)"}
            for k, v in st.items():
                lines.append(f"  {names[k]:<20}{v['p50']:>9.2f}{v['p95']:>9.2f}{v['p99']:>9.2f}")
        lines.extend(self.sources_table())
        for s in self.saved:
            lines.append(f"saved: {s}")
        if self.collect is not None:
            lines.extend(self.collect.summary_lines())
        lines.extend(f"confidence: {c}" for c in self.confidence)
        if self.drift is not None:
            lines.extend(self.drift.summary_lines())
        lines.extend(f"note: {n}" for n in self.notes)
        if getattr(self.notes, "more", 0):
            lines.append(f"note: ... and {self.notes.more} more")
        if self.exit_code() != EXIT_OK:
            lines.append(f"exit {self.exit_code()}: {self.status()}")
        return "\n".join(lines) + "\n"


def write_summary_json(stats: RunStats, path: str | os.PathLike[str]) -> None:
    """Write the summary as JSON atomically (written aside, then renamed over ``path``)."""
    write_text(path, json.dumps(stats.to_dict(), indent=2))
