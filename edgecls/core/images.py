"""The one image lister: same rules for train, calibration, eval, bench and run.

Rules: recursive; hidden files and folders (leading ``.``) skipped; the extension list below, case-insensitive;
symbolic links followed once — a folder already visited (a link loop such as ``ln -s .. up``) is skipped and a
file reached twice (``ln -s . self``) is listed once; sorted by path relative to the root.
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
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
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
