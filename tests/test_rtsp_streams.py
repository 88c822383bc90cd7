"""Real RTSP streams: a GStreamer RTSP server on loopback (tests/rtsp_server.py, run by Debian's own Python with
python3-gi) serves 4 streams; ``edgecls run rtsp://127.0.0.1:PORT/camK ...`` reads them in one run (OpenCV's
FFmpeg), per-source numbers in its summary; a server that restarts is reconnected and every stream goes on."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_helpers import export_tiny_onnx, read_jsonl

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
N = 4


def _server_available() -> str:
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} is absent"
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); gi.require_version('Gst', '1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "assert all(Gst.ElementFactory.find(e) for e in ('videotestsrc', 'jpegenc', 'rtpjpegpay'))")
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else ("the GStreamer RTSP server is not installed (apt-get install "
                                         "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good "
                                         "gstreamer1.0-plugins-base): " + r.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def rtsp():
    why = _server_available()
    if why:
        pytest.skip(why)
    cv2 = pytest.importorskip("cv2")
    if "FFMPEG:" not in cv2.getBuildInformation().replace(" ", ""):
        pytest.skip("this OpenCV has no FFmpeg backend to read RTSP")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(port)
    yield server
    server.stop()


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc = None
        self.start()

    def start(self) -> None:
        deadline = time.time() + 20
        while True:  # the port may be held a moment after a restart
            self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), str(N), "15"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.urls = [self.proc.stdout.readline().split()[-1] for _ in range(N)]
            if all(u.startswith("rtsp://") for u in self.urls):
                return
            self.proc.wait(5)
            assert time.time() < deadline, f"the RTSP server did not start: {self.urls} {self.proc.stderr.read()}"
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def edgecls(*args: str, timeout: float = 120) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from edgecls.cli import main; main()", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_four_rtsp_streams_in_one_run_and_a_restarted_server_is_reconnected(rtsp, tmp_path):
    model = tmp_path / "model.onnx"
    export_tiny_onnx(model)
    summary = tmp_path / "summary.json"
    run = edgecls(str(model), *rtsp.urls, "--open-timeout", "3", "--retries", "8", "--max-frames", "60",
                  "--summary-json", str(summary))
    lines, seen, deadline = [], set(), time.time() + 60
    while len(seen) < N and time.time() < deadline:  # every stream open and classified
        lines.append(run.stdout.readline())
        seen.update(r["source"] for r in read_jsonl(lines[-1]))
    assert len(seen) == N, run.stderr.read() if run.poll() is not None else seen
    rtsp.stop()  # the server goes away ...
    time.sleep(1.0)
    rtsp.start()  # ... and comes back on the same port
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    recs = read_jsonl("".join(lines) + out)
    d = json.loads(summary.read_text())
    per = {s["source"]: s for s in d["sources"]}
    assert set(per) == set(rtsp.urls) and all(per[u]["frames"] == 60 for u in rtsp.urls)
    assert all(per[u]["reconnects"] >= 1 for u in rtsp.urls), per  # each stream reopened after the restart
    assert {r["source"] for r in recs} == set(rtsp.urls) and all("latency" in r["timings_ms"] for r in recs)
    assert "source" in err and "reconn" in err  # the per-source table


def test_a_url_that_never_answers_is_a_clear_error_and_others_go_on(rtsp, tmp_path):
    model = tmp_path / "model.onnx"
    export_tiny_onnx(model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"rtsp://127.0.0.1:{s.getsockname()[1]}/nothing"
    run = edgecls(str(model), dead, rtsp.urls[0], "--open-timeout", "2", "--max-frames", "5")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 5 and "nothing" in err and "did not open" in err  # at start: exit 5, named
    cams = tmp_path / "cams.txt"  # while running (a sources file): noted, the other camera goes on
    cams.write_text(f"id=dead {dead}\nid=door {rtsp.urls[1]}\n")
    summary = tmp_path / "summary.json"
    run = edgecls(str(model), "--sources-file", str(cams), "--open-timeout", "2", "--summary-json", str(summary))
    n, deadline = 0, time.time() + 60
    while n < 10 and time.time() < deadline:
        line = run.stdout.readline()
        n += '"source": "door"' in line
    run.terminate()
    out, err = run.communicate(timeout=30)
    assert n == 10 and run.returncode == 143, err
    notes = " ".join(json.loads(summary.read_text())["notes"])
    assert "dead" in notes and "did not open" in notes
