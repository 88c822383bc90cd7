"""The run's sinks that follow the model slot: the drift watch and frame collection.

Both are tied to one model: a drift reference states what that model was calibrated on, and a kept frame names the
model that judged it. A swap (or a rollback) re-points them: the new model is watched against its own reference
(none beside it: drift signals stop, said once), and frames kept from then on name it. ``--on-drift collect``
keeps a source's frames while its drift alarm lasts.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, TextIO, Tuple

from edgecls.runtime.run.drift import drift_after_swap, open_drift

DriftHook = Callable[[str, Tuple[str, ...], bool], None]


def check_sinks(config: Any) -> None:
    """Before the (slow) model load: a collection folder that cannot be written fails at once (exit 2)."""
    if config.collect is not None:
        from edgecls.runtime.collect.sink import check_folder

        check_folder(config.collect.folder)


def open_sinks(config: Any, slot: Any, stats: Any, opened: Any, err: TextIO,
               on_drift_alarm: Optional[DriftHook] = None) -> None:
    """Open the drift watch (``stats.drift``) and the collector (``opened.collector``, ``stats.collect``) for the
    slot's model, and re-point both on every change of model."""
    clf = slot.clf
    if on_drift_alarm is None and config.on_drift == "collect":  # --on-drift collect (needs --collect)
        def on_drift_alarm(source: str, kinds: Tuple[str, ...], active: bool) -> None:
            if opened.collector is not None:
                opened.collector.force(source, active, reason="drift:" + ",".join(kinds))
    stats.drift = open_drift(config, clf, err, on_drift_alarm)
    stats.model = slot.identity.to_dict()  # the views show the model answering now

    def model_changed(ident: Any) -> None:
        stats.model = ident.to_dict()
        if config.drift:
            stats.drift = drift_after_swap(config, ident.path, slot.clf, err, on_drift_alarm)
        if opened.collector is not None:
            from edgecls.runtime.collect.sink import model_identity

            opened.collector.add_model(model_identity(ident.path, slot.clf.spec, ident))

    slot.on_change.append(model_changed)
    if config.collect is not None:
        from edgecls.runtime.collect.sink import Collector, model_identity

        opened.collector = stats.collect = Collector(config.collect,
                                                     model_identity(config.model, clf.spec, slot.identity))
        stats.notes.extend(opened.collector.check_model(clf.decider))
