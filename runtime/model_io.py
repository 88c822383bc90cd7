"""Find the :class:`ModelSpec` that travels with an exported model, without torch and without the ``onnx`` package.

- ``model.onnx``: the spec is the ONNX ``metadata_props`` entry ``edgecls.spec`` (read through onnxruntime's
  ``session.get_modelmeta().custom_metadata_map``); the sidecar ``model.json`` is used when the ONNX has none.
- ``model.engine`` / ``model.plan`` (TensorRT): engines carry no metadata, so the sidecar ``model.json`` is needed.

A model without either is refused with a message saying what is missing and how to get it (``edgecls export``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Union

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.spec import METADATA_KEY, ModelSpec, SpecError, sidecar_path

log = logging.getLogger(__name__)

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MODEL_SUFFIXES = ONNX_SUFFIXES + ENGINE_SUFFIXES

PathLike = Union[str, "os.PathLike[str]"]


def model_kind(path: PathLike) -> str:
    """``"onnx"`` or ``"engine"`` from the file suffix; InputError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise InputError(
        f"model {os.fspath(path)!r} has suffix {suffix or '(none)'!r}; expected an exported model: "
        f"{', '.join(MODEL_SUFFIXES)} (make one with `edgecls export`)"
    )


def check_model_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"model {os.fspath(path)!r} does not exist")
    if not p.is_file():
        raise InputError(f"model {os.fspath(path)!r} is not a file")
    model_kind(p)
    return p


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise CapabilityError(
            "onnxruntime is not installed; install the runtime with `pip install 'edgecls[cpu]'` "
            "(or 'edgecls[gpu]' for onnxruntime-gpu; on a Jetson use the onnxruntime-gpu wheel for your JetPack)"
        ) from e
    return onnxruntime


def read_onnx_metadata(path: PathLike) -> Dict[str, str]:
    """The ONNX model's ``metadata_props`` as a dict, read with onnxruntime (a CPU session, no optimization)."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidGraph, InvalidProtobuf, ...)
        raise InputError(f"onnxruntime cannot load {os.fspath(path)!r}: {e}") from e
    return metadata_of_session(sess)


def metadata_of_session(session) -> Dict[str, str]:
    meta = session.get_modelmeta()
    return dict(getattr(meta, "custom_metadata_map", None) or {})


def _spec_from_json_text(text: str, where: str) -> ModelSpec:
    try:
        return ModelSpec.from_json(text)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from e


def _read_sidecar(path: PathLike) -> Optional[ModelSpec]:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        text = side.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the model's sidecar {os.fspath(side)!r}: {e}") from e
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"sidecar {os.fspath(side)!r} is not valid JSON: {e}") from e
    return _spec_from_json_text(text, f"sidecar {os.fspath(side)!r}")


def _flat(d: object, prefix: str = "") -> Dict[str, object]:
    """Nested mappings as dotted keys (``confidence.conformal.scores``): the leaves a difference can name."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: Dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(v: object, limit: int = 60) -> str:
    """A value for a log line: lists by their length, long text cut (never a dump of calibration scores)."""
    if isinstance(v, (list, tuple)) and len(v) > 4:
        return f"[{len(v)} values]"
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _differences(a: ModelSpec, b: ModelSpec, limit: int = 6) -> str:
    """Where ``a`` and ``b`` differ, one short phrase per leaf (``key: a's vs b's``), at most ``limit`` of them."""
    da, db = _flat(a.to_dict()), _flat(b.to_dict())
    keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
    parts = [f"{k}: {_short(da.get(k))} vs {_short(db.get(k))}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


def load_model_spec(path: PathLike, metadata: Optional[Dict[str, str]] = None) -> ModelSpec:
    """The :class:`ModelSpec` of an exported model (ONNX metadata, else the sidecar ``<stem>.json``).

    ``metadata``: the ONNX ``custom_metadata_map`` when the caller already has a session (saves a load).
    Raises :class:`SpecError` (exit 2) when the model has no spec, naming what is missing and how to fix it.
    """
    p = check_model_file(path)
    kind = model_kind(p)
    side = sidecar_path(p)
    if kind == "onnx":
        meta = read_onnx_metadata(p) if metadata is None else metadata
        text = meta.get(METADATA_KEY)
        if text is not None:
            return _embedded_or_sidecar(p, text)
        sidecar_spec = _read_sidecar(p)
        if sidecar_spec is not None:
            log.info("%s has no %r metadata; using the sidecar %s", p, METADATA_KEY, side)
            return sidecar_spec
        raise SpecError(
            f"model {os.fspath(p)!r} carries no edgecls spec: its ONNX metadata_props have no {METADATA_KEY!r} entry "
            f"(keys present: {sorted(meta) or 'none'}) and there is no sidecar {os.fspath(side)!r}. The runtime needs "
            "the classes, preprocessing, temperature and threshold the model was trained with: re-export it with "
            "`edgecls export CHECKPOINT`, or put the export's sidecar JSON beside it"
        )
    spec = _read_sidecar(p)
    if spec is None:
        raise SpecError(
            f"TensorRT engine {os.fspath(p)!r} needs its sidecar {os.fspath(side)!r} (engines carry no metadata): "
            "it holds the classes, preprocessing, temperature and threshold. Build engines with `edgecls build-engine`, "
            "which writes it, or copy the ONNX model's sidecar to that name"
        )
    return spec


def _embedded_or_sidecar(p: Path, text: str) -> ModelSpec:
    """The spec embedded in the ONNX, checked against the sidecar: a valid one wins over a broken one (with a
    warning), the embedded one wins when both are valid but disagree; both broken: the embedded one's error."""
    side = sidecar_path(p)
    try:
        spec = _spec_from_json_text(text, f"ONNX metadata {METADATA_KEY!r} of {os.fspath(p)!r}")
    except SpecError as embedded_error:
        try:
            sidecar_spec = _read_sidecar(p)
        except (SpecError, InputError):
            sidecar_spec = None
        if sidecar_spec is None:
            raise
        log.warning("the spec embedded in %s is broken (%s); using the sidecar %s", p, embedded_error, side)
        return sidecar_spec
    try:
        sidecar_spec = _read_sidecar(p)
    except (SpecError, InputError) as e:
        log.warning("ignoring the broken sidecar %s (%s); using the valid spec embedded in %s", side, e, p)
        return spec
    if sidecar_spec is not None and sidecar_spec != spec:
        log.warning(
            "the sidecar %s disagrees with the spec embedded in %s (%s); using the embedded one",
            side, p, _differences(spec, sidecar_spec),
        )
    return spec
