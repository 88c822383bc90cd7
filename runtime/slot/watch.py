"""Reload triggers: SIGHUP (what a service manager sends to reload) and a replaced model file.

:class:`SlotWatcher` is one background thread per slot: it reloads when asked (:meth:`SlotWatcher.request`, which
is what the SIGHUP handler calls: it only queues, the load happens on the watcher's thread) and, every ``poll_s``,
compares the model file's ``stat`` (device, inode, size, mtime: a file or symlink renamed over the old one changes
it) with the last one seen. A change is acted on once it has held for one poll (a file still being copied is not
loaded half-written); the slot then confirms it by sha256 (a touched but identical file swaps nothing).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections import deque
from typing import Any, Callable, Deque, Iterator, Optional, Tuple

from edgecls.runtime.slot.identity import resolve_model

log = logging.getLogger(__name__)

POLL_S = 0.25


class SlotWatcher:
    """Reloads ``slot`` on request and (``watch_file``) when its model file changes; see the module docstring."""

    def __init__(self, slot: Any, watch_file: bool = True, poll_s: float = POLL_S) -> None:
        self.slot = slot
        self.watch_file = watch_file
        self.poll_s = poll_s
        self._requests: Deque[str] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def signature(self) -> Optional[Tuple[Any, ...]]:
        """What changes when the model file (or the symlink to it, or a model folder's newest version) is replaced."""
        try:
            file, _, version = resolve_model(self.slot.path)
            st = os.stat(file)
            link = os.lstat(self.slot.path)
            return version, os.fspath(file), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, link.st_ino, \
                link.st_mtime_ns
        except (OSError, ValueError):  # missing for a moment (being replaced), or a folder without versions
            return None

    def request(self, trigger: str) -> None:
        """Ask for a reload (safe from a signal handler: it only queues)."""
        self._requests.append(trigger)
        self._wake.set()

    def start(self) -> SlotWatcher:
        self._thread = threading.Thread(target=self._run, daemon=True, name="edgecls-slot-watch")
        self._thread.start()
        return self

    def _run(self) -> None:
        last = self.signature()
        pending: Optional[Tuple[Any, ...]] = None
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self._requests:
                    self.slot.reload(self._requests.popleft())
                    last, pending = self.signature(), None
                if not self.watch_file:
                    continue
                sig = self.signature()
                if sig == last:
                    pending = None
                elif sig == pending:  # changed, and unchanged since the last poll: the new file is complete
                    last, pending = sig, None
                    self.slot.reload("model file changed")
                else:
                    pending = sig
            except Exception:  # never let a reload failure end the watcher (the slot logs refusals itself)
                log.exception("model reload failed")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@contextlib.contextmanager
def sighup_reloads(watcher: Callable[[], Optional[SlotWatcher]]) -> Iterator[None]:
    """While the block runs, SIGHUP asks ``watcher()`` for a reload instead of ending the process (main thread
    only; elsewhere a no-op). Without a watcher at that moment (a model handed in, or still loading) it is logged."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        yield
        return

    def on_sighup(signum, frame) -> None:
        w = watcher()
        if w is None:
            log.warning("SIGHUP: no model file to reload here (the model is loading, or was handed in)")
        else:
            w.request("SIGHUP")

    previous = signal.signal(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
