"""The README's screenshots of both pages (``bench/bench_view.py --screenshots DIR``): headless Chromium (Debian's
chromium + chromium-driver) on `edgecls serve` after uploading a photo, and on `edgecls run --view` over a video."""
from __future__ import annotations

import io
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars")
MAX_BYTES = 200_000


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in (*CHROME_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def save_small(png: bytes, path: Path) -> None:
    """A palette PNG under :data:`MAX_BYTES` (halving the colours until it fits)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    for colors in (256, 128, 64, 32):
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size < MAX_BYTES:
            break
    print(f"{path}: {img.width}x{img.height}, {path.stat().st_size / 1024:.0f} KB")


def wait(fn, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit("timed out")


def screenshots(args: Any, video: Path, out: Path) -> None:
    from bench_view import SHARED_VAL, start
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    photo = sorted((SHARED_VAL / "mobile").glob("*.jpg"))[4]
    serve, url, _ = start([sys.executable, "-m", "edgecls", "serve", args.model, "--port", "0", "--device",
                           args.device], "edgecls serve: http")
    driver = browser(1100, 760)
    try:
        driver.get(url + "/")
        wait(lambda: "threshold" in driver.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait(lambda: driver.find_element(By.ID, "label").text)
        time.sleep(0.5)
        save_small(driver.get_screenshot_as_png(), out / "serve_page.png")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        driver.quit()
    run, url, _ = start([sys.executable, "-m", "edgecls", "run", args.model, str(video), "--loop", "--device",
                         args.device, "--view", "127.0.0.1:0"], "view on http")
    driver = browser(1100, 900)
    try:
        driver.get(url + "/")
        wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#recent tbody tr")) >= 10)
        time.sleep(2.0)
        save_small(driver.get_screenshot_as_png(), out / "run_view.png")
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        driver.quit()
