"""The runtime never imports torch: importing it and running it (API and CLI) in a fresh interpreter leaves torch
(and torchvision) out of ``sys.modules``, even with an import hook that makes any torch import fail loudly."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from runtime_helpers import export_tiny_onnx, write_images, write_video

BLOCK = textwrap.dedent(
    """
    import sys
    class _BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "timm"):
                raise ImportError("torch is blocked in the runtime: " + name)
            return None
    sys.meta_path.insert(0, _BlockTorch())
    """
)


def _py(code: str, timeout: float = 120):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_import_runtime_leaves_torch_out():
    r = _py(  # every module of the runtime, found by walking the package (a new module is checked too)
        "import importlib, pkgutil, sys, edgecls.runtime as rt; "
        "names = [m.name for m in pkgutil.walk_packages(rt.__path__, 'edgecls.runtime.')]; "
        "[importlib.import_module(n) for n in names]; "
        "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm', 'cv2', 'onnx')))"
    )
    assert r.returncode == 0, r.stderr
    n, loaded = r.stdout.strip().split(" ", 1)
    assert int(n) >= 30  # the walk found the subpackages' modules
    assert loaded == "[]"  # not even cv2 or onnx at import time


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("torchfree")
    export_tiny_onnx(d / "model.onnx")
    write_images(d / "imgs", n=3)
    write_video(d / "v.avi", n=4)
    return d


def test_run_path_and_api_are_torch_free(artifacts):
    d = artifacts
    code = BLOCK + textwrap.dedent(
        f"""
        import io, json
        from edgecls.runtime.classifier import Classifier
        from edgecls.runtime.run.config import RunConfig
        from edgecls.runtime.run.loop import run
        out, err = io.StringIO(), io.StringIO()
        stats = run(RunConfig(model={str(d / "model.onnx")!r}, sources=({str(d / "imgs")!r}, {str(d / "v.avi")!r}),
                              batch=2, save={str(d / "saved")!r}), out=out, err=err)
        assert stats.frames == 7, (stats.frames, err.getvalue())
        p = Classifier.load({str(d / "model.onnx")!r}).predict({str(d / "imgs" / "img_000.jpg")!r})
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
        print(json.dumps({{"torch_modules": bad, "label": p.label}}))
        """
    )
    r = _py(code)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["torch_modules"] == [] and res["label"] in ("mobile", "other", "uncertain")


def test_cli_run_is_torch_free(artifacts):
    d = artifacts
    code = BLOCK + textwrap.dedent(
        f"""
        from edgecls.cli import main
        try:
            main(["run", {str(d / "model.onnx")!r}, {str(d / "imgs")!r}, "--no-summary"])
        except SystemExit as e:
            assert e.code == 0, e.code
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
        assert not bad, bad
        """
    )
    r = _py(code)
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == 3
