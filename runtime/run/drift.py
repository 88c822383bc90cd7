"""``edgecls run``'s drift watch: load the artifact's reference, or say in one line that there is none.

``on_alarm(source, kinds, active)`` (``run(..., on_drift_alarm=...)``) is called whenever the kinds firing on a
source change: the hook for acting while a source drifts, e.g. switching frame collection on for it."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Optional, TextIO

log = logging.getLogger(__name__)


def open_drift(config: Any, clf: Any, err: TextIO, on_alarm: Optional[Callable[[str, tuple, bool], None]] = None,
               ) -> Optional[Any]:
    """The run's :class:`~edgecls.runtime.drift.watch.DriftWatch`, or None (``--no-drift``, a remote backend, or an
    artifact without a reference: then one line on ``err`` says so). A reference made for another model raises
    :class:`~edgecls.runtime.drift.reference.DriftReferenceError` (exit 2)."""
    if not getattr(config, "drift", True):
        return None
    from edgecls.runtime.drift.reference import load_reference, reference_path
    from edgecls.runtime.drift.watch import DriftWatch

    path = getattr(config, "drift_reference", None)
    if path is None and not os.path.isfile(str(config.model)):
        return None
    ref = load_reference(config.model, path)
    if ref is None:
        err.write(f"edgecls run: no drift reference ({reference_path(config.model).name}) beside the model: no drift "
                  "signals (make one with `edgecls drift-reference MODEL`)\n")
        err.flush()
        return None
    pspec = clf.spec.preprocess
    watch = DriftWatch(ref, pspec.mean, pspec.std, on_alarm=on_alarm)
    log.info("drift watched against %d calibration images (%s)", ref.n, ref.source)
    return watch


def drift_after_swap(config: Any, model_path: str, clf: Any, err: TextIO,
                     on_alarm: Optional[Callable[[str, tuple, bool], None]] = None) -> Optional[Any]:
    """A model swapped in (or rolled back to) is watched against its own reference, the ``.drift.json`` beside its
    file: a reference states what one model was calibrated on. Without one, or with one made for another model,
    drift signals stop, said in one line (the run goes on)."""
    from edgecls.runtime.drift.reference import DriftReferenceError

    try:
        return open_drift(dataclasses.replace(config, model=str(model_path), drift_reference=None), clf, err, on_alarm)
    except DriftReferenceError as e:
        err.write(f"edgecls run: no drift signals for the model swapped in: {e}\n")
        err.flush()
        return None
