"""The one image lister: same rules for train, calibration, eval, bench and run.

Rules: recursive; hidden files and folders (leading ``.``) skipped; the extension list below, case-insensitive;
symbolic links followed once — a link to the folder it sits in or to one of its ancestors (``ln -s . self``,
``ln -s .. up``: a loop) is skipped with a warning, a folder already visited through another link is skipped, and a
file reached twice is listed once; sorted by path relative to the root. :func:`class_folders` applies the same
rules to the class folders of a dataset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Set, Tuple, Union

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")


def is_image_file(path: PathLike) -> bool:
    """True for a visible file name with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _identity(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _loop_link(parent_real: str, child: str) -> bool:
    """True when ``child`` is a symbolic link to ``parent_real`` (the real path of the folder holding it) or to an
    ancestor of it: following it would walk the same tree again."""
    if not os.path.islink(child):
        return False
    target = os.path.realpath(child)
    return parent_real == target or parent_real.startswith(target.rstrip(os.sep) + os.sep)


def class_folders(root: PathLike) -> List[Path]:
    """The visible sub-folders of ``root`` sorted by name (a dataset's classes), without symbolic-link loops."""
    root_path = Path(root)
    real = os.path.realpath(root_path)
    out = []
    for d in sorted(root_path.iterdir(), key=lambda p: p.name):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if _loop_link(real, os.fspath(d)):
            log.warning("skipping %s: a symbolic link back to %s or above it (a loop)", d, root_path)
            continue
        out.append(d)
    return out


def list_images(root: PathLike) -> List[Path]:
    """Every image file under ``root`` (see the module's rules), sorted by relative path."""
    root_path = Path(root)
    seen_dirs: Set[Tuple[int, int]] = set()
    seen_files: Set[Tuple[int, int]] = set()
    found: List[Path] = []
    for dirpath, dirnames, filenames in os.walk(root_path, followlinks=True):
        try:
            ident = _identity(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if ident in seen_dirs:  # reached again through a link: a loop or a second path to the same folder
            log.warning("skipping %s: folder already listed (symbolic link loop or duplicate link)", dirpath)
            dirnames[:] = []
            continue
        seen_dirs.add(ident)
        real = os.path.realpath(dirpath)
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            if _loop_link(real, os.path.join(dirpath, d)):
                log.warning("skipping %s: a symbolic link back to %s or above it (a loop)",
                            os.path.join(dirpath, d), dirpath)
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if not is_image_file(name):
                continue
            path = os.path.join(dirpath, name)
            try:
                fid = _identity(path)
            except OSError:  # a dangling link: not an image we can read; list it so the caller reports it
                found.append(Path(path))
                continue
            if fid in seen_files:
                continue
            seen_files.add(fid)
            found.append(Path(path))
    return sorted(found, key=lambda p: p.relative_to(root_path).as_posix())
