"""The model slot: which model answers, and how a new one replaces it without stopping.

:class:`~.slot.ModelSlot` holds the current :class:`~edgecls.runtime.classifier.Classifier` with its
:class:`~.identity.ModelIdentity`; a new model is loaded, warmed and checked (:mod:`.checks`) on a background thread,
swapped in between two inference calls, watched on its first calls (rolled back if they fail), and the old one is
closed once its calls in flight are done. :mod:`.watch` turns SIGHUP and a replaced model file into reloads;
:mod:`.metrics` exposes the slot to Prometheus.
"""
from edgecls.runtime.slot.identity import ModelIdentity, identify, resolve_model
from edgecls.runtime.slot.loaded import Loaded, SwapRefused
from edgecls.runtime.slot.slot import ModelSlot

__all__ = ["Loaded", "ModelIdentity", "ModelSlot", "SwapRefused", "identify", "resolve_model"]
