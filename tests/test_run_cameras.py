"""Many live sources in one run (runtime/run/scheduler.py): the same answers alone, side by side and batched; fair
shares; per-source numbers; fps caps; sources added and removed while running."""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from runtime_helpers import export_tiny_onnx, read_jsonl

from edgecls.core.errors import InputError
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.run.config import RunConfig
from edgecls.runtime.run.loop import run
from edgecls.runtime.sources.live import LiveSource, RetryPolicy

pytest.importorskip("cv2")

N_IMAGES = 16


def image(i: int) -> np.ndarray:
    """Frame content by index: random pixels, so labels and probabilities differ from frame to frame."""
    return np.random.default_rng(i % N_IMAGES).integers(0, 256, (48, 64, 3), dtype=np.uint8)


class PacedCamera:
    """A camera at ``fps`` that sends ``n`` frames (``grab``/``retrieve`` as OpenCV's VideoCapture); counts the
    frames it converted (``retrieve``)."""

    def __init__(self, fps: float = 100.0, n: int = 10**9) -> None:
        self.period, self.n, self.i, self.t0 = 1.0 / fps, n, 0, None
        self.retrieved = 0

    def isOpened(self):
        return True

    def grab(self):
        if self.i >= self.n:
            return False
        if self.t0 is None:
            self.t0 = time.perf_counter()
        wait = self.t0 + self.i * self.period - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        self.i += 1
        return True

    def retrieve(self):
        self.retrieved += 1
        return True, image(self.i - 1)

    def release(self):
        self.n = 0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cams") / "model.onnx"
    export_tiny_onnx(path)
    return str(path)


def cameras(k: int, fps: float = 100.0, n: int = 10**9, names=None):
    caps = [PacedCamera(fps, n) for _ in range(k)]
    srcs = [LiveSource(names[j] if names else f"cam{j}", (lambda c=c: c), retry=RetryPolicy(retries=0))
            for j, c in enumerate(caps)]
    return srcs, caps


def run_live(model, srcs, **kw):
    out, err = io.StringIO(), io.StringIO()
    cfg = RunConfig(model=model, sources=tuple(s.name for s in srcs), device="cpu", probs=True, **kw)
    stats = run(cfg, out=out, err=err, sources=srcs)
    return stats, read_jsonl(out.getvalue()), err.getvalue()


def reference(model):
    clf = Classifier.load(model, device="cpu")
    try:
        ref = {}
        for i in range(N_IMAGES):
            logits = clf.infer(clf.prepare(image(i), bgr=True)[None])
            ref[i] = clf.decider.from_probs(clf.decider.probabilities(logits)[0])
        return ref
    finally:
        clf.close()


@pytest.mark.parametrize("how", ["side_by_side", "batched"])
def test_same_frame_same_answer_alone_side_by_side_and_batched(model, how):
    ref = reference(model)
    alone, recs1, _ = run_live(model, cameras(1)[0], max_frames=20)
    assert alone.frames == 20
    kw = dict(streams=2) if how == "side_by_side" else dict(batch=4, streams=1)
    stats, recs, err = run_live(model, cameras(4)[0], max_frames=20, **kw)
    assert stats.frames == 80
    if how == "batched":
        assert any(r["timings_ms"].get("batch", 1) > 1 for r in recs), "no call took frames of several cameras"
    for r in recs1 + recs:
        p = ref[r["frame"] % N_IMAGES]
        assert r["label"] == p.label and r["decision"] == p.decision
        np.testing.assert_allclose(r["probs"], p.probs, atol=1e-5)


def test_each_source_newest_frames_in_order_and_fair_share(model):
    clf = Classifier.load(model, device="cpu")

    class Slow:  # the model slower than 4 cameras x 100 fps: the scheduler must share it
        def __getattr__(self, k):
            return getattr(clf, k)

        def infer(self, batch):
            time.sleep(0.01)  # 2 calls in flight: at most ~200 of the 400 frames/s offered
            return clf.infer(batch)

    srcs, _ = cameras(4, fps=100.0, n=150)
    out, err = io.StringIO(), io.StringIO()
    stats = run(RunConfig(model=model, sources=("a",), device="cpu", streams=2), out=out, err=err, classifier=Slow(),
                sources=srcs)
    clf.close()
    recs = read_jsonl(out.getvalue())
    per = {s.name: [r["frame"] for r in recs if r["source"] == s.name] for s in srcs}
    for fr in per.values():
        assert all(b > a for a, b in zip(fr, fr[1:]))  # capture order, stale frames skipped
    counts = np.array([len(v) for v in per.values()])
    assert counts.min() >= 20 and np.all(np.abs(counts - counts.mean()) <= 0.2 * counts.mean()), counts
    assert stats.dropped > 0
    table = err.getvalue()
    assert "dropped" in table and all(s.name in table for s in srcs)  # the per-source table
    d = stats.to_dict()["sources"]
    assert [x["source"] for x in d] == [s.name for s in srcs] and sum(x["frames"] for x in d) == stats.frames
    assert all(x["latency_p99_ms"] is not None and x["dropped"] >= 0 for x in d)


def test_fps_cap_takes_at_most_that_often_and_skips_converting_the_rest(model):
    srcs, caps = cameras(2, fps=100.0, n=100)  # 1 s of frames each
    srcs[0].fps_cap = 10.0
    stats, recs, _ = run_live(model, srcs)
    capped = [r for r in recs if r["source"] == "cam0"]
    free = [r for r in recs if r["source"] == "cam1"]
    assert 7 <= len(capped) <= 13, len(capped)  # 10 fps over ~1 s
    assert len(free) > 3 * len(capped)
    assert caps[0].retrieved < 40 < caps[1].retrieved  # frames that could not be taken were never converted


def test_duplicate_source_id_is_a_clear_error(model):
    srcs, _ = cameras(2, names=["door", "door"])
    with pytest.raises(InputError, match="door.*twice|twice.*door"):
        run_live(model, srcs, max_frames=2)


def test_sources_added_and_removed_while_running(model):
    from edgecls.runtime.run import loop as L

    srcs, _ = cameras(2, fps=50.0)
    added, _ = cameras(1, fps=50.0, names=["late"])
    got = {}

    def driver():
        sched = None
        for _ in range(200):
            lp = holder.get("loop")
            sched = getattr(lp, "scheduler", None) if lp is not None else None
            if sched is not None and sched.running:
                break
            time.sleep(0.01)
        time.sleep(0.3)
        added[0].start()
        t0 = time.perf_counter()
        sched.add(added[0])
        while sched.stats.source("late").frames == 0:
            time.sleep(0.005)
        got["first_s"] = time.perf_counter() - t0
        time.sleep(0.3)
        n_before = sched.stats.source("cam0").frames
        t0 = time.perf_counter()
        assert sched.remove("cam0")
        got["remove_s"] = time.perf_counter() - t0
        got["after"] = sched.stats.source("cam0").frames - n_before
        time.sleep(0.3)
        for name in sched.names():
            sched.remove(name)

    holder = {}
    orig = L._Loop.__init__

    def keep(self, *a, **k):
        orig(self, *a, **k)
        holder["loop"] = self

    L._Loop.__init__ = keep
    try:
        t = threading.Thread(target=driver, daemon=True)
        t.start()
        stats, recs, err = run_live(model, srcs)
        t.join(5)
    finally:
        L._Loop.__init__ = orig
    assert got["first_s"] < 2.0 and got["remove_s"] < 1.0 and got["after"] <= 1
    names = {r["source"] for r in recs}
    assert names == {"cam0", "cam1", "late"}
    assert stats.to_dict()["sources"][0]["removed"] is True
