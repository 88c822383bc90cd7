"""What ``edgecls bench`` measured: one row per artifact × batch × threads, preprocessing and end-to-end rows."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class Artifact:
    path: str
    kind: str
    precision: str
    arch: str
    size_bytes: int
    gmacs_per_image: Optional[float]
    is_reference: bool = False

    @property
    def label(self) -> str:
        return f"{Path(self.path).parent.name}/{Path(self.path).name}" if Path(self.path).parent.name else self.path


@dataclass(frozen=True)
class LatencyRow:
    model: str
    kind: str
    precision: str
    backend: str
    providers: Tuple[str, ...]
    batch: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p50_spread_ms: Tuple[float, float]  # min and max of the per-round p50
    images_per_s: float
    gflops_per_s: Optional[float] = None
    peak_fraction: Optional[float] = None
    ratio_p50: Optional[float] = None  # p50 / reference p50 (same batch, threads)
    ratio_throughput: Optional[float] = None  # images/s / reference images/s


@dataclass(frozen=True)
class PreprocessRow:
    input: str
    ms_per_frame: float
    ms_spread: Tuple[float, float]
    reference_ms: Optional[float] = None  # torchvision's PIL transform on the same frame
    ratio: Optional[float] = None


@dataclass(frozen=True)
class EndToEndRow:
    model: str
    threads: int
    frames_per_s: float
    ms_per_frame: float
    source: str
    ratio_fps: Optional[float] = None


@dataclass(frozen=True)
class BenchResult:
    date: str
    command: str
    machine: Dict[str, Any]
    config: Dict[str, Any]
    artifacts: Tuple[Artifact, ...]
    latency: Tuple[LatencyRow, ...]
    peak: Dict[str, Any]  # {"method": str, "gflops": {threads: GFLOP/s}}
    preprocess: Tuple[PreprocessRow, ...] = ()
    end_to_end: Tuple[EndToEndRow, ...] = ()
    reference: Optional[str] = None
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "date": self.date,
            "command": self.command,
            "machine": self.machine,
            "config": self.config,
            "reference": self.reference,
            "artifacts": [dataclasses.asdict(a) for a in self.artifacts],
            "latency": [dataclasses.asdict(r) for r in self.latency],
            "peak": self.peak,
            "preprocess": [dataclasses.asdict(r) for r in self.preprocess],
            "end_to_end": [dataclasses.asdict(r) for r in self.end_to_end],
            "notes": list(self.notes),
        }

    def markdown(self) -> str:
        """The Markdown report (:func:`edgecls.evaluation.tables.bench_markdown`)."""
        from edgecls.evaluation.tables import bench_markdown

        return bench_markdown(self)
