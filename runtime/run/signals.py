"""SIGTERM (``docker stop``, ``systemctl stop``, ``kill PID``) stops ``edgecls run`` the way Ctrl-C does.

Inside :func:`sigterm_as_interrupt` a SIGTERM raises :class:`~edgecls.core.errors.Terminated` (a
``KeyboardInterrupt``) in the main thread: the loop stops, the ``--save`` video is finalized under its name, the
summary is printed, and the CLI exits 143. A second SIGTERM while that clean-up runs is ignored (a supervisor's
SIGKILL still ends it). SIGINT keeps Python's own handler; note that a command started in the background by a
non-interactive shell (``edgecls run ... &`` in a script) inherits SIGINT *ignored*, as POSIX shells do — stop such a
run with SIGTERM (``kill PID``).
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from edgecls.core.errors import Terminated

log = logging.getLogger(__name__)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def on_sigterm(signum, frame) -> None:
        nonlocal fired
        if fired:  # already stopping: let the clean-up (video, summary) finish
            log.warning("SIGTERM again: still finishing the outputs")
            return
        fired = True
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
