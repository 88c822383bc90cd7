"""``edgecls run`` end to end: JSONL/CSV/table, --save, the summary, error records, exit codes, Ctrl-C, live loop."""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
import time

import numpy as np
import pytest
from cli_helpers import run_cli_captured as cli
from PIL import Image
from runtime_helpers import export_tiny_onnx, read_jsonl, tiny_spec, torch_logits, write_images, write_video

from edgecls.runtime.classifier import Classifier
from edgecls.runtime.decision import Decider
from edgecls.runtime.preprocess import load_image, preprocess
from edgecls.runtime.run import loop as L
from edgecls.runtime.run.config import RunConfig
from edgecls.runtime.run.loop import run
from edgecls.runtime.sources.live import LiveSource, RetryPolicy

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt_run")
    torch_model = export_tiny_onnx(d / "model.onnx")
    folder = d / "photos"
    good = write_images(folder / "set1", n=5, seed=1) + write_images(folder / "set2", n=4, seed=2)
    (folder / "set2" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "set1" / "empty.png").write_bytes(b"")
    video = write_video(d / "clip.avi", n=10)
    return {"dir": d, "model": str(d / "model.onnx"), "folder": str(folder), "good": good, "video": str(video),
            "torch": torch_model}


def test_jsonl_over_folder_and_video_matches_torch_and_prints_summary(env, capsys):
    code, out, err = cli(["run", env["model"], env["folder"], env["video"], "--batch", "3", "--threads", "1"], capsys)
    assert code == 6, err  # the folder holds 2 unreadable files: some inputs failed (error records, the rest ok)
    recs = read_jsonl(out)  # stdout is pure JSONL: every line parses
    files = [r for r in recs if r["source"] == env["folder"]]
    frames = [r for r in recs if r["source"] == env["video"]]
    assert len(files) == len(env["good"]) + 2 and len(frames) == 10
    errors = [r for r in files if "error" in r]
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in errors) == ["corrupt.jpg", "empty.png"]
    assert [r["index"] for r in files] == list(range(len(files)))  # in order, sorted recursively
    assert [r["frame"] for r in frames] == list(range(10))  # every video frame, in order
    # the same labels and probabilities as the torch model on the shared preprocessing
    ok = [r for r in files if "error" not in r]
    arrays = [load_image(r["path"]) for r in ok]
    ref = Decider(tiny_spec()).decide(torch_logits(env["torch"], preprocess(arrays, tiny_spec().preprocess)))
    assert [r["label"] for r in ok] == [p.label for p in ref]
    np.testing.assert_allclose([r["confidence"] for r in ok], [p.confidence for p in ref], atol=1e-5)
    r = ok[0]
    assert set(r) >= {"source", "index", "path", "label", "confidence", "topk", "decision", "positive", "p_positive",
                      "timings_ms"}
    assert set(r["timings_ms"]) >= {"decode", "preprocess", "infer"} and r["timings_ms"]["batch"] == 3
    assert r["decision"] in ("yes", "no", "uncertain")
    # the summary is on stderr: counts per decision, frames/s, p50/p95 per stage
    assert "frames/s" in err and "errors 2" in err
    for stage in ("decode", "preprocess", "infer (per batch)"):
        assert stage in err
    assert "p50" in err and "p95" in err
    n_yes = sum(r.get("decision") == "yes" for r in recs)
    n_no = sum(r.get("decision") == "no" for r in recs)
    assert f"yes {n_yes} · no {n_no}" in err


def test_batch_size_does_not_change_results(env, capsys):
    outs = []
    for b in ("1", "4"):
        code, out, _ = cli(["run", env["model"], env["folder"], "--batch", b, "--no-summary"], capsys)
        assert code == 6  # 2 unreadable files
        outs.append([(r.get("path"), r.get("label"), r.get("confidence"), r.get("error")) for r in read_jsonl(out)])
    assert outs[0] == outs[1]


def test_csv_and_table_formats(env, capsys):
    code, out, _ = cli(["run", env["model"], env["folder"], "--format", "csv", "--no-summary"], capsys)
    assert code == 6  # 2 unreadable files
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(env["good"]) + 2
    assert {"source", "index", "label", "confidence", "decision", "topk", "infer_ms", "error"} <= set(rows[0])
    assert sum(bool(r["error"]) for r in rows) == 2 and all(r["label"] for r in rows if not r["error"])
    code, out, _ = cli(["run", env["model"], env["folder"], "--format", "table", "--no-summary"], capsys)
    lines = out.splitlines()
    assert code == 6 and lines[0].split()[:4] == ["item", "label", "conf", "decision"]
    assert len(lines) == 2 + len(env["good"]) + 2 and sum("ERROR" in ln for ln in lines) == 2


def test_save_writes_annotated_images_and_video(env, capsys, tmp_path):
    save = tmp_path / "annotated"
    code, out, err = cli(["run", env["model"], env["folder"], env["video"], "--save", str(save), "--smooth", "3",
                          "--summary-json", str(tmp_path / "summary.json")], capsys)
    assert code == 6, err  # 2 unreadable files
    imgs = sorted(p.relative_to(save).as_posix() for p in save.rglob("*.jpg"))
    assert imgs == sorted(f"photos/{p.parent.name}/{p.name}" for p in env["good"])
    orig = np.asarray(Image.open(env["good"][0]))
    ann = np.asarray(Image.open(save / "photos" / env["good"][0].parent.name / env["good"][0].name))
    assert ann.shape == orig.shape and np.abs(ann.astype(int) - orig.astype(int)).max() > 60  # text drawn
    video = save / "clip.annotated.mp4"
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 10 and not list(save.rglob(".*"))  # no temp file left behind
    mask = os.umask(0)
    os.umask(mask)
    for p in (video, tmp_path / "summary.json", save / "photos" / env["good"][0].parent.name / env["good"][0].name):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p  # as open() would create it, not mkstemp's 0600
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == len(env["good"]) + 10 and summary["errors"] == 2
    assert sum(summary["decisions"].values()) == summary["frames"]
    assert {"decode", "preprocess", "infer_batch"} <= set(summary["latency_ms"])
    assert str(video) in summary["saved"]
    frames = [r for r in read_jsonl(out) if r["source"] == env["video"]]
    assert [r.get("smoothed", 1) for r in frames][:4] == [1, 2, 3, 3]


def test_save_never_overwrites_inputs(env, capsys, tmp_path):
    photos = tmp_path / "photos"
    paths = write_images(photos, n=2)
    before = [p.read_bytes() for p in paths]
    code, _, err = cli(["run", env["model"], str(photos), "--save", str(tmp_path)], capsys)  # would map onto itself
    assert code == 0 and "would overwrite the input" in err
    assert [p.read_bytes() for p in paths] == before


def test_exit_codes(env, capsys, tmp_path):
    export_tiny_onnx(tmp_path / "bare.onnx", metadata=False, sidecar=False)
    code, _, err = cli(["run", str(tmp_path / "bare.onnx"), env["folder"]], capsys)
    assert code == 2 and "edgecls.spec" in err and "edgecls export" in err
    export_tiny_onnx(tmp_path / "wrong.onnx", export_hw=48, batch=1)
    code, _, err = cli(["run", str(tmp_path / "wrong.onnx"), env["folder"]], capsys)
    assert code == 2 and "48" in err
    code, _, err = cli(["run", env["model"], "--camera", "97"], capsys)
    assert code == 5 and "camera:97" in err
    code, _, err = cli(["run", env["model"], env["folder"], "--device", "cuda"], capsys)
    assert code == 4 and "CUDAExecutionProvider" in err
    code, _, err = cli(["run", env["model"], env["folder"], "--format", "xml"], capsys)
    assert code == 2 and "jsonl" in err
    code, _, err = cli(["run", env["model"], str(tmp_path / "missing_dir")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = cli(["run", env["model"], env["folder"], "--threshold", "1.5"], capsys)
    assert code == 2 and "threshold" in err
    code, _, err = cli(["run", env["model"]], capsys)
    assert code == 2 and "no source" in err
    code, _, err = cli(["run", str(tmp_path / "m.engine"), env["folder"]], capsys)
    assert code == 2


def test_ctrl_c_prints_summary_and_exits_130(env, capsys, monkeypatch):
    calls = {"n": 0}
    orig = L._Loop._finish

    def finish_then_interrupt(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what SIGINT does in the main thread
        return orig(self, *a, **k)

    monkeypatch.setattr(L._Loop, "_finish", finish_then_interrupt)
    code, out, err = cli(["run", env["model"], env["folder"], "--batch", "2"], capsys)
    assert code == 130
    assert "INTERRUPTED" in err and "frames/s" in err
    assert 1 <= len(read_jsonl(out)) < len(env["good"]) + 2


class FastCapture:
    def __init__(self):
        self.i = 0

    def isOpened(self):
        return True

    def read(self):
        time.sleep(0.0005)
        self.i += 1
        img = np.zeros((40, 40, 3), np.uint8)
        img[..., 2] = self.i % 256
        return True, img

    def release(self):
        pass


def test_live_loop_takes_newest_frames_smooths_and_reports_latency(env, tmp_path):
    cfg = RunConfig(model=env["model"], sources=("fake",), max_frames=8, smooth=4, summary=True,
                      save=str(tmp_path / "live"))
    out, err = io.StringIO(), io.StringIO()
    clf = Classifier.load(env["model"], device="cpu")

    class SlowInfer:  # make inference slower than the camera so frames must be skipped
        def __getattr__(self, k):
            return getattr(clf, k)

        def infer(self, batch):
            time.sleep(0.01)
            return clf.infer(batch)

    src = LiveSource("camera:fake", FastCapture)
    stats = run(cfg, out=out, err=err, classifier=SlowInfer(), sources=[src])
    recs = read_jsonl(out.getvalue())
    assert len(recs) == 8 and stats.frames == 8
    fr = [r["frame"] for r in recs]
    assert all(b > a for a, b in zip(fr, fr[1:])) and fr[-1] - fr[0] > 8  # newest frames only, stale ones skipped
    assert [r.get("smoothed", 1) for r in recs][:5] == [1, 2, 3, 4, 4]
    assert all("latency" in r["timings_ms"] for r in recs)
    assert stats.dropped > 0 and "stale frames skipped" in err.getvalue() and "capture→result" in err.getvalue()
    assert (tmp_path / "live" / "camera_fake.annotated.mp4").is_file()
    clf.close()


def test_images_run_without_opencv(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    out, err = io.StringIO(), io.StringIO()
    stats = run(RunConfig(model=env["model"], sources=(env["folder"],), device="cpu"), out=out, err=err)
    assert stats.frames == len(env["good"]) and stats.errors == 2
    with pytest.raises(Exception, match="OpenCV"):
        run(RunConfig(model=env["model"], sources=(env["video"],), device="cpu"), out=out, err=err)


def test_config_validation():
    from edgecls.core.errors import InputError

    for bad in (dict(batch=0), dict(topk=0), dict(smooth=0), dict(fmt="xml"), dict(threshold=-0.1),
                dict(max_frames=0), dict(retries=-1), dict(workers=0), dict(sources=())):
        kw = dict(model="m.onnx", sources=("x",))
        kw.update(bad)
        with pytest.raises(InputError):
            RunConfig(**kw)


def test_several_live_sources_at_once_round_robin(env):
    out, err = io.StringIO(), io.StringIO()
    srcs = [LiveSource("camera:a", FastCapture), LiveSource("camera:b", FastCapture)]
    stats = run(RunConfig(model=env["model"], sources=("a", "b"), max_frames=5, device="cpu"), out=out, err=err,
                  sources=srcs)
    recs = read_jsonl(out.getvalue())
    for name in ("camera:a", "camera:b"):
        fr = [r["frame"] for r in recs if r["source"] == name]
        assert len(fr) == 5 and all(b > a for a, b in zip(fr, fr[1:]))
    assert stats.sources == 2 and stats.frames == 10


def test_live_stream_that_ends_is_noted_and_run_finishes(env):
    class Dies(FastCapture):
        def read(self):
            return (False, None) if self.i >= 3 else super().read()

    class Closed(FastCapture):
        def isOpened(self):
            return False

    caps = [Dies()]
    src = LiveSource("rtsp://cam", lambda: caps.pop() if caps else Closed(), retry=RetryPolicy(retries=2, initial=0.0))
    out, err = io.StringIO(), io.StringIO()
    stats = run(RunConfig(model=env["model"], sources=("x",), device="cpu"), out=out, err=err, sources=[src])
    assert 1 <= stats.frames <= 3 and "gave up after 2 reopen attempts" in err.getvalue()


def test_show_without_a_gui_or_display_is_a_capability_error(env, monkeypatch):
    from edgecls.core.errors import CapabilityError

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(CapabilityError, match="--save"):
        run(RunConfig(model=env["model"], sources=(env["folder"],), show=True, device="cpu"),
              out=io.StringIO(), err=io.StringIO())


def test_package_exports_the_api_lazily(env):
    import edgecls.runtime as rt

    assert rt.Classifier is Classifier
    assert rt.load_model_spec(env["model"]).arch == "tinynet"
