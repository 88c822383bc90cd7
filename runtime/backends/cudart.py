"""The CUDA runtime library (``libcudart``) through ``ctypes``: device memory, copies and a stream for a TensorRT
engine with nothing installed beyond JetPack (or the CUDA toolkit) — no cuda-python, CuPy or PyCUDA.

The calls and their C signatures (CUDA Runtime API, ``cuda_runtime_api.h``; ``cudaError_t`` is an ``int``,
``cudaStream_t`` a pointer, ``cudaSuccess = 0``, ``cudaMemcpyHostToDevice = 1``, ``cudaMemcpyDeviceToHost = 2``):

- ``cudaMalloc(void **devPtr, size_t size)``, ``cudaFree(void *devPtr)``
- ``cudaStreamCreate(cudaStream_t *pStream)``, ``cudaStreamSynchronize(cudaStream_t)``, ``cudaStreamDestroy(cudaStream_t)``
- ``cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t stream)``
- ``const char *cudaGetErrorName(cudaError_t)``, ``cudaRuntimeGetVersion(int *)``, ``cudaGetDeviceCount(int *)``
  (called once at start: a library that loads but has no driver or GPU behind it fails there, not mid-run)

Host buffers are numpy arrays (pageable memory: ``cudaMemcpyAsync`` then behaves synchronously with respect to the
host for H2D, which is correct, just not overlapped).
"""
from __future__ import annotations

import ctypes
import glob
import logging
from typing import Any, Iterable, List, Optional

import numpy as np

from edgecls.core.errors import CapabilityError
from edgecls.runtime.backends.cuda import CudaApi

log = logging.getLogger(__name__)

CUDA_SUCCESS = 0
MEMCPY_HOST_TO_DEVICE = 1
MEMCPY_DEVICE_TO_HOST = 2
# sonames: CUDA 11 is libcudart.so.11.0, CUDA 12/13 are libcudart.so.12 / .13; the unversioned name is the dev link
LIBCUDART_NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
LIBCUDART_GLOBS = (
    "/usr/local/cuda/lib64/libcudart.so*",
    "/usr/local/cuda/targets/*/lib/libcudart.so*",
    "/usr/local/cuda-*/targets/*/lib/libcudart.so*",
    "/usr/lib/*-linux-gnu/libcudart.so*",
)
_SIGNATURES = {
    "cudaMalloc": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]),
    "cudaFree": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaStreamCreate": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p)]),
    "cudaStreamSynchronize": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaStreamDestroy": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaMemcpyAsync": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                       ctypes.c_void_p]),
    "cudaGetErrorName": (ctypes.c_char_p, [ctypes.c_int]),
    "cudaRuntimeGetVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
    "cudaGetDeviceCount": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
}


def libcudart_candidates(globs: Iterable[str] = LIBCUDART_GLOBS) -> List[str]:
    """Names the dynamic loader knows, then files in the usual CUDA folders (newest version first)."""
    found: List[str] = []
    for pattern in globs:
        found.extend(sorted(glob.glob(pattern), reverse=True))
    return list(LIBCUDART_NAMES) + [f for f in found if not f.endswith(".a")]


def find_libcudart(candidates: Optional[Iterable[str]] = None) -> Optional[str]:
    """The first libcudart that loads, or None (nothing is kept loaded)."""
    for name in candidates if candidates is not None else libcudart_candidates():
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def load_libcudart(candidates: Optional[Iterable[str]] = None) -> Any:
    tried = list(candidates if candidates is not None else libcudart_candidates())
    for name in tried:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise ImportError(f"libcudart not found (tried {', '.join(tried[:6])}{', …' if len(tried) > 6 else ''})")


def _declare(lib: Any) -> None:
    """Set the C signatures on a real library; a fake (tests) is a plain object and is left as it is."""
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name, None)
        if isinstance(fn, ctypes._CFuncPtr):  # type: ignore[attr-defined]
            fn.restype, fn.argtypes = restype, argtypes


class CudartApi(CudaApi):
    """:class:`CudaApi` over ``libcudart`` with ``ctypes`` (``lib`` may be given: a loaded library or a fake)."""

    name = "libcudart (ctypes)"

    def __init__(self, lib: Any = None) -> None:
        self.lib = lib if lib is not None else load_libcudart()
        _declare(self.lib)
        for fn in ("cudaMalloc", "cudaFree", "cudaStreamCreate", "cudaStreamSynchronize", "cudaMemcpyAsync",
                   "cudaGetDeviceCount"):
            if not hasattr(self.lib, fn):
                raise ImportError(f"{self.lib!r} is not the CUDA runtime library (no {fn})")
        count = ctypes.c_int(0)
        self._ck(self.lib.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount")
        if count.value < 1:
            raise CapabilityError("the CUDA runtime sees no GPU (cudaGetDeviceCount = 0)")

    def _ck(self, status: int, what: str) -> None:
        if int(status) != CUDA_SUCCESS:
            name = None
            try:
                raw = self.lib.cudaGetErrorName(int(status))
                name = raw.decode() if isinstance(raw, bytes) else raw
            except Exception:  # an error code the library cannot name
                pass
            raise CapabilityError(f"CUDA {what} failed: {name or 'error'} ({int(status)})")

    def runtime_version(self) -> Optional[str]:
        """``"12.6"`` from cudaRuntimeGetVersion (12060), or None."""
        v = ctypes.c_int(0)
        try:
            if int(self.lib.cudaRuntimeGetVersion(ctypes.byref(v))) != CUDA_SUCCESS:
                return None
        except AttributeError:
            return None
        return f"{v.value // 1000}.{(v.value % 1000) // 10}"

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._ck(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(int(nbytes))), "cudaMalloc")
        if not ptr.value:
            raise CapabilityError(f"CUDA cudaMalloc returned a null pointer for {int(nbytes)} bytes")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self._ck(self.lib.cudaFree(ctypes.c_void_p(int(ptr))), "cudaFree")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._ck(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_handle(self, stream: Any) -> int:
        return int(stream or 0)

    def stream_sync(self, stream: Any) -> None:
        self._ck(self.lib.cudaStreamSynchronize(ctypes.c_void_p(int(stream))), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self._ck(self.lib.cudaStreamDestroy(ctypes.c_void_p(int(stream))), "cudaStreamDestroy")

    def _copy(self, dst: int, src: int, nbytes: int, kind: int, stream: Any, what: str) -> None:
        status = self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                          ctypes.c_int(kind), ctypes.c_void_p(int(stream)))
        self._ck(status, what)

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        host = np.ascontiguousarray(host)
        self._copy(int(ptr), host.ctypes.data, host.nbytes, MEMCPY_HOST_TO_DEVICE, stream, "cudaMemcpyAsync H2D")

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        if not host.flags.c_contiguous:
            raise ValueError("the host array for a device → host copy must be C-contiguous")
        self._copy(host.ctypes.data, int(ptr), host.nbytes, MEMCPY_DEVICE_TO_HOST, stream, "cudaMemcpyAsync D2H")

