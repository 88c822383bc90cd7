"""Where a run's outputs go: the one run-folder numbering scheme (train's runs/train/<name>, eval's runs/eval/<name>).

A run never writes into an existing folder by accident: ``project/name`` when it is free, else the first free one
of ``name2``, ``name3`` ...; an explicit ``--out`` that already holds files needs ``--exist-ok``.
"""
from __future__ import annotations

from pathlib import Path

from edgecls.core.errors import InputError
from edgecls.train.config import TrainConfig


def free_run_dir(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name2``, ``name3`` ... : the first one that does not exist yet."""
    parent = Path(parent)
    cand = parent / name
    i = 2
    while cand.exists():
        cand = parent / f"{name}{i}"
        i += 1
    return cand


def choose_run_dir(config: TrainConfig) -> Path:
    """The run folder: never an existing non-empty one unless ``exist_ok``."""
    if config.out:
        out = Path(config.out).expanduser()
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not config.exist_ok:
            raise InputError(
                f"--out {out} already holds a run; pass --exist-ok to write into it, --resume {out} to continue "
                f"it, or choose another --out"
            )
        return out
    project = Path(config.project).expanduser()
    if config.exist_ok:
        return project / config.name
    return free_run_dir(project, config.name)
