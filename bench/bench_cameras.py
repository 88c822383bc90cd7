#!/usr/bin/env python
"""Many cameras in one ``edgecls run``: N MJPEG videos (640x480 product photos) played at 30 fps with --realtime.

In one run, alternating A and B (``--rounds``):
- bound: the same N videos without --realtime (every frame decoded and classified as fast as the machine goes);
- one process: ``edgecls run MODEL cam0.avi … camN.avi --realtime``: classified frames/s, stale frames skipped,
  capture → decision p50/p99, per source (fair share: each source within ±20 % of the mean);
- one call: the same one process with ``--streams 1 --threads 2`` (one call at a time with both threads: the
  plan live sources had before the scheduler ran calls side by side);
- N processes: one ``edgecls run MODEL camI.avi --realtime`` per video, side by side (what one would do without).
Then cameras added and removed over HTTP (``--view``): N-1 videos running, the N-th POSTed to /sources (time to its
first decision), DELETEd (time until it stops), the others' frames/s before, during and after.

    .venv/bin/python bench/bench_cameras.py [--model runs/export/model.onnx] [--cameras 8] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_live import frames_from_photos  # noqa: E402
from bench_run import default_model  # noqa: E402

EDGECLS = [sys.executable, "-c", "from edgecls.cli import main; main()"]


def make_videos(folder: Path, n: int, seconds: float, fps: float = 30.0) -> List[Path]:
    """``n`` MJPEG .avi files of product photos at 640x480, ``seconds`` long, each starting at another photo."""
    import cv2

    photos = frames_from_photos(60)
    out = []
    for k in range(n):
        path = folder / f"cam{k}.avi"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
        for i in range(int(seconds * fps)):
            vw.write(photos[(7 * k + i // 3) % len(photos)])
        vw.release()
        out.append(path)
    return out


def run_cli(args: Sequence[str], summary: Path, timeout: float) -> Dict:
    subprocess.run([*EDGECLS, "run", *map(str, args), "--no-summary", "--summary-json", str(summary)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    return json.loads(summary.read_text())


def run_separate(model: Path, videos: Sequence[Path], tmp: Path, timeout: float) -> List[Dict]:
    procs, paths = [], []
    for i, v in enumerate(videos):
        p = tmp / f"sep{i}.json"
        paths.append(p)
        procs.append(subprocess.Popen([*EDGECLS, "run", str(model), str(v), "--realtime", "--no-summary",
                                       "--summary-json", str(p)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    for pr in procs:
        pr.wait(timeout=timeout)
    return [json.loads(p.read_text()) for p in paths]


def live_latency(d: Dict) -> Dict:
    return d.get("latency_ms", {}).get("latency_live", {})


def report_one(d: Dict, offered: float, bound: float) -> Dict:
    src = d["sources"]
    fps = [s["frames_per_s"] for s in src]
    mean = statistics.fmean(fps)
    lat = live_latency(d)
    return {"fps": d["frames_per_s"], "of_bound": d["frames_per_s"] / min(bound, offered), "p50": lat.get("p50"),
            "p99": lat.get("p99"), "dropped": d["dropped_live_frames"], "fair": max(abs(f - mean) / mean for f in fps),
            "streams": d["streams"], "sources": src}


def http(url: str, method: str = "GET", body: Optional[Dict] = None) -> Dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def frames_by_source(base: str) -> Dict[str, int]:
    return {s["source"]: s["frames"] for s in http(base + "sources")["sources"]}


def rates(base: str, names: Sequence[str], seconds: float) -> float:
    """Mean frames/s of ``names`` over ``seconds`` (read from /sources)."""
    a = frames_by_source(base)
    time.sleep(seconds)
    b = frames_by_source(base)
    return statistics.fmean((b[n] - a[n]) / seconds for n in names)


def add_remove(model: Path, videos: Sequence[Path]) -> Dict:
    """N-1 cameras running; the N-th added over HTTP, then removed: first decision, stop, the others' rates."""
    proc = subprocess.Popen([*EDGECLS, "run", str(model), *map(str, videos[:-1]), "--realtime", "--loop",
                             "--view", "127.0.0.1:0", "--no-summary"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url: List[str] = []
    got = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            if "view on " in line and not url:
                url.append(line.split("view on ", 1)[1].split()[0])
                got.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not got.wait(60):
            raise RuntimeError("the run did not announce its view")
        base = url[0]
        time.sleep(2.0)  # warm
        others = [str(v) for v in videos[:-1]]
        before = rates(base, others, 3.0)
        t0 = time.perf_counter()
        http(base + "sources", "POST", {"source": str(videos[-1]), "id": "added"})
        posted = time.perf_counter() - t0
        while frames_by_source(base).get("added", 0) == 0:
            if time.perf_counter() - t0 > 10:
                raise RuntimeError("the added camera gave no decision within 10 s")
            time.sleep(0.01)
        first = time.perf_counter() - t0
        during = rates(base, others, 3.0)
        t0 = time.perf_counter()
        http(base + "sources/added", "DELETE")
        stop = time.perf_counter() - t0
        n_at = frames_by_source(base)["added"]
        time.sleep(1.0)
        after_stop = frames_by_source(base)["added"] - n_at
        after = rates(base, others, 3.0)
        return {"post_s": posted, "first_decision_s": first, "stop_s": stop, "frames_after_stop": after_stop,
                "others_fps_before": before, "others_fps_during": during, "others_fps_after": after}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: as bench_run.py finds or makes one)")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each video (at 30 fps)")
    ap.add_argument("--rounds", type=int, default=2, help="bound / one process / N processes, alternated")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    print("uptime:", os.popen("uptime").read().strip())
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        model = Path(args.model) if args.model else default_model(tmp)
        videos = make_videos(tmp, args.cameras, args.seconds)
        offered = 30.0 * args.cameras
        limit = args.seconds * 6 + 120
        rounds = []
        for r in range(args.rounds):
            bound = run_cli([model, *videos], tmp / "bound.json", limit)["frames_per_s"]
            one = run_cli([model, *videos, "--realtime"], tmp / "one.json", limit)
            serial = run_cli([model, *videos, "--realtime", "--streams", "1", "--threads", "2"], tmp / "ser.json",
                             limit)
            sep = run_separate(model, videos, tmp, limit)
            sep_fps = sum(d["frames"] for d in sep) / max(d["elapsed_s"] for d in sep)
            rounds.append({"bound": bound, "one": report_one(one, offered, bound),
                           "one_call": report_one(serial, offered, bound), "separate": {
                "fps": sep_fps, "p50_median": statistics.median(live_latency(d)["p50"] for d in sep),
                "p99_max": max(live_latency(d)["p99"] for d in sep)}})
            o = rounds[-1]["one"]
            print(f"round {r + 1}: bound {bound:.1f} frames/s (files, every frame) | one process "
                  f"{o['fps']:.1f} frames/s = {o['of_bound']:.2f} of min(bound, offered {offered:.0f}), p50 "
                  f"{o['p50']:.1f} / p99 {o['p99']:.1f} ms, {o['dropped']} dropped, fairness max |dev| "
                  f"{o['fair']:.1%}, {o['streams']} call(s) in flight | one call x 2 threads "
                  f"{rounds[-1]['one_call']['fps']:.1f} frames/s, p50 {rounds[-1]['one_call']['p50']:.1f} / p99 "
                  f"{rounds[-1]['one_call']['p99']:.1f} ms | {args.cameras} processes "
                  f"{sep_fps:.1f} frames/s, p50 {rounds[-1]['separate']['p50_median']:.1f} ms (median), p99 "
                  f"{rounds[-1]['separate']['p99_max']:.1f} ms (max)")
        last = rounds[-1]["one"]
        print(f"\nper source (round {len(rounds)}, one process):")
        print(f"{'source':<10}{'frames':>8}{'fps':>8}{'dropped':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for s in last["sources"]:
            print(f"{Path(s['source']).name:<10}{s['frames']:>8}{s['frames_per_s']:>8.1f}{s['dropped']:>9}"
                  f"{s['latency_p50_ms']:>9.1f}{s['latency_p99_ms']:>9.1f}")
        ar = add_remove(model, videos)
        print(f"\nadd over HTTP: first decision {ar['first_decision_s']:.2f} s after the POST (the POST itself "
              f"{ar['post_s']:.2f} s: opening the camera); remove: {ar['stop_s']:.3f} s, "
              f"{ar['frames_after_stop']} frame(s) of it after; the other {args.cameras - 1} cameras "
              f"{ar['others_fps_before']:.1f} / {ar['others_fps_during']:.1f} / {ar['others_fps_after']:.1f} "
              "frames/s each before / during / after")
        fps = np.array([r["one"]["fps"] for r in rounds])
        ofb = np.array([r["one"]["of_bound"] for r in rounds])
        print(f"\nover {len(rounds)} rounds (n={len(rounds)}, min..max): one process {fps.min():.1f}..{fps.max():.1f} "
              f"frames/s, {ofb.min():.2f}..{ofb.max():.2f} of the bound; p99 max "
              f"{max(r['one']['p99'] for r in rounds):.1f} ms; worst fairness "
              f"{max(r['one']['fair'] for r in rounds):.1%}")
        print("uptime:", os.popen("uptime").read().strip())
        if args.json:
            Path(args.json).write_text(json.dumps({"rounds": rounds, "add_remove": ar}, indent=2))


if __name__ == "__main__":
    main()
