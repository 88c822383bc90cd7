"""The ModelSpec that travels with each artifact: ONNX ``metadata_props`` and the ``<stem>.json`` sidecar.

Both carry the same :class:`~edgecls.runtime.spec.ModelSpec` (classes, positive class, input name/shape,
preprocessing, temperature, threshold, precision, source checkpoint sha256, edgecls version); the runtime refuses
a model that has neither (:func:`edgecls.runtime.model_io.load_model_spec`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Union

from edgecls.core import fileio as atomic
from edgecls.runtime.spec import METADATA_KEY, ModelSpec, SpecError, sidecar_path

if TYPE_CHECKING:  # pragma: no cover
    import onnx

PathLike = Union[str, "os.PathLike[str]"]
SOURCE_KEY = "edgecls.source_sha256"
PRECISION_KEY = "edgecls.precision"


def artifact_spec(spec: ModelSpec, precision: str, source_sha256: Optional[str]) -> ModelSpec:
    """The checkpoint's spec, stamped with the artifact's precision and the checkpoint's sha256."""
    return spec.replace(precision=precision, source_sha256=source_sha256)


def embed_spec(model: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    """Set ``edgecls.spec`` (and the source sha256 / precision, for a quick look) in ``model.metadata_props``."""
    entries: Dict[str, str] = {p.key: p.value for p in model.metadata_props}
    entries[METADATA_KEY] = spec.to_json(indent=None)
    entries[PRECISION_KEY] = spec.precision
    if spec.source_sha256:
        entries[SOURCE_KEY] = spec.source_sha256
    else:
        entries.pop(SOURCE_KEY, None)
    del model.metadata_props[:]
    for k in sorted(entries):
        p = model.metadata_props.add()
        p.key, p.value = k, entries[k]
    model.producer_name = "edgecls"
    from edgecls import __version__

    model.producer_version = __version__
    model.doc_string = f"edgecls {spec.arch} classifier ({spec.precision}), classes {list(spec.classes)}"
    return model


def spec_of_model(model: onnx.ModelProto) -> ModelSpec:
    """The spec embedded in an ONNX model; SpecError naming the missing key."""
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return ModelSpec.from_json(p.value)
    keys = sorted(p.key for p in model.metadata_props)
    raise SpecError(f"ONNX model has no {METADATA_KEY!r} metadata (keys present: {keys or 'none'})")


def write_sidecar(model_path: PathLike, spec: ModelSpec) -> Path:
    return atomic.write_text(sidecar_path(model_path), spec.to_json() + "\n")


def read_sidecar(model_path: PathLike) -> ModelSpec:
    side = sidecar_path(model_path)
    if not side.is_file():
        raise SpecError(f"sidecar {os.fspath(side)!r} does not exist")
    return ModelSpec.from_json(side.read_text(encoding="utf-8"))
