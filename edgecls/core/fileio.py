"""File helpers shared by every stage (torch-free).

Atomic writes: a temp file in the same folder, fsync, rename; a crash leaves the old file or the new one.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Union

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """What ``open(..., "w")`` would give (0o666 minus the umask); mkstemp's 0o600 would hide artifacts."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_path(path: PathLike, suffix: str = "") -> Path:
    """A fresh, unused name next to ``path`` (hidden, ends with ``suffix``), for writing before a rename.

    ``suffix`` lets a temp file keep a meaningful ending (``.onnx``) while it is checked before publishing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
    except (AttributeError, OSError):  # pragma: no cover - Windows
        pass
    os.close(fd)
    return Path(tmp)


_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp[^/]*$")  # what temp_path() creates (mkstemp's 8 random chars)


def remove_orphan_temps(folder: PathLike) -> List[Path]:
    """Delete the temp files :func:`temp_path` left in ``folder`` when a process was killed (kill -9, power loss)
    between writing and renaming — a checkpoint's is tens of MB. Call it only on a folder this process owns, before
    it writes there; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if _TEMP_NAME.match(e.name) and e.is_file(follow_symlinks=False):
            remove_quietly(e.path)
            removed.append(Path(e.path))
    return removed


def publish(tmp: PathLike, path: PathLike) -> Path:
    """fsync ``tmp`` and rename it over ``path`` (atomic on one filesystem)."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def remove_quietly(path: PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write tmp`` → renamed over ``p`` on success, removed on any error."""
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def copy_file(src: PathLike, dst: PathLike) -> Path:
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a base dependency
        np = None
    if np is not None:
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
    if isinstance(o, Path):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")
