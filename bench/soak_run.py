"""Soak test: ``edgecls run`` over tens of thousands of frames; does its memory stay flat?

Runs the real CLI in a subprocess with a tiny ONNX classifier (built here with the ``onnx`` helpers, no torch) over
a generated video (``--mode video``: one MJPG file of ``--frames`` frames) or a folder of ``--images`` images
replayed with ``--loop --max-frames`` (``--mode images``; a fixed input list, as a long run over the same folder or a
camera has — passing the folder thousands of times would measure the growing input list instead), reads its JSONL
records as they come, and samples the process's resident memory (VmRSS) at every 5 % of the frames. Prints RSS at 25 %, 50 %, 75 % and 100 % (the last sample is taken at the last record, while
the process is still alive) and the growth from 25 % to the end; exits 1 when it is over ``--max-growth`` percent.

    python bench/soak_run.py                          # 30,000 video frames
    python bench/soak_run.py --mode images --frames 32400
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fuzz_helpers as F  # noqa: E402


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def make_video(path: Path, frames: int, size=(64, 48)) -> Path:
    import cv2
    import numpy as np

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    if not vw.isOpened():
        raise SystemExit(f"OpenCV cannot write {path} (MJPG)")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(frames):
        img = np.roll(base, i % w, axis=1)
        img[:, : (i * 3) % w, 1] = 200
        vw.write(img)
    vw.release()
    return path


def make_images(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, (48 + i % 17, 64 + i % 23, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:04d}.jpg", quality=85)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("video", "images"), default="video")
    ap.add_argument("--frames", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=300, help="--mode images: distinct files (replayed with --loop)")
    ap.add_argument("--max-growth", type=float, default=1.0, help="allowed RSS growth from 25 %% to the end, %%")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgecls-soak-"))
    model = F.tiny_onnx_classifier(work / "tiny.onnx")
    if args.mode == "video":
        sources = [str(make_video(work / "soak.avi", args.frames))]
        total = args.frames
    else:
        folder = make_images(work / "images", args.images)
        sources = [str(folder), "--loop", "--max-frames", str(args.frames)]
        total = args.frames
    cmd = [sys.executable, "-m", "edgecls", "run", str(model), *sources, "--device", "cpu", "--threads", "1",
           "--batch", str(args.batch), "--summary-json", str(work / "summary.json")]
    print(f"soak_run: {args.mode}, {total} frames, batch {args.batch}; load average {os.getloadavg()[0]:.2f}")
    marks = sorted({max(1, round(total * k / 20)) for k in range(1, 20)} | {total - 1})
    samples = {}
    t0 = time.perf_counter()
    with open(work / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1 << 16)
        n = errors = 0
        for line in proc.stdout:
            n += 1
            if '"error"' in line and "error" in json.loads(line):
                errors += 1
            if marks and n >= marks[0]:
                samples[marks.pop(0)] = (_rss_kb(proc.pid), time.perf_counter() - t0)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    print(f"{n} records ({errors} errors) in {wall:.1f} s = {n / wall:.0f} frames/s; exit code {rc}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'frames':>8}{'%':>6}{'RSS MB':>9}{'t s':>8}")
    for k, (rss, t) in sorted(samples.items()):
        print(f"{k:>8}{100 * k / total:>6.0f}{rss / 1024:>9.1f}{t:>8.1f}")

    def at(frac: float) -> int:
        return min(samples.items(), key=lambda kv: abs(kv[0] - frac * total))[1][0]

    r25, r50, r75, r100 = at(0.25), at(0.5), at(0.75), samples[max(samples)][0]
    growth = 100.0 * (r100 - r25) / r25
    print(f"RSS 25 % {r25 / 1024:.1f} MB · 50 % {r50 / 1024:.1f} MB · 75 % {r75 / 1024:.1f} MB · "
          f"100 % {r100 / 1024:.1f} MB → growth 25 %→100 % {growth:+.2f} % (limit {args.max_growth:g} %)")
    ok = rc == 0 and n == total and growth <= args.max_growth
    print("PASS" if ok else f"FAIL (exit code {rc}, {n}/{total} records, growth {growth:+.2f} %)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
