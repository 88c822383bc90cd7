#!/usr/bin/env python
"""Glass-to-decision latency of ``edgecls run`` on a live source: a synthetic camera at 30 frames/s.

The camera hands out real product photos (``../shared``, else generated) as 640x480 BGR frames at a fixed rate,
like ``cv2.VideoCapture`` on a V4L2 device: ``read()`` blocks until the next frame is due. The run loop reads it
through the same :class:`LiveSource` (newest-frame slot) as ``--camera 0``, and each record's
``timings_ms.latency`` is capture -> decision. Measured in the same run, on the same frames: ``t_model`` (one
frame through the model with the live plan's threads) and ``t_pre`` (preprocessing one frame), so the aim
``p50 <= t_model + t_pre + 3 ms`` is checked against this machine's own numbers.

    .venv/bin/python bench/bench_live.py --model runs/export/model.onnx [--fps 30] [--seconds 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_run import default_model  # noqa: E402


class SyntheticCamera:
    """A ``VideoCapture``-like camera: ``read()`` returns the next frame when it is due (``fps``), as a driver does."""

    def __init__(self, frames: List[np.ndarray], fps: float, seconds: float) -> None:
        self.frames, self.period, self.n = frames, 1.0 / fps, int(round(fps * seconds))
        self.t0: Optional[float] = None
        self.i = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.i < self.n

    def read(self):
        if self.i >= self.n:
            return False, None
        if self.t0 is None:
            self.t0 = time.perf_counter()
        due = self.t0 + self.i * self.period
        while True:
            left = due - time.perf_counter()
            if left <= 0:
                break
            time.sleep(min(left, 0.002) if left > 0.0005 else 0)
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        return True, frame

    def release(self) -> None:
        self.i = self.n


def frames_from_photos(n: int = 60) -> List[np.ndarray]:
    from PIL import Image

    shared = REPO.parent / "shared" / "data" / "mobile" / "val"
    files = sorted(p for p in shared.rglob("*.jpg"))[:n] if shared.is_dir() else []
    if not files:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append(np.ascontiguousarray(np.asarray(im.convert("RGB").resize((640, 480)))[:, :, ::-1]))
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: as bench_run.py finds or makes one)")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: the live plan's)")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    import tempfile

    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.sources.live import LiveSource, RetryPolicy

    args = parse_args(argv)
    import logging

    logging.getLogger("edgecls.runtime.sources.live").setLevel(logging.ERROR)  # the camera's end is not news
    with tempfile.TemporaryDirectory() as td:
        model = Path(args.model) if args.model else default_model(Path(td))
        clf = Classifier.load(model, device="cpu", threads=args.threads)
        frames = frames_from_photos()
        prepared = np.stack([clf.prepare(f, bgr=True) for f in frames[:8]])
        t_pre, t_model = [], []
        for f in frames:
            t0 = time.perf_counter()
            clf.prepare(f, bgr=True)
            t_pre.append((time.perf_counter() - t0) * 1e3)
        for i in range(60):
            x = prepared[i % 8 : i % 8 + 1]
            t0 = time.perf_counter()
            clf.infer(x)
            t_model.append((time.perf_counter() - t0) * 1e3)
        cam = SyntheticCamera(frames, args.fps, args.seconds)
        src = LiveSource(f"synthetic:{args.fps:g}fps", lambda: cam, retry=RetryPolicy(retries=0))
        cfg = RunConfig(model=str(model), sources=("synthetic",), summary=False, device="cpu", threads=args.threads)
        with open(os.devnull, "w") as devnull:
            stats = run(cfg, out=devnull, err=io.StringIO(), classifier=clf, sources=[src])
        clf.close()
        lat = stats.stages().get("latency_live", {})
        tm, tp = float(np.median(t_model)), float(np.median(t_pre))
        aim = tm + tp + 3.0
        print(f"model {model} ({clf.backend.describe()}, threads {args.threads or 'onnxruntime default'}); "
              f"CPUs {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.2f}")
        print(f"synthetic camera: {cam.i} frames at {args.fps:g} fps (640x480 BGR) over {args.seconds:g} s")
        print(f"| {'what':<40} | {'value':>9} |")
        print(f"|{'-' * 42}|{'-' * 11}|")
        for name, v in (
            ("t_model, ms (median, batch 1)", tm), ("t_pre, ms (median, 640x480 frame)", tp),
            ("capture -> decision p50, ms", lat.get("p50")), ("capture -> decision p99, ms", lat.get("p99")),
            ("frames classified", stats.frames), ("frames dropped (newest-frame policy)", stats.dropped),
            ("aim: p50 <= t_model + t_pre + 3 ms", aim),
        ):
            print(f"| {name:<40} | {v:>9.2f} |" if isinstance(v, float) else f"| {name:<40} | {v!s:>9} |")
        ok = lat.get("p50") is not None and lat["p50"] <= aim
        print(f"\np50 {lat.get('p50')} ms vs aim {aim:.2f} ms: {'MET' if ok else 'NOT MET'}; "
              f"{stats.dropped} of {cam.i} frames dropped")


if __name__ == "__main__":
    main()
