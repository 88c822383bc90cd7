"""edgecls.runtime — the torch-free part: model spec, the one preprocessing function, backends, sources.

Importing this package must stay cheap and must never import torch (a test checks it).
"""
from __future__ import annotations

from edgecls.runtime.preprocess import load_image, preprocess, preprocess_one
from edgecls.runtime.spec import ModelSpec, PreprocessSpec, SpecError

__all__ = ["ModelSpec", "PreprocessSpec", "SpecError", "load_image", "preprocess", "preprocess_one"]
