"""Backbones joined in one network: ``--arch mobilenet_v2+timm:tf_efficientnet_lite0`` (any ``+``-joined list of
what ``--arch`` accepts).

One input, one output: the runtime preprocesses a photo once, with the *lead* backbone's preprocessing (the one
with the largest own input size; the first of those on a tie), and inside the network each branch turns that
tensor into what its own backbone expects: a per-channel affine (the lead's mean/std → the branch's) and, when its
own input size differs, a bilinear resize to it (with ``--image-size``, every branch's size scales in proportion). The branches' pooled features (each backbone's classifier input)
are concatenated and one ``nn.Linear`` (``model.head``) maps them to the classes, so everything that works off the
head's input features (the cached-feature head phase, temperature, sets, unknown, adding classes) sees one model.

``--weights`` for a joined arch: one entry per backbone, ``+``-joined in the order of ``--arch``
(``A.pth+B.pth``), each entry what ``--weights`` accepts for that backbone (imagenet, none, PATH); a single
``imagenet`` or ``none`` applies to every backbone.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from edgecls.core.errors import InputError

log = logging.getLogger(__name__)

JOIN = "+"


def is_joined(arch: str) -> bool:
    return JOIN in (arch or "")


def split_arch(arch: str) -> List[str]:
    """The backbones of a joined ``arch``; InputError on an empty part or a repeated backbone."""
    parts = [p.strip() for p in arch.split(JOIN)]
    if len(parts) < 2 or any(not p for p in parts):
        raise InputError(f"--arch {arch!r}: a joined arch is two or more backbones joined by '+', e.g. "
                         f"mobilenet_v2+timm:tf_efficientnet_lite0 (an empty part was given)")
    return parts


def split_weights(weights: Optional[str], archs: Sequence[str]) -> List[str]:
    """One weights entry per backbone: ``+``-joined in the order of the archs, or one imagenet/none for all."""
    w = weights if weights not in (None, "") else "none"
    if w in ("imagenet", "none"):
        return [w] * len(archs)
    parts = [p.strip() for p in w.split(JOIN)]
    if len(parts) != len(archs) or any(not p for p in parts):
        raise InputError(
            f"--weights {w!r} gives {len(parts)} entr{'y' if len(parts) == 1 else 'ies'} for the {len(archs)} joined "
            f"backbones {', '.join(archs)}: give one per backbone, '+'-joined in the same order "
            f"(e.g. --weights A.pth+B.pth; each imagenet, none or a PATH), or one imagenet/none for all")
    return parts


def lead_index(archs: Sequence[str]) -> int:
    """The backbone whose preprocessing the joined input uses: the largest own input size, first on a tie."""
    from edgecls.reference.models import preprocess_for

    crops = [preprocess_for(a).crop for a in archs]
    return max(range(len(archs)), key=lambda i: (crops[i], -i))


def joined_preprocess(arch: str, image_size: Optional[int] = None):
    """The joined input's :class:`~edgecls.runtime.spec.PreprocessSpec`: the lead backbone's (at ``image_size``)."""
    from edgecls.reference.models import preprocess_for

    archs = split_arch(arch)
    return preprocess_for(archs[lead_index(archs)], image_size)


class Branch(nn.Module):
    """One backbone of a joined model: re-normalize (and resize) the joined input, then its pooled features."""

    def __init__(self, arch: str, backbone: nn.Module, feature_dim: int, shared, own) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.size, self.lead_size = int(own.crop), int(shared.crop)
        scale = [s / o for s, o in zip(shared.std, own.std)]
        shift = [(m - om) / o for m, om, o in zip(shared.mean, own.mean, own.std)]
        self.renormalize = any(abs(s - 1) > 1e-7 for s in scale) or any(abs(b) > 1e-7 for b in shift)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def input_size(self, joined_size: int) -> int:
        """The branch's input size for a joined input of ``joined_size`` px: its own size at the lead's own size,
        in proportion otherwise (``--image-size``)."""
        return max(8, int(round(joined_size * self.size / self.lead_size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.input_size(int(x.shape[-1]))  # a constant once traced: the export's input size
        if size != x.shape[-1] or size != x.shape[-2]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if self.renormalize:
            x = x * self.scale + self.shift
        return self.backbone(x)


class JoinedModel(nn.Module):
    """``head(concat(branch(x) for branch in branches))``; ``head`` is the one classifier (an ``nn.Linear``)."""

    def __init__(self, branches: Sequence[Branch], num_classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.feature_dims = tuple(int(b.feature_dim) for b in branches)
        self.head = nn.Linear(sum(self.feature_dims), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _strip_head(model: nn.Module, arch: str) -> Tuple[nn.Module, int]:
    """``model`` with its classifier replaced by ``nn.Identity``, and the feature size; InputError when the
    classifier is not an ``nn.Linear`` over pooled features (nothing to join)."""
    from edgecls.reference.models import _get_parent, get_arch, head_of, is_timm

    head = head_of(model, arch)
    if not isinstance(head, nn.Linear):
        raise InputError(
            f"--arch {arch} cannot be joined: its classifier is a {type(head).__name__}, not an nn.Linear over "
            f"pooled features (joined backbones concatenate each one's classifier input)")
    dim = int(head.in_features)
    if is_timm(arch) and hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    else:
        parent, last = _get_parent(model, get_arch(arch).head)
        if last.isdigit():
            parent[int(last)] = nn.Identity()
        else:
            setattr(parent, last, nn.Identity())
    return model, dim


def build_joined(arch: str, num_classes: int, weights: Optional[str] = "none") -> JoinedModel:
    """The joined network: each backbone built and loaded as ``--arch``/``--weights`` alone would, its classifier
    dropped, one fresh ``nn.Linear`` over the concatenated features. Errors name the backbone at fault."""
    from edgecls.reference.models import WeightsError, build_model, get_arch, preprocess_for

    archs = split_arch(arch)
    for a in archs:
        try:
            get_arch(a)
        except ValueError as e:
            raise ValueError(f"backbone {a!r} of the joined --arch {arch}: {e}") from e
    ws = split_weights(weights, archs)
    shared = joined_preprocess(arch)
    branches = []
    for i, (a, w) in enumerate(zip(archs, ws)):
        try:
            model = build_model(a, num_classes, weights=w)
        except WeightsError as e:
            raise WeightsError(f"backbone {i + 1} of {len(archs)} ({a}) of the joined --arch: {e}") from e
        backbone, dim = _strip_head(model, a)
        branches.append(Branch(a, backbone, dim, shared, preprocess_for(a)))
    model = JoinedModel(branches, num_classes)
    log.info("joined %s: features %s = %d, input %d px (%s's preprocessing)", arch,
             "+".join(str(d) for d in model.feature_dims), sum(model.feature_dims), shared.crop,
             archs[lead_index(archs)])
    return model
