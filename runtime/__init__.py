"""edgecls.runtime — the torch-free part: model spec, the one preprocessing function, backends, sources, the run loop.

Importing this package is cheap (it imports nothing) and must never import torch (a test checks it). The names
below are loaded on first use::

    from edgecls.runtime import Classifier
    p = Classifier.load("model.onnx").predict("photo.jpg")

No name exported here equals a submodule's name: ``edgecls.runtime.preprocess`` is always the module (the function
is ``edgecls.runtime.preprocess.preprocess``), and ``edgecls.runtime.run`` the run-loop package.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "ModelSpec": "edgecls.runtime.spec",
    "PreprocessSpec": "edgecls.runtime.spec",
    "SpecError": "edgecls.runtime.spec",
    "load_image": "edgecls.runtime.preprocess",
    "preprocess_one": "edgecls.runtime.preprocess",
    "Classifier": "edgecls.runtime.classifier",
    "Prediction": "edgecls.runtime.decision",
    "load_model_spec": "edgecls.runtime.model_io",
    "load_backend": "edgecls.runtime.backends",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'edgecls.runtime' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = list(_LAZY)
