"""``edgecls calibrate MODEL --data DIR``: re-fit the confidence of a checkpoint (``.pt``), an ONNX model (FP32,
FP16, INT8) or a TensorRT engine from a labelled folder, without retraining and without touching its weights.

Each artifact is fitted on its *own* outputs for the folder's images (an INT8 model's on its INT8 logits), so
re-calibrate each artifact you deploy. What is written, atomically (a crash leaves the old file or the new one):
``.pt``: the checkpoint with its new spec; ``.onnx``: the ``edgecls.spec`` metadata *and* the sidecar
``<stem>.json`` (the graph and initializers as they were); ``.engine``/``.plan``: the sidecar (engines carry no
metadata). ``--out`` writes a copy instead.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

from edgecls.core.errors import InputError
from edgecls.runtime.confidence.fitted import ConfidenceSettings
from edgecls.runtime.confidence.recalibrate import (
    Recalibration,
    folder_outputs,
    labelled_folder,
    recalibrate_spec,
)

log = logging.getLogger(__name__)


def _write_onnx(path: Path, out: Path, spec) -> None:
    import onnx

    from edgecls.core.fileio import atomic_output
    from edgecls.export.metadata import embed_spec, write_sidecar

    model = onnx.load(os.fspath(path))
    embed_spec(model, spec)
    with atomic_output(out) as tmp:
        onnx.save(model, os.fspath(tmp))
    write_sidecar(out, spec)


def recalibrate_artifact(path: os.PathLike, data: os.PathLike, settings: Optional[ConfidenceSettings] = None,
                         out: Optional[os.PathLike] = None, device: str = "cpu",
                         threads: Optional[int] = None) -> Recalibration:
    """Re-fit ``path``'s confidence on the labelled folder ``data`` and write it (to ``out``, default in place)."""
    from edgecls.runtime.model_io import load_model_spec, model_kind

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{os.fspath(p)!r} does not exist (a best.pt, model.onnx or engine)")
    if p.suffix == ".pt":
        from edgecls.reference.recalibrate import recalibrate_checkpoint

        return recalibrate_checkpoint(p, data, settings, out, device, threads)
    from edgecls.export.metadata import write_sidecar
    from edgecls.runtime.backends import load_backend

    spec = load_model_spec(p)
    items = labelled_folder(data, spec.classes)
    with load_backend(p, device=device, threads=threads, allow_fallback=False, spec=spec) as be:
        z = folder_outputs(be, items, spec)
    source = f"labelled folder {os.fspath(data)} ({len(items)} images); outputs of {p.name} ({spec.precision})"
    r = recalibrate_spec(spec, z, [y for _, y in items], source, settings,
                         ids=[os.path.realpath(p) for p, _ in items])
    dest = Path(out) if out is not None else p
    if model_kind(p) == "onnx":
        _write_onnx(p, dest, r.spec)
    else:
        if dest != p:
            from edgecls.core.fileio import copy_file

            copy_file(p, dest)
        write_sidecar(dest, r.spec)
    return r


def calibrate_command(
    models: List[str],
    data: str,
    target_precision: Optional[float] = None,
    delta: Optional[float] = None,
    coverage: Optional[float] = None,
    best_promise: bool = False,
    out: Optional[str] = None,
    device: str = "cpu",
    threads: Optional[int] = None,
) -> List[Recalibration]:
    """The command's library half: each model re-fitted on its own outputs; settings not given keep its own."""
    if out is not None and len(models) != 1:
        raise InputError("--out names one output: give one MODEL with it")
    results = []
    for m in models:
        settings = None
        if any(v is not None for v in (target_precision, delta, coverage)) or best_promise:
            settings = _settings_for(m, target_precision, delta, coverage, best_promise)
        results.append(recalibrate_artifact(m, data, settings, out, device, threads))
        from edgecls.export.drift_reference import restate_reference

        restate_reference(out or m, data, device, threads)  # the promise is now stated on these images
    return results


def _settings_for(model: str, target_precision, delta, coverage, best_promise) -> ConfidenceSettings:
    """The artifact's own fitted settings with the options given on the command line replacing theirs."""
    import dataclasses

    from edgecls.runtime.model_io import load_model_spec

    if model.endswith(".pt"):
        from edgecls.reference.checkpoint import load_checkpoint

        spec = load_checkpoint(model).spec
    else:
        spec = load_model_spec(model)
    base = spec.confidence.settings() if spec.confidence is not None else ConfidenceSettings()
    changes = {k: v for k, v in (("target_precision", target_precision), ("delta", delta), ("coverage", coverage))
               if v is not None}
    if best_promise:
        changes["best"] = True
    return dataclasses.replace(base, **changes)
