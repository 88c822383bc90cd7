"""The facts every stage must agree on, as frozen dataclasses that round-trip through JSON.

A :class:`ModelSpec` travels with the model: inside ``best.pt`` (as a plain dict), in ``model.json`` beside an
export and in the ONNX ``metadata_props``. Loading validates it and names what is wrong and what is valid.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgecls.core.errors import InputError
from edgecls.runtime.confidence.fitted import ConfidenceSpec

SPEC_FORMAT = "edgecls.modelspec/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PRECISIONS = ("fp32", "fp16", "int8", "int8-qdq", "int8-cpu")
METADATA_KEY = "edgecls.spec"  # ONNX metadata_props key holding ModelSpec.to_json()
OUTPUTS = ("logits", "probs")  # what the model outputs: raw logits, or softmax(logits / temperature) in the graph


def sidecar_path(model_path: os.PathLike | str) -> Path:
    """The JSON sidecar of an artifact: same folder, same stem, ``.json`` (model.onnx → model.json)."""
    return Path(model_path).with_suffix(".json")


class SpecError(InputError):
    """A model spec or preprocessing spec is missing or invalid; the message says what and what is valid."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


@dataclass(frozen=True)
class PreprocessSpec:
    """torchvision's eval transform, written down: Resize(shorter side) → CenterCrop → /255 → Normalize.

    ``resize`` is the shorter-side size (torchvision ``Resize(int)``), ``crop`` the square centre crop.
    Channels are RGB, layout NCHW float32.
    """

    resize: int = 256
    crop: int = 224
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    color: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        _check(isinstance(self.crop, int) and self.crop >= 8, f"preprocess.crop must be an int >= 8, got {self.crop!r}")
        _check(
            isinstance(self.resize, int) and self.resize >= self.crop,
            f"preprocess.resize must be an int >= crop ({self.crop}), got {self.resize!r}",
        )
        _check(len(self.mean) == 3 and len(self.std) == 3, "preprocess.mean and .std must have 3 values (R, G, B)")
        _check(all(s > 0 for s in self.std), f"preprocess.std must be > 0, got {self.std}")
        _check(
            self.interpolation in INTERPOLATIONS,
            f"preprocess.interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}",
        )
        _check(self.color == "RGB", f"preprocess.color must be 'RGB', got {self.color!r}")
        _check(self.layout == "NCHW", f"preprocess.layout must be 'NCHW', got {self.layout!r}")

    @classmethod
    def for_image_size(cls, image_size: int) -> PreprocessSpec:
        """The ImageNet convention: crop ``image_size``, resize the shorter side to ``image_size * 256/224``."""
        return cls(resize=int(round(image_size * 256 / 224)), crop=int(image_size))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PreprocessSpec:
        _check(isinstance(d, dict), f"preprocess spec must be a mapping, got {type(d).__name__}")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        _check(not unknown, f"preprocess spec has unknown keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items()})


@dataclass(frozen=True)
class ModelSpec:
    """What a deployed classifier needs to know besides its weights."""

    arch: str
    classes: Tuple[str, ...]
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    positive: Optional[str] = None
    temperature: float = 1.0
    threshold: float = 0.5
    precision: str = "fp32"
    input_name: str = "input"
    output_name: str = "logits"
    output: str = "logits"  # "probs": the graph ends in softmax(logits / temperature) (export --variants probs)
    source_sha256: Optional[str] = None
    edgecls_version: str = ""
    # conformal scores, OOD threshold, precision guarantee fitted on this artifact's outputs (None: not fitted)
    confidence: Optional[ConfidenceSpec] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not self.edgecls_version:
            from edgecls import __version__

            object.__setattr__(self, "edgecls_version", __version__)
        _check(bool(self.arch), "spec.arch is empty")
        _check(len(self.classes) >= 2, f"spec.classes needs at least 2 classes, got {list(self.classes)}")
        _check(len(set(self.classes)) == len(self.classes), f"spec.classes has duplicates: {list(self.classes)}")
        _check(
            self.positive is None or self.positive in self.classes,
            f"spec.positive {self.positive!r} is not a class; valid: {list(self.classes)}",
        )
        t = float(self.temperature)
        _check(math.isfinite(t) and t > 0, f"spec.temperature must be a finite number > 0, got {self.temperature!r}")
        object.__setattr__(self, "temperature", t)
        th = float(self.threshold)
        _check(0.0 <= th <= 1.0, f"spec.threshold must be in [0, 1], got {self.threshold!r}")
        object.__setattr__(self, "threshold", th)
        _check(self.precision in PRECISIONS, f"spec.precision {self.precision!r} is not one of {PRECISIONS}")
        _check(self.output in OUTPUTS, f"spec.output {self.output!r} is not one of {OUTPUTS}")
        if isinstance(self.preprocess, dict):
            object.__setattr__(self, "preprocess", PreprocessSpec.from_dict(self.preprocess))
        if isinstance(self.confidence, dict):
            try:
                object.__setattr__(self, "confidence", ConfidenceSpec.from_dict(self.confidence))
            except InputError as e:
                raise SpecError(str(e)) from e
        g = self.confidence.guarantee if self.confidence is not None else None
        _check(g is None or g.positive == self.positive,
               f"spec.confidence.guarantee is for {getattr(g, 'positive', None)!r}, spec.positive is {self.positive!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> Optional[int]:
        return None if self.positive is None else self.classes.index(self.positive)

    @property
    def input_shape(self) -> Tuple[Optional[int], int, int, int]:
        """NCHW with a dynamic batch (None)."""
        c = self.preprocess.crop
        return (None, 3, c, c)

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["preprocess"] = self.preprocess.to_dict()
        if self.confidence is not None:
            d["confidence"] = self.confidence.to_dict()
        else:  # specs without it read as before
            del d["confidence"]
        if self.output == "logits":  # the default stays out: specs of plain exports read as before
            del d["output"]
        d["format"] = SPEC_FORMAT
        return d

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ModelSpec:
        _check(isinstance(d, dict), f"model spec must be a mapping, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", SPEC_FORMAT)
        _check(fmt == SPEC_FORMAT, f"model spec format {fmt!r} is not supported; expected {SPEC_FORMAT!r}")
        required = ("arch", "classes", "preprocess")
        missing = [k for k in required if k not in d]
        _check(not missing, f"model spec is missing {missing}; required keys: {list(required)}")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        _check(not unknown, f"model spec has unknown keys {unknown}; valid keys: {sorted(valid)}")
        d["preprocess"] = PreprocessSpec.from_dict(d["preprocess"])
        d["classes"] = tuple(d["classes"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"model spec is not valid JSON: {e}") from e
        return cls.from_dict(d)
