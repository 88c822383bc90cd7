"""On a machine with an NVIDIA GPU and a CUDA binding (cuda-python / CuPy): the CUDA calls TrtBackend makes, with
real device memory and streams. Skipped elsewhere. The engine is a stand-in whose "execution" is a CuPy computation
on the device buffers at the addresses TrtBackend hands it, so pointers, sizes, copies and the stream are real."""
from __future__ import annotations

import json

import numpy as np
import pytest
from runtime_helpers import tiny_spec

from edgecls.runtime.backends.cuda import CUDA_BINDINGS
from edgecls.runtime.backends.tensorrt import TrtBackend


def _usable(cls):
    try:
        api = cls()
        ptr = api.malloc(64)
        api.free(ptr)
        return api
    except Exception:
        return None


BINDINGS = [(name, cls) for name, cls in CUDA_BINDINGS if name != "pycuda"]


@pytest.mark.parametrize("name,cls", BINDINGS, ids=[n for n, _ in BINDINGS])
def test_cuda_binding_roundtrip(name, cls):
    api = _usable(cls)
    if api is None:
        pytest.skip(f"{name} or a GPU is not available")
    host = np.arange(3 * 1000, dtype=np.float32).reshape(3, 1000)
    back = np.empty_like(host)
    s = api.stream_create()
    ptr = api.malloc(host.nbytes)
    api.htod(ptr, host, s)
    api.dtoh(back, ptr, s)
    api.stream_sync(s)
    np.testing.assert_array_equal(back, host)
    assert isinstance(api.stream_handle(s), int)
    api.free(ptr)
    api.stream_destroy(s)


W = np.array([[1.0, -2.0, 0.5], [-1.0, 1.5, 2.0]], dtype=np.float32)


def gpu_fake_trt():
    cp = pytest.importorskip("cupy")

    def view(ptr, shape, dtype):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        mem = cp.cuda.UnownedMemory(ptr, n, owner=None)
        return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(mem, 0))

    class Engine:
        num_io_tensors = 2

        def __init__(self, cfg):
            self.cfg = cfg

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_shape(self, name):
            return (-1, 3, 32, 32) if name == "input" else (-1, 2)

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_profile_shape(self, name, i):
            return [(1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)]

        def create_execution_context(self):
            return Ctx()

    class Ctx:
        def __init__(self):
            self.addr, self.shape = {}, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return 1 <= shape[0] <= 8

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            with cp.cuda.ExternalStream(stream):
                x = view(self.addr["input"], self.shape, np.float32)
                y = view(self.addr["logits"], (self.shape[0], 2), np.float32)
                y[...] = x.mean(axis=(2, 3)) @ cp.asarray(W).T
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(json.loads(data))

    class Trt:
        __version__ = "gpu-fake"
        TensorIOMode = type("M", (), {"INPUT": "INPUT", "OUTPUT": "OUTPUT"})
        Logger = type("L", (), {"WARNING": 2, "__init__": lambda self, lvl: None})
        nptype = staticmethod(lambda dt: dt)

    Trt.Runtime = Runtime
    return Trt()


@pytest.mark.parametrize("name,cls", BINDINGS, ids=[n for n, _ in BINDINGS])
def test_trt_backend_plumbing_on_a_real_gpu(tmp_path, name, cls):
    api = _usable(cls)
    if api is None:
        pytest.skip(f"{name} or a GPU is not available")
    trt = gpu_fake_trt()
    eng = tmp_path / "m.engine"
    eng.write_text(json.dumps({}))
    be = TrtBackend(eng, spec=tiny_spec(classes=("a", "b"), positive=None), trt_module=trt, cuda=api)
    x = np.random.default_rng(0).normal(size=(11, 3, 32, 32)).astype(np.float32)
    y = be.infer(x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)) @ W.T, rtol=1e-4, atol=1e-5)
    be.close()
