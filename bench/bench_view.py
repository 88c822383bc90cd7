#!/usr/bin/env python
"""What ``edgecls run --view`` costs the run loop: frames/s over the same video without the view, with the view
and nobody watching, and with a client reading the MJPEG stream (as a browser does), side by side in one run.

Each timing is the real command in a subprocess (``--loop --max-frames N``, JSONL to /dev/null), frames/s from its
``--summary-json`` (model load excluded); rounds are interleaved (off, idle, watched, off, ...) and the median and
best of each are reported with the ratio to "off" (issue 23's acceptance: watched >= 0.95x).

    /work/bin/quiet .venv/bin/python bench/bench_view.py --model runs/export/model.onnx
    .venv/bin/python bench/bench_view.py --model M --screenshots docs/   # the README's two screenshots instead

The video is made with OpenCV from ../shared/data/mobile/val photos (generated frames where that is absent).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_VAL = REPO.parent / "shared" / "data" / "mobile" / "val"
CONDITIONS = ("off", "idle", "watched")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="exported .onnx (with its metadata)")
    ap.add_argument("--frames", type=int, default=600, help="frames per timing (--max-frames)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="640x480", help="video frame size WxH")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--screenshots", default=None, metavar="DIR", help="write serve_page.png and run_view.png here")
    return ap.parse_args(argv)


def make_video(path: Path, size: Tuple[int, int], n: int = 100) -> Path:
    import cv2

    photos = sorted(SHARED_VAL.rglob("*.jpg"))[::3] if SHARED_VAL.is_dir() else []
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, size)
    rng = np.random.default_rng(0)
    for i in range(n):
        if photos:
            img = cv2.resize(cv2.imread(str(photos[i % len(photos)])), size)
        else:
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        vw.write(img)
    vw.release()
    return path


def start(cmd: List[str], marker: str) -> Tuple[subprocess.Popen, str, List[str]]:
    """Start ``cmd``; return it with the first URL of the stderr line containing ``marker``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: List[str] = []
    found = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            lines.append(line)
            if marker in line:
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    while not found.wait(0.1):
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{''.join(lines)}")
    url = re.search(r"(http://[^\s?]+)", next(x for x in lines if marker in x)).group(1)
    return proc, url.rstrip("/"), lines


def poll_state(url: str, counts: Dict[str, float], stop: threading.Event) -> None:
    """What the page does beside the stream: /state.json every 0.5 s (the last answer kept)."""
    while not stop.wait(0.5):
        try:
            with urllib.request.urlopen(url + "/state.json", timeout=5) as r:
                st = json.loads(r.read())
            counts["encode_ms"] = st["encode_ms_total"]
            counts["encoded"] = st["encoded"]
        except OSError:
            return


def watch(url: str, counts: Dict[str, float]) -> None:
    """A browser on the page: the MJPEG stream read until it ends (the <img>), /state.json polled."""
    stop = threading.Event()
    threading.Thread(target=poll_state, args=(url, counts, stop), daemon=True).start()
    try:
        with urllib.request.urlopen(url + "/stream.mjpg", timeout=30) as r:
            while True:
                line = r.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length"):
                    n = int(line.split(b":")[1])
                    r.readline()
                    counts["bytes"] += len(r.read(n))
                    counts["frames"] += 1
    except OSError:
        return
    finally:
        stop.set()


def timed_run(args: argparse.Namespace, video: Path, condition: str) -> Tuple[float, Dict[str, int]]:
    summary = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [sys.executable, "-m", "edgecls", "run", args.model, str(video), "--loop", "--max-frames",
           str(args.frames), "--device", args.device, "--no-summary", "--summary-json", str(summary)]
    counts = {"frames": 0, "bytes": 0, "encode_ms": 0.0, "encoded": 0}
    if condition == "off":
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=REPO)
    else:
        proc, url, lines = start(cmd + ["--view", "127.0.0.1:0"], "view on http")
        client = threading.Thread(target=watch, args=(url, counts), daemon=True)
        if condition == "watched":
            client.start()
        if proc.wait() != 0:
            raise SystemExit("".join(lines))
        client.join(5) if condition == "watched" else None
    result = json.loads(summary.read_text())
    summary.unlink()
    counts["elapsed_s"] = float(result["elapsed_s"])
    return float(result["frames_per_s"]), counts


def bench(args: argparse.Namespace, video: Path) -> None:
    fps: Dict[str, List[float]] = {c: [] for c in CONDITIONS}
    received: List[Dict[str, float]] = []
    for r in range(args.rounds):
        for c in CONDITIONS:
            value, counts = timed_run(args, video, c)
            fps[c].append(value)
            if c == "watched":
                received.append(counts)
            print(f"round {r + 1} {c:<8} {value:8.2f} frames/s"
                  + (f"  (viewer got {counts['frames']} frames)" if c == "watched" else ""), flush=True)
    base = statistics.median(fps["off"])
    print(f"\nedgecls run over {video.name} ({args.size}, {args.frames} frames per timing, {args.rounds} rounds, "
          f"model {Path(args.model).name}, {args.device}, {os.cpu_count()} CPUs)")
    print(f"{'':<34}{'median':>9}{'best':>9}{'median/off':>12}{'paired':>9}")
    names = {"off": "without --view", "idle": "--view, nobody watching", "watched": "--view, a browser watching"}
    for c in CONDITIONS:
        med = statistics.median(fps[c])
        paired = statistics.median(x / o for x, o in zip(fps[c], fps["off"]))  # same round: same background load
        print(f"{names[c]:<34}{med:>9.2f}{max(fps[c]):>9.2f}{med / base:>11.3f}x{paired:>8.3f}x")
    frames = sum(x["frames"] for x in received)
    kb = sum(x["bytes"] for x in received) / max(1, frames) / 1024
    enc_ms = sum(x["encode_ms"] for x in received)
    encoded = sum(x["encoded"] for x in received)
    run_s = sum(x["elapsed_s"] for x in received)
    print(f"the browser got {frames} frames ({frames / run_s:.1f}/s, {kb:.1f} KB each); the view drew and encoded "
          f"{encoded} ({enc_ms / max(1, encoded):.2f} ms each): {enc_ms / run_s / 10:.2f} % of one core "
          "(paired: the median of each round's ratio to 'off' in that round)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    w, h = (int(x) for x in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "shelf.avi", (w, h))
        if args.screenshots:
            from bench_view_shots import screenshots

            screenshots(args, video, Path(args.screenshots))
        else:
            bench(args, video)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
