"""Counts and latencies of one run: the summary printed to stderr and its JSON (``--summary-json``)."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgecls.core.fileio import write_text
from edgecls.runtime.decision import Prediction
from edgecls.runtime.run.records import rounded


def _pct(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


class RunStats:
    """Counts and latencies of one run; ``format()`` is the summary printed to stderr, ``to_dict()`` its JSON."""

    def __init__(self, decider, backend_desc: str, batch: int, load_s: float) -> None:
        self.positive = decider.spec.positive
        self.threshold = decider.threshold
        self.decision_names = decider.decision_names()
        self.backend_desc = backend_desc
        self.batch = batch
        self.load_s = load_s
        self.decisions: Counter = Counter()
        self.labels: Counter = Counter()
        self.frames = 0
        self.errors = 0
        self.dropped = 0
        self.sources = 0
        self.decode: List[float] = []
        self.preprocess: List[float] = []
        self.infer_batch: List[float] = []
        self.infer_image: List[float] = []
        self.latency: List[float] = []
        self.notes: List[str] = []
        self.saved: List[str] = []
        self.interrupted = False
        self.t0 = time.perf_counter()
        self.t1: Optional[float] = None

    @property
    def elapsed(self) -> float:
        return (self.t1 or time.perf_counter()) - self.t0

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, pred: Prediction) -> None:
        self.frames += 1
        self.decisions[pred.decision] += 1
        self.labels[pred.label] += 1

    def finish(self) -> None:
        self.t1 = time.perf_counter()

    def stages(self) -> Dict[str, Dict[str, Optional[float]]]:
        out = {}
        for name, vals in (
            ("decode", self.decode), ("preprocess", self.preprocess), ("infer_batch", self.infer_batch),
            ("infer_per_image", self.infer_image), ("latency_live", self.latency),
        ):
            if vals:
                out[name] = {"p50": rounded(_pct(vals, 50)), "p95": rounded(_pct(vals, 95)), "n": len(vals)}
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
            "positive": self.positive,
            "threshold": self.threshold,
            "decisions": {k: self.decisions.get(k, 0) for k in self.decision_names},
            "labels": dict(sorted(self.labels.items())),
            "latency_ms": self.stages(),
            "interrupted": self.interrupted,
            "saved": self.saved,
            "notes": self.notes,
        }

    def format(self) -> str:
        lines = [
            f"edgecls run: {self.frames} frames, {self.errors} errors from {self.sources} source(s) in "
            f"{self.elapsed:.2f} s → {self.fps:.1f} frames/s  ({self.backend_desc}, batch {self.batch}, model load "
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
            lines.append(f"{'latency ms':<22}{'p50':>9}{'p95':>9}")
            names = {"decode": "decode", "preprocess": "preprocess", "infer_batch": "infer (per batch)",
                     "infer_per_image": "infer (per image)", "latency_live": "capture→result (live)"}
            for k, v in st.items():
                lines.append(f"  {names[k]:<20}{v['p50']:>9.2f}{v['p95']:>9.2f}")
        for s in self.saved:
            lines.append(f"saved: {s}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines) + "\n"


def write_summary_json(stats: RunStats, path: str | os.PathLike[str]) -> None:
    """Write the summary as JSON atomically (written aside, then renamed over ``path``)."""
    write_text(path, json.dumps(stats.to_dict(), indent=2))
