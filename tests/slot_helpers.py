"""Small real ONNX models for the model-slot tests: versions of the tiny net that differ (seed, input size,
classes), a corrupt file, and one whose outputs turn NaN on bright images only (it passes the warm-up, fails on
its first real frames)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
from runtime_helpers import export_tiny_onnx, tiny_spec

from edgecls.runtime.spec import METADATA_KEY, sidecar_path


def model_versions(folder: Path) -> dict:
    """``{"a", "b", "a2", "flipped", "wide", "classes", "corrupt", "nan"}`` -> model file paths (with sidecars):
    b another seed; a2 the same net as a (other bytes: another threshold); flipped a with its last layer negated
    (the other answer for every image)."""
    folder = Path(folder)
    out = {
        "a": folder / "a" / "model.onnx",
        "b": folder / "b" / "model.onnx",
        "wide": folder / "wide" / "model.onnx",
        "classes": folder / "classes" / "model.onnx",
        "nan": folder / "nan" / "model.onnx",
        "a2": folder / "a2" / "model.onnx",
        "flipped": folder / "flipped" / "model.onnx",
        "corrupt": folder / "corrupt" / "model.onnx",
    }
    export_tiny_onnx(out["a"], seed=0)
    export_tiny_onnx(out["b"], seed=1)
    export_tiny_onnx(out["wide"], spec=tiny_spec(crop=48, resize=52), seed=0)
    export_tiny_onnx(out["classes"], spec=tiny_spec(classes=("mobile", "other", "tablet")), seed=0)
    export_tiny_onnx(out["a2"], spec=tiny_spec(threshold=0.6), seed=0)
    _export_nan_on_bright(out["nan"])
    _export_flipped(out["flipped"])
    out["corrupt"].parent.mkdir(parents=True, exist_ok=True)
    data = out["a"].read_bytes()
    out["corrupt"].write_bytes(data[: len(data) // 3])  # cut short: not a loadable ONNX
    shutil.copyfile(sidecar_path(out["a"]), sidecar_path(out["corrupt"]))
    return out


def _export_flipped(path: Path) -> None:
    import torch
    from runtime_helpers import tiny_torch_model

    model = tiny_torch_model(2, seed=0)
    with torch.no_grad():
        model[-1].weight.neg_()
        model[-1].bias.neg_()
    _export_module(model, path)


def _export_nan_on_bright(path: Path) -> None:
    import torch
    from runtime_helpers import tiny_torch_model

    base = tiny_torch_model(2, seed=2)

    class NanOnBright(torch.nn.Module):  # sqrt(1 - mean): NaN once the normalised image's mean exceeds 1
        def __init__(self):
            super().__init__()
            self.base = base

        def forward(self, x):
            return self.base(x) + torch.sqrt(1.0 - x.mean(dim=(1, 2, 3))).unsqueeze(1) * 0.0

    _export_module(NanOnBright().eval(), path)


def _export_module(module, path: Path) -> None:
    import onnx
    import torch

    spec = tiny_spec()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, 3, 32, 32),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(str(path))
    e = m.metadata_props.add()
    e.key, e.value = METADATA_KEY, spec.to_json()
    onnx.save(m, str(path))
    sidecar_path(path).write_text(spec.to_json(), encoding="utf-8")


def replace_atomically(src: Path, dst: Path) -> None:
    """What a deployment does: write the new model aside, then rename it over the old one."""
    from edgecls.core.fileio import copy_file

    copy_file(src, dst)


def frames(n: int = 6, bright: bool = False) -> list:
    """``n`` distinct 40x40 BGR frames (bright ones: near white)."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        img = rng.integers(200 if bright else 0, 256, (40, 40, 3), dtype=np.uint8)
        img[:, : 5 + 5 * i, i % 3] = 255 if bright else 0
        out.append(img)
    return out
