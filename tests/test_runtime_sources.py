"""Sources: file listing, video order, the newest-frame slot of live sources, bounded reconnects, clear failures."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import write_images, write_video

from edgecls.core.errors import CapabilityError, InputError, SourceError
from edgecls.runtime.sources.cameras import camera_source
from edgecls.runtime.sources.files import ImageSource, read_image
from edgecls.runtime.sources.frame import Frame
from edgecls.runtime.sources.live import LatestFrameSlot, LiveSource, RetryPolicy
from edgecls.runtime.sources.opencv import gstreamer_enabled
from edgecls.runtime.sources.parse import parse_source, parse_sources
from edgecls.runtime.sources.video import VideoFileSource


class FakeCapture:
    """A cv2.VideoCapture stand-in producing numbered frames every ``delay`` s; fails after ``n_ok`` reads."""

    def __init__(self, n_ok=None, delay=0.0005, opened=True):
        self.n_ok, self.delay, self.opened = n_ok, delay, opened
        self.reads = 0
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if self.n_ok is not None and self.reads >= self.n_ok:
            return False, None
        time.sleep(self.delay)
        self.reads += 1
        return True, np.full((8, 8, 3), self.reads % 256, np.uint8)

    def release(self):
        self.released = True

    def set(self, prop, value):
        return True


def drain(src: LiveSource, timeout: float = 2.0):
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = src.get(timeout=0.2)
        if f is not None:
            out.append(f)
        elif src.finished:
            break
    return out


# ------------------------------------------------------------------------------------------ live sources


def test_live_source_delivers_only_the_newest_frame():
    """A producer much faster than the consumer: every delivered frame is the newest captured at that moment,
    frame numbers strictly increase (never the same or an older frame twice in a row), and stale frames are dropped."""
    src = LiveSource("fake", lambda: FakeCapture(delay=0.0005)).start()
    try:
        delivered = []
        while len(delivered) < 12:
            with src.slot._cond:  # hold the slot so the producer cannot put between the take and the check
                f = src.get(timeout=0)
                newest = src.slot.puts - 1
            if f is None:
                time.sleep(0.001)
                continue
            assert f.frame == newest, f"delivered frame {f.frame} but {newest} was already captured"
            delivered.append(f.frame)
            time.sleep(0.01)  # a slow consumer (inference)
        assert all(b > a for a, b in zip(delivered, delivered[1:])), delivered
        assert src.dropped > 0 and delivered[-1] - delivered[0] > len(delivered)
    finally:
        src.close()
    assert src.finished


def test_latest_frame_slot_semantics():
    ev = threading.Event()
    slot = LatestFrameSlot(ev)
    assert slot.get(timeout=0) is None
    for i in range(3):
        slot.put(Frame(source="x", index=i, frame=i))
    assert ev.is_set() and slot.overwritten == 2
    assert slot.get(timeout=0).frame == 2
    assert slot.get(timeout=0) is None  # never the same frame twice
    slot.close()
    assert slot.get(timeout=1.0) is None and slot.closed


def test_dropped_stream_is_retried_with_bounded_backoff_then_ends_cleanly():
    opens = []

    def opener():
        opens.append(time.monotonic())
        return FakeCapture(n_ok=3) if len(opens) == 1 else FakeCapture(opened=False)

    sleeps = []
    src = LiveSource(
        "rtsp://cam", opener, retry=RetryPolicy(retries=4, initial=0.5, factor=2.0, max_delay=2.0),
        sleep=lambda s: sleeps.append(s),
    ).start()
    frames = drain(src)
    assert sleeps == [0.5, 1.0, 2.0, 2.0]  # exponential, capped, bounded: no real waiting in the test
    assert len(opens) == 1 + 4
    assert src.finished and "gave up after 4" in src.end_reason
    assert 1 <= len(frames) <= 3
    src.close()


def test_dropped_stream_recovers_when_reopen_succeeds():
    script = [FakeCapture(n_ok=2, delay=0.005), FakeCapture(opened=False), FakeCapture(n_ok=2, delay=0.005)]

    def opener():
        return script.pop(0) if script else FakeCapture(opened=False)

    sleeps = []
    src = LiveSource("cam", opener, retry=RetryPolicy(retries=2, initial=0.1), sleep=lambda s: sleeps.append(s)).start()
    frames = drain(src)
    assert src.reconnects == 1 and src.captured == 4
    assert sleeps == [0.1, 0.2, 0.1, 0.2]  # two tries to recover, then two more after the final drop
    assert [f.frame for f in frames] == sorted({f.frame for f in frames})
    src.close()


def test_retry_wait_ends_at_once_on_close():
    caps = [FakeCapture(n_ok=1)]
    src = LiveSource(
        "cam", lambda: caps.pop(0) if caps else FakeCapture(opened=False), retry=RetryPolicy(retries=3, initial=30.0)
    ).start()
    time.sleep(0.05)  # one frame, then the drop: the reader now waits 30 s before reopening
    t0 = time.monotonic()
    src.close()  # the backoff wait is interrupted
    assert time.monotonic() - t0 < 2.5 and not src._thread.is_alive()


def test_camera_that_cannot_open_raises_source_error():
    src = LiveSource("camera:7", lambda: FakeCapture(opened=False), hint=": no camera at index 7")
    with pytest.raises(SourceError, match="cannot open camera:7: no camera at index 7") as e:
        src.start()
    assert e.value.exit_code == 5

    def boom():
        raise RuntimeError("device busy")

    with pytest.raises(SourceError, match="device busy"):
        LiveSource("camera:8", boom).start()


def test_real_camera_index_that_does_not_exist():
    pytest.importorskip("cv2")
    src = camera_source(97)
    with pytest.raises(SourceError, match="camera:97"):
        src.start()


# ------------------------------------------------------------------------------------------ OpenCV capability


def test_gstreamer_detection_and_csi_without_gstreamer(monkeypatch):
    cv2 = pytest.importorskip("cv2")
    assert gstreamer_enabled(type("C", (), {"getBuildInformation": staticmethod(lambda: "  GStreamer:   YES (1.20.3)\n")}))
    assert not gstreamer_enabled(type("C", (), {"getBuildInformation": staticmethod(lambda: "  GStreamer:   NO\n")}))
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "Video I/O:\n    FFMPEG: YES\n    GStreamer:  NO\n")
    with pytest.raises(CapabilityError) as e:
        parse_source("csi://0")
    msg = str(e.value)
    assert "GStreamer: NO" in msg and "pip uninstall opencv-python" in msg and "JetPack" in msg
    assert e.value.exit_code == 4
    with pytest.raises(InputError):
        parse_source("csi://x")


def test_csi_pipeline_with_options(monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "GStreamer: YES (1.16)")
    opened = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: opened.append(a) or FakeCapture(opened=False))
    src = parse_source("csi://1?width=1920&height=1080&fps=60")
    assert isinstance(src, LiveSource) and src.name.startswith("csi://1")
    with pytest.raises(SourceError, match="nvarguscamerasrc sensor-id=1"):
        src.start()
    pipeline, api = opened[0]
    assert "width=(int)1920" in pipeline and "framerate=(fraction)60/1" in pipeline and "appsink drop=true" in pipeline
    assert api == cv2.CAP_GSTREAMER


def test_without_opencv_video_fails_clearly_but_images_work(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "imgs", n=2)
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 → ImportError
    with pytest.raises(CapabilityError, match=r"edgecls\[opencv\]") as e:
        list(VideoFileSource(tmp_path / "clip.mp4").frames())
    assert "JetPack" in str(e.value)
    for live in ("csi://0", "rtsp://host/stream", "v4l2:///dev/video0"):
        with pytest.raises(CapabilityError):
            parse_source(live)
    src = parse_source(str(tmp_path / "imgs"))
    frames = [read_image(*t) for t in src.tasks()]
    assert [f.path for f in frames] == [str(p) for p in paths] and all(f.image is not None for f in frames)


# ------------------------------------------------------------------------------------------ files


def test_folder_is_recursive_sorted_and_filters(tmp_path):
    root = tmp_path / "data"
    write_images(root / "b", n=2)
    write_images(root / "a" / "deep", n=2)
    (root / "notes.txt").write_text("x")
    (root / ".hidden").mkdir()
    write_images(root / ".hidden", n=1)
    (root / "UPPER.JPG").write_bytes((root / "b" / "img_000.jpg").read_bytes())
    src = parse_source(str(root))
    assert isinstance(src, ImageSource)
    rel = [p.relative_to(root).as_posix() for p, _ in src.items]
    assert rel == ["UPPER.JPG", "a/deep/img_000.jpg", "a/deep/img_001.jpg", "b/img_000.jpg", "b/img_001.jpg"]
    assert [name for _, name in src.items][1] == "data/a/deep/img_000.jpg"


def test_globs_files_and_bad_sources(tmp_path):
    write_images(tmp_path / "g", n=3)
    src = parse_source(str(tmp_path / "g" / "*.jpg"))
    assert [p.name for p, _ in src.items] == ["img_000.jpg", "img_001.jpg", "img_002.jpg"]
    one = parse_source(str(tmp_path / "g" / "img_001.jpg"))
    assert isinstance(one, ImageSource) and len(one) == 1
    with pytest.raises(InputError, match="does not exist"):
        parse_source(str(tmp_path / "nope.jpg"))
    with pytest.raises(InputError, match="matches no image"):
        parse_source(str(tmp_path / "g" / "*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        parse_source(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="unknown scheme"):
        parse_source("ftp://host/x.jpg")
    with pytest.raises(InputError, match="no source"):
        parse_sources([], [])


def test_stream_and_device_sources_parse(monkeypatch):
    pytest.importorskip("cv2")
    s = parse_source("rtsp://user:secret@10.0.0.2/stream1")
    assert isinstance(s, LiveSource) and "secret" not in s.name
    assert isinstance(parse_source("/dev/video3"), LiveSource)
    assert isinstance(parse_source("v4l2:///dev/video0?width=640&height=480"), LiveSource)
    with pytest.raises(InputError, match="not an integer"):
        parse_source("v4l2:///dev/video0?width=big")
    cams = parse_sources([], [0, 2])
    assert [c.name for c in cams] == ["camera:0", "camera:2"]


def test_corrupt_image_gives_error_frame(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    f = read_image("src", 3, bad, "bad.jpg")
    assert f.image is None and "cannot read image" in f.error and f.index == 3


def test_video_file_frames_in_order_nothing_dropped(tmp_path):
    pytest.importorskip("cv2")
    path = write_video(tmp_path / "v.avi", n=15)
    src = VideoFileSource(path, queue_size=2)
    got = []
    for f in src.frames():
        got.append(f.frame)
        time.sleep(0.003)  # slower than the reader: it must wait, not drop
        assert f.bgr and f.image.shape == (48, 64, 3)
    assert got == list(range(15)) and src.fps == pytest.approx(10.0)
    # a video that cannot be opened gives one error frame (the run goes on)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    frames = list(VideoFileSource(bad).frames())
    assert len(frames) == 1 and "cannot open video" in frames[0].error


def test_parse_sources_mixes_in_given_order(tmp_path):
    pytest.importorskip("cv2")
    write_images(tmp_path / "imgs", n=2)
    write_video(tmp_path / "v.avi", n=3)
    srcs = parse_sources([str(tmp_path / "v.avi"), str(tmp_path / "imgs")], [1])
    assert [type(s).__name__ for s in srcs] == ["VideoFileSource", "ImageSource", "LiveSource"]
    assert Path(srcs[0].path).name == "v.avi"


def test_opencv_style_capture_times_decode_without_the_wait():
    class GrabCapture(FakeCapture):
        def grab(self):
            time.sleep(0.06)  # waiting for the camera
            self.reads += 1
            return True

        def retrieve(self):
            time.sleep(0.002)  # decoding
            return True, np.full((8, 8, 3), self.reads % 256, np.uint8)

    src = LiveSource("cam", GrabCapture).start()
    try:
        f = None
        while f is None:
            f = src.get(timeout=1.0)
        assert 1.5 <= f.decode_ms < 40.0  # retrieve only, not the 60 ms wait in grab
        assert f.bgr and f.image.shape == (8, 8, 3)
    finally:
        src.close()


# ------------------------------------------------------ GStreamer pipelines, RTSP decode choice (fake cv2 builds)


def fake_cv2(gstreamer: bool, opened: bool = False):
    """A cv2 module stand-in: its build information says whether it has GStreamer; VideoCapture records its calls."""
    import types

    m = types.ModuleType("cv2")
    m.__version__, m.__file__ = "4.8.0-fake", "/usr/lib/python3/dist-packages/cv2/__init__.py"
    m.CAP_ANY, m.CAP_V4L2, m.CAP_FFMPEG, m.CAP_GSTREAMER = 0, 200, 1900, 1800
    m.CAP_PROP_BUFFERSIZE, m.CAP_PROP_FPS, m.CAP_PROP_OPEN_TIMEOUT_MSEC, m.CAP_PROP_READ_TIMEOUT_MSEC = 38, 5, 53, 54
    info = f"Video I/O:\n    FFMPEG:   YES\n    GStreamer:   {'YES (1.20.3)' if gstreamer else 'NO'}\n"
    m.getBuildInformation = lambda: info
    m.calls = []
    m.VideoCapture = lambda *a: m.calls.append(a) or FakeCapture(n_ok=3, opened=opened)
    return m


@pytest.fixture()
def elements(monkeypatch):
    """Which GStreamer elements "exist" (the probe is faked; a real probe is tested below)."""
    from edgecls.runtime.sources import gstreamer

    present = set()
    monkeypatch.setattr(gstreamer, "element_exists", lambda name: name in present)
    return present


JETSON_ELEMENTS = {"rtspsrc", "rtph264depay", "h264parse", "rtph265depay", "h265parse", "nvv4l2decoder", "nvvidconv"}


def test_rtsp_uses_the_hardware_decoder_when_gstreamer_and_the_elements_exist(monkeypatch, elements, caplog):
    from edgecls.runtime.sources.options import SourceOptions

    cv2 = fake_cv2(gstreamer=True)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    elements.update(JETSON_ELEMENTS)
    src = parse_source("rtsp://admin:secret@10.0.0.9:554/h265", SourceOptions(rtsp_latency=50, rtsp_codec="h265"))
    assert src.decoder == "nvv4l2decoder" and "secret" not in src.name
    with pytest.raises(SourceError) as e:
        src.start()
    pipeline, api = cv2.calls[0]
    assert api == cv2.CAP_GSTREAMER
    assert pipeline == (
        'rtspsrc location="rtsp://admin:secret@10.0.0.9:554/h265" latency=50 ! rtph265depay ! h265parse ! '
        "nvv4l2decoder ! nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert ! "
        "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )
    assert "secret" not in str(e.value) and not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("gstreamer, present, why", [
    (True, JETSON_ELEMENTS - {"nvv4l2decoder"}, "GStreamer element nvv4l2decoder not found"),
    (False, JETSON_ELEMENTS, "this OpenCV has no GStreamer (pip's opencv wheels; JetPack's OpenCV has it)"),
])
def test_rtsp_falls_back_to_ffmpeg_with_one_warning_line(monkeypatch, elements, caplog, gstreamer, present, why):
    from edgecls.runtime.sources.options import SourceOptions

    cv2 = fake_cv2(gstreamer=gstreamer)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    elements.update(present)
    src = parse_source("rtsp://cam.local/stream", SourceOptions(open_timeout=3.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0] == f"rtsp://cam.local/stream: software decode through OpenCV's FFmpeg: {why}"
    assert src.decoder == "opencv"
    with pytest.raises(SourceError):
        src.start()
    # FFmpeg gets the open/read timeouts too, so an abandoned open ends inside OpenCV as well
    assert cv2.calls[0] == ("rtsp://cam.local/stream", cv2.CAP_FFMPEG, [53, 3000, 54, 3000])


def test_gst_pipeline_is_passed_through(monkeypatch, caplog):
    cv2 = fake_cv2(gstreamer=True, opened=True)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    text = ("gst://rtspsrc location=rtsp://u:pw@cam/s latency=0 ! rtph264depay ! h264parse ! nvv4l2decoder ! "
            "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1")
    src = parse_source(text)
    assert "pw" not in src.name and src.name.startswith("gst://rtspsrc")
    src.start()
    try:
        assert drain(src, timeout=1.0)
    finally:
        src.close()
    assert cv2.calls[0] == (text[len("gst://"):], cv2.CAP_GSTREAMER) and set(cv2.calls) == {cv2.calls[0]}  # reopens
    assert not [r for r in caplog.records if "no 'video/x-raw,format=BGR' caps" in r.getMessage()]


def test_gst_pipeline_errors(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2(gstreamer=True))
    with pytest.raises(InputError, match="must end with an appsink"):
        parse_source("gst://videotestsrc ! autovideosink")
    with pytest.raises(InputError, match="needs a GStreamer pipeline"):
        parse_source("gst://  ")
    parse_source("gst://videotestsrc ! appsink")
    assert any("format=BGR" in r.getMessage() for r in caplog.records)
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2(gstreamer=False))
    with pytest.raises(CapabilityError, match="GStreamer: NO") as e:
        parse_source("gst://videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink")
    assert e.value.exit_code == 4 and "edgecls doctor" in str(e.value)


def test_element_probe_asks_gst_inspect(tmp_path, monkeypatch):
    """Without PyGObject the probe runs `gst-inspect-1.0 --exists NAME` (exit 0: the element exists)."""
    from edgecls.runtime.sources import gstreamer

    exe = tmp_path / "gst-inspect-1.0"
    exe.write_text('#!/bin/sh\n[ "$1" = "--exists" ] && [ "$2" = "nvv4l2decoder" ] && exit 0\nexit 1\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(gstreamer, "_gi_find", lambda name: None)
    monkeypatch.setattr(gstreamer, "_cache", {})
    assert gstreamer.element_exists("nvv4l2decoder") is True
    assert gstreamer.element_exists("nvvidconv") is False
    assert gstreamer.missing_elements(["nvv4l2decoder", "nvvidconv"]) == ("nvvidconv",)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(gstreamer, "_cache", {})
    assert gstreamer.element_exists("nvv4l2decoder") is None  # cannot ask: treated as missing


# ------------------------------------------------------------------------------------------ --open-timeout


def test_open_that_never_returns_is_abandoned_after_the_timeout():
    release = threading.Event()
    late = FakeCapture()

    def opener():
        release.wait(5.0)  # a server that accepted the connection and never answers
        return late

    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no answer within 0\.3 s \(--open-timeout\)") as e:
        LiveSource("rtsp://cam", opener, open_timeout=0.3).start()
    assert time.monotonic() - t0 < 1.5 and e.value.exit_code == 5
    release.set()
    deadline = time.monotonic() + 2.0
    while not late.released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late.released  # the capture that opened too late is not leaked


def test_opened_stream_that_sends_no_frame_fails_within_the_timeout():
    class Silent(FakeCapture):
        def read(self):
            time.sleep(5.0)
            return False, None

    t0 = time.monotonic()
    with pytest.raises(SourceError, match="sent no frame within 0.3 s"):
        LiveSource("rtsp://cam", Silent, open_timeout=0.3).start()
    assert time.monotonic() - t0 < 1.5
    src = LiveSource("cam", FakeCapture, open_timeout=2.0).start()  # a working camera is unaffected
    src.close()


def test_real_rtsp_server_that_accepts_but_never_answers(monkeypatch):
    """OpenCV's FFmpeg against a TCP server that accepts and stays silent: exit 5 within --open-timeout."""
    import socket

    pytest.importorskip("cv2")
    from edgecls.runtime.sources import gstreamer
    from edgecls.runtime.sources.options import SourceOptions

    monkeypatch.setattr(gstreamer, "element_exists", lambda name: False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    stop = threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])  # ... and never write a byte
            except OSError:
                continue

    threading.Thread(target=serve, daemon=True).start()
    try:
        port = server.getsockname()[1]
        src = parse_source(f"rtsp://127.0.0.1:{port}/live", SourceOptions(open_timeout=1.0))
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"within 1 s \(--open-timeout\)") as e:
            src.start()
        assert e.value.exit_code == 5
        assert time.monotonic() - t0 < 4.0
    finally:
        stop.set()
        for c in accepted:
            c.close()
        server.close()


def test_source_options_are_validated():
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.sources.options import SourceOptions

    for bad in ({"open_timeout": 0}, {"open_timeout": -1}, {"rtsp_latency": -5}, {"rtsp_codec": "mjpeg"}):
        with pytest.raises(InputError):
            SourceOptions(**bad)
    with pytest.raises(InputError, match="--rtsp-codec"):
        RunConfig(model="m.onnx", sources=("x",), rtsp_codec="vp9")
    opts = RunConfig(model="m.onnx", sources=("x",), retries=2, loop=True).source_options()
    assert opts.retry.retries == 2 and opts.loop and opts.open_timeout == 20.0


# ------------------------------------------------------------------------------------------ --loop


def test_loop_replays_a_video_and_an_image_folder(tmp_path):
    pytest.importorskip("cv2")
    from edgecls.runtime.sources.options import SourceOptions

    path = write_video(tmp_path / "v.avi", n=4)
    src = parse_source(str(path), SourceOptions(loop=True))
    got = []
    for f in src.frames():
        got.append((f.frame, int(f.image[0, 0, 0])))
        if len(got) == 10:
            break
    assert [g[0] for g in got] == list(range(10))  # frame numbers keep counting across passes
    assert [g[1] for g in got][4:8] == [g[1] for g in got][:4] and src.passes == 2
    write_images(tmp_path / "imgs", n=3)
    imgs = parse_source(str(tmp_path / "imgs"), SourceOptions(loop=True))
    tasks = []
    for t in imgs.tasks():
        tasks.append(t)
        if len(tasks) == 7:
            break
    assert [t[1] for t in tasks] == list(range(7)) and tasks[3][2] == tasks[0][2]
    assert len(list(parse_source(str(tmp_path / "imgs")).tasks())) == 3  # without --loop: one pass


def test_cli_run_loops_a_video_and_refuses_gst_without_gstreamer(tmp_path, capsys):
    pytest.importorskip("cv2")
    pytest.importorskip("torch")
    from runtime_helpers import export_tiny_onnx, read_jsonl

    from edgecls.cli import main

    export_tiny_onnx(tmp_path / "model.onnx")
    video = write_video(tmp_path / "clip.avi", n=6)
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "model.onnx"), str(video), "--loop", "--max-frames", "15", "--no-summary"])
    recs = read_jsonl(capsys.readouterr().out)
    assert e.value.code == 0 and [r["frame"] for r in recs] == list(range(15))  # 2.5 passes over 6 frames
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "model.onnx"), "gst://videotestsrc ! videoconvert ! video/x-raw,format=BGR ! "
              "appsink", "--no-summary"])
    err = capsys.readouterr().err
    assert e.value.code == 4 and "GStreamer: NO" in err
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "model.onnx"), str(video), "--rtsp-codec", "vp8"])
    assert e.value.code == 2 and "--rtsp-codec" in capsys.readouterr().err
