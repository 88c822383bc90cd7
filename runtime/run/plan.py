"""How ``edgecls run`` spends the CPUs on inference: threads per call, calls in flight, images per call.

Measured on 2 cores (AMD EPYC, MobileNetV2 FP32, onnxruntime 1.32; ``bench/bench_run.py``): two concurrent calls of
one thread each classify ~11 % more images/s than one call of two threads (no spinning, no synchronisation
between the halves of each layer), and leave the decode/preprocess threads cores that no spinning thread
holds. So files and videos on the CPU run ``streams`` one-thread calls, and so do two or more live sources (each
camera's newest frame in its own call, :mod:`.scheduler`); one live source keeps one call with all the threads (the
lowest latency per frame: a camera user waits for each frame's answer, not for a folder's).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from edgecls.runtime.backends.onnxruntime import CPU_EP

log = logging.getLogger(__name__)

MAX_STREAMS = 8  # a cap by default (measured on 2 cores only; a bigger machine can set --streams)
BATCH_CANDIDATES = (1, 2, 4, 8)
BATCH_TOLERANCE = 0.03  # --batch auto keeps the smallest batch within 3 % of the best images/s (less latency)


@dataclass(frozen=True)
class InferencePlan:
    """Threads per inference call (None: onnxruntime's default), calls in flight, session settings, and why."""

    threads: Optional[int]
    streams: int
    session_config: Dict[str, str] = field(default_factory=dict)
    why: str = ""

    def streams_on(self, backend: Any) -> int:
        """Calls in flight on a loaded backend: the plan's where onnxruntime runs on its CPU provider, 1 anywhere
        else (a GPU, a TensorRT engine, a remote server serialise the calls anyway)."""
        return self.streams if tuple(getattr(backend, "providers", ()))[:1] == (CPU_EP,) else 1

    def describe(self) -> str:
        t = "default" if self.threads is None else str(self.threads)
        return f"{self.streams} stream{'s' if self.streams > 1 else ''} x {t} thread{'' if t == '1' else 's'}"


def plan_inference(config: Any, sources: Sequence[Any], cpus: int) -> InferencePlan:
    """The plan for a run's sources (``edgecls serve``: none, it is a throughput service): throughput (files,
    videos: ``cpus // threads`` one-thread calls) on the CPU, latency (one call, all threads) for live sources,
    GPUs, TensorRT engines and remote backends. ``config.streams`` and ``config.threads`` override what they name."""
    n_live = sum(1 for s in sources if getattr(s, "live", False))
    if getattr(config, "sources_file", None):  # sources come and go: plan for several
        n_live = max(n_live, 2)
    device = str(config.device).split(":")[0]
    backend, want_streams, want_threads = getattr(config, "backend", None), config.streams, config.threads
    onnx_cpu = Path(str(config.model)).suffix.lower() == ".onnx" and device in ("auto", "cpu") and not backend
    if n_live == 1 or not onnx_cpu:
        why = ("one live source: one frame at a time, all threads" if n_live == 1
               else "GPU/TensorRT/remote: one call at a time, batched")
        if want_streams and want_streams > 1:
            log.warning("--streams %d ignored: %s", want_streams, why)
        return InferencePlan(want_threads, 1, {}, why)
    if want_streams:
        streams = want_streams
        threads = want_threads or max(1, cpus // streams)
    elif want_threads:
        threads = want_threads
        streams = max(1, min(MAX_STREAMS, cpus // threads))
    else:
        threads, streams = 1, max(1, min(MAX_STREAMS, cpus, n_live or MAX_STREAMS))
    # a multi-threaded session spins its threads between layers, taking the cores the decode/preprocess threads
    # need (measured: run loop 0.75 -> 0.89 of the model alone at 2 threads, batch 1)
    session = {"session.intra_op.allow_spinning": "0"} if threads > 1 else {}
    why = f"{n_live} live sources on the CPU: calls side by side" if n_live else "files/videos on the CPU: throughput"
    return InferencePlan(threads, streams, session, why)


def auto_batch(infer: Callable[[np.ndarray], Any], shape: Sequence[int], fixed: Optional[int] = None,
               limit: Optional[int] = None, budget_s: float = 0.6) -> int:
    """``--batch auto``: time the model on zeros at each candidate batch (a few calls each, after a warm-up) and
    return the smallest batch within :data:`BATCH_TOLERANCE` of the best images/s. ``fixed``: the model's fixed
    batch, returned as it is; ``limit``: the largest batch the backend takes (a TensorRT profile's maximum)."""
    if fixed:
        return int(fixed)
    c, h, w = (int(d) for d in shape[-3:])
    rates: Dict[int, float] = {}
    for b in [b for b in BATCH_CANDIDATES if not limit or b <= limit] or [1]:
        x = np.zeros((b, c, h, w), np.float32)
        infer(x)  # warm-up (allocations for this shape)
        calls, t0 = 0, time.perf_counter()
        best = float("inf")
        while calls < 3 or (time.perf_counter() - t0 < budget_s / len(BATCH_CANDIDATES) and calls < 20):
            t = time.perf_counter()
            infer(x)
            best = min(best, time.perf_counter() - t)
            calls += 1
        rates[b] = b / best
    top = max(rates.values())
    choice = min(b for b, r in rates.items() if r >= (1 - BATCH_TOLERANCE) * top)
    log.info("--batch auto: %s images/s at batch %s -> batch %d",
             ", ".join(f"{r:.0f}" for r in rates.values()), "/".join(map(str, rates)), choice)
    return choice
