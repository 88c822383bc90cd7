"""``--save DIR``: annotated images (same relative names) or annotated videos (``<name>.annotated.mp4``).

Every file is written aside and renamed into place (:mod:`edgecls.core.fileio`), so an interrupted run never
leaves a torn image or video under its final name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.errors import CapabilityError, InputError
from edgecls.core.fileio import atomic_output, publish, remove_quietly, temp_path
from edgecls.runtime.sources.frame import Frame
from edgecls.runtime.sources.opencv import import_cv2

_PIL_SAVE = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
}


class Saver:
    """Writes what ``--save DIR`` asks for (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--save {os.fspath(root)!r}: cannot create the folder: {e}") from e
        self.written: set = set()
        self.videos: Dict[str, Tuple[Any, Path, Path]] = {}  # source name → (writer, tmp path, final path)
        self.images = 0

    def save_image(self, frame: Frame, image: np.ndarray) -> Optional[str]:
        from PIL import Image

        rel = Path(frame.save_name or f"{frame.index:06d}.jpg")
        if rel.suffix.lower() not in _PIL_SAVE:
            rel = rel.with_suffix(".png")
        dest = self.root / rel
        if dest in self.written:
            dest = dest.with_name(f"{dest.stem}_{frame.index}{dest.suffix}")
        if frame.path is not None and dest.resolve() == Path(frame.path).resolve():
            return f"--save would overwrite the input {frame.path}; choose another folder"
        with atomic_output(dest) as tmp:
            Image.fromarray(image).save(tmp, format=_PIL_SAVE[dest.suffix.lower()])
        self.written.add(dest)
        self.images += 1
        return None

    def save_video_frame(self, frame: Frame, image_bgr: np.ndarray, fps: Optional[float]) -> None:
        entry = self.videos.get(frame.source)
        if entry is None:
            cv2 = import_cv2("--save for videos and cameras")
            name = frame.save_name or "video"
            final = self.root / f"{name}.annotated.mp4"
            tmp = temp_path(final, suffix=".mp4")  # hidden until renamed over ``final`` by close()
            h, w = image_bgr.shape[:2]
            writer = cv2.VideoWriter(os.fspath(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or 30.0), (w, h))
            if not writer.isOpened():
                remove_quietly(tmp)
                raise CapabilityError(f"--save: OpenCV cannot write {final} (codec mp4v unavailable in this build)")
            entry = self.videos[frame.source] = (writer, tmp, final)
        entry[0].write(image_bgr)

    def close(self) -> List[Path]:
        done = []
        for writer, tmp, final in self.videos.values():
            writer.release()
            if tmp.exists():
                publish(tmp, final)
                done.append(final)
        self.videos.clear()
        return done
