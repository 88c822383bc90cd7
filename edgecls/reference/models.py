"""One small registry of torchvision classifiers and the weight loading they share (imagenet | none | PATH)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from edgecls.core.errors import InputError

log = logging.getLogger(__name__)


class WeightsError(InputError):
    """Weights could not be loaded; the message says where they were looked for and what to do."""


@dataclass(frozen=True)
class Arch:
    name: str
    head: str  # dotted path of the final nn.Linear, replaced by a fresh one with num_classes outputs


ARCHS: Dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("resnet18", "fc"),
        Arch("resnet50", "fc"),
        Arch("mobilenet_v2", "classifier.1"),
        Arch("mobilenet_v3_small", "classifier.3"),
        Arch("mobilenet_v3_large", "classifier.3"),
        Arch("efficientnet_b0", "classifier.1"),
    )
}


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; valid: {', '.join(sorted(ARCHS))}")
    return ARCHS[name]


def _get_parent(model: nn.Module, dotted: str) -> Tuple[nn.Module, str]:
    *parents, last = dotted.split(".")
    mod = model
    for p in parents:
        mod = getattr(mod, p) if not p.isdigit() else mod[int(p)]
    return mod, last


def head_of(model: nn.Module, arch: str) -> nn.Linear:
    parent, last = _get_parent(model, get_arch(arch).head)
    return parent[int(last)] if last.isdigit() else getattr(parent, last)


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> None:
    parent, last = _get_parent(model, get_arch(arch).head)
    old = parent[int(last)] if last.isdigit() else getattr(parent, last)
    new = nn.Linear(old.in_features, num_classes)
    if last.isdigit():
        parent[int(last)] = new
    else:
        setattr(parent, last, new)


def imagenet_weights_path(arch: str) -> Tuple[str, Path]:
    """(download URL, cache path) of torchvision's default ImageNet weights for ``arch``."""
    import torchvision

    w = torchvision.models.get_model_weights(arch).DEFAULT
    url = w.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_imagenet(arch: str) -> nn.Module:
    import torchvision

    url, cache = imagenet_weights_path(arch)
    try:
        return torchvision.models.get_model(arch, weights="DEFAULT")
    except Exception as e:  # offline: URLError, socket errors, partial downloads...
        raise WeightsError(
            f"ImageNet weights for {arch} are not cached and could not be downloaded ({type(e).__name__}: {e}).\n"
            f"  Put the file {os.path.basename(url)} (from {url}) at:\n    {cache}\n"
            f"  (the cache folder follows $TORCH_HOME, now {torch.hub.get_dir()}),\n"
            f"  or pass --weights PATH to a local state dict, or --weights none to train from scratch."
        ) from e


def _state_dict_from_file(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"--weights {path}: no such file; valid: imagenet, none, or a path to a .pth/.pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"--weights {path}: not a loadable state dict ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"--weights {path}: expected a dict of tensors (a state dict)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_backbone(model: nn.Module, arch: str, state: Dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` non-strictly: the head may be missing or differ; every backbone key must match."""
    head_prefix = get_arch(arch).head + "."
    own = model.state_dict()
    shape_bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head_skipped = [k for k in shape_bad if k.startswith(head_prefix)]
    backbone_bad = [k for k in shape_bad if not k.startswith(head_prefix)]
    usable = {k: v for k, v in state.items() if k not in shape_bad}
    result = model.load_state_dict(usable, strict=False)
    missing_backbone = [k for k in result.missing_keys if not k.startswith(head_prefix)]
    if backbone_bad or missing_backbone:
        raise WeightsError(
            f"--weights {source} does not match the {arch} backbone: "
            f"{len(missing_backbone)} backbone keys missing (e.g. {missing_backbone[:3]}), "
            f"{len(backbone_bad)} with other shapes (e.g. {backbone_bad[:3]}). Is it for another --arch? "
            f"valid archs: {', '.join(sorted(ARCHS))}"
        )
    missing_head = [k for k in result.missing_keys if k.startswith(head_prefix)]
    log.info(
        "loaded %d tensors from %s; head initialised fresh (missing %s%s); unexpected keys ignored: %s",
        len(usable), source, missing_head or "none",
        f", shape-mismatched {head_skipped}" if head_skipped else "", result.unexpected_keys or "none",
    )


def build_model(arch: str, num_classes: int, weights: str = "none") -> nn.Module:
    """A torchvision classifier with a fresh ``num_classes`` head. ``weights``: imagenet | none | PATH."""
    import torchvision

    get_arch(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if weights == "imagenet":
        model = _load_imagenet(arch)
        _replace_head(model, arch, num_classes)
        return model
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if weights in ("none", "", None):
        return model
    path = Path(weights).expanduser()
    load_backbone(model, arch, _state_dict_from_file(path), str(path))
    return model
