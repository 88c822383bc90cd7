"""Prometheus metrics of one server, in a registry of its own (nothing is added to prometheus_client's global
registry, so several apps — tests, or ``edgecls run --metrics-port`` beside a server — never collide).

``edgecls_requests_total{endpoint,status}``, ``edgecls_request_seconds{stage}`` (decode, preprocess, queue,
infer, total), ``edgecls_batch_size``, ``edgecls_decisions_total{decision}``, ``edgecls_errors_total{kind}``,
``edgecls_inflight_requests``, ``edgecls_ready`` (0 until the model is loaded), and the model slot's
(:mod:`edgecls.runtime.slot.metrics`): ``edgecls_model_info{name,version,sha256,...}`` (1 for the model answering
now), ``edgecls_model_swaps_total``, ``edgecls_model_swap_refusals_total{reason}``,
``edgecls_model_rollbacks_total{reason}``.
"""
from __future__ import annotations

from typing import Dict, Tuple

from edgecls.core.errors import CapabilityError

STAGES = ("decode", "preprocess", "queue", "infer", "total")
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def import_prometheus():
    try:
        import prometheus_client
    except ImportError as e:
        raise CapabilityError(
            "prometheus-client is not installed: pip install 'edgecls[serve]' (or pip install prometheus-client)"
        ) from e
    return prometheus_client


class ServeMetrics:
    """The metrics of one app; :meth:`render` gives the exposition text and its content type."""

    def __init__(self) -> None:
        pc = import_prometheus()
        self.registry = pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = pc.Counter("edgecls_requests", "HTTP requests by endpoint and status code",
                                   ("endpoint", "status"), registry=r)
        self.latency = pc.Histogram("edgecls_request_seconds", "Per-stage latency of classified requests",
                                    ("stage",), buckets=LATENCY_BUCKETS, registry=r)
        self.batch = pc.Histogram("edgecls_batch_size", "Images per inference call",
                                  buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.decisions = pc.Counter("edgecls_decisions", "Decisions returned (yes/no/uncertain or the label)",
                                    ("decision",), registry=r)
        self.errors = pc.Counter("edgecls_errors", "Requests that got no prediction, by kind", ("kind",), registry=r)
        self.inflight = pc.Gauge("edgecls_inflight_requests", "Requests being handled", registry=r)
        self.ready = pc.Gauge("edgecls_ready", "1 when the model is loaded and the server takes requests",
                              registry=r)
        self._content_type = pc.CONTENT_TYPE_LATEST
        self._generate = pc.generate_latest

    def observe_stages(self, ms: Dict[str, float]) -> None:
        for stage, v in ms.items():
            if v is not None:
                self.latency.labels(stage).observe(v / 1e3)

    def watch_slot(self, slot) -> None:
        """Add the model slot's metrics (read at scrape time)."""
        from edgecls.runtime.slot.metrics import SlotCollector

        self.registry.register(SlotCollector(slot))

    def render(self) -> Tuple[bytes, str]:
        return self._generate(self.registry), self._content_type
