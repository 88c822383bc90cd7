"""The one tiny-model builder for tests that need a PyTorch checkpoint (and its plain ONNX): ResNet18 at 32 px on
the generated ``tiny_data`` (classes mobile, other), in a second — not minutes of training.

``head="fit"``: a random backbone and a head fitted on its features (the model agrees with the labels, so INT8
parity and accuracy checks mean something). ``head="centred"``: the head re-drawn and its bias centred so that
half the training images fall on each side (mixed predictions, no accuracy claim).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec

CROP = 32
CLASSES = ("mobile", "other")


def tiny_spec(**kw) -> ModelSpec:
    """ResNet18 at 32 px (ImageNet resize rule), classes mobile/other, positive mobile; ``kw`` overrides."""
    kw.setdefault("preprocess", PreprocessSpec.for_image_size(CROP))
    kw.setdefault("positive", "mobile")
    return ModelSpec(arch=kw.pop("arch", "resnet18"), classes=kw.pop("classes", CLASSES), **kw)


def _recorded_items(data_root: Path, classes) -> dict:
    return {
        s: [[str(p), list(classes).index(p.parent.name)] for p in sorted((data_root / s).glob("*/*.jpg"))]
        for s in ("train", "val")
    }


def _fit_head(model, x, y, steps: int = 150) -> None:
    import torch

    head = model.fc
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        feats = model(x)
    model.fc = head
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(feats), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _centre_head(model, x) -> None:
    import torch

    from edgecls.reference.models import head_of

    with torch.no_grad():
        head = head_of(model, "resnet18")
        head.weight.normal_(0, 0.3)
        d = model(x)
        head.bias[0] -= (d[:, 0] - d[:, 1]).median()  # half the images on each side


def make_tiny_checkpoint(
    data_root: Path, path: Path, seed: int = 0, *, head: str = "fit", spec: Optional[ModelSpec] = None,
    record_data: bool = True, epoch: int = 1,
) -> Path:
    """Write a ResNet18 checkpoint to ``path`` (see the module's ``head`` modes); returns ``path``.

    ``record_data`` records ``data_root``'s train/val items in the checkpoint (what export's calibration and
    parity fall back to).
    """
    import torch

    from edgecls.reference.checkpoint import Checkpoint, save_checkpoint
    from edgecls.reference.models import build_model
    from edgecls.runtime.preprocess import load_image, preprocess

    spec = spec or tiny_spec()
    classes = list(spec.classes)
    items = _recorded_items(Path(data_root), classes)
    train_files = [p for p, _ in items["train"]]
    torch.manual_seed(seed)
    model = build_model("resnet18", len(classes)).eval()
    x = torch.from_numpy(preprocess([load_image(p) for p in train_files], spec.preprocess))
    if head == "fit":
        _fit_head(model, x, torch.tensor([lab for _, lab in items["train"]]))
    elif head == "centred":
        _centre_head(model, x)
    else:
        raise ValueError(f"head {head!r}: 'fit' or 'centred'")
    data = {"root": str(data_root), "classes": classes, **items} if record_data else {}
    save_checkpoint(Checkpoint(spec=spec, state_dict=model.state_dict(), epoch=epoch, data=data,
                               versions={"torch": str(torch.__version__)}), path)
    return Path(path)


def plain_onnx(checkpoint: Path, path: Path) -> Path:
    """The checkpoint's model as a plain ONNX (TorchScript exporter, opset 17, dynamic batch) with its spec embedded
    — without ``edgecls export`` (no simplification, no parity check)."""
    import onnx
    import torch

    from edgecls.reference.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    crop = ck.spec.preprocess.crop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose (opset 17)
        torch.onnx.export(
            ck.build_model(), torch.zeros(1, 3, crop, crop), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    m = onnx.load(str(path))
    p = m.metadata_props.add()
    p.key, p.value = METADATA_KEY, ck.spec.to_json(indent=None)
    onnx.save(m, str(path))
    return Path(path)
