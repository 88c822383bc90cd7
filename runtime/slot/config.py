"""How ``run`` and ``serve`` take new models (``--allow-new-classes``, ``--golden``, ``--watch``), validated once,
and :func:`open_slot`, which loads the first model into a slot and starts its watcher."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

from edgecls.core.errors import InputError


@dataclass(frozen=True)
class SlotConfig:
    allow_new_classes: bool = False  # a new model may have other classes (it learned new products)
    golden: Optional[str] = None  # labelled folder (DIR/<class>/*.jpg) a new model must classify as well
    golden_tolerance: float = 2.0  # accuracy points a new model may lose on the golden set
    watch: bool = True  # reload when the model file is replaced (SIGHUP reloads either way)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.golden_tolerance) <= 100.0:
            raise InputError(f"--golden-tolerance must be in [0, 100] accuracy points, got {self.golden_tolerance!r}")
        if self.golden is not None and not Path(self.golden).is_dir():
            raise InputError(f"--golden {self.golden!r} is not a folder (expected DIR/<class>/<image>)")


def open_slot(cfg: SlotConfig, model: str, loader: Callable[[Path], Any], name: Optional[str] = None,
              warm_batch: int = 1) -> Tuple[Any, Any]:
    """``(slot, watcher)``: the first model loaded (its errors propagate) and the watcher thread started."""
    from edgecls.runtime.slot.checks import GoldenSet
    from edgecls.runtime.slot.slot import ModelSlot
    from edgecls.runtime.slot.watch import SlotWatcher

    golden = GoldenSet(cfg.golden, cfg.golden_tolerance) if cfg.golden else None
    slot = ModelSlot(loader, model, name=name, allow_new_classes=cfg.allow_new_classes, golden=golden,
                     warm_batch=warm_batch)
    slot.start()
    return slot, SlotWatcher(slot, watch_file=cfg.watch).start()
