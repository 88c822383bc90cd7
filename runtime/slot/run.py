"""The slot of ``edgecls run``: the model it loads, or the classifier (or slot) it was handed."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from edgecls.runtime.slot.slot import ModelSlot


def model_slot(config: Any, classifier: Any, load: Callable[[Any], Any]) -> Tuple[ModelSlot, Optional[Any]]:
    """``(slot, watcher or None)``. A classifier handed in (tests, the Python API) is wrapped, never reloaded; a
    :class:`ModelSlot` handed in is used as it is; else ``config.model`` is loaded and watched (``config.slot``)."""
    if isinstance(classifier, ModelSlot):
        return classifier, None
    if classifier is not None:
        return ModelSlot.around(classifier), None
    from edgecls.runtime.slot.config import open_slot

    return open_slot(config.slot, config.model, load)
