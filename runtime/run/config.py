"""What ``edgecls run`` was asked to do, validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from edgecls.core.errors import InputError
from edgecls.runtime.decision import check_threshold

FORMATS = ("jsonl", "csv", "table")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``edgecls run`` was asked to do."""

    model: str
    sources: Tuple[str, ...] = ()
    cameras: Tuple[int, ...] = ()
    device: str = "auto"
    threads: Optional[int] = None  # onnxruntime intra-op threads (None: onnxruntime's default)
    batch: int = 1  # images per inference call for files/videos (live sources: always 1)
    threshold: Optional[float] = None  # None: the model's
    topk: int = 3
    smooth: int = 1  # average probabilities over the last N frames of a video/live source
    fmt: str = "jsonl"
    show: bool = False
    save: Optional[str] = None
    allow_fallback: bool = False
    max_frames: Optional[int] = None  # per source
    workers: Optional[int] = None  # decode/preprocess threads (None: half the CPUs, 1 to 4)
    retries: int = 5  # reopen attempts for a dropped stream
    probs: bool = False  # add every class probability to the records
    summary: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in (self.sources or ())))
        object.__setattr__(self, "cameras", tuple(int(c) for c in (self.cameras or ())))
        if self.fmt not in FORMATS:
            raise InputError(f"--format {self.fmt!r} is not one of {', '.join(FORMATS)}")
        for name in ("batch", "topk", "smooth"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"--{name} must be an integer >= 1, got {v!r}")
        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")
        for name in ("threads", "workers", "max_frames"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise InputError(f"--retries must be an integer >= 0, got {self.retries!r}")
        if not self.sources and not self.cameras:
            raise InputError("no source: give image files, folders, globs, videos, streams, csi://N or --camera N")
