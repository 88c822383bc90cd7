"""Is this machine ready for a given model? Its spec, for an engine the build-record preflight (TensorRT version,
GPU, stale source ONNX: with the exact rebuild command), then an actual load on the requested device."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgecls.core.devices import parse_device
from edgecls.core.errors import EdgeclsError
from edgecls.runtime.backends.engine_record import mismatches, read_record, rebuild_command, record_path
from edgecls.runtime.doctor.checks import Finding
from edgecls.runtime.doctor.probes import Facts
from edgecls.runtime.model_io import check_model_file, model_kind


def model_needs(path: Optional[str]) -> Optional[str]:
    """``"onnx"`` or ``"engine"`` by suffix (None without a model or for an unknown suffix: reported later)."""
    if path is None:
        return None
    try:
        return model_kind(path)
    except EdgeclsError:
        return None


def _missing(facts: Facts, kind: str) -> List[str]:
    """What the model needs and does not have (each already a ``fail`` finding of :func:`checks.diagnose`)."""
    if kind == "onnx":
        return [] if facts.module("onnxruntime").get("ok") else ["onnxruntime"]
    return ([] if facts.module("tensorrt").get("ok") else ["tensorrt"]) + (
        [] if facts.gpu.get("cuda_binding") else ["a working CUDA runtime and GPU"])


def _preflight(facts: Facts, path: Path, info: Dict[str, Any]) -> List[Finding]:
    record = read_record(path)
    if record is None:
        return [Finding("info", "model", f"no build record ({record_path(path).name}) beside the engine: it cannot be "
                        "checked before loading (engines from `edgecls build-engine` have one)")]
    info["build_record"] = record.to_dict()
    problems = mismatches(record, path, facts.module("tensorrt").get("version", "?"),
                          facts.gpu.get("compute_capability"))
    if problems:
        return [Finding("fail", "model", f"{path.name} cannot run here: " + "; ".join(problems),
                        rebuild_command(record, path))]
    return [Finding("ok", "model", f"build record matches: TensorRT {record.trt_version}, sm"
                    f"{record.compute_capability.replace('.', '')}, batch {'/'.join(map(str, record.batch))}, "
                    f"{record.device}")]


def check_model(facts: Facts, model: str, device: str = "auto", load: bool = True
                ) -> Tuple[List[Finding], Dict[str, Any]]:
    """Findings about ``model`` on ``device`` and what was learned (for the JSON report)."""
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.model_io import load_model_spec

    info: Dict[str, Any] = {"path": os.fspath(model), "device": device}
    try:
        path = check_model_file(model)
        parse_device(device)
    except EdgeclsError as e:
        return [Finding("fail", "model", str(e))], info
    kind = info["kind"] = model_kind(path)
    missing = _missing(facts, kind)
    if missing:
        return [Finding("info", "model", f"{path.name} not checked further: it needs {' and '.join(missing)} "
                        "(above)")], info
    out = _preflight(facts, path, info) if kind == "engine" else []
    if any(f.level == "fail" for f in out):
        return out, info
    try:
        spec = load_model_spec(path)
    except EdgeclsError as e:
        return out + [Finding("fail", "model", f"no usable spec for {path.name}: {e}")], info
    info["spec"] = {"arch": spec.arch, "classes": list(spec.classes), "precision": spec.precision,
                    "positive": spec.positive}
    if not load:
        return out + [Finding("ok", "model", f"{path.name}: {spec.arch}, {len(spec.classes)} classes, "
                              f"{spec.precision}")], info
    try:
        with load_backend(path, device=device, spec=spec) as backend:
            info["backend"] = backend.describe()
            fallback = getattr(backend, "fallback", None)
    except EdgeclsError as e:
        return out + [Finding("fail", "model", f"{path.name} does not load with --device {device}: {e}")], info
    out.append(Finding("ok", "model", f"{path.name} ({spec.arch}, {len(spec.classes)} classes, {spec.precision}) "
                       f"loads on {info['backend']}"))
    if fallback:
        out.append(Finding("warn", "model", f"--device {device} fell back: {fallback}"))
    return out, info
