"""TensorRT engine building without TensorRT: naming, profiles, version switches (a fake ``tensorrt`` module),
trtexec lines and the messages users get when TensorRT or a GPU is missing."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgecls.core.errors import CapabilityError, InputError
from edgecls.export.tensorrt import build_engine, build_serialized
from edgecls.export.trt_plan import BatchProfile, build_plan, choose_onnx, engine_name, trtexec_command
from edgecls.runtime.backends.cuda import gpu_compute_capability
from edgecls.runtime.backends.engine_record import parse_version, read_record
from edgecls.runtime.spec import ModelSpec, PreprocessSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


# -------------------------------------------------------------------------------------------------- pure


def test_batch_profile_parse_and_shapes():
    assert BatchProfile.parse("8") == BatchProfile(1, 8, 8)
    assert BatchProfile.parse("1,4,8") == BatchProfile(1, 4, 8)
    assert BatchProfile.parse(" 2, 2 ,2 ").tag == "b2-2-2"
    assert BatchProfile(1, 2, 4).shapes(224) == ((1, 3, 224, 224), (2, 3, 224, 224), (4, 3, 224, 224))
    for bad in ("4,2,8", "0", "a", "1,2", ""):
        with pytest.raises(InputError, match="--batch"):
            BatchProfile.parse(bad)


def test_parse_version():
    assert parse_version("8.5.2.2") == (8, 5, 2)
    assert parse_version("10.3.0.post12.dev1") == (10, 3, 0)
    assert parse_version("11") == (11, 0, 0)


def test_version_switches():
    p8 = build_plan("8.5.2.2", "int8", "int8-qdq")
    assert p8.network_flags == ("EXPLICIT_BATCH",) and p8.builder_flags == ("INT8",) and not p8.strongly_typed
    assert build_plan("8.5.2", "fp16", "fp32").builder_flags == ("FP16",)
    assert build_plan("8.6.1", "fp32", "fp32").builder_flags == ()
    p10 = build_plan("10.3.0", "int8", "int8-qdq")
    assert p10.network_flags == ("STRONGLY_TYPED",) and p10.builder_flags == ()  # no EXPLICIT_BATCH, no INT8 flag
    assert build_plan("10.3.0", "fp16", "fp16").network_flags == ("STRONGLY_TYPED",)
    weak = build_plan("10.3.0", "fp16", "fp32")
    assert weak.builder_flags == ("FP16",) and weak.network_flags == () and "deprecated" in weak.notes[0]
    p11 = build_plan("11.0.0", "fp16", "fp16")
    assert p11.network_flags == ("STRONGLY_TYPED",) and p11.builder_flags == ()
    with pytest.raises(InputError, match="model_fp16.onnx"):
        build_plan("11.0.0", "fp16", "fp32")  # no FP16 flag in 11
    with pytest.raises(InputError, match="model_int8_qdq.onnx"):
        build_plan("10.3.0", "int8", "fp32")  # INT8 only from Q/DQ: no calibrator
    with pytest.raises(InputError, match="model_int8_qdq.onnx"):
        build_plan("8.5.2", "int8", "int8-cpu")  # uint8 activations are not TensorRT's
    with pytest.raises(CapabilityError, match="8.5"):
        build_plan("8.4.3", "fp16", "fp32")
    with pytest.raises(InputError, match="engine precision"):
        build_plan("10.0", "bf16", "fp32")


def test_choose_onnx_by_version(tmp_path):
    assert choose_onnx(tmp_path, "int8", "8.5.2").name == "model_int8_qdq.onnx"
    assert choose_onnx(tmp_path, "fp16", "8.5.2").name == "model.onnx"  # FP16 builder flag on 8.x
    assert choose_onnx(tmp_path, "fp16", "10.3.0").name == "model_fp16.onnx"  # strongly typed
    assert choose_onnx(tmp_path, "fp16", None).name == "model_fp16.onnx"
    assert choose_onnx(tmp_path, "fp32", "11.0").name == "model.onnx"


def test_engine_name_is_the_cache_key():
    prof = BatchProfile(1, 4, 8)
    name = engine_name("model", "int8", "10.3.0", "8.7", prof, "ab" * 32)
    assert name == "model_int8_trt10.3.0_sm87_b1-4-8_abababababab.engine"
    variants = {
        engine_name("model", "fp16", "10.3.0", "8.7", prof, "ab" * 32),
        engine_name("model", "int8", "8.5.2", "8.7", prof, "ab" * 32),
        engine_name("model", "int8", "10.3.0", "7.2", prof, "ab" * 32),
        engine_name("model", "int8", "10.3.0", "8.7", BatchProfile(1, 1, 8), "ab" * 32),
        engine_name("model", "int8", "10.3.0", "8.7", prof, "cd" * 32),
    }
    assert name not in variants and len(variants) == 5


def test_trtexec_lines_per_version():
    prof = BatchProfile(1, 2, 8)
    line8 = trtexec_command("m.onnx", "m.engine", "int8", "input", 224, prof, 8, 512, "t.cache")
    assert line8.startswith("trtexec --onnx=m.onnx --saveEngine=m.engine")
    assert "--minShapes=input:1x3x224x224" in line8 and "--optShapes=input:2x3x224x224" in line8
    assert "--maxShapes=input:8x3x224x224" in line8 and "--memPoolSize=workspace:512" in line8
    assert line8.endswith("--int8 --timingCacheFile=t.cache")
    line10 = trtexec_command("m.onnx", "m.engine", "int8", "input", 224, prof, 10)
    assert "--stronglyTyped" in line10 and "--int8" not in line10
    assert "--fp16" in trtexec_command("m.onnx", "e", "fp16", "input", 64, prof, 8)
    assert "--fp16" in trtexec_command("m.onnx", "e", "fp16", "input", 64, prof, 10, onnx_precision="fp32")
    assert "--stronglyTyped" in trtexec_command("m_fp16.onnx", "e", "fp16", "input", 64, prof, 10)
    line11 = trtexec_command("m_fp16.onnx", "e", "fp16", "input", 64, prof, 11)
    assert "--fp16" not in line11 and "--int8" not in line11 and "--stronglyTyped" not in line11


# ------------------------------------------------------------------------------------- a fake TensorRT


class FakeTrt(types.ModuleType):
    """Just enough of the tensorrt Python API to watch what edgecls asks of each version."""

    def __init__(self, version: str, parse_ok: bool = True, build_ok: bool = True, dla_cores: int = 2) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls = []
        major = int(version.split(".")[0])
        calls = self.calls

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        flags = {"EXPLICIT_BATCH": 0}
        if major >= 10:
            flags["STRONGLY_TYPED"] = 1
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
        builder_flags = {"FP16": 0, "INT8": 1} if major < 11 else {"DEBUG": 7}
        self.BuilderFlag = types.SimpleNamespace(GPU_FALLBACK=3, **builder_flags)
        self.DeviceType = types.SimpleNamespace(GPU=0, DLA=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.Logger = Logger

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"CACHE:" + bytes(self.data)

        class Config:
            def __init__(self):
                self.cache = None

            def set_memory_pool_limit(self, pool, n):
                calls.append(("workspace", n))

            def set_flag(self, f):
                calls.append(("flag", f))

            def __setattr__(self, name, value):
                if name in ("default_device_type", "DLA_core"):
                    calls.append((name, value))
                object.__setattr__(self, name, value)

            def add_optimization_profile(self, p):
                calls.append(("profile", p.shapes))

            def create_timing_cache(self, data):
                calls.append(("timing_cache_in", bytes(data)))
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def set_shape(self, name, mn, op, mx):
                self.shapes = (name, tuple(mn), tuple(op), tuple(mx))

        class Builder:
            num_DLA_cores = dla_cores

            def __init__(self, logger):
                pass

            def create_network(self, f):
                calls.append(("network", f))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calls.append(("build",))
                return b"ENGINE" if build_ok else None

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                calls.append(("parse", len(data)))
                return parse_ok

            def get_error(self, i):
                return "In node 3: unsupported operator Foo"

        self.Builder, self.OnnxParser = Builder, Parser


def _plan_calls(version, precision, onnx_precision):
    trt = FakeTrt(version)
    plan = build_plan(version, precision, onnx_precision)
    engine, cache = build_serialized(trt, plan, b"onnx", "input", 32, BatchProfile(1, 2, 4), 256, b"old")
    return trt.calls, engine, cache


def test_fake_builds_follow_the_version_switches():
    calls, engine, cache = _plan_calls("8.5.2", "int8", "int8-qdq")
    assert engine == b"ENGINE" and cache == b"CACHE:old"
    assert ("network", 1 << 0) in calls and ("flag", 1) in calls  # EXPLICIT_BATCH, INT8
    assert ("workspace", 256 * 2**20) in calls and ("timing_cache_in", b"old") in calls
    assert ("profile", ("input", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))) in calls
    calls, _, _ = _plan_calls("10.3.0", "int8", "int8-qdq")
    assert ("network", 1 << 1) in calls and not [c for c in calls if c[0] == "flag"]  # STRONGLY_TYPED only
    calls, _, _ = _plan_calls("10.3.0", "fp16", "fp32")
    assert ("network", 0) in calls and ("flag", 0) in calls  # weak typing FP16
    calls, _, _ = _plan_calls("11.0.0", "fp16", "fp16")
    assert ("network", 1 << 1) in calls and not [c for c in calls if c[0] == "flag"]


def test_fake_build_failures_are_reported():
    plan = build_plan("10.3.0", "fp32", "fp32")
    with pytest.raises(InputError, match="unsupported operator Foo"):
        build_serialized(FakeTrt("10.3.0", parse_ok=False), plan, b"x", "input", 8, BatchProfile(), 64, None)
    with pytest.raises(RuntimeError, match="build_serialized_network failed"):
        build_serialized(FakeTrt("10.3.0", build_ok=False), plan, b"x", "input", 8, BatchProfile(), 64, None)


# ---------------------------------------------------------------------------- build_engine end to end


def _tiny_onnx(path: Path, precision: str = "fp32") -> Path:
    """Conv → GlobalAveragePool → Flatten, input [N,3,8,8], with an edgecls spec in its metadata."""
    from onnx import TensorProto, helper, numpy_helper

    from edgecls.export.metadata import embed_spec, write_sidecar

    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32) * 0.1, "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    spec = ModelSpec(arch="resnet18", classes=("mobile", "other"), preprocess=PreprocessSpec(resize=8, crop=8),
                     positive="mobile", precision=precision, source_sha256="f" * 64)
    embed_spec(m, spec)
    onnx.save(m, str(path))
    write_sidecar(path, spec)
    return path


def test_build_engine_names_writes_and_reuses(tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "model.onnx")
    trt = FakeTrt("8.5.2.2")
    res = build_engine(onnx_path, "fp16", profile=BatchProfile(1, 1, 8), trt_module=trt, compute_capability="8.7")
    assert res.path.name.startswith("model_fp16_trt8.5.2.2_sm87_b1-1-8_") and res.path.suffix == ".engine"
    assert res.path.read_bytes() == b"ENGINE" and not res.reused
    side = json.loads(res.path.with_suffix(".json").read_text())
    assert side["precision"] == "fp16" and side["classes"] == ["mobile", "other"]
    info = json.loads(res.path.with_suffix(".build.json").read_text())
    assert info["builder_flags"] == ["FP16"] and info["network_flags"] == ["EXPLICIT_BATCH"]
    assert info["batch"] == {"min": 1, "opt": 1, "max": 8} and info["compute_capability"] == "8.7"
    assert (tmp_path / "timing_trt8.5.2.2_sm87.cache").read_bytes() == b"CACHE:"
    again = build_engine(onnx_path, "fp16", profile=BatchProfile(1, 1, 8), trt_module=trt, compute_capability="8.7")
    assert again.reused and again.path == res.path and trt.calls.count(("build",)) == 1
    forced = build_engine(onnx_path, "fp16", profile=BatchProfile(1, 1, 8), trt_module=trt, compute_capability="8.7",
                          force=True)
    assert not forced.reused and trt.calls.count(("build",)) == 2
    assert ("timing_cache_in", b"CACHE:") in trt.calls  # the saved timing cache is fed back


def test_build_engine_precision_defaults_from_metadata(tmp_path):
    q = _tiny_onnx(tmp_path / "model_int8_qdq.onnx", precision="int8-qdq")
    res = build_engine(q, trt_module=FakeTrt("10.3.0"), compute_capability="8.7")
    assert res.precision == "int8" and res.plan.strongly_typed


def test_messages_without_tensorrt_or_gpu(tmp_path, monkeypatch):
    onnx_path = _tiny_onnx(tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(CapabilityError) as e:
        build_engine(onnx_path, "fp16", profile=BatchProfile(1, 2, 4))
    msg = str(e.value)
    assert "tensorrt" in msg and "edgecls build-engine" in msg and "--batch 1,2,4" in msg
    assert "TensorRT 8.5 (JetPack 5)" in msg and "--fp16" in msg and "--minShapes=input:1x3x8x8" in msg
    if gpu_compute_capability() is None:  # this machine: TensorRT "imports" (fake) but there is no GPU
        with pytest.raises(CapabilityError, match="no NVIDIA GPU") as e:
            build_engine(onnx_path, "fp16", trt_module=FakeTrt("10.3.0"))
        assert "trtexec --onnx=" in str(e.value)


def test_sensitive_and_depthwise_nodes(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from edgecls.export.quantize import depthwise_convs, sensitive_nodes

    ws = [numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in
          (("w1", (4, 3, 3, 3)), ("w2", (4, 1, 3, 3)), ("w3", (2, 4)))]
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w1"], ["a"], name="first"),
         helper.make_node("Conv", ["a", "w2"], ["b"], name="dw", group=4),
         helper.make_node("GlobalAveragePool", ["b"], ["c"], name="gap"),
         helper.make_node("Flatten", ["c"], ["d"], name="flat"),
         helper.make_node("Gemm", ["d", "w3"], ["logits"], name="last", transB=1)],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])], ws)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert sensitive_nodes(m) == ["first", "last"] and depthwise_convs(m) == ["dw"]


# --------------------------------------------------------------------------------------------------- DLA


def test_dla_flags_in_the_build_plan():
    p8 = build_plan("8.5.2.2", "fp16", "fp32", dla_core=0, gpu_fallback=True)
    assert p8.device == "dla:0" and p8.network_flags == ("EXPLICIT_BATCH",)
    assert p8.builder_flags == ("FP16", "GPU_FALLBACK")
    assert build_plan("8.5.2", "int8", "int8-qdq", dla_core=1).builder_flags == ("INT8", "FP16")  # DLA has no FP32
    p10 = build_plan("10.3.0", "int8", "int8-qdq", dla_core=0)
    assert p10.network_flags == () and p10.builder_flags == ("INT8", "FP16") and "weak typing" in p10.notes[0]
    assert build_plan("10.3.0", "fp16", "fp16", dla_core=0).builder_flags == ("FP16",)
    p11 = build_plan("11.4.1", "fp16", "fp16", dla_core=0, gpu_fallback=True)
    assert p11.strongly_typed and p11.builder_flags == ("GPU_FALLBACK",)
    assert build_plan("10.3.0", "fp16", "fp16").device == "gpu"
    with pytest.raises(InputError, match="FP16 and INT8 only"):
        build_plan("10.3.0", "fp32", "fp32", dla_core=0)
    with pytest.raises(InputError, match="needs --dla N"):
        build_plan("10.3.0", "fp16", "fp16", gpu_fallback=True)
    with pytest.raises(InputError, match="DLA core index"):
        build_plan("10.3.0", "fp16", "fp16", dla_core=-1)
    for no_dla in ("10.8.0", "10.13.3", "11.0.0", "11.4.0"):
        with pytest.raises(CapabilityError, match="no DLA"):
            build_plan(no_dla, "fp16", "fp16", dla_core=0)


def test_dla_is_part_of_the_cache_key_and_the_trtexec_line():
    prof = BatchProfile(1, 1, 1)
    gpu = engine_name("model", "int8", "10.3.0", "8.7", prof, "ab" * 32)
    dla0 = engine_name("model", "int8", "10.3.0", "8.7", prof, "ab" * 32, dla_core=0)
    dla0gf = engine_name("model", "int8", "10.3.0", "8.7", prof, "ab" * 32, dla_core=0, gpu_fallback=True)
    dla1 = engine_name("model", "int8", "10.3.0", "8.7", prof, "ab" * 32, dla_core=1)
    assert dla0 == "model_int8_trt10.3.0_sm87_b1-1-1_dla0_abababababab.engine"
    assert len({gpu, dla0, dla0gf, dla1}) == 4 and dla0gf.endswith("_dla0gf_abababababab.engine")
    line = trtexec_command("m.onnx", "m.engine", "int8", "input", 224, prof, 10, dla_core=0, gpu_fallback=True)
    assert "--int8 --fp16 --useDLACore=0 --allowGPUFallback" in line and "--stronglyTyped" not in line
    assert "--useDLACore=1" in trtexec_command("m.onnx", "e", "fp16", "input", 64, prof, 8, dla_core=1)


def test_fake_dla_build_configures_the_core(tmp_path):
    calls, _, _ = _plan_calls_dla("10.3.0", "int8", "int8-qdq", dla_core=1, gpu_fallback=True)
    assert ("default_device_type", 1) in calls and ("DLA_core", 1) in calls
    assert ("flag", 3) in calls and ("flag", 1) in calls  # GPU_FALLBACK, INT8
    plan = build_plan("10.3.0", "fp16", "fp16", dla_core=1)
    with pytest.raises(CapabilityError, match="has 0 DLA cores"):
        build_serialized(FakeTrt("10.3.0", dla_cores=0), plan, b"x", "input", 8, BatchProfile(1, 1, 1), 64, None)
    with pytest.raises(CapabilityError, match="has 1 DLA core "):
        build_serialized(FakeTrt("10.3.0", dla_cores=1), plan, b"x", "input", 8, BatchProfile(1, 1, 1), 64, None)


def _plan_calls_dla(version, precision, onnx_precision, **dla):
    trt = FakeTrt(version)
    plan = build_plan(version, precision, onnx_precision, **dla)
    engine, cache = build_serialized(trt, plan, b"onnx", "input", 32, BatchProfile(1, 1, 1), 256, None)
    return trt.calls, engine, cache


def test_build_engine_for_dla_records_it_and_needs_a_fixed_batch(tmp_path):
    q = _tiny_onnx(tmp_path / "model_int8_qdq.onnx", precision="int8-qdq")
    trt = FakeTrt("10.3.0")
    with pytest.raises(InputError, match="fixed batch"):
        build_engine(q, trt_module=trt, compute_capability="8.7", profile=BatchProfile(1, 1, 8), dla_core=0)
    res = build_engine(q, trt_module=trt, compute_capability="8.7", profile=BatchProfile(1, 1, 1), dla_core=0,
                       gpu_fallback=True)
    assert "_dla0gf_" in res.path.name and res.plan.device == "dla:0"
    rec = read_record(res.path)
    assert (rec.dla_core, rec.gpu_fallback, rec.batch, rec.engine_bytes) == (0, True, (1, 1, 1), len(b"ENGINE"))
    assert rec.builder_flags == ("INT8", "FP16", "GPU_FALLBACK") and rec.onnx_sha256 == res.onnx_sha256
    again = build_engine(q, trt_module=trt, compute_capability="8.7", profile=BatchProfile(1, 1, 1), dla_core=0,
                         gpu_fallback=True)
    gpu = build_engine(q, trt_module=trt, compute_capability="8.7", profile=BatchProfile(1, 1, 1))
    assert again.reused and not gpu.reused and gpu.path != res.path and trt.calls.count(("build",)) == 2


def test_build_engine_without_tensorrt_gives_the_dla_lines(tmp_path, monkeypatch):
    onnx_path = _tiny_onnx(tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(CapabilityError) as e:
        build_engine(onnx_path, "fp16", profile=BatchProfile(1, 1, 1), dla_core=0, gpu_fallback=True)
    msg = str(e.value)
    assert "--precision fp16 --batch 1,1,1 --dla 0 --gpu-fallback" in msg
    assert "--useDLACore=0 --allowGPUFallback" in msg and "TensorRT 8.5 (JetPack 5)" in msg


def test_build_engine_command_with_dla_defaults_to_a_fixed_batch(tmp_path, monkeypatch, capsys):
    from edgecls.cli import main

    onnx_path = _tiny_onnx(tmp_path / "model_fp16.onnx", precision="fp16")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SystemExit) as e:
        main(["build-engine", str(onnx_path), "--dla", "1", "--gpu-fallback"])
    err = capsys.readouterr().err
    assert e.value.code == 4 and "--precision fp16 --batch 1,1,1 --dla 1 --gpu-fallback" in err
    with pytest.raises(SystemExit) as e:
        main(["build-engine", str(onnx_path), "--dla", "0", "--batch", "1,1,8"])
    assert e.value.code == 2 and "fixed batch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["build-engine", str(onnx_path), "--gpu-fallback"])
    assert e.value.code == 2 and "needs --dla N" in capsys.readouterr().err
