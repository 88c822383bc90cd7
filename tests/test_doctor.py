"""``edgecls doctor``: the JetPack table from fixture L4T release files, the diagnosis and its advice, real import
probes in a child interpreter with fake modules (cv2 with and without GStreamer, a cv2 built for NumPy 1.x, a
crashing import, tensorrt, an onnxruntime whose GPU providers are listed but do not attach), model readiness
(engine preflight with the rebuild command) and the command's exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from edgecls.runtime.doctor import probes as P
from edgecls.runtime.doctor.checks import diagnose, numpy_abi_error
from edgecls.runtime.doctor.model import check_model
from edgecls.runtime.doctor.platform import (
    L4TRelease,
    Platform,
    detect_platform,
    jetpack_for,
    parse_nv_tegra_release,
    tensorrt_matches,
)
from edgecls.runtime.doctor.report import Report, render_text

NV_TEGRA = {  # first lines as JetPack writes them (GCIDs, dates as on real boards)
    "5.1.2": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 "
             "19:57:35 UTC 2023\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
             "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
    "6.2": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 "
           "UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
           "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
    "7.0": "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, DATE: Thu Aug 21 04:03:13 "
           "UTC 2025\n# KERNEL_VARIANT: oot\n",
    "4.6.1": "# R32 (release), REVISION: 7.1, GCID: 29689809, BOARD: t186ref, EABI: aarch64, DATE: Wed Feb  2 21:33:23 "
             "UTC 2022\n",
}


def jetson_root(tmp_path: Path, release: str = "6.2", cameras=(("video0", "vi-output, imx219 9-0010"),),
                dla: int = 0) -> Path:
    """A fixture filesystem of a Jetson: /etc/nv_tegra_release, the device-tree model, /dev/video*, devfreq."""
    root = tmp_path / "root"
    for rel, text in {
        "etc/nv_tegra_release": NV_TEGRA[release],
        "proc/device-tree/model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00",
        "etc/os-release": 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.5 LTS"\nVERSION_ID="22.04"\n',
        "sys/class/devfreq/17000000.gpu/cur_freq": "306000000\n",
        "sys/class/devfreq/17000000.gpu/max_freq": "1020000000\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "dev").mkdir(exist_ok=True)
    for dev, name in cameras:
        (root / "dev" / dev).write_text("")
        (root / "sys/class/video4linux" / dev).mkdir(parents=True)
        (root / "sys/class/video4linux" / dev / "name").write_text(name + "\n")
    for i in range(dla):
        (root / "dev" / f"nvhost-ctrl-nvdla{i}").write_text("")
    return root


# ------------------------------------------------------------------------------------------ platform


@pytest.mark.parametrize("release, jetpack, python, trt, profile", [
    ("5.1.2", "5.1.2", "3.8", "8.5", "jetpack5"),
    ("6.2", "6.2", "3.10", "10.3", "jetpack6"),
    ("7.0", "7.0", "3.12", "10.13+", "jetpack7"),
])
def test_l4t_release_files_map_to_the_jetpack_table(release, jetpack, python, trt, profile):
    l4t = parse_nv_tegra_release(NV_TEGRA[release])
    jp, exact = jetpack_for(l4t)
    assert exact and (jp.jetpack, jp.python, jp.tensorrt, jp.profile) == (jetpack, python, trt, profile)


def test_l4t_releases_the_table_does_not_know():
    assert parse_nv_tegra_release(NV_TEGRA["6.2"]) == L4TRelease(36, "4.3", "generic")
    assert parse_nv_tegra_release("R36 (release), REVISION: 4.3").version == "36.4.3"
    assert parse_nv_tegra_release("not a release file") is None
    jp, exact = jetpack_for(parse_nv_tegra_release("# R36 (release), REVISION: 4.9, GCID: 1"))
    assert not exact and jp.cuda == "12.6" and jp.tensorrt == "10.3"  # a newer 36.4.x: still JetPack 6.2's stack
    jp, exact = jetpack_for(L4TRelease(36, "3.1"))
    assert not exact and jp.jetpack == "6.0" and jp.tensorrt == "8.6"
    jp, exact = jetpack_for(L4TRelease(35, "7.0"))
    assert not exact and jp.major == 5 and jp.python == "3.8"
    assert jetpack_for(parse_nv_tegra_release(NV_TEGRA["4.6.1"])) == (None, False)  # JetPack 4: not supported


def test_tensorrt_versions_per_jetpack():
    jp5 = jetpack_for(L4TRelease(35, "4.1"))[0]
    jp7 = jetpack_for(L4TRelease(38, "2.0"))[0]
    assert tensorrt_matches(jp5, "8.5.2.2") and not tensorrt_matches(jp5, "10.3.0")
    assert tensorrt_matches(jp7, "10.14.1") and not tensorrt_matches(jp7, "10.3.0")


def test_detect_platform_from_a_fixture_tree(tmp_path):
    root = jetson_root(tmp_path, dla=2)
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.10.12\n")
    p = detect_platform(root, machine="aarch64", prefix=str(venv), base_prefix="/usr")
    assert p.is_jetson and p.l4t.version == "36.4.3" and p.jetpack.jetpack == "6.2" and p.jetpack_exact
    assert p.model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert p.os_release == "Ubuntu 22.04.5 LTS" and p.dla_cores == 2
    assert p.in_venv and p.venv_system_site_packages is False
    d = p.to_dict()
    assert d["jetpack"]["onnxruntime_index"] == "https://pypi.jetson-ai-lab.io/jp6/cu126"
    assert not detect_platform(tmp_path / "empty", machine="x86_64").is_jetson


# ------------------------------------------------------------------------------------------ diagnosis


def facts_for(platform: Platform, **over) -> P.Facts:
    """Facts of a working machine; ``over`` replaces parts of it."""
    f = P.Facts(platform)
    f.modules = {
        "numpy": {"ok": True, "version": "1.26.4"},
        "cv2": {"ok": True, "version": "4.8.0", "file": "/usr/lib/python3/dist-packages/cv2/__init__.py",
                "build": "  GStreamer:   YES (1.20.3)\n"},
        "onnxruntime": {"ok": True, "version": "1.23.0",
                        "available": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]},
        "tensorrt": {"ok": True, "version": "10.3.0.30", "file": "/usr/lib/python3.10/dist-packages/tensorrt/__init__.py"},
    }
    f.dists = {"numpy": "1.26.4", "onnxruntime-gpu": "1.23.0"}
    f.attach = {"attached": {"TensorrtExecutionProvider": True, "CUDAExecutionProvider": True,
                             "CPUExecutionProvider": True}, "errors": {}}
    f.gpu = {"compute_capability": "8.7", "libcudart": "libcudart.so.12", "cuda_binding": "libcudart (ctypes)"}
    f.cameras = [{"device": "/dev/video0", "name": "vi-output, imx219 9-0010", "csi": True, "access": True}]
    f.argus = "active"
    f.power = {"nvpmodel": "MAXN SUPER", "nvpmodel_id": 2, "gpu_mhz": 1020, "gpu_max_mhz": 1020}
    f.gst = {"nvarguscamerasrc": True, "nvv4l2decoder": True, "nvvidconv": True}
    for k, v in over.items():
        if k in f.modules:
            f.modules[k] = v
        else:
            setattr(f, k, v)
    return f


@pytest.fixture()
def jp6(tmp_path):
    return replace(detect_platform(jetson_root(tmp_path), machine="aarch64"), python="3.10.12", in_venv=True,
                   venv_system_site_packages=True)


def by_topic(findings, topic):
    return [f for f in findings if f.topic == topic]


def test_a_healthy_jetson_is_ready_for_engines(jp6):
    findings = diagnose(facts_for(jp6), "engine")
    assert not [f for f in findings if f.level in ("warn", "fail")], findings
    assert "JetPack 6.2 (Ubuntu 22.04, Python 3.10, CUDA 12.6, TensorRT 10.3)" in by_topic(findings, "platform")[0].message
    rep = Report(facts_for(jp6), findings, {"path": "m.engine", "device": "auto"}, "0.1.0")
    assert rep.exit_code == 0 and rep.verdict().startswith("READY for m.engine")


def test_a_misconfigured_jetson_gets_a_fix_for_each_problem(jp6):
    plat = replace(jp6, python="3.11.4", venv_system_site_packages=False)
    abi = {"ok": False, "error": "ImportError: numpy.core.multiarray failed to import",
           "stderr": "A module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.1.0 as it may crash."}
    f = facts_for(plat, numpy={"ok": True, "version": "2.1.0"}, cv2=abi,
                  onnxruntime={"ok": True, "version": "1.23.0", "available": ["CPUExecutionProvider"]},
                  tensorrt={"ok": False, "error": "ModuleNotFoundError: No module named 'tensorrt'"},
                  attach={"attached": {"CPUExecutionProvider": True}, "errors": {}},
                  dists={"numpy": "2.1.0", "onnxruntime": "1.23.0"})
    findings = diagnose(f, "engine")
    python = by_topic(findings, "python")
    assert "this Python is 3.11, JetPack 6.2's is 3.10" in python[0].message and "/usr/bin/python3 -m venv" in python[0].fix
    assert "does not see the system site-packages" in python[1].message
    (npf,) = by_topic(findings, "numpy")
    assert npf.level == "warn" and "NumPy 2.1.0" in npf.message and "numpy<2" in npf.fix
    (cv,) = by_topic(findings, "opencv")
    assert cv.level == "warn" and "NumPy ABI mismatch" in cv.message and "numpy<2" in cv.fix
    ort = by_topic(findings, "onnxruntime")
    assert "the CPU build" in ort[0].message
    assert ort[0].fix == ("pip uninstall -y onnxruntime onnxruntime-gpu; pip install -c deploy/constraints/jetpack6.txt "
                          "--extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126 onnxruntime-gpu")
    (trt,) = by_topic(findings, "tensorrt")
    assert trt.level == "fail" and "--system-site-packages" in trt.fix
    assert Report(f, findings).exit_code == 4
    assert Report(f, diagnose(f, None)).exit_code == 0  # ONNX models still run (on the CPU)


def test_gpu_providers_that_are_listed_but_do_not_attach(jp6):
    f = facts_for(jp6, attach={"attached": {"TensorrtExecutionProvider": False, "CUDAExecutionProvider": False,
                                            "CPUExecutionProvider": True},
                               "errors": {"CUDAExecutionProvider": "RuntimeError: libcudnn.so.9: cannot open shared "
                                                                   "object file"}})
    ort = by_topic(diagnose(f), "onnxruntime")
    assert [x.level for x in ort] == ["warn", "warn", "ok"]
    assert "TensorrtExecutionProvider is listed by get_available_providers() but does not attach" in ort[0].message
    assert "libcudnn.so.9" in ort[1].message and "JetPack's CUDA 12.6" in ort[1].fix
    assert ort[2].message.endswith("attaches CPUExecutionProvider")


def test_pip_opencv_without_gstreamer_and_a_foreign_tensorrt(jp6):
    f = facts_for(jp6, cv2={"ok": True, "version": "4.10.0", "build": "GStreamer: NO",
                            "file": "/home/u/edgecls-venv/lib/python3.10/site-packages/cv2/__init__.py"},
                  tensorrt={"ok": True, "version": "10.7.0", "file": "/home/u/edgecls-venv/.../tensorrt/__init__.py"},
                  dists={"numpy": "1.26.4", "opencv-python-headless": "4.10.0.84", "tensorrt": "10.7.0"})
    findings = diagnose(f, "engine")
    (cv,) = by_topic(findings, "opencv")
    assert "has no GStreamer: csi:// cameras" in cv.message and cv.fix.startswith("pip uninstall -y opencv-python-headless")
    (trt,) = by_topic(findings, "tensorrt")
    assert trt.level == "warn" and "not JetPack 6.2's 10.3" in trt.message and "pip uninstall -y tensorrt" in trt.fix


def test_cameras_daemon_and_power_advice(jp6):
    f = facts_for(jp6, cameras=[{"device": "/dev/video0", "name": "vi-output, imx219 9-0010", "csi": True,
                                 "access": False}], argus="inactive",
                  power={"nvpmodel": "15W", "nvpmodel_id": 0, "gpu_mhz": 306, "gpu_max_mhz": 1020},
                  gst={"nvarguscamerasrc": True, "nvv4l2decoder": False, "nvvidconv": True})
    findings = diagnose(f)
    cams = by_topic(findings, "cameras")
    assert "no read/write access to /dev/video0" in cams[1].message and "usermod -aG video" in cams[1].fix
    assert "nvargus-daemon is inactive" in cams[2].message and "restart nvargus-daemon" in cams[2].fix
    assert "rtsp:// decodes in software" in by_topic(findings, "gstreamer")[0].message
    (pw,) = by_topic(findings, "power")
    assert "power mode 15W (nvpmodel 0), GPU at 306/1020 MHz" in pw.message and "jetson_clocks" in pw.fix


def test_x86_without_onnxruntime_is_not_ready(tmp_path):
    plat = detect_platform(tmp_path, machine="x86_64")
    f = facts_for(plat, onnxruntime={"ok": False, "error": "ModuleNotFoundError: No module named 'onnxruntime'"},
                  gpu={"compute_capability": None, "cuda_binding_error": "no driver"}, cameras=[], power={})
    findings = diagnose(f)
    assert [x.level for x in by_topic(findings, "onnxruntime")] == ["fail"]
    assert by_topic(findings, "cuda")[0].level == "info" and "no NVIDIA GPU here" in by_topic(findings, "cuda")[0].message
    rep = Report(f, findings, version="0.1.0")
    text = render_text(rep)
    assert rep.exit_code == 4 and "NOT READY to run ONNX models: 1 problem (exit 4)" in text
    assert "fix: pip install 'edgecls[cpu]'" in text


# ------------------------------------------------------------------ real probes, fake modules on PYTHONPATH


def fake_modules(tmp_path: Path, cv2_kind: str = "gstreamer") -> Path:
    d = tmp_path / "fakes"
    files = {
        "tensorrt/__init__.py": '__version__ = "10.3.0.30"\n',
        "onnxruntime/__init__.py": textwrap.dedent('''
            __version__ = "1.23.0"
            def get_available_providers():
                return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
            class SessionOptions:
                log_severity_level = 2
            class InferenceSession:
                def __init__(self, model, sess_options=None, providers=()):
                    if providers[0] == "TensorrtExecutionProvider":
                        raise RuntimeError("TensorRT EP could not be created: libnvinfer.so.10 not found")
                    self._p = ["CPUExecutionProvider"]  # CUDA is "available" but falls back, as on a broken install
                def get_providers(self):
                    return self._p
        '''),
        "cv2/__init__.py": {
            "gstreamer": '__version__ = "4.8.0"\ndef getBuildInformation():\n    return "  Video I/O:\\n    GStreamer:  '
                         '                 YES (1.20.3)\\n"\n',
            "numpy1": 'import sys\nsys.stderr.write("A module that was compiled using NumPy 1.x cannot be run in\\nNumPy '
                      '2.4.6 as it may crash.\\n")\nraise ImportError("numpy.core.multiarray failed to import")\n',
            "crash": "import os\nos.abort()\n",
        }[cv2_kind],
    }
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def fake_commands(cmd, timeout=60.0, env=None):
    if cmd[0] == "nvpmodel":
        return 0, "NV Power Mode: MAXN SUPER\n2\n", ""
    if cmd[0] == "systemctl":
        return 3, "inactive\n", ""
    return P.run_command(cmd, timeout, env)


def test_probes_import_fake_jetson_modules_in_a_child_interpreter(tmp_path, monkeypatch):
    from edgecls.runtime.sources import gstreamer

    monkeypatch.setattr(gstreamer, "element_exists", lambda name: True)
    root = jetson_root(tmp_path)
    env = P.Env(root=root, pythonpath=[fake_modules(tmp_path)], run=fake_commands)
    plat = replace(detect_platform(root, machine="aarch64"), python="3.10.12")
    facts = P.gather(env, plat)
    assert facts.module("tensorrt")["version"] == "10.3.0.30" and "fakes" in facts.module("tensorrt")["file"]
    assert "GStreamer" in facts.module("cv2")["build"] and facts.module("numpy")["ok"]
    assert facts.attach["attached"] == {"TensorrtExecutionProvider": False, "CUDAExecutionProvider": False,
                                        "CPUExecutionProvider": True}
    assert "libnvinfer.so.10" in facts.attach["errors"]["TensorrtExecutionProvider"]
    assert facts.power == {"nvpmodel": "MAXN SUPER", "nvpmodel_id": 2, "gpu_mhz": 306, "gpu_max_mhz": 1020}
    assert facts.argus == "inactive" and facts.cameras[0]["csi"]
    findings = diagnose(facts, None)
    assert by_topic(findings, "tensorrt")[0].level == "ok" and by_topic(findings, "opencv")[0].level == "ok"
    assert sum("does not attach" in x.message for x in by_topic(findings, "onnxruntime")) == 2
    json.dumps(Report(facts, findings).to_dict())  # the JSON report is serializable


@pytest.mark.parametrize("kind, expect", [("numpy1", "abi"), ("crash", "crashed (signal 6)")])
def test_broken_cv2_imports_are_diagnosed_not_fatal(tmp_path, kind, expect):
    env = P.Env(pythonpath=[fake_modules(tmp_path, kind)])
    mod = env.probe(P.MODULE_PROBE, "cv2")
    assert not mod["ok"]
    if expect == "abi":
        assert numpy_abi_error(mod) and "compiled using NumPy 1.x" in mod["stderr"]
    else:
        assert expect in mod["error"] and not numpy_abi_error(mod)


def test_tiny_onnx_model_is_one_relu():
    import base64

    import numpy as np

    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(base64.b64decode(P.TINY_ONNX_B64))
    assert [n.op_type for n in model.graph.node] == ["Relu"] and model.opset_import[0].version == 13
    s = ort.InferenceSession(base64.b64decode(P.TINY_ONNX_B64), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(s.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0], [[0, 2, 0, 4]])


# ------------------------------------------------------------------------------------------ model readiness


def _engine(tmp_path, trt_version="10.3.0.30", cc="8.7"):
    from runtime_helpers import tiny_spec

    from edgecls.runtime.backends.engine_record import EngineRecord, record_path
    from edgecls.runtime.spec import sidecar_path

    eng = tmp_path / "model_int8_trt.engine"
    eng.write_bytes(b"ENGINE")
    sidecar_path(eng).write_text(tiny_spec().to_json())
    rec = EngineRecord(engine=eng.name, trt_version=trt_version, compute_capability=cc, precision="int8",
                       onnx=str(tmp_path / "model_int8_qdq.onnx"), onnx_sha256="ab" * 32, onnx_precision="int8-qdq",
                       batch=(1, 1, 1), dla_core=0, engine_bytes=6)
    record_path(eng).write_text(json.dumps(rec.to_dict()))
    return eng


def test_engine_readiness_from_its_build_record(jp6, tmp_path):
    f = facts_for(jp6)
    findings, info = check_model(f, str(_engine(tmp_path)), load=False)
    assert [x.level for x in findings] == ["ok", "ok"] and "DLA core 0" in findings[0].message
    assert info["build_record"]["trt_version"] == "10.3.0.30" and info["spec"]["classes"] == ["mobile", "other"]
    old = _engine(tmp_path, trt_version="8.5.2.2", cc="7.2")
    findings, _ = check_model(f, str(old), load=False)
    (fail,) = findings
    assert fail.level == "fail" and "TensorRT 8.5.2.2" in fail.message and "compute capability 7.2" in fail.message
    assert fail.fix.startswith(f"edgecls build-engine {tmp_path / 'model_int8_qdq.onnx'} --precision int8 --batch "
                               f"1,1,1 --dla 0 --out {tmp_path}")
    no_trt = facts_for(jp6, tensorrt={"ok": False, "error": "ModuleNotFoundError: No module named 'tensorrt'"})
    findings, _ = check_model(no_trt, str(old))
    assert [x.level for x in findings] == ["info"] and "needs tensorrt" in findings[0].message


def test_onnx_readiness_loads_the_model(tmp_path, jp6):
    pytest.importorskip("onnx")
    from test_export_trt import _tiny_onnx

    path = _tiny_onnx(tmp_path / "model.onnx")
    f = facts_for(jp6)
    findings, info = check_model(f, str(path), device="cpu")
    assert [x.level for x in findings] == ["ok"] and "loads on onnxruntime [CPUExecutionProvider]" in findings[0].message
    findings, _ = check_model(f, str(path), device="gpu")
    assert findings[0].level == "fail" and "device 'gpu'" in findings[0].message
    findings, _ = check_model(f, str(tmp_path / "missing.onnx"))
    assert findings[0].level == "fail" and "does not exist" in findings[0].message


# ------------------------------------------------------------------------------------------ the command


def test_doctor_command_exit_codes_and_json(tmp_path, monkeypatch, capsys, jp6):
    from edgecls.cli import main

    monkeypatch.setattr(P, "gather", lambda env=None, platform=None: facts_for(jp6))
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert e.value.code == 0 and out["ready"] and out["platform"]["jetpack"]["version"] == "6.2"
    assert {f["topic"] for f in out["findings"]} >= {"platform", "numpy", "opencv", "onnxruntime", "tensorrt", "cuda"}
    old = _engine(tmp_path, trt_version="8.5.2.2")
    with pytest.raises(SystemExit) as e:
        main(["doctor", str(old), "--no-load"])
    text = capsys.readouterr().out
    assert e.value.code == 4 and "[FAIL] model" in text and "fix: edgecls build-engine" in text
    assert "NOT READY for" in text


@pytest.mark.slow
def test_doctor_on_this_machine(tmp_path):
    """The real command, as a user runs it here: ready for ONNX models when onnxruntime works (exit 0); an engine
    without TensorRT and a GPU is refused (exit 4)."""
    r = subprocess.run([sys.executable, "-m", "edgecls", "doctor", "--json"], capture_output=True, text=True,
                       timeout=300, cwd=os.getcwd())
    out = json.loads(r.stdout)
    assert r.returncode == out["exit_code"] and out["platform"]["jetson"] is (out["platform"]["l4t"] is not None)
    assert out["ready"] is out["onnxruntime_providers"].get("attached", {}).get("CPUExecutionProvider", False)
    if out["modules"]["tensorrt"]["ok"] and out["gpu"].get("cuda_binding"):
        pytest.skip("this machine has TensorRT and a GPU: the engine case below needs one without")
    r = subprocess.run([sys.executable, "-m", "edgecls", "doctor", str(_engine(tmp_path))], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 4 and "NOT READY for" in r.stdout and "[FAIL]" in r.stdout
