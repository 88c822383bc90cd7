#!/usr/bin/env python
"""Where one image's time goes in ``edgecls run``, stage by stage, for photo files and for video frames.

Each stage is timed alone on the same images (one thread, best of ``--rounds``), in the order the run loop does
them: read the file, parse the header (format, size, EXIF orientation, the pixel bound), decode (Pillow, or OpenCV
where ``open_for`` uses it), resize + centre crop (Pillow shrinking, OpenCV enlarging), normalize into the CHW
float batch, the model (batch 1), decide, and format the JSON record. ``old`` columns time what the loader did
before (Pillow decode and resample for every image, normalize from a strided uint8 view) on the same images.

    .venv/bin/python bench/profile_run.py --model runs/export/model.onnx [--images DIR] [--limit 1500]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_run import default_images, default_model  # noqa: E402


def best_ms(fn: Callable[[object], object], items: Sequence[object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, (time.perf_counter() - t0) * 1e3 / len(items))
    return best


def main(argv: Optional[Sequence[str]] = None) -> None:
    import tempfile

    from PIL import Image

    from edgecls.core.images import list_images
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.opencv_pixels import cv2_or_none
    from edgecls.runtime.preprocess import (
        FORMATS,
        _check_size,
        _decoded,
        _normalizer,
        _orientation,
        normalize_into,
        open_for,
        open_rgb,
        preprocess_one,
        resize_crop,
    )
    from edgecls.runtime.run.records import prediction_record
    from edgecls.runtime.sources.frame import Frame

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--images", default=None)
    ap.add_argument("--limit", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as td:
        model = Path(args.model) if args.model else default_model(Path(td))
        folder = Path(args.images) if args.images else default_images(Path(td))
        files = list_images(folder)[: args.limit]
        clf = Classifier.load(model, device="cpu", threads=1)
        spec = clf.spec.preprocess
        scale, bias = _normalizer(spec)
        r = args.rounds
        blobs = [p.read_bytes() for p in files]
        pils = [open_rgb(p) for p in files]
        forms = [open_for(p, spec) for p in files]
        n_cv = sum(b for _, b in forms)
        smalls = [resize_crop(im, spec) for im, _ in forms]

        def header(p):
            with open(p, "rb") as fh, Image.open(fh, formats=FORMATS) as im:
                _check_size(im, None, "x")
                _orientation(im)

        def pil_decode(b):
            with Image.open(io.BytesIO(b), formats=FORMATS) as im:
                return _decoded(im, None, "x")

        def old_resample(im):  # Pillow for every image (what the loader did before)
            import edgecls.runtime.preprocess as P

            saved, P.upsample_crop = P.upsample_crop, lambda *a: None
            try:
                return resize_crop(im, spec)
            finally:
                P.upsample_crop = saved

        out = np.empty((3, spec.crop, spec.crop), np.float32)

        def old_normalize(s):
            np.multiply(s.transpose(2, 0, 1), scale[:, None, None], out=out)
            np.add(out, bias[:, None, None], out=out)

        def normalize(s):
            normalize_into(s, spec, out=out)

        x = np.stack([preprocess_one(pils[0], spec)])
        logits = clf.infer(x)
        pred = clf.decider.decide(logits)[0]
        frame = Frame(source=str(folder), index=0, path=str(files[0]))
        cv2 = cv2_or_none()
        rows = [
            ("read file (bytes)", best_ms(lambda p: p.read_bytes(), files, r), None),
            ("header, EXIF orientation, pixel bound", best_ms(header, files, r), None),
            ("decode (Pillow, all)", best_ms(pil_decode, blobs, r), None),
        ]
        if cv2 is not None:
            flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
            rows.append(("decode (OpenCV, all)", best_ms(lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), flags),
                                                         blobs, r), None))
        rows += [
            ("open_for: header + decode as used", best_ms(lambda p: open_for(p, spec), files, r),
             best_ms(open_rgb, files, r)),
            ("resize + crop as used", best_ms(lambda f: resize_crop(f[0], spec), forms, r),
             best_ms(old_resample, pils, r)),
            ("normalize to CHW float32", best_ms(normalize, smalls, r), best_ms(old_normalize, smalls, r)),
        ]

        def decode_pre(p):
            im, bgr = open_for(p, spec)
            preprocess_one(im, spec, bgr=bgr)

        def old_decode_pre(p):
            old_normalize(old_resample(open_rgb(p)))

        rows.append(("decode + preprocess, per photo", best_ms(decode_pre, files, r), best_ms(old_decode_pre, files, r)))
        rows += [
            ("model, batch 1, 1 thread", best_ms(lambda _: clf.infer(x), range(50), r), None),
            ("decide (probabilities, decision, set)", best_ms(lambda _: clf.decider.decide(logits), range(500), r),
             None),
            ("JSON record", best_ms(lambda _: json.dumps(prediction_record(frame, pred, 1.0, 2.0, 1)), range(2000), r),
             None),
        ]
        video = []
        if cv2 is not None:
            for (w, h) in ((640, 480), (1280, 720), (1920, 1080)):
                frames = [np.ascontiguousarray(cv2.resize(np.asarray(p)[:, :, ::-1], (w, h))) for p in pils[:40]]
                video.append((f"video frame {w}x{h} BGR: preprocess", best_ms(
                    lambda f: preprocess_one(f, spec, bgr=True), frames, r)))
        print(f"images {folder}: {len(files)} photos ({n_cv} decoded and enlarged by OpenCV, {len(files) - n_cv} "
              f"by Pillow); model {model.name}; OpenCV {'yes' if cv2 is not None else 'no'}; load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"| {'stage (ms per image, one thread, best of ' + str(r) + ')':<48} | {'now':>7} | {'before':>7} |")
        print(f"|{'-' * 50}|{'-' * 9}|{'-' * 9}|")
        for name, now, old in rows:
            print(f"| {name:<48} | {now:>7.3f} | {'' if old is None else f'{old:7.3f}':>7} |")
        for name, now in video:
            print(f"| {name:<48} | {now:>7.3f} | {'':>7} |")


if __name__ == "__main__":
    main()
