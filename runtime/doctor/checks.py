"""From facts to findings: what works, what does not, and for each problem the fix (pure: no probing here).

Levels: ``ok``, ``info``, ``warn`` (something a deployment may need does not work), ``fail`` (what the given model —
or, without one, an ONNX model — needs does not work: ``edgecls doctor`` exits 4).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from edgecls.runtime.backends.engine_record import parse_version
from edgecls.runtime.doctor.platform import JetPackRelease, tensorrt_matches
from edgecls.runtime.doctor.probes import GPU_PROVIDERS, Facts

LEVELS = ("ok", "info", "warn", "fail")
_ABI = re.compile(r"compiled using NumPy 1\.x|_ARRAY_API not found|numpy\.core\.multiarray failed to import|"
                  r"numpy\.dtype size changed|compiled against (?:ABI|API) version")
PIP_OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    message: str
    fix: str = ""

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)


def numpy_abi_error(mod: Dict[str, Any]) -> bool:
    """Whether a failed import is a NumPy ABI mismatch (NumPy's message or the import error says so)."""
    return not mod.get("ok") and bool(_ABI.search(f"{mod.get('error', '')}\n{mod.get('stderr', '')}"))


def _short(error: str, n: int = 300) -> str:
    line = (error or "unknown error").strip().splitlines()[0]
    return line if len(line) <= n else line[: n - 1] + "…"


def _abi_fix(facts: Facts) -> str:
    v = facts.module("numpy").get("version", "")
    if v and parse_version(v) >= (2, 0, 0):
        return "pip install 'numpy<2' (in this environment; the JetPack constraints files pin it)"
    return "upgrade NumPy to the version the module was built for, or reinstall the module built for this NumPy"


def _pip_install_ort(jp: Optional[JetPackRelease]) -> str:
    if jp is None:
        return "pip install 'edgecls[cpu]' (or 'edgecls[gpu]' with an NVIDIA GPU)"
    return (f"pip uninstall -y onnxruntime onnxruntime-gpu; pip install -c deploy/constraints/{jp.profile}.txt "
            f"--extra-index-url {jp.ort_index} onnxruntime-gpu")


def platform_findings(facts: Facts) -> List[Finding]:
    p, jp = facts.platform, facts.platform.jetpack
    if not p.is_jetson:
        return [Finding("info", "platform", f"{p.machine} {p.system} ({p.os_release or 'unknown OS'}), Python "
                        f"{p.python}{' (venv)' if p.in_venv else ''}: not a Jetson (no /etc/nv_tegra_release)")]
    if jp is None:
        return [Finding("warn", "platform", f"L4T R{p.l4t.version}: JetPack 4 or older is not supported (edgecls needs "
                        "Python >= 3.8)", "flash JetPack 6.2 (or 5.1.x)")]
    what = f"JetPack {jp.jetpack}" if p.jetpack_exact else f"not in the table, assumed JetPack {jp.major}.x like {jp.jetpack}"
    out = [Finding("ok" if p.jetpack_exact else "info", "platform",
                   f"{p.model or 'Jetson'}: L4T R{p.l4t.version} → {what} (Ubuntu {jp.ubuntu}, Python {jp.python}, "
                   f"CUDA {jp.cuda}, TensorRT {jp.tensorrt}); install profile deploy/constraints/{jp.profile}.txt"
                   + (f"; {p.dla_cores} DLA core{'s' if p.dla_cores != 1 else ''}" if p.dla_cores else ""))]
    if jp.note:
        out.append(Finding("warn", "platform", jp.note))
    py = ".".join(p.python.split(".")[:2])
    if py != jp.python:
        out.append(Finding("warn", "python", f"this Python is {py}, JetPack {jp.jetpack}'s is {jp.python}: JetPack's "
                           f"tensorrt and OpenCV (apt packages) import only in Python {jp.python}",
                           "create the environment from the system Python: /usr/bin/python3 -m venv "
                           "--system-site-packages ~/edgecls-venv"))
    if p.in_venv and p.venv_system_site_packages is False:
        out.append(Finding("warn", "python", "this venv does not see the system site-packages, where JetPack's "
                           "tensorrt and OpenCV live (/usr/lib/python3/dist-packages)",
                           "recreate it: /usr/bin/python3 -m venv --system-site-packages ~/edgecls-venv"))
    return out


def numpy_findings(facts: Facts) -> List[Finding]:
    np_mod, jp = facts.module("numpy"), facts.platform.jetpack
    if not np_mod.get("ok"):
        return [Finding("fail", "numpy", f"numpy does not import: {_short(np_mod.get('error', ''))}",
                        "pip install --force-reinstall 'numpy<2'")]
    v = np_mod.get("version", "?")
    if facts.platform.is_jetson and parse_version(v) >= (2, 0, 0):
        return [Finding("warn", "numpy", f"NumPy {v}: JetPack's OpenCV and the Jetson onnxruntime-gpu wheels are built "
                        "against NumPy 1.x and do not import with NumPy 2",
                        "pip install 'numpy<2'" + (f" (deploy/constraints/{jp.profile}.txt pins it)" if jp else ""))]
    return [Finding("ok", "numpy", f"NumPy {v}")]


def opencv_findings(facts: Facts) -> List[Finding]:
    from edgecls.runtime.sources.opencv import gstreamer_enabled

    cv, jetson = facts.module("cv2"), facts.platform.is_jetson
    pip_cv = [d for d in PIP_OPENCV if d in facts.dists]
    if not cv.get("ok"):
        err = cv.get("error", "")
        if numpy_abi_error(cv):
            return [Finding("warn", "opencv", f"cv2 does not import (NumPy ABI mismatch: {_short(err, 160)}): video "
                            "files, cameras and streams will fail", _abi_fix(facts))]
        fix = ("install JetPack's OpenCV (sudo apt-get install nvidia-opencv) and use a venv with "
               "--system-site-packages" if jetson else "pip install 'edgecls[opencv]'")
        return [Finding("warn" if jetson else "info", "opencv", f"no usable cv2 ({_short(err, 160)}): video files, "
                        "cameras and streams need OpenCV (image files do not)", fix)]
    build = type("B", (), {"getBuildInformation": staticmethod(lambda: cv.get("build", ""))})
    gst = gstreamer_enabled(build)
    where = f"cv2 {cv.get('version', '?')} from {cv.get('file', '?')}"
    if jetson and not gst:
        fix = (f"pip uninstall -y {' '.join(pip_cv)} (pip's wheels have no GStreamer and shadow JetPack's OpenCV)"
               if pip_cv else "install JetPack's OpenCV: sudo apt-get install nvidia-opencv")
        return [Finding("warn", "opencv", f"{where} has no GStreamer: csi:// cameras, gst:// pipelines and "
                        "hardware-decoded rtsp:// will not work", fix)]
    if not gst:
        return [Finding("info", "opencv", f"{where}, without GStreamer (csi:// and gst:// unavailable; rtsp:// "
                        "decodes with FFmpeg)")]
    return [Finding("ok", "opencv", f"{where}, with GStreamer")]


def onnxruntime_findings(facts: Facts, needs: Optional[str]) -> List[Finding]:
    ort, jp = facts.module("onnxruntime"), facts.platform.jetpack
    bad = "fail" if needs in (None, "onnx") else "warn"
    if not ort.get("ok"):
        if numpy_abi_error(ort):
            return [Finding(bad, "onnxruntime", f"onnxruntime does not import (NumPy ABI mismatch: "
                            f"{_short(ort.get('error', ''), 160)})", _abi_fix(facts))]
        return [Finding(bad, "onnxruntime", f"onnxruntime does not import: {_short(ort.get('error', ''))}",
                        _pip_install_ort(jp))]
    out = []
    if "onnxruntime" in facts.dists and "onnxruntime-gpu" in facts.dists:
        out.append(Finding("warn", "onnxruntime", "both onnxruntime and onnxruntime-gpu are installed: they are the "
                           "same module and overwrite each other", _pip_install_ort(jp)))
    attached = facts.attach.get("attached", {})
    if not attached.get("CPUExecutionProvider"):
        return out + [Finding(bad, "onnxruntime", "onnxruntime imports but cannot create a session: "
                              + _short(facts.attach.get("error") or str(facts.attach.get("errors", ""))),
                              _pip_install_ort(jp))]
    available = ort.get("available", [])
    for ep in GPU_PROVIDERS:
        if ep in available and not attached.get(ep):
            why = facts.attach.get("errors", {}).get(ep) or "the session ran on the CPU instead"
            fix = (f"onnxruntime-gpu must match JetPack's CUDA {jp.cuda}: {_pip_install_ort(jp)}" if jp else
                   "check the driver (nvidia-smi) and that CUDA/cuDNN (and TensorRT) libraries are on the library path")
            out.append(Finding("warn", "onnxruntime", f"{ep} is listed by get_available_providers() but does not "
                               f"attach: {_short(why, 200)}", fix))
    if facts.platform.is_jetson and not any(ep in available for ep in GPU_PROVIDERS):
        out.append(Finding("warn", "onnxruntime", f"onnxruntime {ort.get('version')} is the CPU build: --device "
                           "cuda/tensorrt cannot use this Jetson's GPU", _pip_install_ort(jp)))
    works = [ep for ep, ok in attached.items() if ok]
    out.append(Finding("ok", "onnxruntime", f"onnxruntime {ort.get('version')}: attaches {', '.join(works)}"))
    return out


def tensorrt_findings(facts: Facts, needs: Optional[str]) -> List[Finding]:
    trt, p, jp = facts.module("tensorrt"), facts.platform, facts.platform.jetpack
    bad = "fail" if needs == "engine" else ("warn" if p.is_jetson else "info")
    if not trt.get("ok"):
        err = trt.get("error", "")
        if numpy_abi_error(trt):
            return [Finding(bad, "tensorrt", f"tensorrt does not import (NumPy ABI mismatch: {_short(err, 160)})",
                            _abi_fix(facts))]
        if not err.startswith("ModuleNotFoundError"):
            return [Finding(bad, "tensorrt", f"tensorrt does not import: {_short(err)}")]
        if p.is_jetson and p.in_venv and p.venv_system_site_packages is False:
            fix = "recreate the venv with --system-site-packages (JetPack's tensorrt is a system package)"
        elif p.is_jetson:
            fix = "sudo apt-get install python3-libnvinfer (JetPack's TensorRT for Python)"
        else:
            fix = "pip install 'edgecls[trt]' on a machine with an NVIDIA GPU, or run the ONNX model"
        return [Finding(bad, "tensorrt", "tensorrt is not installed: TensorRT engines (.engine) cannot run here", fix)]
    v = trt.get("version", "?")
    if jp is not None and not tensorrt_matches(jp, v):
        fix = "pip uninstall -y tensorrt (a pip wheel shadows JetPack's)" if "tensorrt" in facts.dists else ""
        return [Finding("warn", "tensorrt", f"TensorRT {v} from {trt.get('file')} is not JetPack {jp.jetpack}'s "
                        f"{jp.tensorrt}: engines run only with the TensorRT they were built with", fix)]
    return [Finding("ok", "tensorrt", f"TensorRT {v} from {trt.get('file')}")]


def cuda_findings(facts: Facts, needs: Optional[str]) -> List[Finding]:
    gpu, p = facts.gpu, facts.platform
    cc = gpu.get("compute_capability")
    if gpu.get("cuda_binding"):
        return [Finding("ok", "cuda", f"GPU sm{str(cc).replace('.', '')}; CUDA runtime for engines: "
                        f"{gpu['cuda_binding']} (libcudart: {gpu.get('libcudart') or 'via the binding'})")]
    bad = "fail" if needs == "engine" else ("warn" if p.is_jetson else "info")
    if cc is None and not p.is_jetson:
        msg = "no NVIDIA GPU here: TensorRT engines and --device cuda/tensorrt need one"
    else:
        msg = "no working CUDA runtime for TensorRT engines: " + _short(gpu.get("cuda_binding_error")
                                                                         or gpu.get("error", ""), 400)
    fix = ("JetPack's libcudart is in /usr/local/cuda/lib64: `echo /usr/local/cuda/lib64 | sudo tee "
           "/etc/ld.so.conf.d/cuda.conf && sudo ldconfig`" if p.is_jetson else "")
    return [Finding(bad, "cuda", msg, fix)]


def device_findings(facts: Facts) -> List[Finding]:
    out: List[Finding] = []
    cams = facts.cameras
    if not cams:
        out.append(Finding("info", "cameras", "no cameras (/dev/video*)"))
    else:
        out.append(Finding("ok", "cameras", "cameras: " + ", ".join(
            f"{c['device']} ({c['name'] or '?'}{', CSI: csi://N' if c.get('csi') else ''})" for c in cams)))
        denied = [c["device"] for c in cams if not c.get("access")]
        if denied:
            out.append(Finding("warn", "cameras", f"no read/write access to {', '.join(denied)}",
                               "sudo usermod -aG video $USER, then log in again"))
    if any(c.get("csi") for c in cams) and facts.platform.is_jetson and facts.argus not in (None, "active"):
        out.append(Finding("warn", "cameras", f"nvargus-daemon is {facts.argus}: csi:// cameras need it",
                           "sudo systemctl restart nvargus-daemon"))
    if facts.platform.is_jetson:
        if facts.gst.get("nvv4l2decoder") is not True or facts.gst.get("nvvidconv") is not True:
            out.append(Finding("info", "gstreamer", "nvv4l2decoder/nvvidconv not found: rtsp:// decodes in software "
                               "(FFmpeg)", "sudo apt-get install nvidia-l4t-gstreamer"))
        pw = facts.power
        if pw.get("nvpmodel"):
            clocks = (f", GPU at {pw['gpu_mhz']}/{pw['gpu_max_mhz']} MHz" if "gpu_mhz" in pw else "")
            pinned = "gpu_mhz" not in pw or pw["gpu_mhz"] >= pw["gpu_max_mhz"]
            out.append(Finding("info", "power", f"power mode {pw['nvpmodel']} (nvpmodel {pw.get('nvpmodel_id', '?')})"
                               f"{clocks}", "" if pinned else "sudo jetson_clocks pins the clocks for steady latency"))
        else:
            out.append(Finding("info", "power", "power mode not readable (nvpmodel -q)"))
    return out


def diagnose(facts: Facts, needs: Optional[str] = None) -> List[Finding]:
    """All findings; ``needs`` is what the given model needs: ``"onnx"``, ``"engine"`` or None (no model)."""
    return (platform_findings(facts) + numpy_findings(facts) + opencv_findings(facts)
            + onnxruntime_findings(facts, needs) + tensorrt_findings(facts, needs) + cuda_findings(facts, needs)
            + device_findings(facts))
