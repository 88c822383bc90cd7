"""Helpers for the runtime tests: a tiny ONNX classifier built here (torch is in the test env, not the runtime)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec, sidecar_path

CLASSES = ("mobile", "other")


def tiny_spec(crop: int = 32, resize: int = 36, **kw) -> ModelSpec:
    kw.setdefault("positive", "mobile")
    kw.setdefault("threshold", 0.5)
    return ModelSpec(arch="tinynet", classes=kw.pop("classes", CLASSES), preprocess=PreprocessSpec(resize=resize, crop=crop), **kw)


def tiny_torch_model(num_classes: int = 2, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    ).eval()
    with torch.no_grad():  # make the outputs spread so labels differ between images
        model[-1].weight.mul_(8.0)
    return model


def export_tiny_onnx(
    path: Path,
    spec: Optional[ModelSpec] = None,
    metadata: bool = True,
    sidecar: bool = True,
    export_hw: Optional[int] = None,
    batch: Optional[int] = None,
    input_name: str = "input",
    seed: int = 0,
):
    """Export the tiny net to ``path`` (opset 17, dynamic batch unless ``batch``); returns the torch model.

    ``export_hw`` exports at another input size than the spec's crop (to test the shape check).
    """
    import onnx
    import torch

    spec = spec or tiny_spec()
    model = tiny_torch_model(spec.num_classes, seed=seed)
    hw = export_hw or spec.preprocess.crop
    x = torch.zeros(batch or 2, 3, hw, hw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model, (x,), str(path), input_names=[input_name], output_names=["logits"], opset_version=17,
            dynamic_axes=None if batch else {input_name: {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    if metadata:
        m = onnx.load(str(path))
        entry = m.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, spec.to_json()
        onnx.save(m, str(path))
    if sidecar:
        sidecar_path(path).write_text(spec.to_json(), encoding="utf-8")
    return model


def torch_logits(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def write_images(folder: Path, n: int = 6, sizes: Sequence[tuple] = ((48, 40), (40, 64), (90, 60)), seed: int = 0):
    """Random-ish JPEG images with structure (so the tiny net gives different outputs)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        base = rng.integers(0, 256, size=(1, 1, 3))
        grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, size=(1, 1, 3))
        noise = rng.normal(0, 20, size=(h, w, 3))
        arr = np.clip(base + grad + noise, 0, 255).astype(np.uint8)
        p = folder / f"img_{i:03d}.jpg"
        Image.fromarray(arr).save(p, quality=92)
        paths.append(p)
    return paths


def write_video(path: Path, n: int = 12, size: tuple = (64, 48), fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    """A short generated video (MJPG .avi by default, which every OpenCV build can write and read)."""
    import cv2

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened(), f"cannot write {path} with {fourcc}"
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :, 0] = (i * 20) % 256
        img[:, : (i * 5) % w + 1, 1] = 200
        img[h // 3 : 2 * h // 3, :, 2] = 255 - (i * 15) % 256
        vw.write(img)
    vw.release()
    return path


def read_jsonl(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]
