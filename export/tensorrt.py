"""TensorRT engines from the exported ONNX — small, lazy and isolated (``tensorrt`` is imported only here).

Version switches (read from NVIDIA's 8.x→10.x and 10.x→11.x migration guides):

==========  =====================================  ==============================================================
TensorRT    network flags                          precision
==========  =====================================  ==============================================================
8.x (8.5)   EXPLICIT_BATCH                         fp16: FP16 builder flag; int8: INT8 flag + the Q/DQ ONNX
10.x        none (EXPLICIT_BATCH deprecated)       fp16: the FP16 ONNX, STRONGLY_TYPED (or FP16 flag, weak typing,
            or STRONGLY_TYPED                      deprecated since 10.12); int8: Q/DQ ONNX, STRONGLY_TYPED
11.x        STRONGLY_TYPED (always on)             precision flags removed: fp16 needs the FP16 ONNX, int8 the Q/DQ
==========  =====================================  ==============================================================

INT8 is always explicit quantization from the symmetric Q/DQ ONNX (no calibrator: deprecated in 10.1, removed in
11). Workspace: ``set_memory_pool_limit`` (8.4+) else ``max_workspace_size``. An optimization profile covers the
``--batch`` min/opt/max; a timing cache is loaded and saved. The engine name carries its cache key: precision,
TensorRT version, GPU compute capability, batch profile and a hash of the ONNX. Without TensorRT or a GPU a
:class:`CapabilityError` (exit 4) gives the equivalent ``trtexec`` command line.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from edgecls.errors import CapabilityError, InputError
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MIB = 1024
ONNX_FOR_ENGINE = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8_qdq.onnx"}


# ------------------------------------------------------------------------------------------ pure helpers


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and 1 <= self.min <= self.opt <= self.max):
            raise InputError(f"--batch needs 1 <= min <= opt <= max, got {self.min},{self.opt},{self.max}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"8"`` → 1,8,8 (throughput at 8, any batch up to 8); ``"1,4,8"`` → min 1, opt 4, max 8."""
        parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            return cls(1, nums[0], nums[0])
        if len(nums) == 3:
            return cls(*nums)
        raise InputError(f"--batch {text!r}: give MAX (e.g. 8) or MIN,OPT,MAX (e.g. 1,4,8)")

    @property
    def tag(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"

    def shapes(self, crop: int) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        return tuple((b, 3, crop, crop) for b in (self.min, self.opt, self.max))  # type: ignore[return-value]


def parse_version(version: str) -> Tuple[int, int, int]:
    nums = []
    for p in str(version).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


@dataclass(frozen=True)
class BuildPlan:
    """What to ask of a given TensorRT version for a given precision and source ONNX."""

    trt_version: str
    precision: str
    onnx_precision: str
    network_flags: Tuple[str, ...]
    builder_flags: Tuple[str, ...]
    workspace_api: str  # "memory_pool_limit" | "max_workspace_size"
    notes: Tuple[str, ...] = ()

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags


def build_plan(trt_version: str, precision: str, onnx_precision: str) -> BuildPlan:
    """Version switches as pure data (unit-tested without TensorRT)."""
    if precision not in ENGINE_PRECISIONS:
        raise InputError(f"engine precision {precision!r} is not one of {', '.join(ENGINE_PRECISIONS)}")
    if onnx_precision == "int8-cpu":
        raise InputError(
            "model_int8_cpu.onnx (uint8 activations) is the onnxruntime-CPU form; TensorRT needs symmetric INT8: "
            "build from model_int8_qdq.onnx"
        )
    if precision == "int8" and onnx_precision not in ("int8-qdq", "int8"):
        raise InputError(
            f"INT8 engines are built from the symmetric Q/DQ ONNX (model_int8_qdq.onnx, explicit quantization), "
            f"not from a {onnx_precision} ONNX: export it with `edgecls export CKPT --int8`"
        )
    if precision != "int8" and onnx_precision.startswith("int8"):
        raise InputError(f"a {precision} engine needs the {ONNX_FOR_ENGINE[precision]} ONNX, not an INT8 Q/DQ model")
    if precision == "fp32" and onnx_precision != "fp32":
        raise InputError(f"an fp32 engine needs the FP32 ONNX (model.onnx), not a {onnx_precision} ONNX")
    major, minor, _ = parse_version(trt_version)
    notes: List[str] = []
    if major < 8 or (major == 8 and minor < 5):
        raise CapabilityError(f"TensorRT {trt_version} is too old: edgecls builds engines with TensorRT >= 8.5")
    workspace_api = "memory_pool_limit"
    if major == 8:
        net: Tuple[str, ...] = ("EXPLICIT_BATCH",)
        flags: Tuple[str, ...] = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    elif major == 9 or major == 10:
        if precision == "int8" or (precision == "fp16" and onnx_precision == "fp16"):
            net, flags = ("STRONGLY_TYPED",), ()
        elif precision == "fp16":
            net, flags = (), ("FP16",)
            notes.append("FP16 from an FP32 ONNX uses weak typing (deprecated since TensorRT 10.12); "
                         "build from model_fp16.onnx for a strongly typed network")
        else:
            net, flags = (), ()
    else:  # 11 and later: strongly typed always, precision flags removed
        if precision == "fp16" and onnx_precision != "fp16":
            raise InputError(
                f"TensorRT {trt_version} has no FP16 builder flag (strong typing only): build the fp16 engine from "
                "model_fp16.onnx (`edgecls export CKPT --fp16`)"
            )
        net, flags = ("STRONGLY_TYPED",), ()
    return BuildPlan(trt_version, precision, onnx_precision, net, flags, workspace_api, tuple(notes))


def choose_onnx(export_dir: PathLike, precision: str, trt_version: Optional[str]) -> Path:
    """Which exported ONNX an ``--engine`` precision is built from, by TensorRT version."""
    d = Path(export_dir)
    if precision == "int8":
        return d / ONNX_FOR_ENGINE["int8"]
    if precision == "fp16":
        major = parse_version(trt_version)[0] if trt_version else 10
        return d / (ONNX_FOR_ENGINE["fp32"] if major == 8 else ONNX_FOR_ENGINE["fp16"])
    return d / ONNX_FOR_ENGINE["fp32"]


def engine_name(stem: str, precision: str, trt_version: str, compute_capability: str, profile: BatchProfile,
                onnx_sha256: str) -> str:
    """``model_int8_trt10.3.0_sm87_b1-1-8_1a2b3c4d5e6f.engine`` — the engine's cache key, readable."""
    cc = str(compute_capability).replace(".", "")
    return f"{stem}_{precision}_trt{trt_version}_sm{cc}_{profile.tag}_{onnx_sha256[:12]}.engine"


def trtexec_command(
    onnx_path: PathLike, engine_path: PathLike, precision: str, input_name: str, crop: int, profile: BatchProfile,
    trt_major: int, workspace_mib: int = DEFAULT_WORKSPACE_MIB, timing_cache: Optional[PathLike] = None,
    onnx_precision: Optional[str] = None,
) -> str:
    """The equivalent ``trtexec`` command line for TensorRT ``trt_major`` (8, 10 or 11)."""
    mn, op, mx = ("x".join(str(d) for d in s) for s in profile.shapes(crop))
    args = ["trtexec", f"--onnx={os.fspath(onnx_path)}", f"--saveEngine={os.fspath(engine_path)}",
            f"--minShapes={input_name}:{mn}", f"--optShapes={input_name}:{op}", f"--maxShapes={input_name}:{mx}",
            f"--memPoolSize=workspace:{int(workspace_mib)}"]
    onnx_precision = onnx_precision or {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq"}[precision]
    if trt_major == 8:
        args += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"]}[precision]
    elif trt_major in (9, 10):
        if precision == "int8" or (precision == "fp16" and onnx_precision == "fp16"):
            args.append("--stronglyTyped")
        elif precision == "fp16":
            args.append("--fp16")
    if timing_cache:
        args.append(f"--timingCacheFile={os.fspath(timing_cache)}")
    return " ".join(args)


# ---------------------------------------------------------------------------------------- capabilities


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise CapabilityError("the `tensorrt` Python package is not installed") from e
    return tensorrt


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


# ------------------------------------------------------------------------------------------------ build


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


def build_engine(
    onnx_path: PathLike, precision: Optional[str] = None, out_dir: Optional[PathLike] = None,
    profile: BatchProfile = BatchProfile(), workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: Optional[PathLike] = None, force: bool = False, trt_module: Any = None,
    compute_capability: Optional[str] = None,
) -> EngineResult:
    """Build (or reuse, when the name/cache key matches) a TensorRT engine from an exported ONNX.

    Writes ``<name>.engine`` and its ``<name>.json`` ModelSpec sidecar atomically, plus ``<name>.build.json``.
    CapabilityError (exit 4) without TensorRT or a GPU, with the trtexec equivalent in the message.
    """
    from edgecls import fileio as atomic
    from edgecls.export.metadata import write_sidecar
    from edgecls.fileio import file_sha256

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX model {os.fspath(onnx_path)!r} does not exist")
    onnx_prec, spec = onnx_precision_of(onnx_path)
    precision = precision or {"int8-qdq": "int8", "int8": "int8"}.get(onnx_prec, onnx_prec)
    out_dir = Path(out_dir) if out_dir is not None else onnx_path.parent
    stem = "model"

    def capability(why: str) -> CapabilityError:
        hint = "\n".join(
            f"  TensorRT {label}:\n    " + trtexec_command(
                onnx_path, out_dir / f"{stem}_{precision}.engine", precision, spec.input_name, spec.preprocess.crop,
                profile, major, workspace_mib, timing_cache, onnx_precision=onnx_prec)
            for major, label in ((8, "8.5 (JetPack 5)"), (10, "10.x"), (11, "11.x"))
            if _plan_ok(f"{major}.5", precision, onnx_prec)
        )
        return CapabilityError(
            f"cannot build a TensorRT engine here: {why}. Build it on the target device with\n"
            f"  edgecls build-engine {os.fspath(onnx_path)} --precision {precision} --batch "
            f"{profile.min},{profile.opt},{profile.max}\nor with trtexec:\n{hint}"
        )

    if not any(_plan_ok(v, precision, onnx_prec) for v in ("8.5", "10.0", "11.0")):
        build_plan("10.0", precision, onnx_prec)  # raises the InputError that explains the mismatch
    try:
        trt = trt_module if trt_module is not None else import_tensorrt()
    except CapabilityError as e:
        raise capability(f"{e} (pip install 'edgecls[trt]'; on a Jetson it comes with JetPack)") from e
    version = str(getattr(trt, "__version__", "0"))
    plan = build_plan(version, precision, onnx_prec)
    for note in plan.notes:
        log.warning("%s", note)
    cc = compute_capability or gpu_compute_capability()
    if cc is None:
        raise capability("no NVIDIA GPU found (the CUDA driver library libcuda could not report one)")
    sha = file_sha256(onnx_path)
    path = out_dir / engine_name(stem, precision, version, cc, profile, sha)
    info_path = path.with_suffix(".build.json")
    if path.is_file() and info_path.is_file() and not force:
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            info = {}
        if info.get("onnx_sha256") == sha and info.get("trt_version") == version:
            log.info("engine %s is up to date (same ONNX, TensorRT, GPU and profile): reused", path.name)
            write_sidecar(path, spec.replace(precision=precision))
            return EngineResult(path, precision, version, cc, profile, onnx_path, sha, True, 0.0, plan)
    cache_path = Path(timing_cache) if timing_cache else out_dir / f"timing_trt{version}_sm{cc.replace('.', '')}.cache"
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else None
    t0 = time.perf_counter()
    engine_bytes, cache_out = build_serialized(trt, plan, onnx_path.read_bytes(), spec.input_name,
                                               spec.preprocess.crop, profile, workspace_mib, cache_bytes)
    secs = time.perf_counter() - t0
    atomic.write_bytes(path, engine_bytes)
    if cache_out:
        atomic.write_bytes(cache_path, cache_out)
    write_sidecar(path, spec.replace(precision=precision))
    atomic.write_json(info_path, {
        "engine": path.name, "onnx": os.fspath(onnx_path), "onnx_sha256": sha, "onnx_precision": onnx_prec,
        "precision": precision, "trt_version": version, "compute_capability": cc,
        "batch": {"min": profile.min, "opt": profile.opt, "max": profile.max}, "workspace_mib": workspace_mib,
        "network_flags": list(plan.network_flags), "builder_flags": list(plan.builder_flags),
        "timing_cache": os.fspath(cache_path), "build_seconds": round(secs, 2),
    })
    log.info("built %s in %.1fs", path.name, secs)
    return EngineResult(path, precision, version, cc, profile, onnx_path, sha, False, secs, plan)


def _plan_ok(version: str, precision: str, onnx_precision: str) -> bool:
    try:
        build_plan(version, precision, onnx_precision)
    except (InputError, CapabilityError):
        return False
    return True


def engines_in(folder: PathLike) -> Sequence[Path]:
    return sorted(Path(folder).glob("*.engine"))
