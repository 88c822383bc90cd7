"""The checkpoint file: weights + ModelSpec + metrics + the data split, written atomically.

Format (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "edgecls.checkpoint/1", "spec": ModelSpec.to_dict(), "state_dict": {...}, "epoch": int,
     "metrics": {...json-able...}, "data": {"root": str, "classes": [...], "train": [[path, label], ...],
     "val": [[path, label], ...]}, "versions": {...}, "train_state": {...} or None}

``train_state`` (optimizer, scheduler, RNG, history) is only needed to ``--resume`` and only kept in ``last.pt``.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from edgecls import __version__
from edgecls.errors import InputError
from edgecls.fileio import file_sha256  # noqa: F401  (re-exported: checkpoint.file_sha256)
from edgecls.runtime.spec import ModelSpec, SpecError

CHECKPOINT_FORMAT = "edgecls.checkpoint/1"
PathLike = Union[str, os.PathLike]


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable or not an edgecls checkpoint."""


def versions() -> Dict[str, str]:
    import torchvision

    return {
        "edgecls": __version__,
        # str(): torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses to unpickle
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Checkpoint:
    spec: ModelSpec
    state_dict: Dict[str, torch.Tensor]
    epoch: int = 0
    metrics: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=versions)
    train_state: Optional[Dict[str, Any]] = None

    def items(self, split: str) -> List[Tuple[str, int]]:
        """``[(image path, label index), ...]`` of ``split`` ("train" or "val") as recorded at training time."""
        return [(str(p), int(y)) for p, y in self.data.get(split, [])]

    def build_model(self) -> torch.nn.Module:
        """The model in eval mode on CPU, weights loaded strictly."""
        from edgecls.train.models import build_model

        model = build_model(self.spec.arch, self.spec.num_classes, weights="none")
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec.to_dict(),
            "state_dict": self.state_dict,
            "epoch": int(self.epoch),
            "metrics": self.metrics,
            "data": self.data,
            "versions": self.versions,
            "train_state": self.train_state,
        }


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one
    (:func:`edgecls.fileio.atomic_output`: the temp file gets the usual permissions and is removed on error).
    """
    from edgecls.fileio import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def save_checkpoint(ckpt: Checkpoint, path: PathLike) -> None:
    atomic_save(ckpt.to_dict(), path)


def load_checkpoint(path: PathLike, map_location: str = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a best.pt/last.pt from `edgecls train`)")
    try:
        d = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        fmt = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"{path} is not an edgecls checkpoint (format {fmt!r}, expected {CHECKPOINT_FORMAT!r})")
    try:
        spec = ModelSpec.from_dict(d["spec"])
    except (SpecError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid spec: {e}") from e
    return Checkpoint(
        spec=spec,
        state_dict=d["state_dict"],
        epoch=int(d.get("epoch", 0)),
        metrics=d.get("metrics") or {},
        data=d.get("data") or {},
        versions=d.get("versions") or {},
        train_state=d.get("train_state"),
    )
