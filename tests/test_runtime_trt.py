"""Everything around TensorRT, tested without TensorRT: fake ``tensorrt`` modules for the TensorRT 10 tensor API and
the TensorRT 8.x bindings API, over a fake CUDA binding whose device memory is a dict of bytearrays."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from runtime_helpers import tiny_spec

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends import load_backend
from edgecls.runtime.backends import tensorrt as T
from edgecls.runtime.backends.cuda import CudaApi, load_cuda_api
from edgecls.runtime.backends.tensorrt import TrtBackend
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.spec import SpecError, sidecar_path

W = np.array([[1.0, -2.0, 0.5], [-1.0, 1.5, 2.0]], dtype=np.float32)  # (classes, channels)


def reference(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3)) @ W.T


class FakeCuda(CudaApi):
    name = "fake-cuda"

    def __init__(self):
        self.mem = {}
        self.next = 4096
        self.freed = []
        self.synced = 0

    def malloc(self, nbytes):
        ptr = self.next
        self.next += nbytes + 256
        self.mem[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr):
        self.freed.append(ptr)
        del self.mem[ptr]

    def stream_create(self):
        return 77

    def stream_sync(self, stream):
        assert stream == 77
        self.synced += 1

    def htod(self, ptr, host, stream):
        b = host.tobytes()
        assert len(b) <= len(self.mem[ptr]), "host → device copy overflows the allocation"
        self.mem[ptr][: len(b)] = b

    def dtoh(self, host, ptr, stream):
        host[...] = np.frombuffer(bytes(self.mem[ptr][: host.nbytes]), dtype=host.dtype).reshape(host.shape)


class Dims(tuple):
    pass


def make_fake_trt(cuda: FakeCuda, api: str):
    """A module-like object with the parts of the tensorrt API that TrtBackend uses."""

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    class Engine:
        def __init__(self, cfg):
            self.cfg = cfg
            self.in_shape = tuple(cfg["in_shape"])
            self.out_shape = (self.in_shape[0], W.shape[0])
            self.dtype = np.dtype(cfg.get("dtype", "float32"))
            if api == "tensor":
                self.num_io_tensors = 2
            else:
                self.num_bindings = 2

        # tensor API (TensorRT >= 8.5)
        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return Dims(self.in_shape if name == "input" else self.out_shape)

        def get_tensor_dtype(self, name):
            return self.dtype

        def get_tensor_profile_shape(self, name, profile):
            return [tuple([b] + list(self.in_shape[1:])) for b in self.cfg["profile"]]

        # bindings API (TensorRT < 10)
        def get_binding_name(self, i):
            return self.get_tensor_name(i)

        def binding_is_input(self, i):
            return i == 0

        def get_binding_shape(self, i):
            return self.get_tensor_shape(self.get_tensor_name(i))

        def get_binding_dtype(self, i):
            return self.dtype

        def get_profile_shape(self, profile, i):
            return self.get_tensor_profile_shape("input", profile)

        def create_execution_context(self):
            return TensorContext(self) if api == "tensor" else BindingsContext(self)

    class _Ctx:
        def __init__(self, engine):
            self.engine = engine
            self.shape = engine.in_shape
            self.calls = []

        def _check_shape(self, shape):
            lo, hi = self.engine.cfg["profile"][0], self.engine.cfg["profile"][2]
            if self.engine.in_shape[0] != -1:
                return tuple(shape) == self.engine.in_shape
            return lo <= shape[0] <= hi

        def _compute(self, in_ptr, out_ptr):
            n = self.shape[0]
            dt = self.engine.dtype
            count = int(np.prod(self.shape))
            x = np.frombuffer(bytes(cuda.mem[in_ptr][: count * dt.itemsize]), dtype=dt).reshape(self.shape)
            y = reference(x.astype(np.float32)).astype(dt)
            assert y.shape[0] == n
            cuda.mem[out_ptr][: y.nbytes] = y.tobytes()
            self.calls.append(n)
            return True

    class TensorContext(_Ctx):
        def __init__(self, engine):
            super().__init__(engine)
            self.addr = {}

        def set_input_shape(self, name, shape):
            assert name == "input"
            if not self._check_shape(shape):
                return False
            self.shape = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 77
            return self._compute(self.addr["input"], self.addr["logits"])

    class BindingsContext(_Ctx):
        def set_binding_shape(self, i, shape):
            assert i == 0
            if not self._check_shape(shape):
                return False
            self.shape = tuple(shape)
            return True

        def execute_async_v2(self, bindings, stream_handle):
            assert stream_handle == 77
            return self._compute(bindings[0], bindings[1])

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(data.decode()))
            except (ValueError, UnicodeDecodeError):
                return None  # what TensorRT does with an engine from another version

    class FakeTrt:
        __version__ = "10.3.0-fake" if api == "tensor" else "8.4.1-fake"

        @staticmethod
        def nptype(dt):
            return np.dtype(dt).type

    m = FakeTrt()
    m.Logger, m.TensorIOMode, m.Runtime = Logger, TensorIOMode, Runtime
    return m


def write_engine(path, in_shape=(-1, 3, 32, 32), profile=(1, 4, 8), dtype="float32", sidecar=True, spec=None):
    path.write_bytes(json.dumps({"in_shape": list(in_shape), "profile": list(profile), "dtype": dtype}).encode())
    if sidecar:
        sidecar_path(path).write_text((spec or tiny_spec(classes=("a", "b"), positive=None)).to_json())
    return path


@pytest.mark.parametrize("api", ["tensor", "bindings"])
@pytest.mark.parametrize("n", [1, 5, 13])
def test_trt_backend_dynamic_batch_any_size(tmp_path, api, n):
    cuda = FakeCuda()
    eng = write_engine(tmp_path / "m.engine")
    x = np.random.default_rng(n).normal(size=(n, 3, 32, 32)).astype(np.float32)
    be = TrtBackend(eng, spec=tiny_spec(classes=("a", "b"), positive=None), trt_module=make_fake_trt(cuda, api), cuda=cuda)
    assert be.api == api and (be.min_batch, be.max_batch) == (1, 8)
    assert be.input_shape == (None, 3, 32, 32) and be.output_shape == (None, 2)
    np.testing.assert_allclose(be.infer(x), reference(x), rtol=1e-5, atol=1e-5)
    assert be.context.calls == ([n] if n <= 8 else [8, 5])  # chunked to the profile's max batch
    assert "TensorRT" in be.describe()
    be.close()
    assert not cuda.mem and len(cuda.freed) == 2  # every device buffer freed


@pytest.mark.parametrize("api", ["tensor", "bindings"])
def test_trt_backend_fixed_batch_and_fp16_io(tmp_path, api):
    cuda = FakeCuda()
    eng = write_engine(tmp_path / "m.plan", in_shape=(4, 3, 32, 32), dtype="float16")
    be = TrtBackend(eng, trt_module=make_fake_trt(cuda, api), cuda=cuda)
    x = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    y = be.infer(x)
    assert y.dtype == np.float32 and be.context.calls == [4, 4]  # 6 → 4 + (2 padded to 4)
    np.testing.assert_allclose(y, reference(x.astype(np.float16).astype(np.float32)), rtol=2e-2, atol=2e-2)
    be.close()


def test_trt_backend_profile_min_batch_pads(tmp_path):
    cuda = FakeCuda()
    eng = write_engine(tmp_path / "m.engine", profile=(2, 4, 4))
    be = TrtBackend(eng, trt_module=make_fake_trt(cuda, "tensor"), cuda=cuda)
    x = np.ones((1, 3, 32, 32), np.float32)
    np.testing.assert_allclose(be.infer(x), reference(x), rtol=1e-5)
    assert be.context.calls == [2]


def test_trt_engine_shape_or_classes_disagreeing_with_sidecar_is_refused(tmp_path):
    cuda = FakeCuda()
    eng = write_engine(tmp_path / "m.engine", in_shape=(-1, 3, 64, 64))
    with pytest.raises(SpecError, match="64"):
        TrtBackend(eng, spec=tiny_spec(), trt_module=make_fake_trt(cuda, "tensor"), cuda=cuda)
    with pytest.raises(SpecError, match="2 classes"):
        TrtBackend(
            write_engine(tmp_path / "n.engine"), spec=tiny_spec(classes=("a", "b", "c"), positive=None),
            trt_module=make_fake_trt(cuda, "tensor"), cuda=cuda,
        )


def test_trt_engine_from_another_version_is_a_capability_error(tmp_path):
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\x00\x01serialized by another TensorRT")
    with pytest.raises(CapabilityError, match="build-engine"):
        TrtBackend(eng, trt_module=make_fake_trt(FakeCuda(), "tensor"), cuda=FakeCuda())


def test_missing_tensorrt_or_cuda_binding_is_a_clear_capability_error(tmp_path, monkeypatch):
    eng = write_engine(tmp_path / "m.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(CapabilityError, match="tensorrt") as e:
        load_backend(eng, device="auto")
    assert e.value.exit_code == 4
    with pytest.raises(CapabilityError):  # the Python API refuses the same way (spec first, then the engine)
        Classifier.load(eng)
    for mod in ("cuda", "cuda.bindings", "cupy", "pycuda", "pycuda.autoinit", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(CapabilityError, match="cuda-python"):
        load_cuda_api()
    with pytest.raises(InputError, match="GPU"):
        load_backend(eng, device="cpu")


def test_classifier_on_a_fake_engine_end_to_end(tmp_path, monkeypatch):
    cuda = FakeCuda()
    spec = tiny_spec(classes=("a", "b"), positive="a", threshold=0.6)
    eng = write_engine(tmp_path / "m.engine", spec=spec)
    monkeypatch.setattr(T, "import_tensorrt", lambda: make_fake_trt(cuda, "tensor"))
    monkeypatch.setattr(T, "load_cuda_api", lambda prefer=None: cuda)
    img = np.zeros((40, 50, 3), np.uint8)
    img[..., 0] = 255  # red: channel 0 high → logits favour class "a" (W[0,0] > 0)
    with Classifier.load(eng) as clf:
        p = clf.predict(img)
        assert p.label == "a" and p.decision == "yes"
        assert clf.backend.name == "tensorrt"
    assert not cuda.mem
