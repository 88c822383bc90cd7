"""Inference backends behind one small interface; no torch, heavy libraries imported lazily.

:class:`Backend`: ``name``, ``input_name``, ``output_name``, ``input_shape`` (as the model declares it, ``None`` for
a dynamic dimension), ``providers`` (what actually runs the model), ``infer(batch float32 NCHW) -> float32 (N, C)``,
``close()``, context manager. ``infer`` splits or pads a batch to what a fixed-batch model or an engine profile
accepts, so callers can pass any batch size.

- :class:`OrtBackend`: onnxruntime. ``device="auto"|"cpu"|"cuda"|"tensorrt"`` (``"cuda:1"`` picks a GPU) chooses
  the execution providers; after the session is created its ``get_providers()`` is checked, because
  ``get_available_providers()`` lists CUDA/TensorRT whenever onnxruntime-gpu is installed, GPU or not. A requested
  provider that did not attach raises :class:`CapabilityError`, or with ``allow_fallback=True`` logs a loud warning.
- :class:`TrtBackend`: a serialized TensorRT engine (``.engine``/``.plan``); needs ``tensorrt`` and one CUDA binding
  (cuda-python, CuPy or PyCUDA) for the copies. Both the TensorRT >= 8.5 tensor API (``num_io_tensors``,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and the older bindings API are handled.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.errors import CapabilityError, InputError
from edgecls.runtime.model_io import check_model_file, import_onnxruntime, metadata_of_session, model_kind
from edgecls.runtime.spec import ModelSpec, SpecError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
_REQUESTED_EP = {"cpu": CPU_EP, "cuda": CUDA_EP, "tensorrt": TRT_EP}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def parse_device(device: str) -> Tuple[str, int]:
    """``"cuda:1"`` → ("cuda", 1); validates the name against :data:`DEVICES`."""
    name, _, idx = str(device).strip().lower().partition(":")
    if name not in DEVICES:
        raise InputError(f"device {device!r} is not one of {', '.join(DEVICES)} (a GPU index may follow: cuda:1)")
    if idx:
        if not idx.isdigit() or name in ("auto", "cpu"):
            raise InputError(f"device {device!r}: only cuda:N or tensorrt:N take a GPU index N")
        return name, int(idx)
    return name, 0


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


def _dims(shape: Sequence[Any]) -> Tuple[Optional[int], ...]:
    return tuple(int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None for d in shape)


def default_trt_cache_dir(model_path: Path) -> Path:
    """Where onnxruntime's TensorRT provider caches its engines: beside the model if writable, else ~/.cache."""
    beside = model_path.resolve().parent / ".trt_cache"
    if os.access(model_path.resolve().parent, os.W_OK):
        return beside
    return Path(os.path.expanduser("~")) / ".cache" / "edgecls" / "trt_cache"


class OrtBackend(Backend):
    """onnxruntime with providers from ``device``; the attached providers are checked, not assumed."""

    name = "onnxruntime"

    def __init__(
        self,
        path: os.PathLike[str] | str,
        device: str = "auto",
        threads: Optional[int] = None,
        allow_fallback: bool = False,
        spec: Optional[ModelSpec] = None,
        trt_cache_dir: Optional[str] = None,
        session_config: Optional[Dict[str, str]] = None,
    ) -> None:
        self.path = check_model_file(path)
        if model_kind(self.path) != "onnx":
            raise InputError(f"OrtBackend needs an .onnx model, got {os.fspath(path)!r}")
        dev, device_id = parse_device(device)
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads!r}")
        ort = import_onnxruntime()
        available = list(ort.get_available_providers())
        providers, required = self._providers_for(dev, device_id, available, spec, trt_cache_dir, self.path)
        for p in providers:
            if isinstance(p, tuple) and p[0] == TRT_EP and required in available:
                Path(p[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        if required and required not in available:
            msg = (
                f"--device {device} needs {required}, which this onnxruntime ({ort.__version__}) does not have "
                f"(available: {', '.join(available)}). Install onnxruntime-gpu (`pip install 'edgecls[gpu]'`; on a "
                "Jetson the onnxruntime-gpu wheel matching your JetPack), or run with --device cpu"
            )
            if not allow_fallback:
                raise CapabilityError(msg)
            log.warning("FALLBACK: %s; continuing on %s because of --allow-fallback", msg, CPU_EP)
            self.fallback = f"{required} not available"
            providers = [CPU_EP]
        so = ort.SessionOptions()
        so.log_severity_level = 3  # provider problems are checked below and reported by us
        if threads is not None:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():  # e.g. {"session.intra_op.allow_spinning": "0"}
            so.add_session_config_entry(str(key), str(value))
        try:
            self.session = ort.InferenceSession(os.fspath(self.path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime's own exception classes
            text = str(e)
            if required in (CUDA_EP, TRT_EP) and any(k in text for k in ("CUDA", "cuda", "TensorRT", "EP_FAIL")):
                raise CapabilityError(f"onnxruntime could not start {required} for {self.path}: {text}") from e
            raise InputError(f"onnxruntime cannot load {os.fspath(self.path)!r}: {text}") from e
        self.providers = tuple(self.session.get_providers())
        self.requested = required
        self.device = dev
        if required and required not in self.providers:
            msg = (
                f"--device {device} asked for {required} but the session attached only {list(self.providers)} "
                "(onnxruntime lists GPU providers whenever onnxruntime-gpu is installed, but they attach only with a "
                "working GPU, driver, CUDA/cuDNN (and TensorRT) libraries on the library path; check `nvidia-smi` and "
                "onnxruntime's GPU requirements)"
            )
            if not allow_fallback:
                self.session = None
                raise CapabilityError(msg + "; use --device cpu, or --allow-fallback to run on what attached")
            log.warning("FALLBACK: %s; continuing on %s because of --allow-fallback", msg, self.providers[0])
            self.fallback = f"{required} did not attach"
        elif dev == "auto" and CUDA_EP in available and CUDA_EP not in self.providers:
            log.warning(
                "FALLBACK: --device auto tried %s (onnxruntime-gpu is installed) but it did not attach; running on %s",
                CUDA_EP, list(self.providers),
            )
            self.fallback = f"{CUDA_EP} did not attach"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise InputError(f"{self.path}: expected a model with one input, it has {[i.name for i in inputs]}")
        inp = inputs[0]
        out = outputs[0]
        if spec is not None and len(outputs) > 1:
            named = [o for o in outputs if o.name == spec.output_name]
            out = named[0] if named else out
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = _dims(inp.shape)
        self.output_shape = _dims(out.shape)
        if inp.type not in _ORT_TYPES:
            raise InputError(f"{self.path}: input type {inp.type} is not supported (float32/float16 expected)")
        self.input_dtype = np.dtype(_ORT_TYPES[inp.type])
        self.metadata = metadata_of_session(self.session)
        if spec is not None:
            self.check_spec(spec, os.fspath(self.path))
        log.info("onnxruntime %s: %s on %s", ort.__version__, self.path.name, list(self.providers))

    @staticmethod
    def _providers_for(
        dev: str,
        device_id: int,
        available: List[str],
        spec: Optional[ModelSpec],
        trt_cache_dir: Optional[str],
        model_path: Path,
    ) -> Tuple[List[Any], Optional[str]]:
        cuda = (CUDA_EP, {"device_id": device_id})
        if dev == "cpu":
            return [CPU_EP], CPU_EP
        if dev == "cuda":
            return [cuda, CPU_EP], CUDA_EP
        if dev == "tensorrt":
            opts: Dict[str, Any] = {"device_id": device_id, "trt_engine_cache_enable": True}
            precision = spec.precision if spec is not None else "fp32"
            if precision == "fp16":
                opts["trt_fp16_enable"] = True
            elif precision in ("int8", "int8-qdq", "int8-cpu"):
                if precision == "int8-cpu":
                    log.warning(
                        "%s is the onnxruntime-CPU INT8 form (uint8 activations), which TensorRT does not run as INT8; "
                        "for --device tensorrt use the TensorRT form model_int8_qdq.onnx", model_path.name
                    )
                opts["trt_int8_enable"] = True  # explicit Q/DQ models need the INT8 builder flag
                opts["trt_fp16_enable"] = True
            opts["trt_engine_cache_path"] = str(trt_cache_dir or default_trt_cache_dir(model_path))
            return [(TRT_EP, opts), cuda, CPU_EP], TRT_EP
        # auto: a GPU when onnxruntime-gpu is installed (checked after the session is created), else the CPU
        if CUDA_EP in available:
            return [cuda, CPU_EP], None
        return [CPU_EP], None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("backend is closed")
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------------------------------------- TensorRT


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


CUDA_BINDINGS = (("cuda-python", CudaPythonApi), ("cupy", CupyApi), ("pycuda", PyCudaApi))


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
        "a TensorRT engine needs a CUDA binding for its memory copies and none works here ("
        + "; ".join(errors)
        + "). Install one: `pip install cuda-python` (match your CUDA major version), or cupy / pycuda"
    )


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
    ) -> None:
        self.path = check_model_file(engine_path)
        trt = trt_module if trt_module is not None else import_tensorrt()
        self.trt = trt
        self.cuda = cuda if cuda is not None else load_cuda_api()
        self._ptrs: List[int] = []
        self.stream = None
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        data = self.path.read_bytes()
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise CapabilityError(
                f"TensorRT {_trt_version(trt)} could not load the engine {self.path}: engines only run with the "
                "TensorRT version and GPU they were built with; rebuild it on this device with `edgecls build-engine`"
            )
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
        self.input_shape = _dims(in_shape)
        self.output_shape = _dims(out_shape)
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
        self.providers = (f"TensorRT {_trt_version(trt)}", self.cuda.name)
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


def load_backend(
    path: os.PathLike[str] | str,
    device: str = "auto",
    threads: Optional[int] = None,
    allow_fallback: bool = False,
    spec: Optional[ModelSpec] = None,
    **ort_options: Any,
) -> Backend:
    """The backend for a model file: ``.onnx`` → :class:`OrtBackend`, ``.engine``/``.plan`` → :class:`TrtBackend`.

    ``ort_options`` go to :class:`OrtBackend` (``trt_cache_dir``, ``session_config``).
    """
    p = check_model_file(path)
    dev, _ = parse_device(device)
    if model_kind(p) == "onnx":
        return OrtBackend(p, device=device, threads=threads, allow_fallback=allow_fallback, spec=spec, **ort_options)
    if dev == "cpu":
        raise InputError(
            f"{p.name} is a TensorRT engine, which runs only on an NVIDIA GPU; --device cpu needs the ONNX model"
        )
    if threads is not None:
        log.info("--threads has no effect on a TensorRT engine")
    return TrtBackend(p, spec=spec)
