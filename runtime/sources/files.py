"""Image files (one, a folder, or a glob), decoded with Pillow in order by the caller's workers."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Sequence, Tuple, Union

from edgecls.runtime.preprocess import ImageReadError, open_for
from edgecls.runtime.sources.frame import Frame
from edgecls.runtime.spec import PreprocessSpec


class ImageSource:
    """Image files (one, a folder, or a glob), decoded in order by the caller's workers (see :func:`read_image`)."""

    live = False
    kind = "images"

    def __init__(self, name: str, items: Sequence[Tuple[Path, str]], loop: bool = False) -> None:
        self.name = name
        self.items = list(items)  # (path, save_name)
        self.loop = loop  # --loop: start again from the first image after the last (indices keep counting)

    def __len__(self) -> int:
        return len(self.items)

    def tasks(self) -> Iterator[Tuple[str, int, Path, str]]:
        i = 0
        while True:
            for path, save_name in self.items:
                yield self.name, i, path, save_name
                i += 1
            if not (self.loop and self.items):
                return

    def close(self) -> None:
        pass


def read_image(source: str, index: int, path: Union[Path, BinaryIO], save_name: str, max_pixels: Optional[int] = None,
               spec: Optional[PreprocessSpec] = None) -> Frame:
    """Decode one image file (the one loader: upright RGB, at most ``max_pixels``) into a Frame; an unreadable file
    gives a Frame with ``error``. With the model's ``spec``, in the form its preprocessing reads fastest
    (:func:`~edgecls.runtime.preprocess.open_for`: a BGR array or a PIL image, the same pixels). ``path`` may be
    a file object with a ``name`` (bytes fetched from a URI): the record's path and error texts use that name."""
    t0 = time.perf_counter()
    bgr = False
    try:
        image, bgr = open_for(path, spec, max_pixels)  # without a spec: open_rgb's PIL image
        error = None
    except ImageReadError as e:
        image, error = None, str(e)
    t1 = time.perf_counter()
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path.name
    return Frame(
        source=source, index=index, image=image, path=name, save_name=save_name,
        t_capture=t0, decode_ms=(t1 - t0) * 1e3, error=error, bgr=bgr,
    )
