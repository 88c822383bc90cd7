"""The PyTorch reference as a runtime Backend: the column every artifact is compared against.

Implements the runtime's Backend interface (``name``, ``input_name``, ``input_shape``, ``providers``,
``infer(batch) -> float32 logits (N, C)``, ``close()``, context manager) with the checkpoint's model in eval mode,
so parity, ``edgecls eval`` and ``edgecls bench`` can put PyTorch beside ONNX Runtime and TensorRT.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgecls.errors import CapabilityError, InputError
from edgecls.runtime.spec import ModelSpec


class TorchBackend:
    """``TorchBackend(checkpoint_or_model, device="cpu")``.

    ``checkpoint_or_model``: a :class:`~edgecls.train.checkpoint.Checkpoint`, a path to one (``best.pt``), or an
    ``nn.Module`` (then pass ``spec`` for the input name/shape, or the input shape is unknown).
    ``device``: ``cpu`` | ``cuda`` | ``auto`` (cuda when available). Asking for cuda without it raises
    :class:`CapabilityError`; nothing falls back silently.
    """

    name = "torch"

    def __init__(
        self,
        checkpoint_or_model,
        device: str = "cpu",
        spec: Optional[ModelSpec] = None,
        batch_size: int = 32,
        threads: Optional[int] = None,
    ) -> None:
        import torch

        from edgecls.train.checkpoint import Checkpoint, load_checkpoint

        if isinstance(checkpoint_or_model, (str, os.PathLike)):
            checkpoint_or_model = load_checkpoint(Path(checkpoint_or_model))
        if isinstance(checkpoint_or_model, Checkpoint):
            spec = spec or checkpoint_or_model.spec
            model = checkpoint_or_model.build_model()
        elif isinstance(checkpoint_or_model, torch.nn.Module):
            model = checkpoint_or_model
        else:
            raise InputError(
                f"TorchBackend needs a Checkpoint, a checkpoint path or an nn.Module, got "
                f"{type(checkpoint_or_model).__name__}"
            )
        if device not in ("cpu", "cuda", "auto"):
            raise InputError(f"device {device!r} is not one of cpu, cuda, auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise CapabilityError("device 'cuda' was asked for but torch sees no CUDA GPU (torch.cuda.is_available())")
        if threads:
            torch.set_num_threads(int(threads))
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self._torch = torch
        self.device = device
        self.model = model.eval().to(device)
        self.spec = spec
        self.batch_size = int(batch_size)
        self.input_name = spec.input_name if spec is not None else "input"
        self.output_name = spec.output_name if spec is not None else "logits"
        self.input_shape: Tuple[Optional[int], ...] = spec.input_shape if spec is not None else (None, 3, None, None)
        self.output_shape: Tuple[Optional[int], ...] = (None, spec.num_classes if spec is not None else None)
        self.input_dtype = np.dtype(np.float32)
        self.min_batch, self.max_batch = 1, None
        self.fallback = None
        self.providers: List[str] = [f"torch-{device}"]
        self._closed = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("TorchBackend is closed")
        x = np.asarray(batch)
        if x.ndim != 4 or x.dtype != np.float32:
            raise InputError(f"TorchBackend.infer needs a float32 NCHW batch, got {x.dtype} shape {x.shape}")
        torch = self._torch
        outs = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                t = torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size])).to(self.device)
                outs.append(self.model(t).float().cpu().numpy())
        if not outs:
            n = self.spec.num_classes if self.spec is not None else 0
            return np.zeros((0, n), dtype=np.float32)
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def describe(self) -> str:
        return f"{self.name} [{', '.join(self.providers)}]"

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> TorchBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TorchBackend(device={self.device!r}, providers={self.providers})"


