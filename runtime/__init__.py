"""edgecls.runtime — the torch-free part: model spec, the one preprocessing function, backends, sources.

Importing this package must stay cheap and must never import torch (a test checks it). ``Classifier`` and
``Prediction`` are loaded on first use::

    from edgecls.runtime import Classifier
    p = Classifier.load("model.onnx").predict("photo.jpg")
"""
from __future__ import annotations

from edgecls.runtime.preprocess import load_image, preprocess, preprocess_one
from edgecls.runtime.spec import ModelSpec, PreprocessSpec, SpecError

_LAZY = {
    "Classifier": "edgecls.runtime.classifier",
    "Prediction": "edgecls.runtime.decision",
    "load_model_spec": "edgecls.runtime.model_io",
    "load_backend": "edgecls.runtime.backends",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecls.runtime' has no attribute {name!r}")


__all__ = ["ModelSpec", "PreprocessSpec", "SpecError", "load_image", "preprocess", "preprocess_one", *_LAZY]
