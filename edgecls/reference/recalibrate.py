"""Re-fit a checkpoint's confidence from a labelled folder, its weights untouched (``edgecls calibrate best.pt``,
``edgecls train --calib-data``): the PyTorch model's own outputs on the folder's images, through
:func:`edgecls.runtime.confidence.recalibrate.recalibrate_spec`; written atomically (the old file or the new one).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Optional

from edgecls.runtime.confidence.fitted import ConfidenceSettings
from edgecls.runtime.confidence.recalibrate import (
    Recalibration,
    folder_outputs,
    labelled_folder,
    recalibrate_spec,
)

log = logging.getLogger(__name__)


def recalibrate_checkpoint(path: os.PathLike, data: os.PathLike, settings: Optional[ConfidenceSettings] = None,
                           out: Optional[os.PathLike] = None, device: str = "cpu",
                           threads: Optional[int] = None, combine: bool = True) -> Recalibration:
    """``path`` (a ``best.pt``/``last.pt``) with its confidence re-fitted on the labelled folder ``data`` (with
    ``combine``: together with the labelled scores it was certified on), saved to ``out`` (default: in place).
    The state dict is written back as it was read."""
    from edgecls.reference.checkpoint import load_checkpoint, save_checkpoint
    from edgecls.reference.torch_backend import TorchBackend

    ckpt = load_checkpoint(path)
    items = labelled_folder(data, ckpt.spec.classes)
    with TorchBackend(ckpt, device=device, threads=threads) as be:
        z = folder_outputs(be, items, ckpt.spec)
    source = f"labelled folder {os.fspath(data)} ({len(items)} images); outputs of {Path(path).name} (PyTorch)"
    r = recalibrate_spec(ckpt.spec, z, [y for _, y in items], source, settings,
                         ids=[os.path.realpath(p) for p, _ in items], combine=combine)
    metrics = dict(ckpt.metrics)
    metrics["recalibrated"] = {"data": os.fspath(data), "images": len(items), "statement": r.statement,
                               "temperature": r.spec.temperature, "before": r.before}
    data_rec = dict(ckpt.data)
    data_rec["calib_folder"] = [p for p, _ in items]
    save_checkpoint(dataclasses.replace(ckpt, spec=r.spec, metrics=metrics, data=data_rec), out or path)
    return r
