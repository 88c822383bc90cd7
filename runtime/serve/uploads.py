"""Uploads: the body read within ``--max-bytes``, the image out of a multipart form, decoding within ``--max-pixels``.

Every problem with what a client sent is an :class:`UploadError` carrying the HTTP status (400, 413, 415) and a
message naming what was wrong and what is accepted; the app turns it into a JSON 4xx. Decoding reads the header
first (size check before any pixel is decompressed), then decodes as ``edgecls run`` does (Pillow, RGB).
"""
from __future__ import annotations

import gc
import io
import zlib
from typing import Any, AsyncIterator, Dict, Optional, Tuple

from PIL import Image


class UploadError(Exception):
    """A bad request: ``status`` (4xx, or 503 when the server is busy/stopping), a message for the client, and
    extra response ``headers`` (``Retry-After``; ``Connection: close`` when the rest of the body is not wanted)."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def busy(message: str, retry_after: int = 1) -> UploadError:
    return UploadError(503, message, {"Retry-After": str(retry_after)})


class ByteBudget:
    """Bytes of request bodies held at once, all requests together (``--max-buffered-bytes``). Used from the event
    loop only (no lock). A request that would go over gets a 503 with ``Retry-After``, before its body is read
    when it declares a Content-Length. :meth:`settle` (after each request) asks glibc to return freed memory to
    the system (``malloc_trim``) once no body is held and big ones were let go, so a burst of large uploads does
    not leave the process at its peak size."""

    TRIM_AFTER = 32 * 2**20  # bytes released since the last trim

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.used = 0
        self.peak = 0
        self._released = 0

    def take(self, n: int) -> None:
        if n <= 0:
            return
        if self.used + n > self.limit:
            raise busy(f"the server is holding {self.used} bytes of uploads (at most {self.limit}, "
                       "--max-buffered-bytes); retry shortly")
        self.used += n
        self.peak = max(self.peak, self.used)

    def give(self, n: int) -> None:
        if n <= 0:
            return
        self.used = max(0, self.used - n)
        self._released += n

    def settle(self) -> None:
        """After a request is answered: trim the heap if nothing is held and >= TRIM_AFTER bytes went since."""
        if self.used == 0 and self._released >= self.TRIM_AFTER:
            self._released = 0
            gc.collect()  # buffers held by reference cycles (an exception's traceback frames) go first
            malloc_trim()


class Lease:
    """The share of a :class:`ByteBudget` one request holds; :meth:`close` gives it all back (idempotent)."""

    def __init__(self, budget: Optional[ByteBudget]) -> None:
        self.budget = budget
        self.held = 0

    def take(self, n: int) -> None:
        if self.budget is not None:
            self.budget.take(n)
            self.held += n

    def close(self) -> None:
        if self.budget is not None and self.held:
            self.budget.give(self.held)
        self.held = 0

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_libc: Any = None


def malloc_trim() -> None:
    """Return freed heap memory to the OS on glibc (no-op elsewhere): the decoded JSON of big requests is freed by
    Python, but glibc keeps the pages of its per-thread arenas until trimmed."""
    global _libc
    if _libc is None:
        _libc = False
        try:
            import ctypes
            import ctypes.util

            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if hasattr(lib, "malloc_trim"):
                _libc = lib
        except (OSError, AttributeError):
            pass
    if _libc:
        _libc.malloc_trim(0)


ENCODINGS = {"identity": 0, "gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib wbits per Content-Encoding


def content_length(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    v = value.strip()
    if not v.isdigit() or not v.isascii():
        raise UploadError(400, f"Content-Length {value[:40]!r} is not a number")
    return int(v)


async def read_body(request: Any, limit: int, lease: Optional[Lease] = None) -> bytearray:
    """The whole body (decompressed per ``Content-Encoding``: gzip, deflate or identity, else 415), refusing (413)
    anything over ``limit`` bytes, compressed or not, before reading it all; each byte held is taken from
    ``lease`` (503 when the server's buffer budget is spent). One buffer, filled in place: no second copy."""
    headers = request.headers
    declared = content_length(headers.get("content-length"))
    coding = headers.get("content-encoding", "identity").strip().lower() or "identity"
    if coding not in ENCODINGS:
        raise UploadError(415, f"Content-Encoding {coding[:40]!r} is not supported; send gzip, deflate or "
                               "identity (uncompressed)")
    if declared is not None and declared > limit:
        raise UploadError(413, f"upload is {declared} bytes; this server accepts at most {limit} (--max-bytes)")
    lease = lease or Lease(None)
    if coding == "identity" and declared is not None:
        lease.take(declared)
        buf = bytearray(declared)
        view, pos = memoryview(buf), 0
        async for chunk in request.stream():
            n = len(chunk)
            if pos + n > declared:  # h11 enforces the length; a defensive bound all the same
                raise UploadError(400, f"the body is longer than its Content-Length {declared}")
            view[pos:pos + n] = chunk
            pos += n
        view.release()
        if pos != declared:
            raise UploadError(400, f"the body has {pos} bytes; its Content-Length says {declared}")
        return buf
    buf = bytearray()
    inflate = zlib.decompressobj(ENCODINGS[coding]) if coding != "identity" else None
    wire = 0
    async for chunk in request.stream():
        wire += len(chunk)
        if wire > limit:
            raise UploadError(413, f"upload exceeds {limit} bytes (--max-bytes)")
        if inflate is not None:
            chunk = _inflate(inflate, chunk, limit - len(buf), coding)
        lease.take(len(chunk))
        buf += chunk
    if inflate is not None and not inflate.eof:
        raise UploadError(400, f"the {coding} body is truncated (the compressed stream does not end)")
    return buf


def _inflate(inflate: Any, data: bytes, room: int, coding: str) -> bytes:
    """Decompress ``data`` producing at most ``room`` bytes (a decompression bomb stops at the limit: 413)."""
    if inflate.eof:
        if data:
            raise UploadError(400, f"data after the end of the {coding} stream")
        return b""
    try:
        out = inflate.decompress(data, room + 1)
    except zlib.error as e:
        raise UploadError(400, f"the body is not valid {coding} data: {e}") from None
    if len(out) > room or inflate.unconsumed_tail:
        raise UploadError(413, "the decompressed upload exceeds the size this server accepts (--max-bytes)")
    if inflate.unused_data:
        raise UploadError(400, f"data after the end of the {coding} stream")
    return out


async def image_from_multipart(headers, body: Any, limit: int) -> Tuple[bytes, Optional[str]]:
    """``(bytes, filename)`` of the one file in a ``multipart/form-data`` body."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield bytes(body)

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
