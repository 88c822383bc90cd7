"""Cameras added and removed while ``edgecls run`` runs: the view's /sources endpoint (token rules of the view) and
``--sources-file`` (re-read on change); bad lines and duplicate ids are clear errors, the other cameras go on."""
from __future__ import annotations

import io
import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from runtime_helpers import export_tiny_onnx, read_jsonl, write_video

from edgecls.core.errors import InputError
from edgecls.runtime.run import loop as L
from edgecls.runtime.run.config import RunConfig
from edgecls.runtime.run.loop import run
from edgecls.runtime.run.sources_control import parse_line, read_sources_file

pytest.importorskip("cv2")
pytest.importorskip("prometheus_client")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("control")
    export_tiny_onnx(d / "model.onnx")
    vids = [str(write_video(d / f"cam{i}.avi", n=30, fps=30.0)) for i in range(3)]
    return {"dir": d, "model": str(d / "model.onnx"), "videos": vids}


class Running:
    """``run(cfg)`` on a thread; :attr:`loop` once made, :attr:`url` of the view, :meth:`stop`."""

    def __init__(self, cfg, monkeypatch):
        self.out, self.err = io.StringIO(), io.StringIO()
        self.loop, self.stats, self.error = None, None, None
        orig = L._Loop.__init__

        def keep(lp, *a, **k):
            orig(lp, *a, **k)
            self.loop = lp

        monkeypatch.setattr(L._Loop, "__init__", keep)
        self.thread = threading.Thread(target=self._run, args=(cfg,), daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not (self.loop is not None and getattr(self.loop, "scheduler", None) is not None
                   and self.loop.scheduler.running):
            assert time.time() < deadline and self.error is None, (self.error, self.err.getvalue())
            time.sleep(0.02)
        m = re.search(r"view on (http://\S+/)", self.err.getvalue())
        self.url = m.group(1) if m else None

    def _run(self, cfg):
        try:
            self.stats = run(cfg, out=self.out, err=self.err)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def frames(self, name):
        st = self.loop.stats.per_source.get(name)
        return st.frames if st is not None else 0

    def stop(self):
        self.loop.stopped = True
        self.thread.join(10)
        assert not self.thread.is_alive() and self.error is None, self.error


def call(url, method="GET", body=None, token=None, ctype="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, json.loads(text) if e.headers.get_content_type() == "application/json" else text


def test_add_and_remove_over_http_with_the_token(env, monkeypatch):
    v = env["videos"]
    cfg = RunConfig(model=env["model"], sources=(v[0], v[1]), device="cpu", realtime=True, loop=True,
                    view="127.0.0.1:0", view_token="s3cret", summary=True)
    r = Running(cfg, monkeypatch)
    try:
        base = r.url + "sources"
        assert call(base, "POST", {"source": v[2], "id": "door"})[0] == 401  # no token: refused
        code, body = call(base, "POST", {"source": v[2], "id": "door", "fps": 10}, token="s3cret")
        t0 = time.perf_counter()
        assert code == 201 and body["id"] == "door", body
        while r.frames("door") == 0:
            assert time.perf_counter() - t0 < 2.0, "no decision of the added camera within 2 s"
            time.sleep(0.01)
        code, body = call(base, "POST", {"source": v[2], "id": "door"}, token="s3cret")
        assert code == 409 and "already running" in body["error"], body  # duplicate id
        code, body = call(base, "POST", {"source": "/nonexistent.avi"}, token="s3cret")
        assert code == 400 and "does not exist" in body["error"]
        code, body = call(base, "POST", {"source": v[2], "colour": 1}, token="s3cret")
        assert code == 400 and "valid: source, id, fps" in body["error"]
        assert call(base, "POST", {"source": v[2]}, token="s3cret", ctype="text/plain")[0] == 415
        code, body = call(base, token="s3cret")
        assert code == 200 and {s["source"] for s in body["sources"]} == {v[0], v[1], "door"}
        before = r.frames(v[0])
        t0 = time.perf_counter()
        code, body = call(base + "/" + urllib.request.quote(v[0], safe=""), "DELETE", token="s3cret")
        assert code == 200 and time.perf_counter() - t0 < 1.0
        after = r.frames(v[0])
        assert after - before <= 1  # at most the frame that was in flight
        time.sleep(0.3)
        assert r.frames(v[0]) == after and r.frames(v[1]) > 0
        assert call(base + "/nope", "DELETE", token="s3cret")[0] == 404
        metrics = urllib.request.urlopen(urllib.request.Request(
            r.url + "metrics", headers={"Authorization": "Bearer s3cret"}), timeout=10).read().decode()
        assert 'edgecls_run_source_frames_total{source="door"}' in metrics
        assert 'edgecls_run_source_latency_ms{quantile="0.99",source="door"}' in metrics
        state = json.loads(urllib.request.urlopen(urllib.request.Request(
            r.url + "state.json", headers={"Authorization": "Bearer s3cret"}), timeout=10).read())
        door = [s for s in state["per_source"] if s["source"] == "door"][0]
        assert door["frames"] > 0 and door["last"]["decision"] and door["removed"] is False
        jpeg = urllib.request.urlopen(urllib.request.Request(
            r.url + "frame.jpg?source=door", headers={"Authorization": "Bearer s3cret"}), timeout=10).read()
        assert jpeg[:2] == b"\xff\xd8"  # the grid's image of that camera
    finally:
        r.stop()
    err = r.err.getvalue()
    assert "door" in err and "(removed)" in err  # the per-source table names the added and the removed camera
    assert {x["source"] for x in read_jsonl(r.out.getvalue())} == {v[0], v[1], "door"}


def test_sources_file_is_reread_on_change_and_bad_lines_are_noted(env, monkeypatch, tmp_path):
    v = env["videos"]
    f = tmp_path / "cams.txt"
    f.write_text(f"# two cameras\nid=a {v[0]}\nid=b fps=5 {v[1]}\n")
    cfg = RunConfig(model=env["model"], device="cpu", realtime=True, loop=True, sources_file=str(f))
    r = Running(cfg, monkeypatch)
    try:
        deadline = time.time() + 5
        while not (r.frames("a") and r.frames("b")):
            assert time.time() < deadline, r.err.getvalue()
            time.sleep(0.02)
        f.write_text(f"id=b fps=5 {v[1]}\nid=c {v[2]}\nid=c {v[0]}\nid=d /nonexistent.avi\n")
        deadline = time.time() + 5
        while not r.frames("c"):
            assert time.time() < deadline, r.err.getvalue()
            time.sleep(0.02)
        time.sleep(0.2)
        assert set(r.loop.scheduler.names()) == {"b", "c"}
        notes = " ".join(r.loop.stats.notes)
        assert "'c' is given twice" in notes and "does not exist" in notes
    finally:
        r.stop()
    b = r.loop.stats.per_source["b"]
    assert b.fps <= 6.0  # fps=5 in the file


def test_sources_file_lines():
    s = parse_line("id=door fps=2.5 gst://videotestsrc ! appsink drop=true", "f line 1")
    assert (s.id, s.fps, s.source) == ("door", 2.5, "gst://videotestsrc ! appsink drop=true")
    assert parse_line("  # comment", "x") is None and parse_line("", "x") is None
    for bad, msg in (("fps=0 rtsp://h/x", "fps '0' must be"), ("id=a id=b rtsp://h", "id= given twice"),
                     ("id=a", "no source given"), ("id=a;b rtsp://h", "must be 1 to 100")):
        with pytest.raises(InputError, match=msg):
            parse_line(bad, "f line 3")
    with pytest.raises(InputError, match="cannot read it"):
        read_sources_file("/nonexistent/cams.txt")
