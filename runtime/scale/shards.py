"""The job's output folder: deterministic shards of the input list, each committed once by an atomic rename.

``OUT/job.json`` pins what the shards hold (the inputs' fingerprint, shard size, format, model, options), so a
rerun continues the same job and a different one is refused instead of mixed in. ``OUT/shards/part-NNNNNN.EXT``
holds the records of inputs ``[k*S, (k+1)*S)`` in order; it appears complete (written aside, fsynced, renamed) or
not at all, so a killed driver or worker leaves no partial shard, and a rerun redoes only uncommitted shards.
``OUT/records.EXT`` is their concatenation in input order, written (atomically) when every shard is committed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Set, Tuple

from edgecls.core.errors import InputError
from edgecls.core.fileio import atomic_output, remove_orphan_temps, write_json

log = logging.getLogger(__name__)

SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet"}
_PART = re.compile(r"^part-(\d{6})\.(jsonl|parquet)$")
JOB_FILE = "job.json"


def parquet_schema():
    """Flat columns a table reader filters on, and ``record``: the whole JSON record (the same as the JSONL's)."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("source", pa.string()), ("index", pa.int64()), ("path", pa.string()),
        ("label", pa.string()), ("confidence", pa.float64()), ("decision", pa.string()),
        ("p_positive", pa.float64()), ("unknown", pa.bool_()), ("set", pa.list_(pa.string())),
        ("error", pa.string()), ("record", pa.string()),
    ])


def _parquet_table(records: Sequence[Dict[str, Any]]):
    import pyarrow as pa

    schema = parquet_schema()
    cols = {f.name: [r.get(f.name) for r in records] for f in schema if f.name != "record"}
    cols["record"] = [json.dumps(r, ensure_ascii=False) for r in records]
    return pa.Table.from_pydict(cols, schema=schema)


class ShardStore:
    """Shards of ``n`` inputs, ``shard_size`` each, under ``out`` (see the module docstring)."""

    def __init__(self, out: os.PathLike, n: int, shard_size: int, fmt: str, job: Dict[str, Any]) -> None:
        self.out = Path(out)
        self.dir = self.out / "shards"
        self.n = n
        self.size = shard_size
        self.fmt = fmt
        self.suffix = SUFFIX[fmt]
        self.job = dict(job, n=n, shard_size=shard_size, format=fmt)

    @property
    def count(self) -> int:
        return (self.n + self.size - 1) // self.size

    def bounds(self, k: int) -> Tuple[int, int]:
        return k * self.size, min(self.n, (k + 1) * self.size)

    def path(self, k: int) -> Path:
        return self.dir / f"part-{k:06d}{self.suffix}"

    def open(self) -> Set[int]:
        """Create or reopen the folder; the committed shards. Refuses a folder that holds another job's shards."""
        self.dir.mkdir(parents=True, exist_ok=True)
        removed = remove_orphan_temps(self.dir)  # shards a killed process was writing: redone
        if removed:
            log.info("removed %d unfinished shard file(s) a killed run left", len(removed))
        job_file = self.out / JOB_FILE
        if job_file.is_file():
            try:
                old = json.loads(job_file.read_text(encoding="utf-8"))
            except ValueError as e:
                raise InputError(f"{job_file} is not JSON ({e}): not an edgecls ray output folder?") from e
            diff = sorted(k for k in set(old) | set(self.job) if old.get(k) != self.job.get(k))
            if diff:
                raise InputError(
                    f"--out {os.fspath(self.out)!r} holds the shards of another job (different {', '.join(diff)}); "
                    "give a new --out folder, or the same model, inputs and options to continue that job")
        else:
            names = [e for e in os.listdir(self.dir) if _PART.match(e)]
            if names:
                raise InputError(f"{self.dir} holds shards without {JOB_FILE}: give a new --out folder")
            write_json(job_file, self.job)
        done = set()
        for name in os.listdir(self.dir):
            m = _PART.match(name)
            if m and name.endswith(self.suffix) and int(m.group(1)) < self.count:
                done.add(int(m.group(1)))
        return done

    def commit(self, k: int, records: Sequence[str]) -> Path:
        """Write shard ``k``'s records (JSON texts, in input order) aside and rename them into place: all or
        nothing."""
        lo, hi = self.bounds(k)
        if len(records) != hi - lo:
            raise RuntimeError(f"shard {k}: {len(records)} records for {hi - lo} inputs")
        with atomic_output(self.path(k), self.suffix) as tmp:
            if self.fmt == "jsonl":
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write("".join(r + "\n" for r in records))
            else:
                import pyarrow.parquet as pq

                pq.write_table(_parquet_table([json.loads(r) for r in records]), tmp)
        return self.path(k)

    def records(self, k: int) -> Iterator[Dict[str, Any]]:
        """Shard ``k``'s records, read back."""
        if self.fmt == "jsonl":
            with open(self.path(k), encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)
        else:
            import pyarrow.parquet as pq

            for rec in pq.read_table(self.path(k), columns=["record"]).column("record").to_pylist():
                yield json.loads(rec)

    def merge(self) -> Path:
        """``OUT/records.EXT``: every shard in order (a byte copy for JSONL, one Parquet file of all row groups)."""
        target = self.out / f"records{self.suffix}"
        with atomic_output(target, self.suffix) as tmp:
            if self.fmt == "jsonl":
                with open(tmp, "wb") as dst:
                    for k in range(self.count):
                        with open(self.path(k), "rb") as src:
                            shutil.copyfileobj(src, dst, 1 << 20)
            else:
                import pyarrow.parquet as pq

                with pq.ParquetWriter(tmp, parquet_schema()) as w:
                    for k in range(self.count):
                        w.write_table(pq.read_table(self.path(k)))
        return target

    def missing(self, done: Set[int]) -> List[int]:
        return [k for k in range(self.count) if k not in done]


class ShardCollector:
    """Records as they come back from Ray, in any order, at least once: each kept once, and each shard committed
    when its last record arrives. A record seen before (a retried batch), even of a shard already committed, is
    counted in ``duplicates`` and dropped."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store
        self.buffers: Dict[int, Dict[int, str]] = {}
        self.committed: Set[int] = set()
        self.duplicates = 0

    def add(self, shard: int, index: int, record: str) -> bool:
        """Keep ``record`` (JSON text) of input ``index``; False when it was a duplicate."""
        if shard in self.committed or index in self.buffers.get(shard, ()):
            self.duplicates += 1
            return False
        lo, hi = self.store.bounds(shard)
        if not lo <= index < hi:
            raise RuntimeError(f"input {index} is not in shard {shard} ({lo}..{hi - 1})")
        buf = self.buffers.setdefault(shard, {})
        buf[index] = record
        if len(buf) == hi - lo:
            self.store.commit(shard, [buf[j] for j in range(lo, hi)])
            del self.buffers[shard]
            self.committed.add(shard)
        return True

    def check_complete(self) -> None:
        if self.buffers:  # Ray returned without every record: a partial shard is never committed
            raise RuntimeError(f"shards {sorted(self.buffers)[:5]} came back incomplete; run the same command again "
                               "to redo them")
