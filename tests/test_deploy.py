"""deploy/: the install profiles (constraints files), Dockerfiles, systemd unit and README agree with the JetPack
table in :mod:`edgecls.runtime.doctor.platform` (base image tag → L4T → JetPack, Python, NumPy pin, the Jetson
onnxruntime-gpu index, no pip OpenCV)."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from edgecls.runtime.doctor.platform import (
    JETPACK_RELEASES,
    L4TRelease,
    jetpack_for,
    profile_for,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PIP_OPENCV = re.compile(r"opencv-(contrib-)?python|\[[^\]]*opencv[^\]]*\]")


def read_constraints(path: Path):
    header, reqs = {}, {}
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*(python):\s*(\S+)\s*$", line)
        if m:
            header[m.group(1)] = m.group(2)
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line).groups()
            reqs[name.lower()] = SpecifierSet(spec)
    return header, reqs


@pytest.mark.parametrize("major", [5, 6, 7])
def test_constraints_file_matches_the_jetpack_table(major):
    rel = profile_for(major)
    path = DEPLOY / "constraints" / f"jetpack{major}.txt"
    text = path.read_text()
    header, reqs = read_constraints(path)
    assert header["python"] == rel.python
    assert all(r.python == rel.python for r in JETPACK_RELEASES if r.major == major)  # one Python per major
    numpy = reqs["numpy"]
    assert "2.0.0" not in numpy and "2.2.6" not in numpy  # NumPy 2 breaks JetPack's OpenCV / Jetson onnxruntime
    newest_numpy_1 = {"3.8": "1.24.4", "3.10": "1.26.4", "3.12": "1.26.4"}[rel.python]
    assert newest_numpy_1 in numpy  # and a NumPy 1.x for this Python is allowed
    assert "onnxruntime-gpu" in reqs and "onnxruntime" not in reqs  # the GPU build only: the two break each other
    assert rel.ort_index in text  # the documented install command uses this JetPack's wheel index
    assert not any(PIP_OPENCV.search(name) for name in reqs) and "--system-site-packages" in text
    assert f"-c deploy/constraints/jetpack{major}.txt" in text


@pytest.mark.parametrize("major", [5, 6])
def test_jetson_dockerfile_matches_the_jetpack_table(major):
    text = (DEPLOY / "docker" / f"Dockerfile.jetpack{major}").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    image, tag = base.split(":")
    assert image == "nvcr.io/nvidia/l4t-jetpack" and base == profile_for(major).base_image
    l4t = L4TRelease(int(tag[1:].split(".")[0]), ".".join(tag[1:].split(".")[1:]))
    rel, exact = jetpack_for(l4t)
    assert exact and rel.major == major  # the base image is a JetPack release the table knows
    python = re.search(r'io\.edgecls\.python="([\d.]+)"', text).group(1)
    assert python == rel.python == profile_for(major).python
    assert re.search(rf'io\.edgecls\.jetpack="{major}"', text)
    assert f"COPY deploy/constraints/jetpack{major}.txt" in text and f"-c /src/deploy/constraints/jetpack{major}.txt" in text
    assert f"JETSON_INDEX={rel.ort_index}" in text and "--system-site-packages" in text
    assert "python3-libnvinfer" in text and "libopencv-python" in text  # JetPack's TensorRT and OpenCV
    assert not PIP_OPENCV.search(text.replace("libopencv-python", ""))  # no pip OpenCV, no [opencv] extra
    assert "numpy.__version__.startswith('1.')" in text and "gstreamer_enabled(cv2)" in text  # checked at build


def test_x86_dockerfiles():
    cpu = (DEPLOY / "docker" / "Dockerfile.x86-cpu").read_text()
    cuda = (DEPLOY / "docker" / "Dockerfile.x86-cuda").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", cpu, re.M) and '"/src[cpu,opencv]"' in cpu
    assert re.search(r"^FROM nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu22\.04", cuda, re.M)
    assert '"/src[gpu,opencv]"' in cuda and "--gpus all" in cuda
    for text in (cpu, cuda):
        assert "jetson-ai-lab" not in text and 'ENTRYPOINT ["edgecls"]' in text


def test_systemd_unit_restarts_on_failure_after_the_camera_daemon():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "edgecls-camera.service")
    assert "nvargus-daemon.service" in unit["Unit"]["After"] and "nvargus-daemon.service" in unit["Unit"]["Wants"]
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure" and set(svc["RestartPreventExitStatus"].split()) == {"2", "4"}
    assert svc["ExecStart"].startswith("/opt/edgecls-venv/bin/edgecls run ${EDGECLS_MODEL} ${EDGECLS_SOURCE}")
    assert svc["SupplementaryGroups"] == "video" and svc["SuccessExitStatus"] == "130"
    env = (DEPLOY / "systemd" / "edgecls.env").read_text()
    assert "EDGECLS_MODEL=" in env and "EDGECLS_SOURCE=csi://0" in env


def test_jetson_docs_use_the_profiles():
    readme = (REPO / "README.md").read_text()
    assert 'pip install "edgecls[gpu]"` (or `[cpu]`) — keeps JetPack' not in readme  # the line that cannot work
    assert "deploy/constraints/jetpack6.txt" in readme and "docs/jetson.md" in readme
    section = (REPO / "docs" / "jetson.md").read_text()
    for needed in ("--system-site-packages", "deploy/constraints/jetpack6.txt", "https://pypi.jetson-ai-lab.io/jp6/cu126",
                   "edgecls doctor", "edgecls build-engine", "csi://0", "JetPack 5", "JetPack 7", "--runtime nvidia",
                   "/tmp/argus_socket"):
        assert needed in section, needed
    assert "edgecls run " in section and ".engine csi://0" in section
