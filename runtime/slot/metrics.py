"""Prometheus metrics of a model slot, read at scrape time (a collector: nothing is done per inference).

``edgecls_model_info{name,version,sha256,arch,precision,checkpoint_sha256,backend}`` (1 for the model answering
now), ``edgecls_model_swaps_total``, ``edgecls_model_swap_refusals_total{reason}`` (load, input, classes, warmup,
golden) and ``edgecls_model_rollbacks_total{reason}`` (first_inputs: the new model failed on its first calls).
"""
from __future__ import annotations

from typing import Any, Iterator

REASONS = ("load", "input", "classes", "warmup", "golden")


class SlotCollector:
    def __init__(self, slot: Any) -> None:
        self.slot = slot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.slot
        info = GaugeMetricFamily("edgecls_model_info", "The model answering now (value 1): name, version, sha256 "
                                 "of the model file and of the checkpoint it was exported from",
                                 labels=("name", "version", "sha256", "arch", "precision", "checkpoint_sha256",
                                         "backend"))
        cur = s.current
        if cur is not None:
            spec, ident = cur.clf.spec, cur.identity
            info.add_metric((ident.name, ident.version, ident.sha256, str(spec.arch), str(spec.precision),
                             str(getattr(spec, "source_sha256", "") or ""), cur.clf.backend.describe()), 1)
        yield info
        yield CounterMetricFamily("edgecls_model_swaps", "New models swapped in", value=s.swaps)
        ref = CounterMetricFamily("edgecls_model_swap_refusals", "New models refused (the current one went on), "
                                  "by the check that failed", labels=("reason",))
        for r in sorted(set(REASONS) | set(s.refusals)):
            ref.add_metric((r,), s.refusals.get(r, 0))
        yield ref
        rb = CounterMetricFamily("edgecls_model_rollbacks", "Swapped-in models that failed on their first inputs "
                                 "and were replaced by the previous one", labels=("reason",))
        rb.add_metric(("first_inputs",), s.rollbacks.get("first_inputs", 0))
        yield rb
