"""The Ray Data actor: loads the ``Classifier`` once, then classifies batches of photos with ``edgecls run``'s own
loop (the same loader, preprocessing, inference plan, decisions and records: :mod:`edgecls.runtime.run.loop`).

Each call takes a batch of rows ``shard, index, id, path`` and returns ``shard, index, record``: the JSON record
``edgecls run`` writes for that photo, with the input's ``id`` first (and the actor's backend, when its model was
loaded and when the batch was done, for the summary's throughput). Photos are read inside the actor: local paths
exactly as ``edgecls run`` reads them, URIs (s3://, gs://, file://) as bytes through pyarrow's filesystems, decoded
by the same loader (EXIF orientation, the pixel bound, the same error texts naming the URI).
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from edgecls.runtime.sources.frame import Frame

log = logging.getLogger(__name__)


class _Collect:
    """A record writer that keeps the records of the current batch (the loop's ``writer``)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []

    def write(self, rec: Dict[str, Any]) -> None:
        self.records.append(rec)

    def close(self) -> None:
        pass


def fetch_uri(source: str, index: int, uri: str, max_pixels, spec) -> Frame:
    """A URI's bytes decoded by the runtime's loader (an unreachable object gives an error record, as a missing
    local file does)."""
    from edgecls.runtime.scale.inputs import filesystem_of
    from edgecls.runtime.sources.files import read_image

    t0 = time.perf_counter()
    try:
        filesystem, inner = filesystem_of(uri)
        with filesystem.open_input_file(inner) as f:
            data = io.BytesIO(f.read())
    except Exception as e:
        return Frame(source=source, index=index, path=uri, save_name=uri, t_capture=t0,
                     error=f"cannot read image {uri!r}: {type(e).__name__}: {e}")
    data.name = uri
    return read_image(source, index, data, uri, max_pixels=max_pixels, spec=spec)


class ClassifyActor:
    """``map_batches``' callable class: one ``Classifier`` per actor, ``cpus`` cores' worth of threads/streams."""

    def __init__(self, config, cpus: int = 1) -> None:
        from edgecls.runtime.classifier import Classifier
        from edgecls.runtime.run.loop import _batch_for, _Loop
        from edgecls.runtime.run.output import AnnotatedOutput
        from edgecls.runtime.run.plan import plan_inference
        from edgecls.runtime.run.stats import RunStats
        from edgecls.runtime.slot.identity import identify, resolve_model
        from edgecls.runtime.slot.slot import ModelSlot
        from edgecls.runtime.sources.files import ImageSource

        cpus = max(1, int(cpus))
        cfg = config.run_config()
        cfg = dataclasses.replace(cfg, workers=cfg.workers or max(1, min(4, cpus // 2)))  # this actor's cores
        sources = [ImageSource(config.input, [])]
        plan = plan_inference(cfg, sources, cpus)
        t0 = time.perf_counter()
        self.clf = Classifier.load(
            cfg.model, device=cfg.device, threads=plan.threads, allow_fallback=cfg.allow_fallback,
            threshold=cfg.threshold, topk=cfg.topk, max_pixels=cfg.max_pixels, coverage=cfg.coverage,
            **({"session_config": plan.session_config} if plan.session_config else {}),
        )
        self.load_s = time.perf_counter() - t0
        streams = plan.streams_on(self.clf.backend)
        batch = _batch_for(cfg, self.clf, sources)
        self.backend = f"{self.clf.backend.describe()}, batch {batch} x {streams} stream(s)"
        self.writer = _Collect()
        stats = RunStats(self.clf.decider, self.clf.backend.describe(), batch, self.load_s, streams)
        # records name their model as `edgecls run`'s do (name, version, sha256 prefix): the slot run would open
        file, name, version = resolve_model(cfg.model)
        slot = ModelSlot.around(self.clf, identify(file, name, version or "1"))
        self.loop = _Loop(slot, cfg, self.writer, AnnotatedOutput(None, None, stats), stats, batch=batch,
                          streams=streams)
        self.cfg = cfg
        self.source = config.input
        self.t_ready = time.time()  # wall clock (comparable across a cluster's nodes): the model is loaded
        log.info("model actor ready: %s, model load %.2f s", self.backend, self.load_s)

    def _read(self, task: Tuple[str, int, Any, str]):
        from edgecls.runtime.scale.inputs import is_uri
        from edgecls.runtime.sources.files import read_image

        source, index, path, save_name = task
        spec = self.clf.spec.preprocess
        if is_uri(path):
            frame = fetch_uri(source, index, path, self.cfg.max_pixels, spec)
        else:
            frame = read_image(source, index, Path(path), save_name, max_pixels=self.cfg.max_pixels, spec=spec)
        return self.loop._prepare(frame)

    def classify(self, ids: List[str], paths: List[str], indices: List[int]) -> List[Dict[str, Any]]:
        """Records for ``paths`` in their order (``edgecls run``'s, with ``id`` first)."""
        self.writer.records = []
        tasks = [(self.source, int(i), str(p), str(n)) for n, p, i in zip(ids, paths, indices)]
        self.loop.run_sequence(self.source, iter(tasks), self._read, sequence=False)
        recs = self.writer.records
        if [r["index"] for r in recs] != [int(i) for i in indices]:  # the loop emits every input once, in order
            raise RuntimeError(f"the loop returned {len(recs)} records for {len(indices)} inputs")
        return [{"id": str(n), **r} for n, r in zip(ids, recs)]

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        recs = self.classify(list(batch["id"]), list(batch["path"]), list(batch["index"]))
        return {
            "shard": np.asarray(batch["shard"]),
            "index": np.asarray(batch["index"]),
            "record": np.array([json.dumps(r, ensure_ascii=False) for r in recs], dtype=object),
            "backend": np.array([self.backend] * len(recs), dtype=object),
            "t_ready": np.full(len(recs), self.t_ready),  # the throughput's clock: model loaded → records out
            "t_done": np.full(len(recs), time.time()),
        }
