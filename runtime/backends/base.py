"""The interface every inference backend implements; no torch, heavy libraries imported lazily by the backends.

:class:`Backend`: ``name``, ``input_name``, ``output_name``, ``input_shape`` (as the model declares it, ``None`` for
a dynamic dimension), ``providers`` (what actually runs the model), ``infer(batch float32 NCHW) -> float32 (N, C)``,
``close()``, context manager. ``infer`` splits or pads a batch to what a fixed-batch model or an engine profile
accepts, so callers can pass any batch size.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.spec import ModelSpec, SpecError


class Backend:
    """The interface every backend implements (see the module docstring)."""

    name: str = "backend"
    input_name: str = "input"
    output_name: str = "logits"
    input_shape: Tuple[Optional[int], ...] = (None, 3, None, None)
    output_shape: Tuple[Optional[int], ...] = (None, None)
    input_dtype: np.dtype = np.dtype(np.float32)
    providers: Tuple[str, ...] = ()
    min_batch: int = 1
    max_batch: Optional[int] = None  # None: any batch size
    fallback: Optional[str] = None  # set when allow_fallback let a run continue on something else than asked

    # -- to implement --------------------------------------------------------------------------------------
    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared ----------------------------------------------------------------------------------------------
    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} [{', '.join(self.providers)}]"

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise ValueError(f"{self.name}: expected a 4-D NCHW batch, got shape {batch.shape}")
        for axis, (want, got) in enumerate(zip(self.input_shape[1:], batch.shape[1:]), start=1):
            if want is not None and want != got:
                raise ValueError(
                    f"{self.name}: batch shape {batch.shape} does not fit the model input {self._shape_str()} (axis {axis})"
                )
        return np.ascontiguousarray(batch, dtype=self.input_dtype)

    def _shape_str(self) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in self.input_shape) + ")"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, C)`` float32 for a float32 NCHW batch of any size N >= 1."""
        batch = self._check_batch(batch)
        n = batch.shape[0]
        if n == 0:
            raise ValueError(f"{self.name}: empty batch")
        fixed = self.input_shape[0]
        chunk = fixed or self.max_batch
        if chunk is None and n >= self.min_batch:
            return np.asarray(self._run(batch), dtype=np.float32)
        chunk = chunk or n
        outs = []
        for start in range(0, n, chunk):
            part = batch[start : start + chunk]
            m = part.shape[0]
            need = fixed if fixed else max(m, self.min_batch)
            if m < need:
                pad = np.zeros((need - m,) + part.shape[1:], dtype=part.dtype)
                part = np.concatenate([part, pad])
            outs.append(np.asarray(self._run(part), dtype=np.float32)[:m])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def check_spec(self, spec: ModelSpec, model_path: str = "") -> None:
        """Refuse (SpecError, exit 2) a model whose declared input/output disagrees with its metadata."""
        where = f"model {model_path!r}" if model_path else self.name
        want = (3, spec.preprocess.crop, spec.preprocess.crop)
        got = tuple(self.input_shape[1:])
        if len(self.input_shape) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
            raise SpecError(
                f"{where}: input {self.input_name!r} has shape {self._shape_str()} but its metadata says "
                f"(N, 3, {want[1]}, {want[2]}) (preprocess.crop={spec.preprocess.crop}); the model and its spec do not "
                "belong together: re-export with `edgecls export` so both come from the same checkpoint"
            )
        if spec.input_name and spec.input_name != self.input_name:
            raise SpecError(
                f"{where}: its input is named {self.input_name!r} but its metadata says {spec.input_name!r}; "
                "the model and its spec do not belong together: re-export with `edgecls export`"
            )
        classes = self.output_shape[-1] if self.output_shape else None
        if classes is not None and classes != spec.num_classes:
            raise SpecError(
                f"{where}: output {self.output_name!r} has {classes} classes but its metadata lists "
                f"{spec.num_classes} ({list(spec.classes)}); re-export with `edgecls export`"
            )


def dims(shape: Sequence[Any]) -> Tuple[Optional[int], ...]:
    """A declared shape with every dynamic or symbolic dimension as ``None``."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None for d in shape)
