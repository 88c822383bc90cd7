"""The driver of ``edgecls ray``: the shards not yet committed go through a Ray Data actor pool; each shard is
committed (atomically) as soon as all its records are back; at the end every shard is merged and summarised.

Exactly once: a worker killed mid-batch is replaced and its batch retried by Ray (the actor pool's restarts and
task retries); a record that arrives twice (a retried batch whose first output got through) is dropped by its
``(shard, index)``; a shard is written only complete, by one rename. A killed driver loses only the shards in
flight: the same command again skips the committed ones (:mod:`.shards`).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, TextIO

from edgecls.core.errors import EXIT_INTERRUPTED, CapabilityError
from edgecls.core.fileio import file_sha256, write_json
from edgecls.core.progress import progress
from edgecls.runtime.run.stats import RunStats
from edgecls.runtime.scale.actor import ClassifyActor
from edgecls.runtime.scale.config import ScaleConfig
from edgecls.runtime.scale.inputs import Inputs, list_inputs
from edgecls.runtime.scale.shards import ShardCollector, ShardStore

log = logging.getLogger(__name__)

MAX_CALL_BATCH = 200  # photos per actor call (a shard is split into calls of at most this many)
IN_FLIGHT_PER_ACTOR = 2


@dataclass
class JobResult:
    """What one invocation did: the whole output's :class:`RunStats`, and this invocation's own work."""

    stats: RunStats
    inputs: int
    shards: int
    resumed_shards: int  # committed by an earlier run, skipped
    classified: int = 0  # records this invocation received (work done)
    duplicates: int = 0  # records that arrived twice (a retried batch) and were dropped
    startup_s: float = 0.0  # Ray start, actor start, model load (until the first actor is ready)
    steady_s: float = 0.0  # the first actor ready → the last batch done (as `edgecls run`: model load excluded)
    backend: str = ""
    output: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Photos/s after start-up: this run's photos over the first actor's model ready → the last batch done."""
        return self.classified / self.steady_s if self.steady_s > 0 else 0.0

    def exit_code(self) -> int:
        return self.stats.exit_code()

    def to_dict(self) -> Dict[str, Any]:
        d = self.stats.to_dict()
        for k in ("elapsed_s", "frames_per_s", "model_load_s", "batch", "streams", "dropped_live_frames"):
            d.pop(k, None)
        d.update(inputs=self.inputs, shards=self.shards, resumed_shards=self.resumed_shards,
                 classified_this_run=self.classified, duplicates_dropped=self.duplicates,
                 startup_s=round(self.startup_s, 3), photos_per_s=round(self.rate, 2), backend=self.backend,
                 output=self.output)
        return d

    def format(self) -> str:
        head = (f"edgecls ray: {self.stats.frames} photos classified, {self.stats.errors} errors, {self.inputs} inputs "
                f"in {self.shards} shards ({self.resumed_shards} committed by an earlier run)")
        this = (f"this run: {self.classified} photos, {self.rate:.1f} photos/s after a start-up of "
                f"{self.startup_s:.1f} s (Ray, actors, model load){'  [INTERRUPTED]' if self.stats.interrupted else ''}"
                + (f"; {self.backend}" if self.backend else ""))
        rest = self.stats.format().splitlines()[1:]  # decisions, labels, latencies, notes, exit line
        out = [head, this, *rest]
        if self.output:
            out.append(f"records: {self.output}")
        return "\n".join(out) + "\n"


def job_identity(config: ScaleConfig, inputs: Inputs) -> Dict[str, Any]:
    """What the shards depend on: a rerun must match it to continue the job."""
    return {
        "source": config.input,
        "inputs_sha256": inputs.fingerprint(),
        "model_sha256": file_sha256(config.model),
        "options": {"threshold": config.threshold, "coverage": config.coverage, "topk": config.topk,
                    "probs": config.probs, "max_pixels": config.max_pixels},
    }


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise CapabilityError(f"edgecls ray needs Ray Data: pip install 'edgecls[ray]' ({e})") from e
    return ray


def _start_ray(ray, address: Optional[str]) -> bool:
    """Connect to ``address`` (None: a local Ray on this machine); True when this call started the session."""
    if ray.is_initialized():
        return False
    kw: Dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address:
        kw.pop("include_dashboard")
        kw["address"] = address
    ray.init(**kw)
    return True


def _dataset(ray, inputs: Inputs, store: ShardStore, todo: List[int]):
    """One block per uncommitted shard: rows ``shard, index, id, path``."""
    import pyarrow as pa

    tables = []
    for k in todo:
        lo, hi = store.bounds(k)
        tables.append(pa.table({"shard": pa.array([k] * (hi - lo), pa.int64()),
                                "index": pa.array(range(lo, hi), pa.int64()),
                                "id": pa.array(inputs.ids[lo:hi], pa.string()),
                                "path": pa.array(inputs.paths[lo:hi], pa.string())}))
    return ray.data.from_arrow(tables)


def _classify(ray, config: ScaleConfig, inputs: Inputs, store: ShardStore, todo: List[int], result: JobResult,
              actor_cls: type, t_start: float) -> None:
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # ours below counts photos; Ray's per-operator bars would interleave with it
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines, between our summary
    cpus = max(1, int(round(config.cpus_per_actor)))
    # two calls per actor: one running, one queued behind it (the actor never waits; a killed driver loses little)
    sizes = {"min_size": 1, "max_size": None} if config.actors is None else {"size": config.actors}
    pool = ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=IN_FLIGHT_PER_ACTOR)
    ds = _dataset(ray, inputs, store, todo).map_batches(
        actor_cls, fn_constructor_kwargs={"config": config, "cpus": cpus}, batch_size=min(config.shard_size, MAX_CALL_BATCH),
        batch_format="numpy", compute=pool, num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or None,
    )  # a killed worker: Ray Data's actor pools restart the actor and retry its batch (max_restarts=-1 by default)
    total = sum(store.bounds(k)[1] - store.bounds(k)[0] for k in todo)
    collector = ShardCollector(store)
    t_ready, t_done = float("inf"), 0.0  # wall clock: the first actor's model loaded, the last batch done
    with progress(total=total, desc="edgecls ray", unit="photo", enabled=config.progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            n = sum(collector.add(int(s), int(i), str(rec))
                    for s, i, rec in zip(batch["shard"], batch["index"], batch["record"]))
            if not result.backend and len(batch["backend"]):
                result.backend = str(batch["backend"][0])
            t_ready, t_done = min(t_ready, float(batch["t_ready"].min())), max(t_done, float(batch["t_done"].max()))
            result.startup_s, result.steady_s = t_ready - t_start, t_done - t_ready
            result.classified += n
            bar.update(n)
    collector.check_complete()
    result.duplicates = collector.duplicates
    if result.duplicates:
        log.info("%d record(s) arrived twice (retried batches) and were dropped", result.duplicates)


def summarize(store: ShardStore, stats: RunStats) -> None:
    """Counts and latencies of every committed record (this run's and earlier runs')."""
    for k in range(store.count):
        if not store.path(k).is_file():
            continue
        for r in store.records(k):
            if "error" in r:
                stats.errors += 1
                continue
            stats.count(r["decision"], r["label"])
            t = r.get("timings_ms", {})
            stats.decode.append(t.get("decode") or 0.0)
            stats.preprocess.append(t.get("preprocess") or 0.0)
            stats.infer_image.append((t.get("infer") or 0.0) / t.get("batch", 1))


def run_job(config: ScaleConfig, err: Optional[TextIO] = None, actor_cls: type = ClassifyActor) -> JobResult:
    """Classify ``config.input`` into ``config.out``, continuing what an earlier run committed; the summary goes
    to ``err``. ``actor_cls``: the model actor (tests give one that fails on purpose)."""
    from edgecls.runtime.decision import Decider
    from edgecls.runtime.model_io import check_model_file, load_model_spec

    err = err if err is not None else sys.stderr
    t0 = time.perf_counter()
    ray = _import_ray()  # missing: exit 4 before anything is written
    inputs = list_inputs(config.input)  # a bad INPUT, model or --out fails here, before Ray starts
    decider = Decider(load_model_spec(check_model_file(config.model)), config.threshold, config.topk, config.coverage)
    store = ShardStore(config.out, len(inputs), config.shard_size, config.fmt, job_identity(config, inputs))
    done = store.open()
    todo = store.missing(done)
    stats = RunStats(decider, "ray", 1, 0.0)
    result = JobResult(stats, len(inputs), store.count, len(done))
    if todo:
        t_start = time.time()  # wall clock, as the actors' timestamps
        _start_ray(ray, config.address)
        try:
            _classify(ray, config, inputs, store, todo, result, actor_cls, t_start)
        except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: committed shards stay; the same command continues
            stats.interrupted = True
            stats.signal = "SIGTERM" if getattr(e, "exit_code", EXIT_INTERRUPTED) != EXIT_INTERRUPTED else None
    log.debug("job took %.1f s", time.perf_counter() - t0)
    summarize(store, stats)
    if not stats.interrupted:
        result.output = str(store.merge())
    stats.finish()
    write_json(store.out / "summary.json", result.to_dict())
    err.write(result.format())
    err.flush()
    return result
