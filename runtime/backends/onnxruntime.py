"""onnxruntime as a :class:`Backend`: ``device="auto"|"cpu"|"cuda"|"tensorrt"`` (``"cuda:1"`` picks a GPU) chooses
the execution providers.

After the session is created its ``get_providers()`` is checked, because ``get_available_providers()`` lists
CUDA/TensorRT whenever onnxruntime-gpu is installed, GPU or not. A requested provider that did not attach raises
:class:`CapabilityError`, or with ``allow_fallback=True`` logs a loud warning.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.devices import parse_device
from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends.base import Backend, dims
from edgecls.runtime.model_io import check_model_file, import_onnxruntime, metadata_of_session, model_kind
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


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
            providers = self._not_available(ort, device, required, available, allow_fallback)
        self.session = self._open_session(ort, providers, required, threads, session_config)
        self.providers = tuple(self.session.get_providers())
        self.requested = required
        self.device = dev
        self._check_attached(device, dev, required, available, allow_fallback)
        self._read_io(spec)
        self.metadata = metadata_of_session(self.session)
        if spec is not None:
            self.check_spec(spec, os.fspath(self.path))
        log.info("onnxruntime %s: %s on %s", ort.__version__, self.path.name, list(self.providers))

    def _not_available(
        self, ort: Any, device: str, required: str, available: List[str], allow_fallback: bool
    ) -> List[Any]:
        """The requested provider is not in this onnxruntime: CapabilityError, or the CPU with ``allow_fallback``."""
        msg = (
            f"--device {device} needs {required}, which this onnxruntime ({ort.__version__}) does not have "
            f"(available: {', '.join(available)}). Install onnxruntime-gpu (`pip install 'edgecls[gpu]'`; on a "
            "Jetson the onnxruntime-gpu wheel matching your JetPack), or run with --device cpu"
        )
        if not allow_fallback:
            raise CapabilityError(msg)
        log.warning("FALLBACK: %s; continuing on %s because of --allow-fallback", msg, CPU_EP)
        self.fallback = f"{required} not available"
        return [CPU_EP]

    def _open_session(
        self,
        ort: Any,
        providers: List[Any],
        required: Optional[str],
        threads: Optional[int],
        session_config: Optional[Dict[str, str]],
    ) -> Any:
        so = ort.SessionOptions()
        so.log_severity_level = 3  # provider problems are checked below and reported by us
        if threads is not None:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():  # e.g. {"session.intra_op.allow_spinning": "0"}
            so.add_session_config_entry(str(key), str(value))
        try:
            return ort.InferenceSession(os.fspath(self.path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime's own exception classes
            text = str(e)
            if required in (CUDA_EP, TRT_EP) and any(k in text for k in ("CUDA", "cuda", "TensorRT", "EP_FAIL")):
                raise CapabilityError(f"onnxruntime could not start {required} for {self.path}: {text}") from e
            raise InputError(f"onnxruntime cannot load {os.fspath(self.path)!r}: {text}") from e

    def _check_attached(
        self, device: str, dev: str, required: Optional[str], available: List[str], allow_fallback: bool
    ) -> None:
        """The session's providers, not the installed ones, say what runs: refuse, or record a fallback."""
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

    def _read_io(self, spec: Optional[ModelSpec]) -> None:
        """Input/output names, shapes and the input dtype from the session (the spec picks among several outputs)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise InputError(f"{self.path}: expected a model with one input, it has {[i.name for i in inputs]}")
        inp = inputs[0]
        out = outputs[0]
        if spec is not None and len(outputs) > 1:
            named = [o for o in outputs if o.name == spec.output_name]
            out = named[0] if named else out
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = dims(inp.shape)
        self.output_shape = dims(out.shape)
        if inp.type not in _ORT_TYPES:
            raise InputError(f"{self.path}: input type {inp.type} is not supported (float32/float16 expected)")
        self.input_dtype = np.dtype(_ORT_TYPES[inp.type])

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
