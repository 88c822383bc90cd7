"""SOURCE arguments → sources: a file, a folder, a glob, a video, ``--camera N``, ``csi://N``, ``v4l2://``, a stream,
``gst://PIPELINE``."""
from __future__ import annotations

import glob as globmod
import logging
import os
import re
from pathlib import Path
from typing import Sequence

from edgecls.core.errors import InputError
from edgecls.core.images import IMAGE_EXTENSIONS, is_image_file, list_images
from edgecls.runtime.sources.cameras import (
    STREAM_SCHEMES,
    camera_source,
    csi_source,
    gst_source,
    stream_source,
    v4l2_source,
)
from edgecls.runtime.sources.files import ImageSource
from edgecls.runtime.sources.options import SourceOptions
from edgecls.runtime.sources.video import VIDEO_EXTS, VideoFileSource, realtime_source

log = logging.getLogger(__name__)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def parse_source(arg: str, options: SourceOptions = SourceOptions()):
    """One SOURCE argument → an :class:`ImageSource`, :class:`VideoFileSource` or (unstarted) :class:`LiveSource`."""
    text = str(arg)
    low = text.lower()
    if low.startswith("gst://"):
        return gst_source(text, options)
    if low.startswith("csi://"):
        return csi_source(text, options)
    if low.startswith("v4l2://"):
        return v4l2_source(text, options)
    scheme = low.split("://", 1)[0] if "://" in low else ""
    if scheme in STREAM_SCHEMES:
        return stream_source(text, options)
    if scheme:
        raise InputError(
            f"source {text!r}: unknown scheme {scheme!r}; valid: csi://N, v4l2:///dev/videoN, "
            f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, gst://PIPELINE, a file, a folder or a glob"
        )
    if re.fullmatch(r"/dev/video\d+", text):
        return v4l2_source(text, options)
    p = Path(text)
    if p.is_dir():
        images = list_images(p)
        if not images:
            raise InputError(f"folder {text!r} holds no images (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        base = p.resolve().name or "images"
        return ImageSource(text, [(f, (Path(base) / f.relative_to(p)).as_posix()) for f in images], loop=options.loop)
    if p.is_file():
        if p.suffix.lower() in VIDEO_EXTS:
            return _video(p, text, options)
        return ImageSource(text, [(p, p.name)], loop=options.loop)
    if _is_glob(text):
        matches = sorted(Path(m) for m in globmod.glob(text, recursive=True))
        files = [m for m in matches if m.is_file()]
        videos = [m for m in files if m.suffix.lower() in VIDEO_EXTS]
        images = [m for m in files if is_image_file(m)]
        if videos and not images:
            return [_video(v, os.fspath(v), options) for v in videos]
        if not images:
            raise InputError(f"the glob {text!r} matches no image or video files")
        if videos:
            log.warning("the glob %r matches videos too; give them separately (using its %d images)", text, len(images))
        return ImageSource(text, [(m, m.name) for m in images], loop=options.loop)
    raise InputError(f"source {text!r} does not exist (valid: a file, a folder, a glob, --camera N, csi://N, rtsp://…, "
                     "gst://PIPELINE)")


def _video(path: Path, name: str, options: SourceOptions):
    """A video file: read in order (every frame), or with ``realtime`` as a live source at its frame rate."""
    return realtime_source(path, name, options) if options.realtime else VideoFileSource(path, name=name,
                                                                                        loop=options.loop)


def parse_sources(args: Sequence[str], cameras: Sequence[int] = (), options: SourceOptions = SourceOptions()) -> list:
    """All SOURCE arguments and ``--camera`` indices, in the order given (cameras last)."""
    out: list = []
    for a in args:
        s = parse_source(a, options)
        out.extend(s if isinstance(s, list) else [s])
    for c in cameras:
        out.append(camera_source(int(c), options))
    if not out:
        raise InputError("no source: give image files, folders, globs, videos, streams, csi://N or --camera N")
    check_unique_ids(out)
    if options.fps_cap:
        for s in out:
            if s.live:
                s.fps_cap = options.fps_cap
    return out


def check_unique_ids(sources: Sequence) -> None:
    """Live sources are told apart by their id (records, metrics, the view): one given twice is an InputError."""
    seen = set()
    for s in sources:
        if getattr(s, "live", False):
            if s.name in seen:
                raise InputError(f"source id {s.name!r} is given twice; give each camera or stream once (a sources "
                                 "file line 'id=NAME SOURCE' names a second view of the same stream)")
            seen.add(s.name)
