"""Open any artifact kind (a ``.pt`` checkpoint, an ONNX model, a TensorRT engine) as one ``infer``-able model.

Only torch-free modules are imported at the top; checkpoints pull in torch when (and only when) one is opened.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.model_io import model_kind as runtime_model_kind
from edgecls.runtime.spec import ModelSpec

CHECKPOINT_SUFFIXES = (".pt", ".pth")
DEVICES = ("auto", "cpu", "cuda")
PathLike = Union[str, os.PathLike]


def model_kind(path: PathLike) -> str:
    """``checkpoint`` | ``onnx`` | ``engine`` from the suffix; InputError naming the valid ones otherwise."""
    if Path(path).suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    try:
        return runtime_model_kind(path)
    except InputError as e:
        raise InputError(f"{e}; or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) from `edgecls train`") from None


@dataclass
class OpenedModel:
    """A backend ready to ``infer`` plus the spec that travels with the artifact."""

    path: Path
    kind: str
    spec: ModelSpec
    backend: Any
    threads: Optional[int] = None

    @property
    def providers(self) -> Tuple[str, ...]:
        return tuple(getattr(self.backend, "providers", ()) or ())

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.kind == "checkpoint" and self.threads:
            import torch  # the global torch pool may have been changed by another model in the same process

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        return np.asarray(self.backend.infer(batch), dtype=np.float32)

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def open_model(path: PathLike, device: str = "auto", threads: Optional[int] = None) -> OpenedModel:
    """Open a checkpoint (PyTorch eager, the reference), an ONNX model or an engine, with its :class:`ModelSpec`."""
    path = Path(path)
    if device not in DEVICES:
        raise InputError(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    kind = model_kind(path)
    if not path.is_file():
        raise InputError(f"model {os.fspath(path)!r} does not exist")
    if kind == "checkpoint":
        import torch

        from edgecls.reference.checkpoint import load_checkpoint
        from edgecls.reference.torch_backend import TorchBackend

        ckpt = load_checkpoint(path)
        if threads:
            torch.set_num_threads(threads)
        # TorchBackend resolves auto/cuda through edgecls.reference.devices (CapabilityError without a GPU)
        backend = TorchBackend(ckpt, device=device, threads=threads)
        return OpenedModel(path, kind, ckpt.spec, backend, threads)
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.model_io import load_model_spec

    spec = load_model_spec(path)
    backend = load_backend(path, device=device, threads=threads, spec=spec)
    return OpenedModel(path, kind, spec, backend, threads)
