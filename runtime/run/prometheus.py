"""``edgecls run --metrics-port N``: Prometheus metrics of a long run (cameras, streams), read at scrape time.

A collector reads the run's :class:`~edgecls.runtime.run.stats.RunStats` and its live sources when Prometheus
scrapes, so the loop does no extra work per frame. Served by prometheus_client's HTTP server on a thread, bound to
127.0.0.1 unless ``--metrics-host`` says otherwise; it lives in a registry of its own (no global side effects).

``edgecls_run_frames_total``, ``edgecls_run_errors_total``, ``edgecls_run_dropped_frames_total`` (stale live
frames skipped), ``edgecls_run_reconnects_total{source}``, ``edgecls_run_last_frame_age_seconds`` (since the last
classified frame; NaN before the first), ``edgecls_run_decisions_total{decision}``, ``edgecls_run_frames_per_second``,
``edgecls_run_sources_live`` (live sources still running); with ``--collect``:
``edgecls_run_collect_frames_total{outcome}``, ``edgecls_run_collect_folder_bytes``, ``edgecls_run_collect_stopped``.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterator, Optional, Sequence

log = logging.getLogger(__name__)


class RunCollector:
    """Metrics computed from a run's stats and sources on each scrape."""

    def __init__(self, stats: Any, sources: Sequence[Any]) -> None:
        self.stats = stats
        self.sources = list(sources)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        yield CounterMetricFamily("edgecls_run_frames", "Frames classified", value=s.frames)
        yield CounterMetricFamily("edgecls_run_errors", "Frames without a prediction (unreadable, failed)",
                                  value=s.errors)
        live = [src for src in self.sources if getattr(src, "live", False)]
        dropped = sum(int(getattr(src, "dropped", 0) or 0) for src in live)
        yield CounterMetricFamily("edgecls_run_dropped_frames", "Stale live frames skipped (newest-frame policy)",
                                  value=dropped)
        rec = CounterMetricFamily("edgecls_run_reconnects", "Times a live source was reopened after a drop",
                                  labels=("source",))
        for src in live:
            rec.add_metric((str(src.name),), int(getattr(src, "reconnects", 0) or 0))
        yield rec
        last = getattr(s, "t_last", None)
        age = (time.perf_counter() - last) if last is not None else math.nan
        yield GaugeMetricFamily("edgecls_run_last_frame_age_seconds", "Seconds since the last classified frame",
                                value=age)
        dec = CounterMetricFamily("edgecls_run_decisions", "Decisions per value", labels=("decision",))
        for name in s.decision_names:
            dec.add_metric((str(name),), s.decisions.get(name, 0))
        yield dec
        yield GaugeMetricFamily("edgecls_run_frames_per_second", "Frames per second since the run started",
                                value=s.fps)
        running = sum(1 for src in live if not getattr(src, "finished", False))
        yield GaugeMetricFamily("edgecls_run_sources_live", "Live sources still running", value=running)
        col = getattr(s, "collect", None)
        if col is not None:  # --collect
            fam = CounterMetricFamily("edgecls_run_collect_frames", "Frames flagged for collection, by outcome "
                                      "(kept, duplicate, rate_capped, dropped_slow_disk, stopped, write_error)",
                                      labels=("outcome",))
            for k, v in col.outcomes().items():
                fam.add_metric((k,), v)
            yield fam
            yield GaugeMetricFamily("edgecls_run_collect_folder_bytes", "Bytes in the collection folder",
                                    value=col.used)
            yield GaugeMetricFamily("edgecls_run_collect_stopped", "1 when collection stopped (disk cap, disk "
                                    "full, read-only)", value=1.0 if col.stopped else 0.0)


class MetricsServer:
    """The HTTP endpoint; :attr:`url` once started, :meth:`close` stops it."""

    def __init__(self, stats: Any, sources: Sequence[Any], port: int, host: str = "127.0.0.1") -> None:
        from edgecls.runtime.serve.metrics import import_prometheus

        pc = import_prometheus()
        self.registry = pc.CollectorRegistry(auto_describe=False)
        self.registry.register(RunCollector(stats, sources))
        try:
            self.httpd, self.thread = pc.start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            from edgecls.core.errors import InputError

            raise InputError(f"--metrics-port {port}: cannot listen on {host}:{port}: {e}") from e
        self.port = int(self.httpd.server_port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/metrics"
        log.info("run metrics on %s", self.url)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics(stats: Any, sources: Sequence[Any], port: Optional[int], host: str) -> Optional[MetricsServer]:
    return None if port is None else MetricsServer(stats, sources, port, host)
