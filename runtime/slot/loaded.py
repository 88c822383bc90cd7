"""What the slot holds and reports: a :class:`Loaded` model (classifier, identity, calls in flight), the result
of a reload, the events kept for the summary and the views, and how a retired model is closed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgecls.runtime.slot.checks import Refusal
from edgecls.runtime.slot.identity import ModelIdentity

log = logging.getLogger(__name__)


class SwapRefused(Exception):
    """A new model was not swapped in (the current one goes on); ``refusal.reason`` says which check failed."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class SlotEmpty(RuntimeError):
    """No model is loaded (serve: unloaded through the repository API)."""


class Loaded:
    """One loaded model: its classifier, its identity, and its calls in flight (closed when retired and idle)."""

    def __init__(self, clf: Any, identity: ModelIdentity, owned: bool = True) -> None:
        self.clf = clf
        self.identity = identity
        self.owned = owned  # False: a classifier handed in (tests, the API) is closed by whoever made it
        self.inflight = 0
        self.probation = 0  # calls still watched after the swap
        self.retired = False
        self.closed = False

    def __repr__(self) -> str:
        return f"Loaded({self.identity})"


@dataclass(frozen=True)
class ReloadResult:
    status: str  # swapped | unchanged | refused
    identity: Optional[ModelIdentity]
    refusal: Optional[Refusal] = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Event:
    t: float  # Unix time
    kind: str  # swap | refusal | rollback | unload
    text: str


def close_model(m: Loaded) -> None:
    """Close a retired model and give its memory back to the system (glibc keeps freed pages until trimmed: without
    it every swap would leave the old session's heap in the process)."""
    if not m.owned:
        return
    try:
        m.clf.close()
    except Exception:
        log.exception("closing model %s failed", m.identity)
    m.clf = _Closed(m.clf)
    import gc

    from edgecls.runtime.serve.uploads import malloc_trim

    gc.collect()
    malloc_trim()


class _Closed:
    """What a closed model keeps: its spec and decision rule (records decided after the swap still need them)."""

    def __init__(self, clf: Any) -> None:
        self.spec, self.decider, self.max_pixels = clf.spec, clf.decider, getattr(clf, "max_pixels", None)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise SlotEmpty("this model was closed after a swap")
