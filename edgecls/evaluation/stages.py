"""Bench stages beyond the model: preprocessing cost per frame, and end to end (decode + preprocess + infer)."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from edgecls.evaluation.inputs import natural_frame
from edgecls.evaluation.models import OpenedModel
from edgecls.evaluation.results import EndToEndRow, PreprocessRow
from edgecls.evaluation.timing import interleaved
from edgecls.runtime.spec import PreprocessSpec

PREPROCESS_SIZES = ((640, 480), (1280, 720), (1000, 1000))

Case = Tuple[str, Callable[[], Any], Optional[Callable[[], Any]]]


def _torchvision_transform(spec: PreprocessSpec):
    """torchvision's PIL transform for ``spec`` and torch's current thread count; ``(None, None)`` without them."""
    try:
        import torch
        from torchvision import transforms as T
    except ImportError:
        return None, None
    ref_tf = T.Compose([
        T.Resize(spec.resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(spec.crop),
        T.ToTensor(), T.Normalize(spec.mean, spec.std),
    ])
    return ref_tf, torch.get_num_threads()


def _preprocess_cases(spec: PreprocessSpec, jpeg: str, ref_tf) -> List[Case]:
    """(name, runtime preprocessing, torchvision reference or None) per input."""
    from PIL import Image

    from edgecls.runtime.preprocess import load_image, open_rgb, preprocess_one

    cases: List[Case] = []
    for w, h in PREPROCESS_SIZES:
        frame = natural_frame(w, h)
        cases.append((
            f"{w}×{h} RGB array",
            lambda f=frame: preprocess_one(f, spec),
            (lambda f=frame: ref_tf(Image.fromarray(f))) if ref_tf else None,
        ))

    def _ref_jpeg(p=jpeg):
        with Image.open(p) as im:
            return ref_tf(im.convert("RGB"))

    cases.append((
        "1000×1000 JPEG decode (open_rgb) + preprocess",
        lambda p=jpeg: preprocess_one(open_rgb(p), spec),
        _ref_jpeg if ref_tf else None,
    ))
    cases.append((
        "1000×1000 JPEG decode (load_image → array) + preprocess",
        lambda p=jpeg: preprocess_one(load_image(p), spec),
        _ref_jpeg if ref_tf else None,
    ))
    return cases


def _time_cases(cases: List[Case], iters: int, rounds: int) -> List[PreprocessRow]:
    rows = []
    for name, fn, ref in cases:
        fns = [fn] + ([ref] if ref else [])
        res = interleaved(fns, warmup=2, iters=iters, rounds=rounds)
        med = [float(np.median(r)) for r in res[0]]
        ms = float(np.median(med))
        ref_ms = float(np.median([np.median(r) for r in res[1]])) if ref else None
        rows.append(PreprocessRow(name, ms, (min(med), max(med)), ref_ms, ms / ref_ms if ref_ms else None))
    return rows


def bench_preprocess(spec: PreprocessSpec, iters: int, rounds: int) -> List[PreprocessRow]:
    """ms per frame of the runtime preprocessing (one thread), beside torchvision's PIL transform if present."""
    from PIL import Image

    ref_tf, torch_threads = _torchvision_transform(spec)
    tmp = tempfile.NamedTemporaryFile(suffix=".jpg", delete=False)
    try:
        Image.fromarray(natural_frame(1000, 1000)).save(tmp, format="JPEG", quality=90)
        tmp.close()
        cases = _preprocess_cases(spec, tmp.name, ref_tf)
        if ref_tf is not None:
            import torch

            torch.set_num_threads(1)
        try:
            return _time_cases(cases, iters, rounds)
        finally:
            if torch_threads is not None:
                import torch

                torch.set_num_threads(torch_threads)
    finally:
        os.unlink(tmp.name)


def _e2e_fn(opened: OpenedModel, files: List[str]) -> Callable[[], Any]:
    from edgecls.runtime.metrics import softmax
    from edgecls.runtime.preprocess import open_rgb, preprocess

    state = {"i": 0}

    def step():
        path = files[state["i"] % len(files)]
        state["i"] += 1
        x = preprocess([open_rgb(path)], opened.spec.preprocess)
        return softmax(opened.infer(x), opened.spec.temperature)

    return step


def bench_end_to_end(
    opened: List[OpenedModel], paths: List[str], files: List[str], images: Optional[str], warmup: int, iters: int,
    rounds: int, reference: Optional[str],
) -> List[EndToEndRow]:
    """Frames/s of decode + preprocess + inference + softmax, one frame at a time, per opened model."""
    from PIL import Image

    tmpdir = None
    source = f"{len(files)} images from {images}" if files else "1000×1000 JPEG"
    if not files:
        tmpdir = tempfile.mkdtemp(prefix="edgecls-bench-")
        p = os.path.join(tmpdir, "frame.jpg")
        Image.fromarray(natural_frame(1000, 1000)).save(p, format="JPEG", quality=90)
        files = [p]
    try:
        fns = [_e2e_fn(om, files) for om in opened]
        res = interleaved(fns, warmup, iters, rounds)
    finally:
        if tmpdir:
            for f in files:
                os.unlink(f)
            os.rmdir(tmpdir)
    rows = []
    t = opened[0].threads or 1
    for p, rounds_ms in zip(paths, res):
        ms = float(np.median([np.mean(r) for r in rounds_ms]))
        rows.append(EndToEndRow(model=p, threads=t, frames_per_s=1000.0 / ms, ms_per_frame=ms, source=source))
    ref = next((r for r in rows if r.model == reference), None)
    if ref is not None:
        rows = [dataclasses.replace(r, ratio_fps=r.frames_per_s / ref.frames_per_s) for r in rows]
    return rows
