"""The operator's pages in a real browser (issue 23): `edgecls serve`'s GET / (upload a photo, read back the label
`edgecls run` gives) and `edgecls run --view` (the MJPEG stream moves, the decision counts grow), driven with
Selenium in headless Chromium from Debian's packages (`apt-get install chromium chromium-driver`; `.ci/run` does
it); plus, without a browser: the token and address rules, nothing encoded while nobody watches, /metrics on the
view's port, pages with no external URL."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import REPO  # noqa: E402
from runtime_helpers import export_tiny_onnx, read_jsonl, tiny_spec  # noqa: E402
from serve_helpers import request  # noqa: E402

from edgecls.core.errors import InputError  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Without these, Chromium waits on the network (absent here) at startup
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900")
STATIC = [REPO / "runtime" / "serve" / "static", REPO / "runtime" / "run" / "static"]


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("browser_model") / "tiny.onnx"
    export_tiny_onnx(path, tiny_spec(threshold=0.55))
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by chromedriver (Debian's packages; nothing is downloaded)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("no Chromium: apt-get install -y chromium chromium-driver (.ci/run does), "
                    f"looked for {CHROMIUM} and {CHROMEDRIVER}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(fn, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception:  # an element not there yet, a page still loading
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_record(model: Path, photo: Path) -> dict:
    """What `edgecls run` prints for ``photo`` (the reference)."""
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run

    out = io.StringIO()
    run(RunConfig(model=str(model), sources=(str(photo),), device="cpu", summary=False), out=out, err=io.StringIO())
    (rec,) = read_jsonl(out.getvalue())
    return rec


def make_video(path: Path, photos, n: int = 24, size=(320, 240)) -> Path:
    """A short MJPG video from real photos (generated frames where ../shared is absent)."""
    cv2 = pytest.importorskip("cv2")
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(n):
        if photos:
            img = cv2.resize(cv2.imread(str(photos[i % len(photos)])), size)
        else:
            img = np.full((size[1], size[0], 3), (i * 37) % 256, np.uint8)
            img[:, : (i * 13) % size[0] + 1, 1] = 220
        vw.write(img)
    vw.release()
    return path


def shared_photos(k: int):
    from conftest import SHARED_MOBILE

    if not (SHARED_MOBILE / "val").is_dir():
        return []
    return sorted((SHARED_MOBILE / "val").rglob("*.jpg"))[:: 7][:k]


class RunWithView:
    """`edgecls run MODEL VIDEO --loop --view 127.0.0.1:0` in a subprocess: ``url`` once it listens."""

    def __init__(self, model: Path, video: Path, *extra: str, env=None) -> None:
        cmd = [sys.executable, "-m", "edgecls", "run", str(model), str(video), "--loop", "--device", "cpu",
               "--view", "127.0.0.1:0", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     cwd=REPO, env=env)
        self.lines = []
        found = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.lines.append(line)
                if "view on http" in line:
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(60)
        assert found.is_set(), "".join(self.lines)
        line = next(x for x in self.lines if "view on http" in x)
        self.url = re.search(r"(http://\S+?/)", line).group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


# -- in the browser ----------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_serve_page_upload_shows_the_label_edgecls_run_gives(browser, model, shared_mobile):
    pytest.importorskip("fastapi")
    from selenium.webdriver.common.by import By
    from serve_helpers import served

    from edgecls.runtime.serve.app import create_app
    from edgecls.runtime.serve.config import ServeConfig

    photo = sorted((shared_mobile / "val" / "mobile").glob("*.jpg"))[0]
    want = run_record(model, photo)
    with served(create_app(ServeConfig(model=str(model), device="cpu"))) as (base, _):
        browser.get(base + "/")
        wait_for(lambda: "threshold 0.55" in browser.find_element(By.ID, "model").text, what="the model line")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        label = wait_for(lambda: browser.find_element(By.ID, "label").text, what="the label")
        shown = json.loads(browser.find_element(By.ID, "json").get_attribute("textContent"))
        assert label == want["label"]
        assert browser.find_element(By.ID, "decision").text.lower() == want["decision"]
        for key in ("label", "decision", "confidence", "topk", "p_positive"):  # the page shows /predict's record
            assert shown[key] == want[key], key
        bars = browser.find_elements(By.CSS_SELECTOR, "#topk .bar")
        assert len(bars) == len(want["topk"]) and want["topk"][0]["label"] in bars[0].text
        assert "ms on the server" in browser.find_element(By.ID, "latency").text


def test_live_view_stream_moves_and_decision_counts_grow(browser, model, tmp_path):
    from selenium.webdriver.common.by import By

    video = make_video(tmp_path / "shelf.avi", shared_photos(12))
    run = RunWithView(model, video)
    try:
        browser.get(run.url)
        stream = browser.find_element(By.ID, "stream")
        wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", stream) > 0, what="a frame")

        def total():
            return sum(int(e.find_element(By.TAG_NAME, "b").text)
                       for e in browser.find_elements(By.CSS_SELECTOR, "#counts .count"))

        wait_for(total, what="decision counts")
        n1, shot1 = total(), stream.screenshot_as_png
        time.sleep(1.0)
        wait_for(lambda: total() > n1, what="the counts to grow")
        shot2 = stream.screenshot_as_png
        assert shot1 != shot2, "the stream did not move in a second"
        assert float(browser.find_element(By.ID, "fps").text) > 0
        assert browser.find_elements(By.CSS_SELECTOR, "#recent tbody tr")
        assert browser.find_elements(By.CSS_SELECTOR, "#stages tbody tr")
    finally:
        code = run.stop()
        print("".join(run.lines))  # shown by pytest when the test fails
        assert code == 143


def test_live_view_grid_shows_every_camera_with_its_own_numbers(browser, model, tmp_path):
    from selenium.webdriver.common.by import By

    a = make_video(tmp_path / "gate.avi", shared_photos(12))
    b = make_video(tmp_path / "door.avi", shared_photos(12)[::-1])
    run = RunWithView(model, a, str(b), "--realtime")
    try:
        browser.get(run.url)

        def cards():
            return browser.find_elements(By.CSS_SELECTOR, "#grid .cam")

        wait_for(lambda: len(cards()) == 2 and all(
            browser.execute_script("return arguments[0].naturalWidth", c.find_element(By.TAG_NAME, "img")) > 0
            for c in cards()), what="two camera cards with a frame each")
        assert browser.find_element(By.ID, "cameras").is_displayed()
        names = {c.get_attribute("data-source") for c in cards()}
        assert names == {str(a), str(b)}
        for c in cards():
            numbers = c.find_element(By.CLASS_NAME, "nums").text
            assert "frames/s" in numbers and "p99 ms" in numbers and "dropped" in numbers
            assert c.find_element(By.CLASS_NAME, "last").text  # its newest decision
    finally:
        code = run.stop()
        print("".join(run.lines))
        assert code == 143


# -- without a browser -------------------------------------------------------------------------------------------
@pytest.fixture()
def view(model):
    """A WebView on a real RunStats, fed by hand (no run loop)."""
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.stats import RunStats
    from edgecls.runtime.run.webview import WebView

    clf = Classifier.load(str(model), device="cpu")
    stats = RunStats(clf.decider, clf.backend.describe(), 1, 0.0)
    views = []

    def make(**kw):
        v = WebView(stats, [], **kw)
        views.append(v)
        return v, clf, stats

    yield make
    for v in views:
        v.close()
    clf.close()


def publish(v, clf, stats, n: int) -> None:
    from edgecls.runtime.sources.frame import Frame

    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        pred = clf.decider.decide(clf.infer(clf.prepare(img)[None]))[0]
        stats.add(pred)
        v.publish(Frame(source="cam", index=i, image=img, frame=i, bgr=True), pred, 30.0)


def test_view_encodes_nothing_until_a_client_asks_and_once_per_frame(view):
    v, clf, stats = view()
    publish(v, clf, stats, 50)
    status, _, body = request("GET", v.url + "state.json")
    st = json.loads(body)
    assert status == 200 and st["frames"] == 50 and v.encoded == 0 and st["encoded"] == 0
    assert sum(st["decisions"].values()) == 50 and len(st["recent"]) == 15 and st["recent"][0]["frame"] == 49
    for _ in range(3):  # three clients, one frame: one encode
        status, headers, jpeg = request("GET", v.url + "frame.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    assert v.encoded == 1
    with urllib.request.urlopen(v.url + "stream.mjpg", timeout=10) as r:  # the stream: at most STREAM_FPS frames
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        stop = threading.Event()
        threading.Thread(target=lambda: [publish(v, clf, stats, 1) or time.sleep(0.005)
                                         for _ in range(400) if not stop.is_set()], daemon=True).start()
        t0, parts = time.monotonic(), 0
        while parts < 5:
            assert r.readline().strip() == b"--edgeclsframe"
            length = [int(x.split(b":")[1]) for x in iter(r.readline, b"\r\n") if x.lower().startswith(b"content-length")]
            assert r.read(length[0] + 2)[:2] == b"\xff\xd8"
            parts += 1
        stop.set()
        assert time.monotonic() - t0 >= 4 / v.stream_fps * 0.9  # rate-limited, whatever the loop's pace
    assert v.encoded <= 1 + parts + 1


def test_view_metrics_on_the_same_port(view):
    pytest.importorskip("prometheus_client")
    v, clf, stats = view()
    publish(v, clf, stats, 3)
    status, headers, body = request("GET", v.url + "metrics")
    assert status == 200 and "edgecls_run_frames_total 3.0" in body.decode()


def test_view_token_and_address_rules(view, model):
    from edgecls.runtime.run.access import parse_address
    from edgecls.runtime.run.config import RunConfig

    v, _, _ = view(token="s3cret")
    assert request("GET", v.url)[0] == 401
    assert request("GET", v.url + "stream.mjpg?token=wrong")[0] == 401
    status, headers, body = request("GET", v.url + "?token=s3cret")
    assert status == 200 and b"stream.mjpg" in body and "HttpOnly" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert request("GET", v.url + "state.json", headers={"Cookie": cookie})[0] == 200
    assert request("GET", v.url + "state.json", headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert "no-referrer" in headers["Referrer-Policy"] and "default-src 'self'" in headers["Content-Security-Policy"]
    assert parse_address("8080") == ("127.0.0.1", 8080) and parse_address("[::1]:0") == ("::1", 0)
    for bad in ("eighty", "0.0.0.0:70000"):
        with pytest.raises(InputError):
            RunConfig(model=str(model), sources=("x.jpg",), view=bad)
    with pytest.raises(InputError, match="EDGECLS_TOKEN"):  # beyond this machine: a token first
        RunConfig(model=str(model), sources=("x.jpg",), view="0.0.0.0:8080")
    RunConfig(model=str(model), sources=("x.jpg",), view="0.0.0.0:8080", view_token="t")
    assert "tok3n" not in repr(RunConfig(model="m", sources=("x",), view="1", view_token="tok3n"))


def test_run_cli_refuses_a_wide_view_without_token(model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EDGECLS_TOKEN"}
    p = subprocess.run([sys.executable, "-m", "edgecls", "run", str(model), str(tmp_path), "--view", "0.0.0.0:0"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert p.returncode == 2 and "EDGECLS_TOKEN" in p.stderr


def test_serve_token_gate_and_page_assets(model, monkeypatch):
    pytest.importorskip("fastapi")
    from serve_helpers import served, wait_ready

    from edgecls.runtime.serve.app import create_app
    from edgecls.runtime.serve.config import ServeConfig

    monkeypatch.setenv("EDGECLS_TOKEN", "s3cret")
    jpeg = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(jpeg, "JPEG")
    with served(create_app(ServeConfig(model=str(model), device="cpu"))) as (base, _):
        wait_ready(base)  # the health probes stay open
        assert request("GET", base + "/")[0] == 401
        assert request("POST", base + "/predict", jpeg.getvalue())[0] == 401
        assert request("GET", base + "/metrics")[0] == 401
        bearer = {"Authorization": "Bearer s3cret"}
        status, _, body = request("POST", base + "/predict", jpeg.getvalue(), bearer)
        assert status == 200 and "label" in json.loads(body)
        status, headers, page = request("GET", base + "/?token=s3cret")
        assert status == 200 and b"static/page.js" in page and "HttpOnly" in headers["set-cookie"]
        cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
        for asset in ("static/page.js", "static/page.css"):
            assert request("GET", f"{base}/{asset}", headers=cookie)[0] == 200
        status, _, body = request("GET", base + "/page.json", headers=cookie)
        info = json.loads(body)
        assert status == 200 and info["ready"] and info["threshold"] == 0.55 and info["classes"] == ["mobile", "other"]
        assert request("GET", base + "/static/../app.py", headers=cookie)[0] == 404


def test_pages_load_nothing_from_elsewhere_and_ship_in_the_package():
    from fnmatch import fnmatch

    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = {"serve": data["edgecls.runtime.serve"], "run": data["edgecls.runtime.run"]}
    for folder in STATIC:
        files = sorted(folder.iterdir())
        assert files
        for f in files:
            assert any(fnmatch(f"static/{f.name}", p) for p in patterns[folder.parent.name]), f
            text = f.read_text()
            assert not re.search(r"(?:src|href|action)\s*=\s*[\"'](?:https?:)?//", text), f
            assert not re.search(r"(?:url\(|import\s|fetch\()\s*[\"']?(?:https?:)?//", text), f
