"""TensorRT engines from the exported ONNX — small and lazy (``tensorrt`` is imported only when building, through
the runtime's :func:`~edgecls.runtime.backends.tensorrt.import_tensorrt`).

What to ask of each TensorRT version (flags, precision, DLA) is pure data in :mod:`edgecls.export.trt_plan`.
INT8 is always explicit quantization from the symmetric Q/DQ ONNX (no calibrator: deprecated in 10.1, removed in
11). Workspace: ``set_memory_pool_limit`` (8.4+) else ``max_workspace_size``. An optimization profile covers the
``--batch`` min/opt/max; a timing cache is loaded and saved. ``--dla N`` builds for a DLA core
(``default_device_type``/``DLA_core``, ``GPU_FALLBACK`` with ``--gpu-fallback``). The engine name carries its cache
key: precision, TensorRT version, GPU compute capability, batch profile, DLA core and a hash of the ONNX; the build
record beside it (:mod:`edgecls.runtime.backends.engine_record`) is what the runtime checks before loading. Without
TensorRT or a GPU a :class:`CapabilityError` (exit 4) gives the equivalent ``trtexec`` command line.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from edgecls.core.errors import CapabilityError, InputError
from edgecls.export.trt_plan import (
    DEFAULT_WORKSPACE_MIB,
    BatchProfile,
    BuildPlan,
    build_plan,
    check_dla_profile,
    engine_name,
    parse_version,
    plan_ok,
    trtexec_command,
)
from edgecls.runtime.backends.engine_record import EngineRecord, record_path
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class EngineResult:
    path: Path
    precision: str
    trt_version: str
    compute_capability: str
    profile: BatchProfile
    onnx_path: Path
    onnx_sha256: str
    reused: bool
    seconds: float
    plan: BuildPlan


def _flag(enum: Any, name: str) -> Any:
    if not hasattr(enum, name):
        raise CapabilityError(f"this TensorRT has no {getattr(enum, '__name__', 'flag')}.{name}")
    return getattr(enum, name)


def _configure_dla(trt: Any, builder: Any, config: Any, plan: BuildPlan) -> None:
    """Target a DLA core: ``default_device_type = DeviceType.DLA``, ``DLA_core = N`` (TensorRT Python API)."""
    if plan.dla_core is None:
        return
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if plan.dla_core >= cores:
        raise CapabilityError(
            f"--dla {plan.dla_core}: this device has {cores} DLA core{'s' if cores != 1 else ''} (AGX Orin and "
            "Xavier have 2, Orin NX 1 or 2, Orin Nano and Thor none); build for the GPU without --dla"
        )
    config.default_device_type = _flag(trt.DeviceType, "DLA")
    config.DLA_core = int(plan.dla_core)


def build_serialized(trt: Any, plan: BuildPlan, onnx_bytes: bytes, input_name: str, crop: int,
                     profile: BatchProfile, workspace_mib: int, timing_cache: Optional[bytes]) -> Tuple[bytes, bytes]:
    """Build with the TensorRT Python API; returns (serialized engine, serialized timing cache)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        if name == "STRONGLY_TYPED" and not hasattr(trt.NetworkDefinitionCreationFlag, name) \
                and parse_version(plan.trt_version)[0] >= 11:
            continue  # always on in 11.x; the flag is accepted and ignored where it still exists
        flags |= 1 << int(_flag(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise InputError("TensorRT could not parse the ONNX model:\n  " + "\n  ".join(errors or ["(no details)"]))
    config = builder.create_builder_config()
    nbytes = int(workspace_mib) * 2**20
    if plan.workspace_api == "memory_pool_limit" and hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:
        config.max_workspace_size = nbytes
    for name in plan.builder_flags:
        config.set_flag(_flag(trt.BuilderFlag, name))
    _configure_dla(trt, builder, config, plan)
    opt_profile = builder.create_optimization_profile()
    mn, op, mx = profile.shapes(crop)
    opt_profile.set_shape(input_name, mn, op, mx)
    config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT build_serialized_network failed (see the TensorRT log above)")
    cache_out = config.get_timing_cache()
    return bytes(serialized), bytes(cache_out.serialize()) if cache_out is not None else b""


def onnx_precision_of(onnx_path: PathLike) -> Tuple[str, ModelSpec]:
    from edgecls.runtime.model_io import load_model_spec

    spec = load_model_spec(onnx_path)
    return spec.precision, spec


@dataclass(frozen=True)
class _Target:
    """One engine to build: the source and the settings that make its cache key."""

    onnx_path: Path
    onnx_precision: str
    spec: ModelSpec
    precision: str
    out_dir: Path
    profile: BatchProfile
    workspace_mib: int
    timing_cache: Optional[PathLike]
    dla_core: Optional[int]
    gpu_fallback: bool

    def capability_error(self, why: str) -> CapabilityError:
        engine = self.out_dir / f"model_{self.precision}.engine"
        return _capability_error(why, self, engine)


def build_engine(
    onnx_path: PathLike, precision: Optional[str] = None, out_dir: Optional[PathLike] = None,
    profile: BatchProfile = BatchProfile(), workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: Optional[PathLike] = None, force: bool = False, trt_module: Any = None,
    compute_capability: Optional[str] = None, dla_core: Optional[int] = None, gpu_fallback: bool = False,
) -> EngineResult:
    """Build (or reuse, when the name/cache key matches) a TensorRT engine from an exported ONNX.

    Writes ``<name>.engine`` and its ``<name>.json`` ModelSpec sidecar atomically, plus ``<name>.build.json``.
    CapabilityError (exit 4) without TensorRT or a GPU, with the trtexec equivalent in the message.
    """
    from edgecls.core.fileio import file_sha256
    from edgecls.export.metadata import write_sidecar
    from edgecls.runtime.backends.cuda import gpu_compute_capability
    from edgecls.runtime.backends.tensorrt import import_tensorrt

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX model {os.fspath(onnx_path)!r} does not exist")
    onnx_prec, spec = onnx_precision_of(onnx_path)
    precision = precision or {"int8-qdq": "int8", "int8": "int8"}.get(onnx_prec, onnx_prec)
    check_dla_profile(profile, dla_core)
    t = _Target(onnx_path, onnx_prec, spec, precision, Path(out_dir) if out_dir is not None else onnx_path.parent,
                profile, workspace_mib, timing_cache, dla_core, gpu_fallback)
    if not any(plan_ok(v, precision, onnx_prec, dla_core, gpu_fallback) for v in ("8.5", "10.0", "11.4.1")):
        build_plan("10.0", precision, onnx_prec, dla_core, gpu_fallback)  # raises the error that explains it
    try:
        trt = trt_module if trt_module is not None else import_tensorrt()
    except CapabilityError as e:
        raise t.capability_error("the `tensorrt` Python package is not installed (pip install 'edgecls[trt]'; on a "
                                 "Jetson it comes with JetPack: python3-libnvinfer)") from e
    version = str(getattr(trt, "__version__", "0"))
    plan = build_plan(version, precision, onnx_prec, dla_core, gpu_fallback)
    for note in plan.notes:
        log.warning("%s", note)
    cc = compute_capability or gpu_compute_capability()
    if cc is None:
        raise t.capability_error("no NVIDIA GPU found (the CUDA driver library libcuda could not report one)")
    sha = file_sha256(onnx_path)
    path = t.out_dir / engine_name("model", precision, version, cc, profile, sha, dla_core, gpu_fallback)
    if not force and _up_to_date(path, sha, version, dla_core, gpu_fallback):
        log.info("engine %s is up to date (same ONNX, TensorRT, GPU, profile and device): reused", path.name)
        write_sidecar(path, spec.replace(precision=precision))
        return EngineResult(path, precision, version, cc, profile, onnx_path, sha, True, 0.0, plan)
    cache_path = Path(timing_cache) if timing_cache else t.out_dir / f"timing_trt{version}_sm{cc.replace('.', '')}.cache"
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else None
    t0 = time.perf_counter()
    engine_bytes, cache_out = build_serialized(trt, plan, onnx_path.read_bytes(), spec.input_name,
                                               spec.preprocess.crop, profile, workspace_mib, cache_bytes)
    secs = time.perf_counter() - t0
    _write_engine(t, path, plan, cc, sha, engine_bytes, cache_path, cache_out, secs)
    log.info("built %s in %.1fs", path.name, secs)
    return EngineResult(path, precision, version, cc, profile, onnx_path, sha, False, secs, plan)


def _write_engine(t: _Target, path: Path, plan: BuildPlan, cc: str, sha: str, engine_bytes: bytes, cache_path: Path,
                  cache_out: bytes, secs: float) -> None:
    """The engine, its timing cache, its ModelSpec sidecar and its build record, each written atomically."""
    from edgecls.core import fileio as atomic
    from edgecls.export.metadata import write_sidecar

    atomic.write_bytes(path, engine_bytes)
    if cache_out:
        atomic.write_bytes(cache_path, cache_out)
    write_sidecar(path, t.spec.replace(precision=t.precision))
    record = EngineRecord(
        engine=path.name, trt_version=plan.trt_version, compute_capability=cc, precision=t.precision,
        onnx=os.fspath(t.onnx_path), onnx_sha256=sha, onnx_precision=t.onnx_precision,
        batch=(t.profile.min, t.profile.opt, t.profile.max), workspace_mib=t.workspace_mib, dla_core=t.dla_core,
        gpu_fallback=t.gpu_fallback, engine_bytes=len(engine_bytes), network_flags=plan.network_flags,
        builder_flags=plan.builder_flags, timing_cache=os.fspath(cache_path), build_seconds=round(secs, 2),
    )
    atomic.write_json(record_path(path), record.to_dict())


def _up_to_date(path: Path, onnx_sha256: str, trt_version: str, dla_core: Optional[int], gpu_fallback: bool) -> bool:
    """The engine and its ``.build.json`` exist and record the same ONNX hash, TensorRT version and DLA target."""
    info_path = record_path(path)
    if not (path.is_file() and info_path.is_file()):
        return False
    try:
        info = json.loads(info_path.read_text())
    except ValueError:
        info = {}
    return (info.get("onnx_sha256") == onnx_sha256 and info.get("trt_version") == trt_version
            and info.get("dla_core") == dla_core and bool(info.get("gpu_fallback", False)) == gpu_fallback
            and info.get("engine_bytes", path.stat().st_size) == path.stat().st_size)


def _capability_error(why: str, t: _Target, engine_path: Path) -> CapabilityError:
    """Why no engine can be built here, with the ``build-engine`` and ``trtexec`` lines for the target device."""
    hint = "\n".join(
        f"  TensorRT {label}:\n    " + trtexec_command(
            t.onnx_path, engine_path, t.precision, t.spec.input_name, t.spec.preprocess.crop, t.profile, major,
            t.workspace_mib, t.timing_cache, onnx_precision=t.onnx_precision, dla_core=t.dla_core,
            gpu_fallback=t.gpu_fallback)
        for major, version, label in ((8, "8.5", "8.5 (JetPack 5)"), (10, "10.3", "10.x"), (11, "11.4.1", "11.x"))
        if plan_ok(version, t.precision, t.onnx_precision, t.dla_core, t.gpu_fallback)
    )
    dla = "" if t.dla_core is None else f" --dla {t.dla_core}" + (" --gpu-fallback" if t.gpu_fallback else "")
    return CapabilityError(
        f"cannot build a TensorRT engine here: {why}. Build it on the target device with\n"
        f"  edgecls build-engine {os.fspath(t.onnx_path)} --precision {t.precision} --batch "
        f"{t.profile.min},{t.profile.opt},{t.profile.max}{dla}\nor with trtexec:\n{hint}"
    )
