"""Inference backends behind one small interface (:class:`~edgecls.runtime.backends.base.Backend`); no torch.

- ``base.py``: the interface (batch splitting/padding, the model-vs-spec check).
- ``onnxruntime.py``: :class:`~edgecls.runtime.backends.onnxruntime.OrtBackend` (providers from ``--device``,
  checked after the session is created).
- ``tensorrt.py``: :class:`~edgecls.runtime.backends.tensorrt.TrtBackend` for serialized engines, and
  :func:`~edgecls.runtime.backends.tensorrt.import_tensorrt`.
- ``triton.py``: :class:`~edgecls.runtime.backends.triton.TritonBackend`, inference on a Triton/KServe v2 server.
- ``cuda.py``: the CUDA bindings a TensorRT engine needs for its copies (cuda-python, CuPy, PyCUDA).

:func:`load_backend` picks the backend from the model file.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

from edgecls.core.devices import parse_device
from edgecls.core.errors import InputError
from edgecls.runtime.backends.base import Backend
from edgecls.runtime.backends.onnxruntime import OrtBackend
from edgecls.runtime.backends.tensorrt import TrtBackend
from edgecls.runtime.model_io import check_model_file, model_kind
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


def load_backend(
    path: os.PathLike[str] | str,
    device: str = "auto",
    threads: Optional[int] = None,
    allow_fallback: bool = False,
    spec: Optional[ModelSpec] = None,
    remote: Optional[str] = None,
    **ort_options: Any,
) -> Backend:
    """The backend for a model file: ``.onnx`` → ``OrtBackend``, ``.engine``/``.plan`` → ``TrtBackend``.

    ``ort_options`` go to ``OrtBackend`` (``trt_cache_dir``, ``session_config``). ``remote="triton://host:port/name"``:
    inference on that server (:class:`~edgecls.runtime.backends.triton.TritonBackend`), checked against ``spec``.
    """
    p = check_model_file(path)
    if remote is not None:
        from edgecls.runtime.backends.triton import TritonBackend, is_triton_url

        if not is_triton_url(remote):
            raise InputError(f"--backend {remote!r}: the only remote backend is triton://HOST:PORT/MODEL")
        return TritonBackend(remote, spec=spec)
    dev, _ = parse_device(device)
    if model_kind(p) == "onnx":
        return OrtBackend(p, device=device, threads=threads, allow_fallback=allow_fallback, spec=spec, **ort_options)
    if dev == "cpu":
        raise InputError(
            f"{p.name} is a TensorRT engine, which runs only on an NVIDIA GPU; --device cpu needs the ONNX model"
        )
    if threads is not None:
        log.info("--threads has no effect on a TensorRT engine")
    return TrtBackend(p, spec=spec)


__all__ = ["load_backend"]
