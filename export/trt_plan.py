"""What to ask of each TensorRT version, as pure data (unit-tested without TensorRT): the batch profile, the
network/builder flags per version and precision, DLA, the engine's cache-key name and the ``trtexec`` equivalent.

Version switches (read from NVIDIA's 8.x→10.x and 10.x→11.x migration guides):

==========  =====================================  ==============================================================
TensorRT    network flags                          precision
==========  =====================================  ==============================================================
8.x (8.5)   EXPLICIT_BATCH                         fp16: FP16 builder flag; int8: INT8 flag + the Q/DQ ONNX
10.x        none (EXPLICIT_BATCH deprecated)       fp16: the FP16 ONNX, STRONGLY_TYPED (or FP16 flag, weak typing,
            or STRONGLY_TYPED                      deprecated since 10.12); int8: Q/DQ ONNX, STRONGLY_TYPED
11.x        STRONGLY_TYPED (always on)             precision flags removed: fp16 needs the FP16 ONNX, int8 the Q/DQ
==========  =====================================  ==============================================================

DLA (``--dla N``, NVIDIA's "Working with DLA" and "DLA Supported Layers and Restrictions"): FP16 and INT8 only; no
dynamic dimensions (the profile's min, opt and max must be equal); ``config.default_device_type = DeviceType.DLA``,
``config.DLA_core = N`` and, with ``--gpu-fallback``, ``BuilderFlag.GPU_FALLBACK`` for layers DLA cannot run.
TensorRT 8.x–10.7 build DLA engines with the precision builder flags (INT8 adds FP16: DLA has no FP32); 10.7 was the
last 10.x with DLA; 11.0–11.4.0 have none on Jetson; 11.4.1+ has it again on AGX Orin (JetPack 7.2.2+), strongly
typed. Jetson Thor and Orin Nano have no DLA cores (checked against ``builder.num_DLA_cores`` when building).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends.engine_record import DEFAULT_WORKSPACE_MIB, parse_version

PathLike = Union[str, "os.PathLike[str]"]
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
ONNX_FOR_ENGINE = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8_qdq.onnx"}
# the version a trtexec line is written for, per TensorRT major
_TRTEXEC_VERSION = {8: "8.5.2", 9: "9.3.0", 10: "10.3.0", 11: "11.4.1"}


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

    @property
    def fixed(self) -> bool:
        return self.min == self.opt == self.max

    def shapes(self, crop: int) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        return tuple((b, 3, crop, crop) for b in (self.min, self.opt, self.max))  # type: ignore[return-value]


@dataclass(frozen=True)
class BuildPlan:
    """What to ask of a given TensorRT version for a given precision, source ONNX and device (GPU or a DLA core)."""

    trt_version: str
    precision: str
    onnx_precision: str
    network_flags: Tuple[str, ...]
    builder_flags: Tuple[str, ...]
    workspace_api: str  # "memory_pool_limit" | "max_workspace_size"
    notes: Tuple[str, ...] = ()
    dla_core: Optional[int] = None
    gpu_fallback: bool = False

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags

    @property
    def device(self) -> str:
        return "gpu" if self.dla_core is None else f"dla:{self.dla_core}"


def _check_precision_and_onnx(precision: str, onnx_precision: str) -> None:
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


def _check_dla(version: str, precision: str, dla_core: Optional[int], gpu_fallback: bool) -> None:
    if dla_core is None:
        if gpu_fallback:
            raise InputError("--gpu-fallback lets layers DLA cannot run fall back to the GPU: it needs --dla N")
        return
    if not isinstance(dla_core, int) or dla_core < 0:
        raise InputError(f"--dla takes a DLA core index (0 or 1 on AGX Orin/Xavier), got {dla_core!r}")
    if precision == "fp32":
        raise InputError("DLA runs FP16 and INT8 only: build the DLA engine with --precision fp16 or int8")
    v = parse_version(version)
    if (10, 8, 0) <= v < (11, 4, 1):
        raise CapabilityError(
            f"TensorRT {version} has no DLA on Jetson (TensorRT 10.7 was the last 10.x with DLA; 11.x brings it back "
            "from 11.4.1 on AGX Orin with JetPack 7.2.2+). Build this engine for the GPU (without --dla)"
        )


def build_plan(trt_version: str, precision: str, onnx_precision: str, dla_core: Optional[int] = None,
               gpu_fallback: bool = False) -> BuildPlan:
    """Version switches as pure data (unit-tested without TensorRT)."""
    _check_precision_and_onnx(precision, onnx_precision)
    major, minor, _ = parse_version(trt_version)
    if major < 8 or (major == 8 and minor < 5):
        raise CapabilityError(f"TensorRT {trt_version} is too old: edgecls builds engines with TensorRT >= 8.5")
    _check_dla(trt_version, precision, dla_core, gpu_fallback)
    notes: List[str] = []
    if major == 8:
        net: Tuple[str, ...] = ("EXPLICIT_BATCH",)
        flags: Tuple[str, ...] = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    elif dla_core is not None and major in (9, 10):  # DLA on 9.x/10.x: weak typing with precision flags
        net, flags = (), {"fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
        notes.append("DLA engines are built with the precision builder flags (weak typing) on TensorRT <= 10.7")
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
    if major == 8 and dla_core is not None and precision == "int8":
        flags = ("INT8", "FP16")  # DLA has no FP32: layers left out of INT8 run in FP16
    if gpu_fallback:
        flags = flags + ("GPU_FALLBACK",)
    return BuildPlan(trt_version, precision, onnx_precision, net, flags, "memory_pool_limit", tuple(notes),
                     dla_core, gpu_fallback)


def plan_ok(version: str, precision: str, onnx_precision: str, dla_core: Optional[int] = None,
            gpu_fallback: bool = False) -> bool:
    try:
        build_plan(version, precision, onnx_precision, dla_core, gpu_fallback)
    except (InputError, CapabilityError):
        return False
    return True


def check_dla_profile(profile: BatchProfile, dla_core: Optional[int]) -> None:
    """DLA has no dynamic dimensions: the batch profile must be fixed (min = opt = max)."""
    if dla_core is not None and not profile.fixed:
        raise InputError(
            f"--dla needs a fixed batch (DLA has no dynamic dimensions), got --batch "
            f"{profile.min},{profile.opt},{profile.max}: give e.g. --batch 1,1,1 (or 4,4,4)"
        )


def choose_onnx(export_dir: PathLike, precision: str, trt_version: Optional[str]) -> Path:
    """Which exported ONNX an ``--engine`` precision is built from, by TensorRT version."""
    d = Path(export_dir)
    if precision == "int8":
        return d / ONNX_FOR_ENGINE["int8"]
    if precision == "fp16":
        major = parse_version(trt_version)[0] if trt_version else 10
        return d / (ONNX_FOR_ENGINE["fp32"] if major == 8 else ONNX_FOR_ENGINE["fp16"])
    return d / ONNX_FOR_ENGINE["fp32"]


def dla_tag(dla_core: Optional[int], gpu_fallback: bool = False) -> str:
    """``""`` for the GPU; ``"_dla0"`` / ``"_dla0gf"`` (GPU fallback) for a DLA core."""
    if dla_core is None:
        return ""
    return f"_dla{int(dla_core)}" + ("gf" if gpu_fallback else "")


def engine_name(stem: str, precision: str, trt_version: str, compute_capability: str, profile: BatchProfile,
                onnx_sha256: str, dla_core: Optional[int] = None, gpu_fallback: bool = False) -> str:
    """``model_int8_trt10.3.0_sm87_b1-1-8_1a2b3c4d5e6f.engine`` (``..._b1-1-1_dla0gf_...`` on a DLA core) — the
    engine's cache key, readable."""
    cc = str(compute_capability).replace(".", "")
    return (f"{stem}_{precision}_trt{trt_version}_sm{cc}_{profile.tag}{dla_tag(dla_core, gpu_fallback)}_"
            f"{onnx_sha256[:12]}.engine")


def trtexec_command(
    onnx_path: PathLike, engine_path: PathLike, precision: str, input_name: str, crop: int, profile: BatchProfile,
    trt_major: int, workspace_mib: int = DEFAULT_WORKSPACE_MIB, timing_cache: Optional[PathLike] = None,
    onnx_precision: Optional[str] = None, dla_core: Optional[int] = None, gpu_fallback: bool = False,
) -> str:
    """The equivalent ``trtexec`` command line for TensorRT ``trt_major`` (8, 10 or 11), from the same plan."""
    mn, op, mx = ("x".join(str(d) for d in s) for s in profile.shapes(crop))
    args = ["trtexec", f"--onnx={os.fspath(onnx_path)}", f"--saveEngine={os.fspath(engine_path)}",
            f"--minShapes={input_name}:{mn}", f"--optShapes={input_name}:{op}", f"--maxShapes={input_name}:{mx}",
            f"--memPoolSize=workspace:{int(workspace_mib)}"]
    onnx_precision = onnx_precision or {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq"}[precision]
    plan = build_plan(_TRTEXEC_VERSION.get(int(trt_major), f"{int(trt_major)}.0.0"), precision, onnx_precision,
                      dla_core, gpu_fallback)
    if plan.strongly_typed and int(trt_major) < 11:  # always on in 11 (the flag is a no-op there)
        args.append("--stronglyTyped")
    args += [{"FP16": "--fp16", "INT8": "--int8"}[f] for f in plan.builder_flags if f in ("FP16", "INT8")]
    if dla_core is not None:
        args.append(f"--useDLACore={int(dla_core)}")
    if gpu_fallback:
        args.append("--allowGPUFallback")
    if timing_cache:
        args.append(f"--timingCacheFile={os.fspath(timing_cache)}")
    return " ".join(args)
