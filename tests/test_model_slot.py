"""The model slot with real ONNX models: records name their model; SIGHUP and a replaced file swap models in a
live run between two frames (each record equals its model's answer for that frame); each refusal keeps the old
model; a model that fails on its first inputs is rolled back; the Prometheus metrics say it all."""
from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from runtime_helpers import read_jsonl, write_images  # noqa: E402
from slot_helpers import frames, model_versions, replace_atomically  # noqa: E402

from edgecls.core.fileio import file_sha256  # noqa: E402
from edgecls.runtime.classifier import Classifier  # noqa: E402
from edgecls.runtime.run.config import RunConfig  # noqa: E402
from edgecls.runtime.run.loop import run  # noqa: E402
from edgecls.runtime.slot import ModelSlot  # noqa: E402
from edgecls.runtime.slot.checks import GoldenSet  # noqa: E402
from edgecls.runtime.slot.config import SlotConfig  # noqa: E402
from edgecls.runtime.sources.live import LiveSource  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return model_versions(tmp_path_factory.mktemp("models"))


def load(path):
    return Classifier.load(path, device="cpu", threads=1)


def new_slot(models, tmp_path, **kw) -> ModelSlot:
    path = tmp_path / "live" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(models["a"], path)
    slot = ModelSlot(load, path, **kw)
    slot.start()
    return slot


class Camera:
    """A VideoCapture-like camera at ~200 frames/s cycling through fixed frames (frame i is FRAMES[i % n])."""

    FRAMES = frames(6)

    def __init__(self):
        self.i = 0
        self.stop = threading.Event()

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return not self.stop.is_set()

    def read(self):
        if self.stop.is_set():
            return False, None
        time.sleep(0.005)
        img = self.FRAMES[self.i % len(self.FRAMES)]
        self.i += 1
        return True, img

    def release(self):
        self.stop.set()


class Records(io.StringIO):
    """stdout of a run, readable while it is written."""

    def shas(self):
        return [r.get("model", {}).get("sha256") for r in read_jsonl(self.getvalue())]


def wait_for(cond, timeout=20.0):
    t = time.time() + timeout
    while time.time() < t:
        if cond():
            return True
        time.sleep(0.02)
    return False


def live_swap(models, tmp_path, trigger: str):
    """Run a live camera; once records of model a come, swap in b (by ``trigger``); stop after records of b."""
    path = tmp_path / "live" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(models["a"], path)
    sha_a, sha_b = file_sha256(models["a"])[:12], file_sha256(models["b"])[:12]
    cam = Camera()
    out, err = Records(), io.StringIO()
    cfg = RunConfig(model=str(path), sources=("cam",), device="cpu", threads=1, probs=True,
                    slot=SlotConfig(watch=(trigger == "file")))

    def driver():
        assert wait_for(lambda: sha_a in out.shas())
        t_trigger = time.time()
        replace_atomically(models["b"], path)
        if trigger == "SIGHUP":
            os.kill(os.getpid(), signal.SIGHUP)
        ok = wait_for(lambda: out.shas().count(sha_b) >= 10)
        driver.seconds = time.time() - t_trigger
        cam.stop.set()
        driver.ok = ok

    t = threading.Thread(target=driver)
    t.start()
    stats = run(cfg, out=out, err=err, sources=[LiveSource("camera:fake", lambda: cam)])
    t.join()
    assert driver.ok, err.getvalue()
    recs = read_jsonl(out.getvalue())
    shas = [r["model"]["sha256"] for r in recs]
    first_b = shas.index(sha_b)
    assert set(shas[:first_b]) == {sha_a} and set(shas[first_b:]) == {sha_b}  # one swap, between two frames
    assert recs[0]["model"] == {"name": "model", "version": "1", "sha256": sha_a}
    assert recs[first_b]["model"] == {"name": "model", "version": "2", "sha256": sha_b}
    # each record is its model's answer for its frame
    clfs = {sha_a: load(models["a"]), sha_b: load(models["b"])}
    for r in recs:
        want = clfs[r["model"]["sha256"]].predict(Camera.FRAMES[r["frame"] % 6], bgr=True)
        got = [r["probs"][c] for c in want.classes] if isinstance(r["probs"], dict) else r["probs"]
        assert np.allclose(got, want.probs, atol=1e-5)
    assert stats.errors == 0 and "1 swap(s)" in err.getvalue()
    return driver.seconds


def test_records_name_their_model(models, tmp_path):
    folder = tmp_path / "imgs"
    write_images(folder, n=3)
    out, err = io.StringIO(), io.StringIO()
    run(RunConfig(model=str(models["a"]), sources=(str(folder),), device="cpu", batch=2), out=out, err=err)
    recs = read_jsonl(out.getvalue())
    assert len(recs) == 3
    assert all(r["model"] == {"name": "model", "version": "1", "sha256": file_sha256(models["a"])[:12]} for r in recs)


def test_sighup_swaps_the_model_of_a_live_run(models, tmp_path):
    assert live_swap(models, tmp_path, "SIGHUP") < 10


def test_replaced_model_file_swaps_the_model_of_a_live_run(models, tmp_path):
    assert live_swap(models, tmp_path, "file") < 10


@pytest.mark.parametrize("kind,reason", [("corrupt", "load"), ("wide", "input"), ("classes", "classes")])
def test_refused_models_leave_the_current_one(models, tmp_path, caplog, kind, reason):
    slot = new_slot(models, tmp_path)
    before = slot.identity
    x = np.stack([slot.prepare(f, bgr=True) for f in frames(2)])
    replace_atomically(models[kind], slot.path)
    with caplog.at_level(logging.WARNING, logger="edgecls.runtime.slot"):
        res = slot.reload("test")
        again = slot.reload("test")  # the same file again: not reloaded, not counted, not logged again
    assert res.status == "refused" and res.refusal.reason == reason and again.status == "refused"
    assert slot.identity == before and slot.refusals == {reason: 1} and slot.swaps == 0
    assert sum("refused" in r.getMessage() for r in caplog.records) == 1
    out, m = slot.infer(x)
    assert m.identity == before and np.all(np.isfinite(out))
    slot.close()


def test_new_classes_swap_with_the_flag(models, tmp_path):
    slot = new_slot(models, tmp_path, allow_new_classes=True)
    replace_atomically(models["classes"], slot.path)
    assert slot.reload("test").status == "swapped"
    assert slot.spec.classes == ("mobile", "other", "tablet") and slot.identity.version == "2"
    slot.close()


def test_golden_set_refuses_a_worse_model(models, tmp_path):
    """The golden labels are model a's answers: a scores 100 %, a flipped copy 0 % -> refused; a2 (the same net,
    other bytes) scores the same -> swapped."""
    imgs = write_images(tmp_path / "pool", n=30, seed=5)
    golden = tmp_path / "golden"
    for p, pred in zip(imgs, load(models["a"]).predict_batch(imgs)):
        (golden / pred.label).mkdir(parents=True, exist_ok=True)
        os.replace(p, golden / pred.label / p.name)
    slot = new_slot(models, tmp_path, golden=GoldenSet(golden, 2.0))
    replace_atomically(models["flipped"], slot.path)
    res = slot.reload("test")
    assert res.status == "refused" and res.refusal.reason == "golden"
    assert "n=30" in res.refusal.message and "new 0.0 %" in res.refusal.message and "current 100.0 %" in \
        res.refusal.message
    assert slot.identity.sha256 == file_sha256(models["a"])
    replace_atomically(models["a2"], slot.path)
    assert slot.reload("test").status == "swapped"
    slot.close()


def test_model_failing_on_its_first_inputs_is_rolled_back(models, tmp_path, caplog):
    slot = new_slot(models, tmp_path)
    sha_a = slot.identity.sha256
    replace_atomically(models["nan"], slot.path)
    assert slot.reload("test").status == "swapped"  # its warm-up (mean ~0) is finite
    x = np.stack([slot.prepare(f, bgr=True) for f in frames(3, bright=True)])
    with caplog.at_level(logging.ERROR, logger="edgecls.runtime.slot"):
        out, m = slot.infer(x)
    assert m.identity.sha256 == sha_a and np.all(np.isfinite(out))  # the batch answered by the model brought back
    assert slot.identity.sha256 == sha_a and slot.rollbacks == {"first_inputs": 1}
    assert any("rolled back" in r.getMessage() and "non-finite" in r.getMessage() for r in caplog.records)
    assert slot.reload("again").status == "refused"  # the same file is not swapped in again
    slot.close()


def test_old_model_closed_after_its_calls_in_flight(models, tmp_path):
    slot = new_slot(models, tmp_path, probation=0)
    old = slot.acquire()  # a call in flight on model a
    replace_atomically(models["b"], slot.path)
    assert slot.reload("test").status == "swapped"
    assert slot.loaded is not old and not old.closed  # still serving its call
    slot.release(old)
    assert old.closed
    slot.close()


def test_metrics_name_the_model_and_count_swaps_refusals(models, tmp_path):
    prometheus_client = pytest.importorskip("prometheus_client")
    from edgecls.runtime.slot.metrics import SlotCollector

    slot = new_slot(models, tmp_path)
    reg = prometheus_client.CollectorRegistry(auto_describe=False)
    reg.register(SlotCollector(slot))
    replace_atomically(models["b"], slot.path)
    slot.reload("test")
    replace_atomically(models["wide"], slot.path)
    slot.reload("test")
    text = prometheus_client.generate_latest(reg).decode()
    sha_b = file_sha256(models["b"])
    info = [line for line in text.splitlines() if line.startswith("edgecls_model_info{")]
    assert len(info) == 1 and info[0].endswith(" 1.0")
    assert 'name="model"' in info[0] and 'version="2"' in info[0] and f'sha256="{sha_b}"' in info[0]
    assert "edgecls_model_swaps_total 1.0" in text
    assert 'edgecls_model_swap_refusals_total{reason="input"} 1.0' in text
    assert 'edgecls_model_swap_refusals_total{reason="golden"} 0.0' in text
    slot.close()


def test_cli_run_takes_sighup_as_a_reload(models, tmp_path):
    """The real command: SIGHUP no longer ends `edgecls run` (it used to exit 129); SIGTERM still stops it (143)."""
    import subprocess
    import sys

    from runtime_helpers import write_video

    video = write_video(tmp_path / "v.avi", n=20, fps=20.0)
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir()
    replace_atomically(models["a"], path)
    sha_a, sha_b = file_sha256(models["a"])[:12], file_sha256(models["b"])[:12]
    proc = subprocess.Popen([sys.executable, "-m", "edgecls", "run", str(path), str(video), "--realtime", "--loop",
                             "--device", "cpu", "--no-watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: list = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any(sha_a in line for line in seen), 60)
        replace_atomically(models["b"], path)
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any(sha_b in line for line in seen), 30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "1 swap(s)" in err and f"now model v2 ({sha_b})" in err
