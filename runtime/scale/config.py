"""What ``edgecls ray`` was asked to do, validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from edgecls.core.errors import InputError
from edgecls.runtime.decision import check_threshold
from edgecls.runtime.preprocess import DEFAULT_MAX_PIXELS

FORMATS = ("jsonl", "parquet")
DEFAULT_SHARD_SIZE = 1000  # photos per committed shard: what a killed driver may redo (10 M photos: 10,000 shards)


@dataclass(frozen=True)
class ScaleConfig:
    """Everything ``edgecls ray`` was asked to do (the model options mean what they mean for ``edgecls run``)."""

    model: str
    input: str
    out: str
    address: Optional[str] = None  # None: a local Ray on this machine; "auto" or ray://HOST:PORT: a cluster
    fmt: str = "jsonl"
    shard_size: int = DEFAULT_SHARD_SIZE
    actors: Optional[int] = None  # model actors (None: Ray Data autoscales 1..CPUs/cpus_per_actor)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    device: str = "auto"
    threads: Optional[int] = None
    batch: Union[int, str] = 1
    streams: Optional[int] = None
    workers: Optional[int] = None  # decode/preprocess threads per actor
    threshold: Optional[float] = None
    coverage: Optional[float] = None
    topk: int = 3
    probs: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_fallback: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise InputError(f"--format {self.fmt!r} is not one of {', '.join(FORMATS)}")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise InputError(f"--shard-size must be an integer >= 1, got {self.shard_size!r}")
        if self.actors is not None and (not isinstance(self.actors, int) or self.actors < 1):
            raise InputError(f"--actors must be an integer >= 1, got {self.actors!r}")
        if not self.cpus_per_actor > 0:
            raise InputError(f"--cpus-per-actor must be > 0, got {self.cpus_per_actor!r}")
        if self.gpus_per_actor < 0:
            raise InputError(f"--gpus-per-actor must be >= 0, got {self.gpus_per_actor!r}")
        if not str(self.out).strip():
            raise InputError("--out must name a folder for the records")
        self.run_config()  # the model options, validated as `edgecls run` validates them

    def run_config(self):
        """The :class:`~edgecls.runtime.run.config.RunConfig` each actor runs ``edgecls run``'s loop with."""
        from edgecls.runtime.run.config import RunConfig

        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")
        return RunConfig(
            model=self.model, sources=(self.input,), device=self.device, threads=self.threads, batch=self.batch,
            streams=self.streams, threshold=self.threshold, coverage=self.coverage, topk=self.topk,
            allow_fallback=self.allow_fallback, workers=self.workers, probs=self.probs, summary=False,
            max_pixels=self.max_pixels,
        )
