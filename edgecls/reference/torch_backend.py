"""The PyTorch reference as a runtime Backend: the column every artifact is compared against.

A subclass of the runtime's :class:`~edgecls.runtime.backends.base.Backend` (``name``, ``input_name``,
``input_shape``, ``providers``, ``infer(batch) -> float32 logits (N, C)``, ``close()``, context manager,
``check_spec``) with the checkpoint's model in eval mode, so parity, ``edgecls eval`` and ``edgecls bench`` can put
PyTorch beside ONNX Runtime and TensorRT. ``infer`` splits a batch into ``batch_size`` chunks; an empty batch gives
``(0, C)`` logits.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.reference.devices import resolve_torch_device
from edgecls.runtime.backends.base import Backend
from edgecls.runtime.spec import ModelSpec


class TorchBackend(Backend):
    """``TorchBackend(checkpoint_or_model, device="cpu")``.

    ``checkpoint_or_model``: a :class:`~edgecls.reference.checkpoint.Checkpoint`, a path to one (``best.pt``), or an
    ``nn.Module`` (then pass ``spec`` for the input name/shape, or the input shape is unknown).
    ``device``: ``cpu`` | ``cuda`` | ``cuda:N`` | ``auto`` (cuda when available), resolved by
    :func:`~edgecls.reference.devices.resolve_torch_device`: asking for cuda without it raises
    :class:`~edgecls.core.errors.CapabilityError`; nothing falls back silently.
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

        from edgecls.reference.checkpoint import Checkpoint, load_checkpoint

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
        device = resolve_torch_device(device)
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

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass of a float32 NCHW chunk → float32 logits."""
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.model(t).float().cpu().numpy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, C)`` for a float32 NCHW batch, in ``batch_size`` chunks (N = 0 gives ``(0, C)``)."""
        if self._closed:
            raise RuntimeError("TorchBackend is closed")
        x = np.asarray(batch)
        if x.ndim != 4 or x.dtype != np.float32:
            raise InputError(f"TorchBackend.infer needs a float32 NCHW batch, got {x.dtype} shape {x.shape}")
        outs = [self._run(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        if not outs:
            n = self.spec.num_classes if self.spec is not None else 0
            return np.zeros((0, n), dtype=np.float32)
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"TorchBackend(device={self.device!r}, providers={self.providers})"
