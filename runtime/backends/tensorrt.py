"""A serialized TensorRT engine (``.engine``/``.plan``) as a :class:`Backend`.

Needs ``tensorrt`` and the CUDA runtime for the copies: a binding (cuda-python, CuPy, PyCUDA) or, with none
installed, ``libcudart`` through ctypes (see :mod:`edgecls.runtime.backends.cuda`), so JetPack alone is enough.
Before deserialization the engine's build record is checked against this device
(:func:`~edgecls.runtime.backends.engine_record.preflight`: TensorRT version, GPU, stale source ONNX), and a DLA
engine gets its DLA core. Both the TensorRT >= 8.5 tensor API (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) and the older bindings API are handled. :func:`import_tensorrt` is
the one place that imports ``tensorrt`` (the engine builder in ``edgecls.export`` uses it too).
"""
from __future__ import annotations

import logging
import os
from typing import Any, List, Optional, Tuple

import numpy as np

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends.base import Backend, dims
from edgecls.runtime.backends.cuda import CudaApi, gpu_compute_capability, load_cuda_api
from edgecls.runtime.backends.engine_record import preflight, rebuild_command
from edgecls.runtime.model_io import check_model_file
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise CapabilityError(
            "running a TensorRT engine needs the `tensorrt` Python package, which is not installed: on a Jetson it "
            "comes with JetPack (python3-libnvinfer); elsewhere `pip install 'edgecls[trt]'`. Or run the ONNX model "
            "(`--device tensorrt` uses onnxruntime's TensorRT provider, `--device cpu` needs nothing)"
        ) from e
    return tensorrt


def _trt_version(trt: Any) -> str:
    return str(getattr(trt, "__version__", "?"))


class TrtBackend(Backend):
    """A serialized TensorRT engine, run with TensorRT's Python API and one CUDA binding."""

    name = "tensorrt"

    def __init__(
        self,
        engine_path: os.PathLike[str] | str,
        spec: Optional[ModelSpec] = None,
        trt_module: Any = None,
        cuda: Optional[CudaApi] = None,
        compute_capability: Optional[str] = None,
    ) -> None:
        self.path = check_model_file(engine_path)
        trt = trt_module if trt_module is not None else import_tensorrt()
        self.trt = trt
        self._ptrs: List[int] = []
        self.stream = None
        self._load(trt, cuda, compute_capability)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise CapabilityError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)")
        self.api = "tensor" if hasattr(self.engine, "num_io_tensors") and hasattr(self.context, "execute_async_v3") else "bindings"
        ins, outs = self._io()
        if len(ins) != 1 or len(outs) < 1:
            raise InputError(
                f"{self.path}: expected an engine with one input and one output, got inputs {[i[0] for i in ins]} "
                f"and outputs {[o[0] for o in outs]}"
            )
        if spec is not None and len(outs) > 1:
            outs = [o for o in outs if o[0] == spec.output_name] or outs
        (self.input_name, in_shape, in_dtype, self._in_idx, prof) = ins[0]
        (self.output_name, out_shape, out_dtype, self._out_idx, _) = outs[0]
        self.input_shape = dims(in_shape)
        self.output_shape = dims(out_shape)
        self.input_dtype, self.output_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
        self.dynamic = self.input_shape[0] is None
        if self.dynamic:
            if prof is None:
                raise InputError(f"{self.path}: dynamic batch but no optimization profile")
            self.min_batch, self.max_batch = int(prof[0][0]), int(prof[2][0])
        else:
            self.min_batch = self.max_batch = int(self.input_shape[0])
        if any(d is None for d in self.input_shape[1:]):
            raise InputError(f"{self.path}: input {self.input_name} has dynamic spatial dims {in_shape}; rebuild with fixed HxW")
        classes = self.output_shape[-1]
        if classes is None:
            raise InputError(f"{self.path}: output {self.output_name} has a dynamic class dimension {out_shape}")
        self.providers = (f"TensorRT {_trt_version(trt)}", self.cuda.name) + (
            (f"DLA core {self.dla_core}",) if self.dla_core is not None else ())
        if spec is not None:
            self.check_spec(spec, os.fspath(self.path))
        per_in = int(np.prod(self.input_shape[1:])) * self.input_dtype.itemsize
        per_out = int(classes) * self.output_dtype.itemsize
        self.stream = self.cuda.stream_create()
        self._d_in = self._malloc(per_in * self.max_batch)
        self._d_out = self._malloc(per_out * self.max_batch)
        if self.api == "tensor":
            self.context.set_tensor_address(self.input_name, self._d_in)
            self.context.set_tensor_address(self.output_name, self._d_out)
        else:
            self._bindings = [0] * int(self.engine.num_bindings)
            self._bindings[self._in_idx] = self._d_in
            self._bindings[self._out_idx] = self._d_out
        log.info(
            "TensorRT %s (%s API, %s): %s, batch %d..%d",
            _trt_version(trt), self.api, self.cuda.name, self.path.name, self.min_batch, self.max_batch,
        )

    def _load(self, trt: Any, cuda: Optional[CudaApi], compute_capability: Optional[str]) -> None:
        """Preflight from the build record (before anything is loaded), the CUDA runtime, then deserialization."""
        record = preflight(self.path, _trt_version(trt), compute_capability or gpu_compute_capability())
        self.dla_core = record.dla_core if record is not None else None
        self.cuda = cuda if cuda is not None else load_cuda_api()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if self.dla_core is not None:
            self.runtime.DLA_core = int(self.dla_core)  # a DLA engine runs on the core it was built for
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            how = rebuild_command(record, self.path) if record is not None else "edgecls build-engine MODEL.onnx"
            raise CapabilityError(
                f"TensorRT {_trt_version(trt)} could not load the engine {self.path}: engines only run with the "
                f"TensorRT version and GPU they were built with; rebuild it on this device:\n  {how}"
            )

    def _malloc(self, nbytes: int) -> int:
        ptr = self.cuda.malloc(nbytes)
        self._ptrs.append(ptr)
        return ptr

    def _io(self) -> Tuple[List[tuple], List[tuple]]:
        """[(name, shape, numpy dtype, binding index or None, profile (min, opt, max) or None)] for inputs, outputs."""
        trt, eng = self.trt, self.engine
        ins, outs = [], []
        if self.api == "tensor":
            for i in range(int(eng.num_io_tensors)):
                name = eng.get_tensor_name(i)
                shape = tuple(eng.get_tensor_shape(name))
                dtype = trt.nptype(eng.get_tensor_dtype(name))
                if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    prof = eng.get_tensor_profile_shape(name, 0) if shape and shape[0] == -1 else None
                    ins.append((name, shape, dtype, None, prof))
                else:
                    outs.append((name, shape, dtype, None, None))
        else:
            for i in range(int(eng.num_bindings)):
                name = eng.get_binding_name(i)
                shape = tuple(eng.get_binding_shape(i))
                dtype = trt.nptype(eng.get_binding_dtype(i))
                if eng.binding_is_input(i):
                    prof = eng.get_profile_shape(0, i) if shape and shape[0] == -1 else None
                    ins.append((name, shape, dtype, i, prof))
                else:
                    outs.append((name, shape, dtype, i, None))
        return ins, outs

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.stream is None:
            raise RuntimeError("backend is closed")
        n = batch.shape[0]
        shape = tuple(int(d) for d in batch.shape)
        out = np.empty((n, int(self.output_shape[-1])), dtype=self.output_dtype)
        handle = self.cuda.stream_handle(self.stream)
        if self.api == "tensor":
            if self.dynamic and not self.context.set_input_shape(self.input_name, shape):
                raise ValueError(f"TensorRT refused input shape {shape} (profile batch {self.min_batch}..{self.max_batch})")
            self.cuda.htod(self._d_in, batch, self.stream)
            ok = self.context.execute_async_v3(handle)
        else:
            if self.dynamic and not self.context.set_binding_shape(self._in_idx, shape):
                raise ValueError(f"TensorRT refused input shape {shape} (profile batch {self.min_batch}..{self.max_batch})")
            self.cuda.htod(self._d_in, batch, self.stream)
            ok = self.context.execute_async_v2(bindings=self._bindings, stream_handle=handle)
        if not ok:
            raise RuntimeError(f"TensorRT execution failed for a batch of {n}")
        self.cuda.dtoh(out, self._d_out, self.stream)
        self.cuda.stream_sync(self.stream)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.cuda.stream_sync(self.stream)
            finally:
                for ptr in self._ptrs:
                    self.cuda.free(ptr)
                self._ptrs = []
                self.cuda.stream_destroy(self.stream)
                self.stream = None
        self.context = None
        self.engine = None
