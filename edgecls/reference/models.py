"""One small registry of torchvision classifiers, plus any timm model as ``timm:<name>`` (the optional `timm`
extra), and the weight loading they share (imagenet | none | PATH; never a download for timm)."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from edgecls.core.errors import InputError
from edgecls.reference.joined import is_joined
from edgecls.runtime.spec import IMAGENET_MEAN, IMAGENET_STD

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


TIMM_PREFIX = "timm:"  # --arch timm:<name>: any timm model (the `timm` extra), e.g. timm:tf_efficientnet_lite0


def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX) and not is_joined(arch)


def _timm(arch: str):
    """The timm module, or an :class:`InputError` saying how to install it."""
    try:
        import timm
    except ImportError as e:
        raise InputError(f"--arch {arch} needs timm, not installed here: pip install 'edgecls[timm]'") from e
    return timm


def timm_cfg(arch: str) -> Dict[str, Any]:
    """The pretrained config timm registers for ``timm:<name>`` (input size, mean/std, interpolation, crop_pct,
    classifier name): read from timm's registry, no model built, nothing downloaded."""
    timm = _timm(arch)
    name = arch[len(TIMM_PREFIX):]
    if not name or not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} in --arch {arch}; list them with "
                         f"`python -c \"import timm; print(timm.list_models('*lite*'))\"`")
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def get_arch(name: str) -> Arch:
    if is_joined(name):  # backbones joined by '+' (edgecls.reference.joined): one nn.Linear named head
        from edgecls.reference.joined import split_arch

        for part in split_arch(name):
            try:
                get_arch(part)
            except ValueError as e:
                raise ValueError(f"backbone {part!r} of the joined {name}: {e}") from e
        return Arch(name, "head")
    if is_timm(name):
        head = timm_cfg(name).get("classifier") or "classifier"
        return Arch(name, head if isinstance(head, str) else head[0])
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; valid: {', '.join(sorted(ARCHS))}, or timm:<name> "
                         f"(any timm model, with the timm extra)")
    return ARCHS[name]


def preprocess_for(arch: str, image_size: Optional[int] = None):
    """The eval preprocessing of ``arch`` at ``image_size`` (None: the model's own) as a
    :class:`~edgecls.runtime.spec.PreprocessSpec`.

    torchvision archs: the ImageNet convention (crop ``image_size``, resize ``image_size * 256/224``, ImageNet
    mean/std, bilinear). timm archs: the model's pretrained config, as ``timm.data.resolve_data_config`` gives it
    (mean/std, interpolation, input size), the resize size from ``crop_pct`` as timm computes it
    (``floor(crop / crop_pct)``: 224 → 256 at 0.875, Lite2's 260 → 292 at 0.89).
    """
    from edgecls.runtime.spec import INTERPOLATIONS, PreprocessSpec

    if is_joined(arch):  # the lead backbone's; each branch re-normalizes/resizes inside the network
        from edgecls.reference.joined import joined_preprocess

        return joined_preprocess(arch, image_size)
    if not is_timm(arch):
        return PreprocessSpec.for_image_size(image_size or 224)
    cfg = timm_cfg(arch)
    crop = int(image_size or cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    if cfg.get("crop_mode", "center") != "center":
        log.warning("%s: timm crop_mode %r; the runtime crops the centre", arch, cfg.get("crop_mode"))
    interp = cfg.get("interpolation") or "bilinear"
    if interp not in INTERPOLATIONS:
        log.warning("%s: timm interpolation %r is not one of %s; using bilinear", arch, interp, INTERPOLATIONS)
        interp = "bilinear"
    return PreprocessSpec(resize=max(crop, int(math.floor(crop / crop_pct))), crop=crop,
                          mean=tuple(cfg.get("mean") or IMAGENET_MEAN), std=tuple(cfg.get("std") or IMAGENET_STD),
                          interpolation=interp)


def _get_parent(model: nn.Module, dotted: str) -> Tuple[nn.Module, str]:
    *parents, last = dotted.split(".")
    mod = model
    for p in parents:
        mod = getattr(mod, p) if not p.isdigit() else mod[int(p)]
    return mod, last


def head_of(model: nn.Module, arch: str) -> nn.Linear:
    if is_timm(arch) and hasattr(model, "get_classifier"):
        return model.get_classifier()
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


def _timm_cached_weights(arch: str) -> Optional[Path]:
    """The pretrained file timm would load for ``arch`` if it is already on disk (Hugging Face hub cache or
    $TORCH_HOME checkpoints), else None. Never downloads."""
    cfg = timm_cfg(arch)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, _, rev = hub_id.partition("@")
            for fname in (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"):
                if fname:
                    hit = try_to_load_from_cache(repo, fname, revision=rev or None)
                    if isinstance(hit, str) and os.path.isfile(hit):
                        return Path(hit)
    if cfg.get("url"):
        p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg["url"])
        if p.is_file():
            return p
    return None


def _build_timm(arch: str, num_classes: int, weights: str) -> nn.Module:
    """``timm.create_model(name, pretrained=False)`` with a fresh head, then the weights from a file: ``--weights
    PATH``, or for ``imagenet`` the file timm's own cache already holds. Nothing is downloaded at run time."""
    timm = _timm(arch)
    timm_cfg(arch)  # unknown names: a clear ValueError
    name = arch[len(TIMM_PREFIX):]
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if weights in ("none", "", None):
        return model
    if weights == "imagenet":
        cached = _timm_cached_weights(arch)
        if cached is None:
            cfg = timm_cfg(arch)
            raise WeightsError(
                f"no pretrained weights for {arch} on this machine (edgecls never downloads at run time; looked for "
                f"{cfg.get('hf_hub_id') or cfg.get('url') or name} in the Hugging Face hub cache and in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}).\n  Pass --weights PATH to a state dict in timm's "
                f"layout for {name} (e.g. ../shared/weights/efficientnet_lite0_imagenet_timm.pth for "
                f"tf_efficientnet_lite0), or --weights none to train from scratch."
            )
        path = cached
    else:
        path = Path(weights).expanduser()
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise WeightsError(f"--weights {path}: reading .safetensors needs the safetensors package") from e
        state = load_file(str(path))
    else:
        state = _state_dict_from_file(path)
    load_backbone(model, arch, state, str(path))
    return model


def build_model(arch: str, num_classes: int, weights: str = "none") -> nn.Module:
    """A torchvision (or ``timm:<name>``) classifier with a fresh ``num_classes`` head.
    ``weights``: imagenet | none | PATH."""
    import torchvision

    get_arch(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if is_joined(arch):
        from edgecls.reference.joined import build_joined

        return build_joined(arch, num_classes, weights)
    if is_timm(arch):
        return _build_timm(arch, num_classes, weights)
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
