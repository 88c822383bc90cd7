"""The build record written next to each TensorRT engine (``<engine stem>.build.json``) and the preflight that reads
it before deserialization.

An engine loads only with the TensorRT version and the GPU (compute capability) it was built with; TensorRT says so
only from inside ``deserialize_cuda_engine``. :func:`preflight` compares the record with this device first and
refuses a mismatched engine with :class:`CapabilityError` (exit 4) and the exact ``edgecls build-engine`` command
that rebuilds it here (same ONNX, precision, batch profile, DLA core). An engine whose source ONNX sits beside it
and changed after the build is refused the same way (stale). No record (an engine from ``trtexec``): no preflight.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgecls.core.errors import CapabilityError

log = logging.getLogger(__name__)

RECORD_VERSION = 1
DEFAULT_WORKSPACE_MIB = 1024


def parse_version(version: str) -> Tuple[int, int, int]:
    """``"10.3.0.30"`` → (10, 3, 0); missing or non-numeric parts count as 0."""
    nums = []
    for p in str(version).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


def record_path(engine_path: os.PathLike[str] | str) -> Path:
    return Path(engine_path).with_suffix(".build.json")


@dataclass(frozen=True)
class EngineRecord:
    """What an engine was built from and for (the JSON keys are the field names; ``batch`` is min/opt/max)."""

    engine: str
    trt_version: str
    compute_capability: str
    precision: str
    onnx: str
    onnx_sha256: str
    onnx_precision: str
    batch: Tuple[int, int, int]
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    engine_bytes: Optional[int] = None
    network_flags: Tuple[str, ...] = ()
    builder_flags: Tuple[str, ...] = ()
    timing_cache: Optional[str] = None
    build_seconds: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["batch"] = dict(zip(("min", "opt", "max"), self.batch))
        d["network_flags"], d["builder_flags"] = list(self.network_flags), list(self.builder_flags)
        d["record"] = RECORD_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> EngineRecord:
        b = d.get("batch") or {}
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            engine=str(d["engine"]), trt_version=str(d["trt_version"]),
            compute_capability=str(d["compute_capability"]), precision=str(d["precision"]),
            onnx=str(d.get("onnx", "")), onnx_sha256=str(d.get("onnx_sha256", "")),
            onnx_precision=str(d.get("onnx_precision", d["precision"])),
            batch=(int(b.get("min", 1)), int(b.get("opt", 1)), int(b.get("max", 1))),
            workspace_mib=int(d.get("workspace_mib", DEFAULT_WORKSPACE_MIB)),
            dla_core=None if d.get("dla_core") is None else int(d["dla_core"]),
            gpu_fallback=bool(d.get("gpu_fallback", False)),
            engine_bytes=None if d.get("engine_bytes") is None else int(d["engine_bytes"]),
            network_flags=tuple(d.get("network_flags", ())), builder_flags=tuple(d.get("builder_flags", ())),
            timing_cache=d.get("timing_cache"), build_seconds=d.get("build_seconds"),
            extra={k: v for k, v in d.items() if k not in known and k != "record"},
        )

    @property
    def device(self) -> str:
        return "GPU" if self.dla_core is None else f"DLA core {self.dla_core}" + (
            " with GPU fallback" if self.gpu_fallback else "")


def read_record(engine_path: os.PathLike[str] | str) -> Optional[EngineRecord]:
    """The engine's build record, or None when there is none or it cannot be read (then nothing is checked)."""
    path = record_path(engine_path)
    if not path.is_file():
        return None
    try:
        return EngineRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: unreadable build record (%s); the engine is loaded without a preflight check", path, e)
        return None


def source_onnx(record: EngineRecord, engine_path: Path) -> Tuple[Path, bool]:
    """Where the source ONNX is (as recorded, else beside the engine) and whether it exists there."""
    recorded = Path(record.onnx) if record.onnx else None
    beside = engine_path.parent / (recorded.name if recorded is not None else "model.onnx")
    for candidate in (recorded, beside):
        if candidate is not None and candidate.is_file():
            return candidate, True
    return beside, False


def rebuild_command(record: EngineRecord, engine_path: os.PathLike[str] | str) -> str:
    """The ``edgecls build-engine`` line that rebuilds this engine on this device (same source and settings)."""
    engine_path = Path(engine_path)
    onnx, here = source_onnx(record, engine_path)
    mn, op, mx = record.batch
    args = ["edgecls", "build-engine", _quote(os.fspath(onnx)), "--precision", record.precision,
            "--batch", f"{mn},{op},{mx}"]
    if record.workspace_mib != DEFAULT_WORKSPACE_MIB:
        args += ["--workspace", str(record.workspace_mib)]
    if record.dla_core is not None:
        args += ["--dla", str(record.dla_core)] + (["--gpu-fallback"] if record.gpu_fallback else [])
    args += ["--out", _quote(os.fspath(engine_path.parent))]
    line = " ".join(args)
    if not here:
        line += f"   (copy {onnx.name} from the export folder here first)"
    return line


def _quote(text: str) -> str:
    return f"'{text}'" if any(c in text for c in " \t'\"$") else text


def mismatches(record: EngineRecord, engine_path: Path, trt_version: str,
               compute_capability: Optional[str]) -> List[str]:
    """Why this engine cannot run here (empty: it can, as far as the record tells)."""
    from edgecls.core.fileio import file_sha256

    out: List[str] = []
    if parse_version(record.trt_version) != parse_version(trt_version):
        out.append(f"it was built with TensorRT {record.trt_version}, this device has TensorRT {trt_version}")
    if compute_capability is not None and str(record.compute_capability) != str(compute_capability):
        out.append(f"it was built for a GPU of compute capability {record.compute_capability} "
                   f"(sm{record.compute_capability.replace('.', '')}), this GPU is {compute_capability}")
    onnx, here = source_onnx(record, engine_path)
    if here and record.onnx_sha256 and onnx.stat().st_mtime > engine_path.stat().st_mtime:
        if file_sha256(onnx) != record.onnx_sha256:
            out.append(f"its source {onnx.name} changed after the engine was built (sha256 "
                       f"{record.onnx_sha256[:12]}… recorded)")
    return out


def preflight(engine_path: os.PathLike[str] | str, trt_version: str, compute_capability: Optional[str],
              record: Optional[EngineRecord] = None) -> Optional[EngineRecord]:
    """Check the engine's build record against this device before deserialization; CapabilityError (exit 4) with
    the rebuild command on a mismatch. Returns the record (None when there is none to check)."""
    engine_path = Path(engine_path)
    record = record if record is not None else read_record(engine_path)
    if record is None:
        log.info("%s: no build record (%s); TensorRT itself will check the engine when loading it",
                 engine_path.name, record_path(engine_path).name)
        return None
    size = engine_path.stat().st_size
    if record.engine_bytes is not None and record.engine_bytes != size:
        log.warning("%s: its build record describes a %d-byte engine, this file has %d bytes (replaced after the "
                    "build?); the record is not used", engine_path.name, record.engine_bytes, size)
        return None
    problems = mismatches(record, engine_path, trt_version, compute_capability)
    if problems:
        raise CapabilityError(
            f"the TensorRT engine {engine_path} cannot run here: " + "; ".join(problems) + ". An engine runs only "
            "with the TensorRT version and GPU it was built for. Rebuild it on this device:\n  "
            + rebuild_command(record, engine_path)
        )
    return record
