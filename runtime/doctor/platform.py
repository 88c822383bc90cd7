"""Which machine this is: the JetPack table (data), ``/etc/nv_tegra_release`` parsing, and the platform facts
``edgecls doctor`` starts from. Every file is read under ``root`` so that tests can point it at a fixture tree.

The table: L4T (Jetson Linux) release → JetPack, with what that JetPack ships. Sources: NVIDIA's JetPack archive
and release pages (5.1.x = L4T R35, Ubuntu 20.04, CUDA 11.4, TensorRT 8.5.2; 6.0 = R36.3, CUDA 12.2, TensorRT 8.6.2;
6.1/6.2 = R36.4.x, CUDA 12.6, TensorRT 10.3; 7.x = R38+, Ubuntu 24.04, CUDA 13). ``deploy/`` holds one install
profile per JetPack major (constraints file + Dockerfile); ``tests/test_deploy.py`` checks them against this table.
"""
from __future__ import annotations

import platform as _platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgecls.runtime.backends.engine_record import parse_version

JETSON_AI_LAB = "https://pypi.jetson-ai-lab.io"


@dataclass(frozen=True)
class JetPackRelease:
    """One JetPack release and what it ships (``tensorrt`` is the major.minor series; ``+``: at least)."""

    jetpack: str
    l4t: str
    ubuntu: str
    python: str
    cuda: str
    tensorrt: str
    profile: str  # deploy/constraints/<profile>.txt, deploy/docker/Dockerfile.<profile> ("" when none fits)
    ort_index: str  # pip index with its onnxruntime-gpu wheels
    base_image: str = ""  # the L4T container base the profile's Dockerfile uses ("" for none)
    note: str = ""

    @property
    def major(self) -> int:
        return int(self.jetpack.split(".")[0])


_JP5 = dict(ubuntu="20.04", python="3.8", cuda="11.4", profile="jetpack5", ort_index=f"{JETSON_AI_LAB}/jp5/cu114",
            base_image="nvcr.io/nvidia/l4t-jetpack:r35.4.1")
_JP60 = dict(ubuntu="22.04", python="3.10", cuda="12.2", tensorrt="8.6", profile="jetpack6",
             ort_index=f"{JETSON_AI_LAB}/jp6/cu122", base_image="nvcr.io/nvidia/l4t-jetpack:r36.4.0",
             note="JetPack 6.0 ships CUDA 12.2 and TensorRT 8.6: deploy/constraints/jetpack6.txt pins the CUDA 12.6 "
                  "onnxruntime-gpu of JetPack 6.1/6.2. Upgrade to JetPack 6.2, or install onnxruntime-gpu from the "
                  "jp6/cu122 index without the constraints file")
_JP6 = dict(ubuntu="22.04", python="3.10", cuda="12.6", tensorrt="10.3", profile="jetpack6",
            ort_index=f"{JETSON_AI_LAB}/jp6/cu126", base_image="nvcr.io/nvidia/l4t-jetpack:r36.4.0")
_JP7 = dict(ubuntu="24.04", python="3.12", cuda="13.0", tensorrt="10.13+", profile="jetpack7",
            ort_index=f"{JETSON_AI_LAB}/sbsa/cu130")

JETPACK_RELEASES: Tuple[JetPackRelease, ...] = (
    JetPackRelease("5.0.2", "35.1.0", tensorrt="8.4", note="TensorRT 8.4: edgecls builds engines with TensorRT >= 8.5; "
                   "upgrade to JetPack 5.1.x", **_JP5),
    JetPackRelease("5.1", "35.2.1", tensorrt="8.5", **_JP5),
    JetPackRelease("5.1.1", "35.3.1", tensorrt="8.5", **_JP5),
    JetPackRelease("5.1.2", "35.4.1", tensorrt="8.5", **_JP5),
    JetPackRelease("5.1.3", "35.5.0", tensorrt="8.5", **_JP5),
    JetPackRelease("5.1.4", "35.6.0", tensorrt="8.5", **_JP5),
    JetPackRelease("6.0 DP", "36.2.0", **_JP60),
    JetPackRelease("6.0", "36.3.0", **_JP60),
    JetPackRelease("6.1", "36.4.0", **_JP6),
    JetPackRelease("6.1", "36.4.2", **_JP6),
    JetPackRelease("6.2", "36.4.3", **_JP6),
    JetPackRelease("6.2.1", "36.4.4", **_JP6),
    JetPackRelease("7.0", "38.2.0", **_JP7),
    JetPackRelease("7.0", "38.2.1", **_JP7),
    JetPackRelease("7.1", "38.4.0", **_JP7),
)
_BY_L4T = {r.l4t: r for r in JETPACK_RELEASES}
# an L4T release the table does not know: what its family ships (by L4T major; R36 before 36.4 is JetPack 6.0)
_FAMILY = {35: _BY_L4T["35.6.0"], 36: _BY_L4T["36.4.4"], 38: _BY_L4T["38.4.0"], 39: _BY_L4T["38.4.0"]}


@dataclass(frozen=True)
class L4TRelease:
    major: int
    revision: str  # "4.3"
    board: str = ""

    @property
    def version(self) -> str:
        parts = [str(self.major)] + self.revision.split(".")
        while len(parts) < 3:
            parts.append("0")
        return ".".join(parts[:3])


_L4T_LINE = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")


def parse_nv_tegra_release(text: str) -> Optional[L4TRelease]:
    """``# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: …`` → R36.4.3."""
    m = _L4T_LINE.search(text or "")
    if not m:
        return None
    board = re.search(r"BOARD:\s*([^,\s]+)", text)
    return L4TRelease(int(m.group(1)), m.group(2), board.group(1) if board else "")


def jetpack_for(l4t: L4TRelease) -> Tuple[Optional[JetPackRelease], bool]:
    """(the JetPack of this L4T release, whether the table knows it exactly); (None, False) for L4T < R35."""
    for r in JETPACK_RELEASES:
        if r.l4t == l4t.version:
            return r, True
    same_minor = [r for r in JETPACK_RELEASES if r.l4t.split(".")[:2] == l4t.version.split(".")[:2]]
    if same_minor:
        return same_minor[-1], False
    if l4t.major == 36 and parse_version(l4t.version) < (36, 4, 0):
        return _BY_L4T["36.3.0"], False
    return _FAMILY.get(l4t.major), False


def tensorrt_matches(release: JetPackRelease, version: str) -> bool:
    """Whether a TensorRT version is the one this JetPack ships (its major.minor series, or at least ``N+``)."""
    want = release.tensorrt
    if want.endswith("+"):
        return parse_version(version) >= parse_version(want[:-1])
    return parse_version(version)[:2] == parse_version(want)[:2]


def profile_for(major: int) -> Optional[JetPackRelease]:
    """The release an install profile (``jetpack5``/``6``/``7``) is written for: the newest of that major."""
    rs = [r for r in JETPACK_RELEASES if r.major == major and r.profile == f"jetpack{major}" and not r.note]
    return rs[-1] if rs else None


@dataclass(frozen=True)
class Platform:
    machine: str
    system: str
    python: str
    executable: str
    l4t: Optional[L4TRelease] = None
    jetpack: Optional[JetPackRelease] = None
    jetpack_exact: bool = False
    model: str = ""
    os_release: str = ""
    in_venv: bool = False
    venv_system_site_packages: Optional[bool] = None
    dla_cores: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def is_jetson(self) -> bool:
        return self.l4t is not None

    def to_dict(self) -> Dict[str, object]:
        jp = self.jetpack
        return {
            "machine": self.machine, "system": self.system, "python": self.python, "executable": self.executable,
            "jetson": self.is_jetson, "model": self.model, "os": self.os_release,
            "l4t": self.l4t.version if self.l4t else None,
            "jetpack": None if jp is None else {
                "version": jp.jetpack, "exact": self.jetpack_exact, "ubuntu": jp.ubuntu, "python": jp.python,
                "cuda": jp.cuda, "tensorrt": jp.tensorrt, "profile": jp.profile, "onnxruntime_index": jp.ort_index},
            "venv": self.in_venv, "venv_system_site_packages": self.venv_system_site_packages,
            "dla_cores": self.dla_cores,
        }


def _read(root: Path, path: str) -> Optional[str]:
    try:
        return (root / path.lstrip("/")).read_text(errors="replace")
    except OSError:
        return None


def _os_release(root: Path) -> str:
    text = _read(root, "/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else ""


def _venv(prefix: str, base_prefix: str) -> Tuple[bool, Optional[bool]]:
    """(in a venv, whether it sees the system site-packages) from ``pyvenv.cfg``."""
    if prefix == base_prefix:
        return False, None
    cfg = _read(Path(prefix), "pyvenv.cfg") or ""
    m = re.search(r"^include-system-site-packages\s*=\s*(\w+)", cfg, re.M)
    return True, (m.group(1).lower() == "true") if m else None


def detect_platform(root: Path = Path("/"), machine: Optional[str] = None, prefix: Optional[str] = None,
                    base_prefix: Optional[str] = None) -> Platform:
    """The platform facts, read under ``root`` (``machine``/``prefix`` default to this interpreter's)."""
    l4t = parse_nv_tegra_release(_read(root, "/etc/nv_tegra_release") or "")
    jp, exact = jetpack_for(l4t) if l4t is not None else (None, False)
    model = (_read(root, "/proc/device-tree/model") or "").replace("\x00", "").strip()
    in_venv, system_site = _venv(prefix or sys.prefix, base_prefix or getattr(sys, "base_prefix", sys.prefix))
    dla = len(list((root / "dev").glob("nvhost-ctrl-nvdla*"))) if (root / "dev").is_dir() else 0
    return Platform(
        machine=machine or _platform.machine(), system=_platform.system(),
        python=".".join(str(v) for v in sys.version_info[:3]), executable=sys.executable, l4t=l4t, jetpack=jp,
        jetpack_exact=exact, model=model, os_release=_os_release(root), in_venv=in_venv,
        venv_system_site_packages=system_site, dla_cores=dla,
    )
