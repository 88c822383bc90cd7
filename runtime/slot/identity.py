"""Which model answered: name, version and the sha256 of the model file, computed once per load.

A model path is a file (``model.onnx``, ``model.engine``) or a model folder of a Triton-style repository
(``<repo>/<name>/<version>/model.onnx``, as ``edgecls export --triton`` writes): a folder resolves to its newest
version (the highest integer sub-folder holding a model file), and a file inside such a version folder takes its
name and version from the folders. Any other file is named after its stem and versioned by load count (1, 2, ...).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgecls.core.errors import InputError

MODEL_FILES = ("model.onnx", "model.plan", "model.engine")
SHORT = 12  # hex digits of the sha256 shown in records and responses


@dataclass(frozen=True)
class ModelIdentity:
    """The model that produced a record: ``name``, ``version`` and the sha256 of its file (full)."""

    name: str
    version: str
    sha256: str
    path: str

    @property
    def short(self) -> str:
        return self.sha256[:SHORT]

    def to_dict(self) -> Dict[str, str]:
        """What a record or a response carries: ``{"name", "version", "sha256"}`` (sha256: its first 12 digits)."""
        return {"name": self.name, "version": self.version, "sha256": self.short}

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.short})"


def versions_of(folder: Path) -> List[Tuple[int, Path]]:
    """``(version, model file)`` of each integer sub-folder of a model folder holding a model file, oldest first."""
    out = []
    for d in folder.iterdir():
        if not (d.is_dir() and d.name.isdigit()):
            continue
        for f in MODEL_FILES:
            if (d / f).is_file():
                out.append((int(d.name), d / f))
                break
    return sorted(out)


def resolve_model(path: os.PathLike | str, version: Optional[str] = None) -> Tuple[Path, str, Optional[str]]:
    """``(model file, name, version or None)`` for a model file or a model folder (newest version, or ``version``).

    Raises InputError naming what was looked for when a folder has no (such) version."""
    p = Path(path)
    if p.is_dir():
        found = versions_of(p)
        if version is not None:
            found = [(v, f) for v, f in found if str(v) == str(version)]
        if not found:
            what = f"version {version}" if version is not None else "version folder"
            raise InputError(f"model folder {os.fspath(p)!r} has no {what} holding {' or '.join(MODEL_FILES)} "
                             "(layout: <repo>/<name>/<version>/model.onnx)")
        v, f = found[-1]
        return f, p.name, str(v)
    real = Path(os.path.realpath(p))
    if real.parent.name.isdigit() and real.name in MODEL_FILES:
        return p, real.parent.parent.name, real.parent.name
    return p, p.stem, None


def identify(path: os.PathLike | str, name: str, version: str) -> ModelIdentity:
    """The identity of the model file at ``path`` (reads it once for the sha256)."""
    from edgecls.core.fileio import file_sha256

    return ModelIdentity(name=name, version=str(version), sha256=file_sha256(path), path=os.fspath(path))
