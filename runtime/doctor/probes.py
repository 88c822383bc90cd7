"""What is actually installed and working here, gathered for ``edgecls doctor``.

Imports are tried in a child interpreter (the same Python), one module each: an import that fails on a NumPy-ABI
mismatch prints NumPy's long message and may even crash; the doctor reads the result and the message instead of
dying with it. onnxruntime's providers are tried by creating a session on a one-node model with each GPU provider
(``get_available_providers()`` lists CUDA/TensorRT whenever onnxruntime-gpu is installed, working or not). Files
(``/dev``, ``/sys``, ``/proc``) are read under ``Env.root`` and commands run through ``Env.run``, so tests use
fixture trees, fake modules on ``PYTHONPATH`` and fake commands.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgecls.runtime.doctor.platform import Platform, detect_platform

RunResult = Optional[Tuple[int, str, str]]  # (exit status, stdout, stderr); None: the command could not start
MODULES = ("numpy", "cv2", "onnxruntime", "tensorrt")
DISTS = ("numpy", "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless",
         "onnxruntime", "onnxruntime-gpu", "tensorrt", "cuda-python", "cuda-bindings", "cupy", "pycuda")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# a one-node ONNX model (Relu on a float [1, 4] input, opset 13, IR 7): what a provider must attach to
TINY_ONNX_B64 = ("CAcSDmVkZ2VjbHMtZG9jdG9yOkgKDAoBeBIBeSIEUmVsdRIOZWRnZWNsc19kb2N0b3JaEwoBeBIOCgwIARIICgIIAQoCCARiEwoBeRI"
                 "OCgwIARIICgIIAQoCCARCBAoAEA0=")
GPU_DEVFREQ_NAMES = ("gpu", "ga10b", "gv11b", "gp10b", "gb10b", "gb20b")

MODULE_PROBE = r"""
import json, sys
name = sys.argv[1]
out = {"module": name, "ok": False}
try:
    mod = __import__(name)
    out.update(ok=True, version=str(getattr(mod, "__version__", "") or ""), file=getattr(mod, "__file__", None))
    if name == "cv2":
        out["build"] = mod.getBuildInformation()
    elif name == "onnxruntime":
        out["available"] = list(mod.get_available_providers())
except BaseException as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""

DISTS_PROBE = r"""
import json, sys
out = {}
try:
    from importlib import metadata
except ImportError:
    metadata = None
for d in sys.argv[1:]:
    try:
        out[d] = metadata.version(d)
    except Exception:
        pass
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""

ATTACH_PROBE = r"""
import base64, json, sys
out = {"attached": {}, "errors": {}}
try:
    import onnxruntime as ort
    model = base64.b64decode(sys.argv[1])
    for ep in [p for p in sys.argv[2:] if p in ort.get_available_providers()] + ["CPUExecutionProvider"]:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            providers = [ep] if ep == "CPUExecutionProvider" else [ep, "CPUExecutionProvider"]
            s = ort.InferenceSession(model, sess_options=so, providers=providers)
            out["attached"][ep] = ep in s.get_providers()
        except Exception as e:
            out["attached"][ep] = False
            out["errors"][ep] = "%s: %s" % (type(e).__name__, str(e)[:400])
except BaseException as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""

GPU_PROBE = r"""
import json, sys
out = {}
try:
    from edgecls.runtime.backends.cuda import gpu_compute_capability, load_cuda_api
    from edgecls.runtime.backends.cudart import find_libcudart
    out["compute_capability"] = gpu_compute_capability()
    out["libcudart"] = find_libcudart()
    try:
        out["cuda_binding"] = load_cuda_api().name
    except Exception as e:
        out["cuda_binding_error"] = str(e)
except BaseException as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""


def run_command(cmd: Sequence[str], timeout: float = 60.0, env: Optional[Dict[str, str]] = None) -> RunResult:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.returncode, p.stdout, p.stderr


@dataclass
class Env:
    """Where the doctor looks: a filesystem root, the Python whose imports count, how commands run."""

    root: Path = Path("/")
    python: str = sys.executable
    pythonpath: Sequence[str] = ()  # prepended to PYTHONPATH for the import probes (tests: fake modules)
    run: Callable[..., RunResult] = run_command
    timeout: float = 120.0

    def child_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*map(str, self.pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    def probe(self, code: str, *args: str) -> Dict[str, Any]:
        """Run ``code`` in a child interpreter; its last stdout line is JSON. Crashes and hangs are reported."""
        r = self.run([self.python, "-c", code, *args], self.timeout, self.child_env())
        if r is None:
            return {"ok": False, "error": f"could not run {self.python} (or it ran past {self.timeout:g} s)"}
        rc, out, err = r
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            data = json.loads(lines[-1])
        except (IndexError, ValueError):
            why = f"crashed (signal {-rc})" if rc < 0 else f"exited with status {rc}"
            data = {"ok": False, "error": f"the probe {why}"}
        data["stderr"] = err[-4000:]
        return data

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def read(self, p: str) -> Optional[str]:
        try:
            return self.path(p).read_text(errors="replace").strip()
        except OSError:
            return None


@dataclass
class Facts:
    platform: Platform
    modules: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    dists: Dict[str, str] = field(default_factory=dict)
    attach: Dict[str, Any] = field(default_factory=dict)
    gpu: Dict[str, Any] = field(default_factory=dict)
    cameras: List[Dict[str, Any]] = field(default_factory=list)
    argus: Optional[str] = None
    power: Dict[str, Any] = field(default_factory=dict)
    gst: Dict[str, Optional[bool]] = field(default_factory=dict)

    def module(self, name: str) -> Dict[str, Any]:
        return self.modules.get(name, {"ok": False, "error": "not probed"})

    def to_dict(self) -> Dict[str, Any]:
        def clean(d: Dict[str, Any]) -> Dict[str, Any]:
            return {k: v for k, v in d.items() if k not in ("build", "stderr")}

        return {"platform": self.platform.to_dict(), "modules": {k: clean(v) for k, v in self.modules.items()},
                "distributions": self.dists, "onnxruntime_providers": clean(self.attach), "gpu": clean(self.gpu),
                "cameras": self.cameras,
                "nvargus_daemon": self.argus, "power": self.power, "gstreamer_elements": self.gst}


def probe_cameras(env: Env) -> List[Dict[str, Any]]:
    out = []
    for dev in sorted(env.path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name)):
        name = env.read(f"/sys/class/video4linux/{dev.name}/name") or ""
        out.append({"device": f"/dev/{dev.name}", "name": name, "csi": name.startswith("vi-output"),
                    "access": os.access(dev, os.R_OK | os.W_OK)})
    return out


def probe_power(env: Env) -> Dict[str, Any]:
    """``nvpmodel -q`` (``NV Power Mode: MAXN`` then the mode id) and the GPU clock from devfreq, where readable."""
    out: Dict[str, Any] = {}
    r = env.run(["nvpmodel", "-q"], 10.0, None)
    if r is not None and r[0] == 0:
        lines = [ln.strip() for ln in r[1].splitlines() if ln.strip()]
        for i, ln in enumerate(lines):
            if ln.startswith("NV Power Mode:"):
                out["nvpmodel"] = ln.split(":", 1)[1].strip()
                if i + 1 < len(lines) and lines[i + 1].isdigit():
                    out["nvpmodel_id"] = int(lines[i + 1])
    devfreq = env.path("/sys/class/devfreq")
    for d in sorted(devfreq.glob("*")) if devfreq.is_dir() else []:
        if any(n in d.name for n in GPU_DEVFREQ_NAMES):
            cur, mx = env.read(f"/sys/class/devfreq/{d.name}/cur_freq"), env.read(f"/sys/class/devfreq/{d.name}/max_freq")
            if cur and mx and cur.isdigit() and mx.isdigit():
                out["gpu_mhz"], out["gpu_max_mhz"] = int(cur) // 1_000_000, int(mx) // 1_000_000
            break
    return out


def probe_gst(names: Sequence[str] = ("nvarguscamerasrc", "nvv4l2decoder", "nvvidconv")) -> Dict[str, Optional[bool]]:
    from edgecls.runtime.sources import gstreamer

    return {n: gstreamer.element_exists(n) for n in names}


def gather(env: Optional[Env] = None, platform: Optional[Platform] = None) -> Facts:
    """Everything the diagnosis needs; the child-interpreter probes run side by side."""
    env = env or Env()
    plat = platform or detect_platform(env.root)
    facts = Facts(plat)
    with ThreadPoolExecutor(4, thread_name_prefix="edgecls-doctor") as pool:
        mods = {m: pool.submit(env.probe, MODULE_PROBE, m) for m in MODULES}
        dists = pool.submit(env.probe, DISTS_PROBE, *DISTS)
        attach = pool.submit(env.probe, ATTACH_PROBE, TINY_ONNX_B64, *GPU_PROVIDERS)
        gpu = pool.submit(env.probe, GPU_PROBE)
        facts.modules = {m: f.result() for m, f in mods.items()}
        facts.dists = {k: v for k, v in dists.result().items() if k != "stderr"}
        facts.attach = attach.result() if facts.modules["onnxruntime"].get("ok") else {}
        facts.gpu = gpu.result()
    facts.cameras = probe_cameras(env)
    if plat.is_jetson:
        r = env.run(["systemctl", "is-active", "nvargus-daemon"], 10.0, None)
        facts.argus = r[1].strip() if r is not None and r[1].strip() else None
        facts.power = probe_power(env)
    facts.gst = probe_gst()
    return facts
