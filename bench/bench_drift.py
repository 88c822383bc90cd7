#!/usr/bin/env python
"""Drift monitor: false alarms on stationary video and detection delay after shifts, on streams made of photos.

A stream is a camera at 30 frames/s looking at product photos: each scene is one photo (its shorter side scaled to
240 px, its aspect kept, so the model sees what it saw on calibration photos) held 0.5-5 s (uniform), each frame with its own sensor noise (Gaussian, sd 2 grey levels, rounded and
clipped, drawn from a bank of 24 noise fields at a random offset each frame). In-distribution photos: half the
checkpoint's training images and its val images *not* in its calibration split; the reference is built here as
export builds it (scores on the calibration split, image statistics on it and on the other half of the training
images), so no stream photo is a reference photo. The model is more confident on its training photos than on new
ones: for the scores test those scenes are easier than new photos would be (the image checks do not depend on it). Shifts start at
frame ``--pre`` and last ``--post`` frames: ``dark`` (brightness x0.5), ``blur`` (Gaussian sigma 3), ``rotate``
(camera turned 90 degrees: the photo rotated, then framed), ``covered`` (black, noise only), ``frozen`` (the frame at
onset repeated bit-identically), ``unseen`` (each new scene from classes the model never saw with probability 0.3).

What runs exactly as in ``edgecls run``: every frame is preprocessed by the model's own preprocessing and fed to the
monitor (:class:`~edgecls.runtime.drift.watch.DriftWatch`). The model itself runs only on the frames whose
prediction the monitor reads (the first frame of each scene it detects: a lazy prediction computes it on that very
frame), so no result is reused from another frame; the other frames' predictions are not computed (records would
carry them, the monitor never looks at them).

    .venv/bin/python bench/bench_drift.py --model runs/export/m/model.onnx --checkpoint runs/train/m/best.pt \\
        --photos DATA/val --unseen UNSEEN_DIR [--streams stationary,dark,...] [--seeds 10]
    .venv/bin/python bench/bench_drift.py --model ... --cost [--frames 1500] [--rounds 3]   # run throughput on/off
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

FPS = 30
H, W = 240, 320
SHIFTS = ("dark", "blur", "rotate", "covered", "frozen", "unseen")
EXPECTED = {"dark": "dark", "blur": "blur", "covered": "covered", "frozen": "frozen"}  # image-check kinds
LIMIT = {"unseen": 1800}  # frames allowed to detect (else 300)


def frame_of(photo: np.ndarray) -> np.ndarray:
    """The camera frame of a photo: its shorter side scaled to H, the aspect kept (so the model's own resize and
    centre crop see what they saw on the calibration photos), RGB uint8."""
    import cv2

    h, w = photo.shape[:2]
    s = H / min(h, w)
    f = cv2.resize(photo, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    y0, x0 = max(0, (f.shape[0] - 3 * H) // 2), max(0, (f.shape[1] - 3 * H) // 2)  # at most 3:1 (a panorama)
    return np.ascontiguousarray(f[y0:y0 + 3 * H, x0:x0 + 3 * H])


def shifted(kind: Optional[str], photo: np.ndarray) -> np.ndarray:
    import cv2

    if kind == "rotate":
        return frame_of(np.ascontiguousarray(np.rot90(photo)))
    f = frame_of(photo)
    if kind == "dark":
        return (f.astype(np.float32) * 0.5).round().astype(np.uint8)
    if kind == "blur":
        return cv2.GaussianBlur(f, (0, 0), 3.0)
    if kind == "covered":
        return np.zeros_like(f)
    return f


class LazyPred:
    """The model's prediction on one frame, computed only if something reads it."""

    def __init__(self, clf: Any, frame: np.ndarray, counter: List[int]) -> None:
        self._clf, self._frame, self._counter, self._pred = clf, frame, counter, None

    def __getattr__(self, name: str) -> Any:
        if self._pred is None:
            self._counter[0] += 1
            self._pred = self._clf.predict(self._frame)
        return getattr(self._pred, name)


class Stream:
    def __init__(self, photos: Sequence[np.ndarray], unseen: Sequence[np.ndarray], seed: int) -> None:
        self.photos, self.unseen = photos, unseen
        self.rng = np.random.default_rng(seed)
        self.noise = np.clip(self.rng.normal(0, 2, (24, 3 * H, 3 * H, 3)).round(), -8, 8).astype(np.int8)

    def _noise(self, shape: tuple) -> np.ndarray:
        """A field of sensor noise for a frame of ``shape`` (one of the bank's fields, at a random offset)."""
        h, w = shape[:2]
        k = int(self.rng.integers(len(self.noise)))
        y = int(self.rng.integers(self.noise.shape[1] - h + 1))
        x = int(self.rng.integers(self.noise.shape[2] - w + 1))
        return self.noise[k, y:y + h, x:x + w]

    def frames(self, n: int, onset: Optional[int], kind: Optional[str]):
        """Yield (frame index, RGB frame) for ``n`` frames; the shift ``kind`` from ``onset`` on."""
        i = 0
        cache: Dict[Any, np.ndarray] = {}
        frozen = None
        while i < n:
            hold = int(self.rng.integers(15, 151))  # 0.5..5 s at 30 fps
            after = onset is not None and i >= onset
            pool = self.unseen if after and kind == "unseen" and self.rng.random() < 0.3 else self.photos
            j = int(self.rng.integers(len(pool)))
            for _ in range(hold):
                if i >= n:
                    return
                on = onset is not None and i >= onset
                key = (id(pool), j, kind if on else None)
                if key not in cache:
                    if len(cache) > 256:
                        cache.clear()
                    cache[key] = shifted(kind if on and kind != "unseen" and kind != "frozen" else None,
                                         pool[j]).astype(np.int16)
                if on and kind == "frozen":
                    if frozen is None:
                        frozen = np.clip(cache[key] + self._noise(cache[key].shape), 0, 255).astype(np.uint8)
                    yield i, frozen
                else:
                    yield i, np.clip(cache[key] + self._noise(cache[key].shape), 0, 255).astype(np.uint8)
                i += 1


def run_stream(clf: Any, ref: Any, stream: Stream, n: int, onset: Optional[int], kind: Optional[str]) -> Dict:
    from edgecls.runtime.drift.watch import DriftWatch

    p = clf.spec.preprocess
    watch = DriftWatch(ref, p.mean, p.std, clock=lambda: 0.0)
    infers = [0]
    for i, f in stream.frames(n, onset, kind):
        watch.observe("cam", clf.prepare(f), LazyPred(clf, f, infers), i)
    before = [a for a in watch.alarms if onset is None or a["frame"] < onset]
    after = [a for a in watch.alarms if onset is not None and a["frame"] >= onset]
    want = EXPECTED.get(kind or "", None)
    hit = next((a for a in after if want is None or a["kind"] == want), None)
    return {"false": before, "hit": hit, "delay": None if hit is None else hit["frame"] - onset,
            "kinds_after": sorted({a["kind"] for a in after}), "infers": infers[0], "scenes": watch.monitors["cam"].scenes}


def load_photos(paths: Sequence[str]) -> List[np.ndarray]:
    from edgecls.runtime.preprocess import load_image

    return [load_image(p) for p in paths]


def photo_sets(args) -> tuple:
    """``(stream photos, unseen photos, calibration photos, reference-statistics photos)``: the training images split
    in two halves, one for the reference's image statistics (with the calibration split, as export does with all
    of them), the other for the streams with the val images outside the calibration split."""
    from edgecls.core.images import list_images
    from edgecls.export.drift_reference import calibration_images
    from edgecls.reference.checkpoint import load_checkpoint

    data = load_checkpoint(args.checkpoint).data or {}
    calib, _ = calibration_images(data)
    real = {os.path.realpath(p) for p in calib}
    train = [p for p, *_ in data.get("train", [])]
    val_rest = [str(p) for p in list_images(args.photos) if os.path.realpath(p) not in real]
    unseen = [str(p) for p in list_images(args.unseen)] if args.unseen else []
    return train[1::2] + val_rest, unseen, calib, list(calib) + train[0::2]


def bench_streams(args) -> None:
    from edgecls.export.drift_reference import build_reference
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.drift.monitor import Thresholds

    photos, unseen, calib, stats_paths = photo_sets(args)
    ref = build_reference(args.model, calib, f"calibration split ({len(calib)})", threads=args.threads,
                          stats_paths=stats_paths, stats_source="calibration split + half the training images")
    print(f"model {args.model}; reference: scores on {ref.n_scores} calibration images, image statistics on {ref.n} "
          f"(calibration + even training images); stream photos: {len(photos)} (odd training images + val images "
          f"not in the calibration split); unseen-class photos: {len(unseen)}; {FPS} fps, scenes held 0.5-5 s, "
          "sensor noise sd 2")
    imgs, unseen_imgs = load_photos(photos), load_photos(unseen)
    with Classifier.load(args.model, threads=args.threads) as clf:
        from edgecls.runtime.drift.monitor import DriftConfig

        cfg = DriftConfig()
        th = Thresholds.from_reference(ref, cfg)
        for kind in args.streams.split(","):
            t0 = time.perf_counter()
            stationary = kind == "stationary"
            n = args.stationary_frames if stationary else args.pre + args.post
            onset = None if stationary else args.pre
            res = [run_stream(clf, ref, Stream(imgs, unseen_imgs, seed), n, onset, None if stationary else kind)
                   for seed in range(args.seeds)]
            dt = time.perf_counter() - t0
            fa = [len(r["false"]) for r in res]
            scenes = sum(r["scenes"] for r in res)
            line = (f"{kind:<10} seeds {args.seeds}  frames {n}  scenes {scenes / args.seeds:.0f}/seed  "
                    f"seeds with a false alarm {sum(1 for x in fa if x)}/{args.seeds}")
            if stationary:
                bound = th.false_alarm_bound(ref.n, cfg.scenes, int(scenes / args.seeds))
                line += (f"  (stated: scores <= {cfg.alpha:g} ever, each of dark/bright/blur <= {bound:.3f} over "
                         f"{scenes / args.seeds:.0f} scenes)")
                kinds = sorted({a['kind'] for r in res for a in r['false']})
                if kinds:
                    line += f"  kinds {kinds}"
            else:
                limit = LIMIT.get(kind, 300)
                d = [r["delay"] for r in res]
                ok = sum(1 for x in d if x is not None and x <= limit)
                got = [x for x in d if x is not None]
                line += (f"  detected within {limit}: {ok}/{args.seeds}  delay frames median "
                         f"{np.median(got) if got else float('nan'):.0f} max {max(got) if got else float('nan')}"
                         f"  kinds {sorted({k for r in res for k in r['kinds_after']})}")
            print(line + f"  [{sum(r['infers'] for r in res)} model calls, {dt:.0f} s]", flush=True)


def bench_cost(args) -> None:
    """``edgecls run`` on one video, drift on and off alternately, frames/s of each (same process, same frames)."""
    import io

    import cv2

    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run

    photos = photo_sets(args)[0]
    video = Path(args.video or "runs/bench_drift_cost.avi")
    if not video.is_file():
        vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
        stream = Stream(load_photos(photos), [], 0)
        for _, f in stream.frames(args.frames, None, None):  # a 320x240 camera: the frame's centre
            y0, x0 = (f.shape[0] - H) // 2, (f.shape[1] - W) // 2
            f = f[y0:y0 + H, x0:x0 + W] if f.shape[1] >= W else cv2.resize(f, (W, H))
            vw.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
        vw.release()
    fps: Dict[bool, List[float]] = {True: [], False: []}
    with Classifier.load(args.model, threads=args.threads) as clf:
        for r in range(args.rounds):
            for drift in ((True, False) if r % 2 == 0 else (False, True)):
                cfg = RunConfig(model=args.model, sources=(str(video),), drift=drift, summary=False,
                                threads=args.threads)
                st = run(cfg, out=io.StringIO(), err=io.StringIO(), classifier=clf)
                fps[drift].append(st.fps)
    on, off = np.asarray(fps[True]), np.asarray(fps[False])
    print(f"edgecls run on {video} ({args.frames} frames {W}x{H}), {args.rounds} rounds alternating")
    print(f"  drift on : {' '.join(f'{x:.1f}' for x in on)} frames/s (median {np.median(on):.1f})")
    print(f"  drift off: {' '.join(f'{x:.1f}' for x in off)} frames/s (median {np.median(off):.1f})")
    cost = 1 - np.median(on) / np.median(off)
    pair = 1 - on / off
    print(f"  cost {100 * cost:.1f} % of throughput (per round: {' '.join(f'{100 * x:.1f}' for x in pair)} %)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", required=True, help="best.pt: its calibration split is left out of the streams")
    ap.add_argument("--photos", required=True, help="in-distribution photos (class folders)")
    ap.add_argument("--unseen", help="photos of classes the model never saw")
    ap.add_argument("--streams", default="stationary," + ",".join(SHIFTS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--stationary-frames", type=int, default=54000)
    ap.add_argument("--pre", type=int, default=1800)
    ap.add_argument("--post", type=int, default=1800)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cost", action="store_true", help="measure run throughput with the monitor on and off")
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--video")
    args = ap.parse_args(argv)
    bench_cost(args) if args.cost else bench_streams(args)


if __name__ == "__main__":
    main()
