"""``edgecls run --metrics-port N``: Prometheus metrics of a long run (cameras, streams), read at scrape time.

A collector reads the run's :class:`~edgecls.runtime.run.stats.RunStats` and its live sources when Prometheus
scrapes, so the loop does no extra work per frame. Served by prometheus_client's HTTP server on a thread, bound to
127.0.0.1 unless ``--metrics-host`` says otherwise; it lives in a registry of its own (no global side effects).

``edgecls_run_frames_total``, ``edgecls_run_errors_total``, ``edgecls_run_dropped_frames_total`` (stale live
frames skipped), ``edgecls_run_reconnects_total{source}``, ``edgecls_run_last_frame_age_seconds`` (since the last
classified frame; NaN before the first), ``edgecls_run_decisions_total{decision}``, ``edgecls_run_frames_per_second``,
``edgecls_run_sources_live`` (live sources still running), ``edgecls_run_confidence`` and ``edgecls_run_ood_score``
(histograms per frame). Per source (label ``source``, sources added while
running included): ``edgecls_run_source_frames_total``, ``edgecls_run_source_errors_total``,
``edgecls_run_source_dropped_frames_total``, ``edgecls_run_source_decisions_total{source,decision}``,
``edgecls_run_source_frames_per_second`` and ``edgecls_run_source_latency_ms{source,quantile}`` (capture →
decision, p50 and p99). With a drift reference (:mod:`edgecls.runtime.drift`):
``edgecls_run_drift_alarms_total{source,kind}`` (alarms raised), ``edgecls_run_drift_firing{source,kind}`` (1 while a kind fires) and
``edgecls_run_drift_martingale{source}`` (the scores test's value; it alarms at 1/alpha, ``edgecls_run_drift_threshold``); with ``--collect``:
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

    def _live(self) -> list:
        """The live sources: those given at start and those added since (the run's per-source stats)."""
        seen, out = set(), []
        for src in self.sources + [st.source for st in list(getattr(self.stats, "per_source", {}).values())]:
            if src is not None and getattr(src, "live", False) and id(src) not in seen:
                seen.add(id(src))
                out.append(src)
        return out

    def per_source(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        rows = list(getattr(s, "per_source", {}).values())
        fams = {k: CounterMetricFamily(f"edgecls_run_source_{k}", h, labels=("source",)) for k, h in (
            ("frames", "Frames classified, per source"), ("errors", "Frames without a prediction, per source"),
            ("dropped_frames", "Frames captured and never classified (newest-frame policy, fps cap), per source"))}
        dec = CounterMetricFamily("edgecls_run_source_decisions", "Decisions per source and value",
                                  labels=("source", "decision"))
        fps = GaugeMetricFamily("edgecls_run_source_frames_per_second", "Frames classified per second while the "
                                "source ran", labels=("source",))
        lat = GaugeMetricFamily("edgecls_run_source_latency_ms", "Capture to decision latency (ms) of live "
                                "sources, by quantile", labels=("source", "quantile"))
        for st in rows:
            name = str(st.name)
            fams["frames"].add_metric((name,), st.frames)
            fams["errors"].add_metric((name,), st.errors)
            fams["dropped_frames"].add_metric((name,), st.dropped)
            for d in s.decision_names:
                dec.add_metric((name, str(d)), st.decisions.get(d, 0))
            fps.add_metric((name,), st.fps)
            for q in (50, 99):
                v = st.latency.percentile(q)
                if v is not None:
                    lat.add_metric((name, f"0.{q}"), v)
        yield from fams.values()
        yield from (dec, fps, lat)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        yield CounterMetricFamily("edgecls_run_frames", "Frames classified", value=s.frames)
        yield CounterMetricFamily("edgecls_run_errors", "Frames without a prediction (unreadable, failed)",
                                  value=s.errors)
        live = self._live()
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
        yield from self.per_source()
        yield from score_histograms(s)
        if getattr(s, "drift", None) is not None:
            yield from drift_metrics(s.drift)
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


def score_histograms(stats: Any) -> Iterator[Any]:
    from prometheus_client.core import HistogramMetricFamily

    helps = {"confidence": "Top-class probability per frame",
             "ood_score": "OOD (unknown) score per frame; larger is less like the calibration images"}
    for name, h in stats.scores.items().items():
        # a histogram whose values can be negative (energy scores) has no _sum in Prometheus' text format
        total = h.total if h.bounds[0] >= 0 else None
        yield HistogramMetricFamily(f"edgecls_run_{name}", helps[name], buckets=h.cumulative(), sum_value=total)


def drift_metrics(watch: Any) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from edgecls.runtime.drift.monitor import KINDS

    alarms = CounterMetricFamily("edgecls_run_drift_alarms", "Drift alarms raised per source and kind",
                                 labels=("source", "kind"))
    firing = GaugeMetricFamily("edgecls_run_drift_firing", "1 while a drift kind fires on a source",
                               labels=("source", "kind"))
    mart = GaugeMetricFamily("edgecls_run_drift_martingale", "Drift statistic per source: the scores test "
                             "martingale (alarm at edgecls_run_drift_threshold)", labels=("source",))
    for src in list(watch.monitors):
        now = watch.firing.get(src, ())
        for kind in KINDS:
            alarms.add_metric((src, kind), watch.counts.get((src, kind), 0))
            firing.add_metric((src, kind), 1.0 if kind in now else 0.0)
        mart.add_metric((src,), watch.statistic(src))
    yield alarms
    yield firing
    yield mart
    yield GaugeMetricFamily("edgecls_run_drift_threshold", "Value of the drift martingale that raises an alarm "
                            "(1/alpha)", value=1.0 / watch.config.alpha)


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
