"""The collection's manifest: ``DIR/manifest.jsonl``, append-only JSON lines, fsync'd per batch.

Lines: ``{"event": "start", ...}`` when a run starts collecting (the model: name, sha256, classes; the rules and
caps), ``{"event": "kept", ...}`` per kept frame (its image, the record, why it was kept), ``{"event": "end", ...}``
with the run's collection counts. A batch that cannot be written whole is cut back to the last full line (nothing
half-written stays); a line torn by a crash or power loss is cut at the next open, with a warning.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

from edgecls.core.fileio import _json_default

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
IMAGES = "images"


class Manifest:
    """Appends whole lines to ``folder/manifest.jsonl`` (open for the life of a run)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / MANIFEST
        self._repair()
        self._f = open(self.path, "ab")

    def _repair(self) -> None:
        """Cut a torn last line (a crash mid-write) so every line parses."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            os.fsync(f.fileno())
        log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.path, size - keep)

    def append(self, lines: List[Dict[str, Any]]) -> int:
        """Write ``lines`` and fsync; on any failure the file is cut back to where it was and the error raised.
        Returns the bytes written."""
        data = "".join(line_text(d) + "\n" for d in lines).encode()
        if self._f is None:
            raise OSError(f"{self.path}: not open after an earlier failed write")
        start = self._f.tell()
        try:
            self._f.write(data)
            self._f.flush()
            os.fsync(self._f.fileno())
        except BaseException:
            self._rollback(start)
            raise
        return len(data)

    def _rollback(self, start: int) -> None:
        try:  # a write buffer that could not be flushed must not be retried on close
            self._f.close()
        except OSError:
            pass
        try:
            os.truncate(self.path, start)
        except OSError as e:  # truncation frees blocks, so it works on a full disk; a read-only remount does not
            log.error("%s: could not cut back a failed write (%s); the next open cuts the torn line", self.path, e)
        try:
            self._f = open(self.path, "ab")
        except OSError:
            self._f = None  # the next append raises

    def close(self) -> None:
        if self._f is None:
            return
        try:
            self._f.close()
        except OSError as e:
            log.warning("%s: closing: %s", self.path, e)


def line_text(d: Dict[str, Any]) -> str:
    """One manifest line (without its newline)."""
    return json.dumps(d, default=_json_default, ensure_ascii=False)


def read_manifest(folder: Path) -> Iterator[Dict[str, Any]]:
    """Every whole line of ``folder/manifest.jsonl`` (a torn last line is skipped, with a warning)."""
    path = Path(folder) / MANIFEST
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                log.warning("%s: line %d is torn (an interrupted run); skipped", path, n)
                return
            try:
                yield json.loads(raw)
            except ValueError as e:
                log.warning("%s: line %d is not JSON (%s); skipped", path, n, e)
