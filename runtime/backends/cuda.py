"""The few CUDA runtime calls a TensorRT engine needs, over whichever binding is installed.

:class:`CudaApi` is the interface; :class:`CudaPythonApi` (NVIDIA's cuda-python), :class:`CupyApi`,
:class:`PyCudaApi` and, when none of those is installed, :class:`~edgecls.runtime.backends.cudart.CudartApi`
(``libcudart`` through ``ctypes``: nothing beyond JetPack) implement it; :func:`load_cuda_api` picks the first that
imports and starts. :func:`gpu_compute_capability` asks the CUDA driver which GPU this is.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Dict, Optional

import numpy as np

from edgecls.core.errors import CapabilityError


class CudaApi:
    """The few CUDA runtime calls a TensorRT engine needs, over whichever binding is installed."""

    name = "cuda"

    def malloc(self, nbytes: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def free(self, ptr: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stream_create(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stream_destroy(self, stream: Any) -> None:
        pass

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class CudaPythonApi(CudaApi):
    """NVIDIA's cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` in older releases)."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self.rt = cudart
        self._success = cudart.cudaError_t.cudaSuccess
        if not self._ck(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"):
            raise CapabilityError("the CUDA runtime sees no GPU (cudaGetDeviceCount = 0)")

    def _ck(self, result: Any, what: str) -> Any:
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self._success:
            name = self.rt.cudaGetErrorName(err)[1]
            raise CapabilityError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes: int) -> int:
        return int(self._ck(self.rt.cudaMalloc(int(nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._ck(self.rt.cudaFree(ptr), "cudaFree")

    def stream_create(self) -> Any:
        return self._ck(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_sync(self, stream: Any) -> None:
        self._ck(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self._ck(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ck(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync H2D")

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ck(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream), "cudaMemcpyAsync D2H")


class CupyApi(CudaApi):
    """CuPy's CUDA runtime wrappers (``cupy.cuda.runtime``)."""

    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self.rt = cupy.cuda.runtime
        if not self.rt.getDeviceCount():  # raises CUDARuntimeError without a driver
            raise CapabilityError("the CUDA runtime sees no GPU (getDeviceCount = 0)")

    def malloc(self, nbytes: int) -> int:
        return int(self.rt.malloc(int(nbytes)))

    def free(self, ptr: int) -> None:
        self.rt.free(ptr)

    def stream_create(self) -> Any:
        return self.rt.streamCreate()

    def stream_sync(self, stream: Any) -> None:
        self.rt.streamSynchronize(stream)

    def stream_destroy(self, stream: Any) -> None:
        self.rt.streamDestroy(stream)

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self.rt.memcpyAsync(ptr, host.ctypes.data, host.nbytes, self.rt.memcpyHostToDevice, stream)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        self.rt.memcpyAsync(host.ctypes.data, ptr, host.nbytes, self.rt.memcpyDeviceToHost, stream)


class PyCudaApi(CudaApi):
    """PyCUDA (``pycuda.autoinit`` makes the context)."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda

        self.cuda = cuda
        self._allocs: Dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        a = self.cuda.mem_alloc(int(nbytes))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        a = self._allocs.pop(int(ptr), None)
        if a is not None:
            a.free()

    def stream_create(self) -> Any:
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self.cuda.memcpy_htod_async(ptr, host, stream)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(host, ptr, stream)


def _cudart_api() -> CudaApi:
    from edgecls.runtime.backends.cudart import CudartApi

    return CudartApi()


# libcudart through ctypes comes last: it needs nothing installed, the others are what a user chose to install
CUDA_BINDINGS = (("cuda-python", CudaPythonApi), ("cupy", CupyApi), ("pycuda", PyCudaApi), ("cudart", _cudart_api))


def load_cuda_api(prefer: Optional[str] = None) -> CudaApi:
    """The first CUDA binding that imports (``prefer`` or $EDGECLS_CUDA_BINDING first); CapabilityError if none."""
    prefer = prefer or os.environ.get("EDGECLS_CUDA_BINDING")
    order = sorted(CUDA_BINDINGS, key=lambda kv: kv[0] != prefer)
    errors = []
    for name, cls in order:
        try:
            return cls()
        except ImportError as e:
            errors.append(f"{name}: {e}")
        except Exception as e:  # a binding that imports but cannot start CUDA
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise CapabilityError(
        "a TensorRT engine needs the CUDA runtime for its memory copies and none works here ("
        + "; ".join(errors)
        + "). libcudart comes with JetPack and the CUDA toolkit (is /usr/local/cuda/lib64 on the library path? "
        "`ldconfig -p | grep libcudart`); or install a binding: `pip install cuda-python` (matching your CUDA "
        "major version), cupy or pycuda"
    )


def gpu_compute_capability(device: int = 0) -> Optional[str]:
    """``"8.7"`` for the GPU (via the CUDA driver library, which every NVIDIA driver has, Jetson too), or None."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if cuda.cuInit(0) != 0:
                return None
            dev = ctypes.c_int()
            if cuda.cuDeviceGet(ctypes.byref(dev), device) != 0:
                return None
            major, minor = ctypes.c_int(), ctypes.c_int()
            # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
            if cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) != 0:
                return None
            if cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) != 0:
                return None
            return f"{major.value}.{minor.value}"
        except AttributeError:
            return None
    return None
