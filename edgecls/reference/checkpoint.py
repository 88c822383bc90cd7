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
from edgecls.core.errors import InputError
from edgecls.core.fileio import atomic_output
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
        return recorded_pairs(self.data, split)

    def build_model(self) -> torch.nn.Module:
        """The model in eval mode on CPU, weights loaded strictly."""
        from edgecls.reference.models import build_model

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


def save_checkpoint(ckpt: Checkpoint, path: PathLike) -> None:
    """``torch.save`` through :func:`edgecls.core.fileio.atomic_output`: a crash leaves the old file or the new one."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(ckpt.to_dict(), f)


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


# ------------------------------------------------------------------------------------ the recorded data split


def recorded_pairs(data: Dict[str, Any], split: str) -> List[Tuple[str, int]]:
    """``[(path as recorded, label), ...]`` of ``split`` ("train"/"val") in a checkpoint's ``data``; [] if none."""
    return [(str(p), int(y)) for p, y in data.get(split, [])]


def resolve_item_path(p: str, root: Optional[str]) -> Path:
    """A path recorded in a checkpoint: absolute as is, else relative to the recorded data root, else to cwd."""
    path = Path(p)
    if path.is_absolute() or root is None:
        return path
    candidate = Path(root) / path
    return candidate if candidate.exists() or not path.exists() else path


def recorded_items(data: Dict[str, Any], split: str, remedy: str) -> List[Tuple[Path, int]]:
    """``[(path, label)]`` the checkpoint recorded for ``split`` ("train"/"val"), every file present.

    InputError when there are none or some are missing; ``remedy`` says what to pass instead.
    """
    what = {"train": "training", "val": "validation"}[split]
    items = [(resolve_item_path(p, data.get("root")), y) for p, y in recorded_pairs(data, split)]
    if not items:
        raise InputError(f"the checkpoint records no {what} images; {remedy}")
    missing = [p for p, _ in items if not p.is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} of the {len(items)} {what} images recorded in the checkpoint are missing "
            f"(e.g. {os.fspath(missing[0])!r}); {remedy}"
        )
    return items


def recorded_split(data: Dict[str, Any]) -> Dict[str, Any]:
    """The whole recorded split, checked: ``root``, ``layout``, ``classes``, ``train``, ``val`` (path, label pairs
    as recorded), ``skipped`` ((path, reason) pairs), ``val_fraction``, ``seed`` — the fields of train's
    ``DataSplit`` (``--resume`` rebuilds it from them). CheckpointError when a required entry is missing."""
    try:
        if "train" not in data or "val" not in data:
            raise KeyError("train" if "train" not in data else "val")
        return {
            "root": str(data["root"]),
            "layout": str(data.get("layout", "train/val")),
            "classes": tuple(data["classes"]),
            "train": tuple(recorded_pairs(data, "train")),
            "val": tuple(recorded_pairs(data, "val")),
            "skipped": tuple((str(p), str(r)) for p, r in data.get("skipped", [])),
            "val_fraction": data.get("val_fraction"),
            "seed": data.get("seed"),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's recorded data split is incomplete ({type(e).__name__}: {e})") from e
