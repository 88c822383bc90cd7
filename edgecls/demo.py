"""``edgecls demo``: the whole pipeline on a small dataset generated on the spot (no download).

It runs the same commands a user runs, in this process, so what it shows is what they get:
``train`` (ResNet18, no pretrained weights, small images) → ``export`` (FP32 + both INT8 forms, parity table)
→ ``run`` (JSON lines over a folder of images and over a short generated video).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import List

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.synthetic import draw_sample, make_image_folder

log = logging.getLogger(__name__)


def _invoke(args: List[str]) -> None:
    import typer

    from edgecls.cli import app

    typer.secho(f"\n$ edgecls {' '.join(args)}", fg=typer.colors.CYAN, err=True)
    rv = app(args=args, standalone_mode=False)
    if isinstance(rv, int) and rv != 0:
        raise EdgeclsError(f"`edgecls {args[0]}` exited with {rv}")


def make_demo_video(path: Path, frames: int = 24, size: int = 96, seed: int = 1) -> Path:
    """A short MJPG video: phones for the first half, other products for the second."""
    try:
        import cv2
    except ImportError as e:  # the demo is run from a full install; say what is missing
        raise EdgeclsError("the demo's video step needs OpenCV: pip install 'edgecls[opencv]'") from e
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (size, size))
    if not writer.isOpened():
        raise EdgeclsError(f"cannot write the demo video {path} (OpenCV has no MJPG writer?)")
    try:
        for i in range(frames):
            cls = "mobile" if i < frames // 2 else "other"
            im = draw_sample(cls, rng, size).resize((size, size))
            writer.write(np.asarray(im)[:, :, ::-1].copy())
    finally:
        writer.release()
    return path


def run_demo(out: str = "runs/demo", epochs: int = 8) -> None:
    root = Path(out)
    # val as large as train: the export's gates judge half of val, and a verdict on ~20 images is one image's noise
    counts = {"mobile": 40, "other": 80}
    data = root / f"data-{counts['mobile']}-{counts['other']}-val{counts['mobile']}-{counts['other']}"
    if not (data / "train").is_dir():
        log.info("generating a small image folder in %s", data)
        make_image_folder(data, counts=counts, val_counts=counts, size=96, seed=0)
    samples = root / "samples"
    if not samples.is_dir():
        samples.mkdir(parents=True)
        for cls in ("mobile", "other"):
            for p in sorted((data / "val" / cls).glob("*.jpg"))[:3]:
                shutil.copy2(p, samples / p.name)
    video = root / "demo.avi"
    if not video.is_file():
        make_demo_video(video)

    train_dir, export_dir = root / "train", root / "export"
    _invoke([
        "train", "--data", str(data), "--arch", "resnet18", "--weights", "none", "--positive", "mobile",
        "--target-precision", "0.9", "--image-size", "64", "--epochs", str(epochs), "--batch-size", "16",
        "--seed", "0", "--out", str(train_dir), "--exist-ok", "--no-progress",
    ])
    _invoke([
        "export", str(train_dir / "best.pt"), "--out", str(export_dir), "--int8",
        "--calib", str(data / "train"), "--calib-count", "100",
    ])
    for model in ("model.onnx", "model_int8_cpu.onnx"):
        _invoke(["run", str(export_dir / model), str(samples), str(video), "--threads", "2"])
    import typer

    typer.secho(
        f"\nDemo done. Checkpoint, plots and metrics: {train_dir}\nExports and parity.json: {export_dir}\n"
        f"Next: edgecls train --data YOUR_FOLDER --positive YOUR_CLASS (see README.md).",
        fg=typer.colors.GREEN, err=True,
    )
