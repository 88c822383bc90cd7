"""What machine a number was measured on: CPU model, cores, ISA flags, memory, GPU, library versions.

Torch-free and import-light: reads /proc, asks ``importlib.metadata`` for versions (without importing the
libraries), and ``nvidia-smi`` for GPUs when it is on PATH. Every field degrades to ``None``/empty when the
information is not available on this platform; nothing here raises.
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from typing import Any, Dict, List, Optional

log = logging.getLogger(__name__)

# ISA features that matter for inference speed (x86 names from /proc/cpuinfo "flags", ARM from "Features")
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16",
)

LIBRARIES = (
    "edgecls", "numpy", "pillow", "opencv-python", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu",
    "onnx", "torch", "torchvision", "tensorrt", "matplotlib",
)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def cpu_info(cpuinfo_text: Optional[str] = None) -> Dict[str, Any]:
    """CPU model, logical/physical/usable cores and the ISA flags of :data:`ISA_FLAGS` present."""
    text = _read("/proc/cpuinfo") if cpuinfo_text is None else cpuinfo_text
    model = None
    flags: List[str] = []
    cores = set()
    phys, core = None, None
    mhz: Optional[float] = None
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and model is None and value:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = value.split()
        elif key == "cpu mhz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    if model is None:
        model = platform.processor() or platform.machine() or None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    have = set(flags)
    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cores": usable,
        "isa": [f for f in ISA_FLAGS if f in have],
        "mhz": mhz,  # current clock of the first core as the kernel reports it (not a guaranteed frequency)
    }


def memory_gib() -> Optional[float]:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            try:
                return round(int(line.split()[1]) / 1024 / 1024, 1)
            except (IndexError, ValueError):
                return None
    return None


def gpu_info() -> List[Dict[str, str]]:
    """GPUs from ``nvidia-smi`` (name, memory, driver), or the Jetson L4T release; empty when none is seen."""
    gpus: List[Dict[str, str]] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3:
                    gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("nvidia-smi failed: %s", e)
    tegra = _read("/etc/nv_tegra_release")
    if tegra and not gpus:
        gpus.append({"name": "NVIDIA Jetson (integrated)", "memory": "shared", "driver": tegra.splitlines()[0][:80]})
    return gpus


def library_versions() -> Dict[str, str]:
    """Installed versions of the libraries that shape the numbers (absent ones are left out)."""
    from importlib import metadata

    out: Dict[str, str] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def onnxruntime_providers() -> List[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def describe_machine() -> Dict[str, Any]:
    """Everything above as one JSON-able dict."""
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_info(),
        "memory_gib": memory_gib(),
        "gpus": gpu_info(),
        "onnxruntime_providers": onnxruntime_providers(),
        "versions": library_versions(),
    }


def machine_summary(m: Dict[str, Any]) -> str:
    """One line: ``Intel Xeon … (x86_64), 2 usable of 2 logical cores, ISA avx2 avx512f …, 23.5 GiB, GPU none``."""
    cpu = m.get("cpu", {})
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "none"
    v = m.get("versions", {})
    libs = " ".join(f"{k} {v[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "torch", "numpy", "pillow") if k in v)
    return (
        f"{cpu.get('model')} ({cpu.get('arch')}), {cpu.get('usable_cores')} usable of {cpu.get('logical_cores')} "
        f"logical cores, ISA {' '.join(cpu.get('isa', [])) or 'n/a'}, {m.get('memory_gib')} GiB RAM, GPU {gpus}; "
        f"{m.get('os')}, Python {v.get('python')}; {libs}"
    )
