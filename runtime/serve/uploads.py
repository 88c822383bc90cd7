"""Uploads: the body read within ``--max-bytes``, the image out of a multipart form, decoding within ``--max-pixels``.

Every problem with what a client sent is an :class:`UploadError` carrying the HTTP status (400, 413, 415) and a
message naming what was wrong and what is accepted; the app turns it into a JSON 4xx. Decoding reads the header
first (size check before any pixel is decompressed), then decodes as ``edgecls run`` does (Pillow, RGB).
"""
from __future__ import annotations

import io
from typing import AsyncIterator, Optional, Tuple

from PIL import Image


class UploadError(Exception):
    """A bad request: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_limited(stream: AsyncIterator[bytes], content_length: Optional[str], limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadError(400, f"Content-Length {content_length!r} is not a number") from None
        if declared > limit:
            raise UploadError(413, f"upload is {declared} bytes; this server accepts at most {limit} (--max-bytes)")
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"upload exceeds {limit} bytes (--max-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_from_multipart(headers, body: bytes, limit: int) -> Tuple[bytes, Optional[str]]:
    """``(bytes, filename)`` of the one file in a ``multipart/form-data`` body."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=1, max_fields=16, max_part_size=limit).parse()
    except MultiPartException as e:
        raise UploadError(400, f"malformed multipart/form-data: {e.message}") from None
    except (ValueError, KeyError) as e:  # e.g. no boundary in the Content-Type
        raise UploadError(400, f"malformed multipart/form-data: {e}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if len(files) != 1:
            raise UploadError(400, f"multipart upload has {len(files)} files; send exactly one image "
                                   "(e.g. curl -F file=@photo.jpg)")
        return await files[0].read(), files[0].filename
    finally:
        await form.close()


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The upload decoded by the runtime's one loader (:func:`edgecls.runtime.preprocess.open_rgb`: the formats,
    EXIF orientation and bit depths ``edgecls run`` reads), so a served image gets the pixels a file would.
    400 when it is not an image; 413 when its header says more than ``max_pixels`` (checked before decoding)."""
    from edgecls.runtime.preprocess import ImageReadError, open_rgb, probe_image

    if not data:
        raise UploadError(400, "empty upload: send the image bytes (or a multipart form with one file)")
    try:
        w, h = probe_image(io.BytesIO(data), max_pixels=0)  # the header only; the bound is ours (413, not 400)
        if w * h > max_pixels:
            raise UploadError(413, f"image is {w}x{h} = {w * h} pixels; this server accepts at most {max_pixels} "
                                   "(--max-pixels)")
        return open_rgb(io.BytesIO(data), max_pixels=max_pixels)
    except ImageReadError as e:
        if isinstance(e.__cause__, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise UploadError(413, f"image refused as a decompression bomb: {e.__cause__}") from None
        raise UploadError(400, f"{e}; send JPEG, PNG, WEBP, BMP, TIFF, GIF or PPM bytes") from None
