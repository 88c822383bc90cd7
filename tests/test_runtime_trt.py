"""Everything around TensorRT, tested without TensorRT: fake ``tensorrt`` modules for the TensorRT 10 tensor API and
the TensorRT 8.x bindings API, over a fake CUDA binding whose device memory is a dict of bytearrays."""
from __future__ import annotations

import ctypes
import json
import sys

import numpy as np
import pytest
from runtime_helpers import tiny_spec

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends import cudart as cudart_mod
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


FAKE_STREAM = 0x5150


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

    def dev_read(ptr, nbytes):
        if isinstance(cuda, FakeCuda):
            return bytes(cuda.mem[ptr][:nbytes])
        return ctypes.string_at(ptr, nbytes)  # libcudart through ctypes: "device" memory is real memory here

    def dev_write(ptr, data):
        if isinstance(cuda, FakeCuda):
            cuda.mem[ptr][: len(data)] = data
        else:
            ctypes.memmove(ptr, data, len(data))

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
            x = np.frombuffer(dev_read(in_ptr, count * dt.itemsize), dtype=dt).reshape(self.shape)
            y = reference(x.astype(np.float32)).astype(dt)
            assert y.shape[0] == n
            dev_write(out_ptr, y.tobytes())
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
            assert stream_handle == (77 if isinstance(cuda, FakeCuda) else FAKE_STREAM)
            return self._compute(self.addr["input"], self.addr["logits"])

    class BindingsContext(_Ctx):
        def set_binding_shape(self, i, shape):
            assert i == 0
            if not self._check_shape(shape):
                return False
            self.shape = tuple(shape)
            return True

        def execute_async_v2(self, bindings, stream_handle):
            assert stream_handle == (77 if isinstance(cuda, FakeCuda) else FAKE_STREAM)
            return self._compute(bindings[0], bindings[1])

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1
            m.runtimes.append(self)

        def deserialize_cuda_engine(self, data):
            m.deserialized.append(len(data))
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
    m.deserialized, m.runtimes = [], []
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
    monkeypatch.setattr(cudart_mod, "load_libcudart", lambda candidates=None: (_ for _ in ()).throw(
        ImportError("libcudart not found (tried libcudart.so)")))
    with pytest.raises(CapabilityError, match="cuda-python") as e:
        load_cuda_api()
    assert "libcudart not found" in str(e.value) and "JetPack" in str(e.value)
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


# ------------------------------------------------------------------ libcudart through ctypes (a fake library)


class FakeLibcudart:
    """Stands in for ``ctypes.CDLL("libcudart.so")``: the same C calls, taking the same ctypes arguments; "device"
    memory is host memory (ctypes buffers) so that copies are real ``memmove``s at the pointers passed."""

    def __init__(self, devices=1, fail=None):
        self.buffers = {}
        self.copies = []  # (kind, nbytes, stream)
        self.streams = []
        self.devices = devices
        self.fail = fail or {}  # C function name → error code it returns

    def _status(self, fn):
        return self.fail.get(fn, 0)

    def cudaGetDeviceCount(self, count_ref):
        count_ref._obj.value = self.devices
        return self._status("cudaGetDeviceCount")

    def cudaRuntimeGetVersion(self, v_ref):
        v_ref._obj.value = 12060
        return 0

    def cudaMalloc(self, ptr_ref, size):
        if self._status("cudaMalloc"):
            return self._status("cudaMalloc")
        buf = ctypes.create_string_buffer(size.value)
        addr = ctypes.addressof(buf)
        self.buffers[addr] = buf
        ptr_ref._obj.value = addr
        return 0

    def cudaFree(self, ptr):
        del self.buffers[ptr.value]
        return 0

    def cudaStreamCreate(self, stream_ref):
        stream_ref._obj.value = FAKE_STREAM
        self.streams.append(FAKE_STREAM)
        return 0

    def cudaStreamSynchronize(self, stream):
        assert stream.value == FAKE_STREAM
        return 0

    def cudaStreamDestroy(self, stream):
        self.streams.remove(stream.value)
        return 0

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        assert kind.value in (cudart_mod.MEMCPY_HOST_TO_DEVICE, cudart_mod.MEMCPY_DEVICE_TO_HOST)
        device = dst.value if kind.value == cudart_mod.MEMCPY_HOST_TO_DEVICE else src.value
        base = max(a for a in self.buffers if a <= device)
        assert device + count.value <= base + len(self.buffers[base]), "copy overflows the device allocation"
        ctypes.memmove(dst.value, src.value, count.value)
        self.copies.append((kind.value, count.value, stream.value))
        return 0

    def cudaGetErrorName(self, code):
        return {2: b"cudaErrorMemoryAllocation", 35: b"cudaErrorInsufficientDriver"}.get(code, b"cudaErrorUnknown")


def test_cudart_api_allocates_copies_and_frees_through_the_c_calls():
    lib = FakeLibcudart()
    api = cudart_mod.CudartApi(lib)
    assert api.runtime_version() == "12.6"
    ptr = api.malloc(64)
    stream = api.stream_create()
    assert api.stream_handle(stream) == FAKE_STREAM
    x = np.arange(16, dtype=np.float32)
    api.htod(ptr, x, stream)
    y = np.empty_like(x)
    api.dtoh(y, ptr, stream)
    api.stream_sync(stream)
    np.testing.assert_array_equal(x, y)
    assert [c[:2] for c in lib.copies] == [(1, 64), (2, 64)] and {c[2] for c in lib.copies} == {FAKE_STREAM}
    api.free(ptr)
    api.stream_destroy(stream)
    assert not lib.buffers and not lib.streams


def test_cudart_api_errors_are_named_and_no_gpu_is_refused_at_start():
    with pytest.raises(CapabilityError, match="cudaErrorMemoryAllocation"):
        cudart_mod.CudartApi(FakeLibcudart(fail={"cudaMalloc": 2})).malloc(1 << 40)
    with pytest.raises(CapabilityError, match="cudaErrorInsufficientDriver"):
        cudart_mod.CudartApi(FakeLibcudart(fail={"cudaGetDeviceCount": 35}))
    with pytest.raises(CapabilityError, match="no GPU"):
        cudart_mod.CudartApi(FakeLibcudart(devices=0))
    with pytest.raises(ImportError, match="not the CUDA runtime"):
        cudart_mod.CudartApi(object())


def test_engine_runs_on_libcudart_when_no_binding_is_installed(tmp_path, monkeypatch):
    """No cuda-python/CuPy/PyCUDA: load_cuda_api falls to libcudart through ctypes and the engine runs on it."""
    for mod in ("cuda", "cuda.bindings", "cupy", "pycuda", "pycuda.autoinit", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)
    lib = FakeLibcudart()
    monkeypatch.setattr(cudart_mod, "load_libcudart", lambda candidates=None: lib)
    api = load_cuda_api()
    assert isinstance(api, cudart_mod.CudartApi) and "ctypes" in api.name
    eng = write_engine(tmp_path / "m.engine")
    x = np.random.default_rng(3).normal(size=(5, 3, 32, 32)).astype(np.float32)
    be = TrtBackend(eng, trt_module=make_fake_trt(api, "tensor"), cuda=api)
    np.testing.assert_allclose(be.infer(x), reference(x), rtol=1e-5, atol=1e-5)
    assert "libcudart (ctypes)" in be.describe()
    be.close()
    assert not lib.buffers and not lib.streams


def test_libcudart_candidates_cover_jetpack_sonames(tmp_path):
    fake = tmp_path / "cuda" / "lib64"
    fake.mkdir(parents=True)
    (fake / "libcudart.so.11.0").write_bytes(b"")
    (fake / "libcudart_static.a").write_bytes(b"")
    names = cudart_mod.libcudart_candidates([str(fake / "libcudart*")])
    assert names[:4] == ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    assert str(fake / "libcudart.so.11.0") in names and not any(n.endswith(".a") for n in names)
    assert cudart_mod.find_libcudart([str(tmp_path / "nope.so")]) is None


# ------------------------------------------------------------------ engine preflight from the build record


def write_record(engine, trt_version="10.3.0-fake", cc="8.7", onnx="model_fp16.onnx", sha="ab" * 32, **kw):
    from edgecls.runtime.backends.engine_record import EngineRecord, record_path

    rec = EngineRecord(engine=engine.name, trt_version=trt_version, compute_capability=cc, precision="fp16",
                       onnx=onnx, onnx_sha256=sha, onnx_precision="fp16", batch=kw.pop("batch", (1, 1, 8)),
                       engine_bytes=kw.pop("engine_bytes", engine.stat().st_size), **kw)
    record_path(engine).write_text(json.dumps(rec.to_dict()))
    return rec


def test_preflight_refuses_an_engine_from_another_tensorrt_before_deserialization(tmp_path):
    eng = write_engine(tmp_path / "model_fp16.engine")
    write_record(eng, trt_version="8.5.2.2", onnx="/export/phones/model_fp16.onnx", dla_core=0, gpu_fallback=True,
                 batch=(1, 1, 1))
    trt = make_fake_trt(FakeCuda(), "tensor")
    with pytest.raises(CapabilityError) as e:
        TrtBackend(eng, trt_module=trt, cuda=FakeCuda(), compute_capability="8.7")
    msg = str(e.value)
    assert e.value.exit_code == 4 and trt.deserialized == []  # refused before TensorRT saw the bytes
    assert "TensorRT 8.5.2.2" in msg and "10.3.0-fake" in msg
    expected = (f"edgecls build-engine {tmp_path / 'model_fp16.onnx'} --precision fp16 --batch 1,1,1 --dla 0 "
                f"--gpu-fallback --out {tmp_path}   (copy model_fp16.onnx from the export folder here first)")
    assert expected in msg


def test_preflight_refuses_another_gpu_and_a_stale_onnx(tmp_path):
    eng = write_engine(tmp_path / "m.engine")
    write_record(eng, cc="7.2")
    trt = make_fake_trt(FakeCuda(), "tensor")
    with pytest.raises(CapabilityError, match=r"compute capability 7\.2 \(sm72\), this GPU is 8\.7"):
        TrtBackend(eng, trt_module=trt, cuda=FakeCuda(), compute_capability="8.7")
    onnx = tmp_path / "model_fp16.onnx"
    onnx.write_bytes(b"re-exported since")
    write_record(eng)
    import os

    os.utime(onnx, (eng.stat().st_mtime + 10, eng.stat().st_mtime + 10))
    with pytest.raises(CapabilityError, match="model_fp16.onnx changed after the engine was built") as e:
        TrtBackend(eng, trt_module=trt, cuda=FakeCuda(), compute_capability="8.7")
    assert f"edgecls build-engine {onnx} --precision fp16 --batch 1,1,8 --out {tmp_path}" in str(e.value)
    assert "copy" not in str(e.value) and trt.deserialized == []


def test_preflight_passes_a_matching_record_sets_the_dla_core_and_ignores_a_foreign_record(tmp_path):
    cuda = FakeCuda()
    eng = write_engine(tmp_path / "m.engine")
    write_record(eng, dla_core=1)
    trt = make_fake_trt(cuda, "tensor")
    be = TrtBackend(eng, trt_module=trt, cuda=cuda, compute_capability="8.7")
    assert trt.runtimes[-1].DLA_core == 1 and "DLA core 1" in be.describe()
    be.close()
    write_record(eng, trt_version="8.5.2.2", engine_bytes=123)  # describes another file: not used
    TrtBackend(eng, trt_module=trt, cuda=cuda, compute_capability="8.7").close()
    (tmp_path / "m.build.json").write_text("{not json")
    TrtBackend(eng, trt_module=trt, cuda=cuda, compute_capability="8.7").close()
    assert len(trt.deserialized) == 3


def test_engine_that_fails_to_deserialize_names_the_rebuild_command(tmp_path):
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\x00\x01 serialized by a TensorRT that reports the same version")
    write_record(eng)
    with pytest.raises(CapabilityError, match="edgecls build-engine .*model_fp16.onnx --precision fp16"):
        TrtBackend(eng, trt_module=make_fake_trt(FakeCuda(), "tensor"), cuda=FakeCuda(), compute_capability="8.7")
