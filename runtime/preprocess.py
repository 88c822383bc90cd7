"""The one preprocessing function. Evaluation, INT8 calibration, export parity and the camera loop all call it.

It reproduces torchvision's eval transform ``Resize(resize) → CenterCrop(crop) → ToTensor → Normalize`` on a PIL
image, without torch: Pillow does the resampling (its antialiased bilinear filter is what torchvision calls on a
PIL image; OpenCV's INTER_LINEAR differs by up to 99/255), numpy does the rest.

Speed: only the centre-crop region is resampled (``Image.resize(box=...)``), which gives the same pixels as
resizing the whole frame and cropping afterwards, at a fraction of the cost. BGR frames from OpenCV are resampled
as they are and their channels swapped on the small output (resampling is per channel, so this is exact).
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

from edgecls.runtime.spec import PreprocessSpec

ImageLike = Union[np.ndarray, "Image.Image"]

_PIL_FILTERS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "nearest": Image.NEAREST,
}


class ImageReadError(OSError):
    """An image file could not be read or decoded."""


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, exactly as torchvision's ImageFolder loader does (PIL, convert RGB)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image {os.fspath(path)!r}: {e}") from e


def resized_size(width: int, height: int, resize: int) -> Tuple[int, int]:
    """torchvision ``Resize(int)``: the shorter side becomes ``resize``, the longer keeps the aspect (truncated)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def crop_box(width: int, height: int, crop: int) -> Tuple[int, int]:
    """torchvision ``CenterCrop``: (left, top) of the crop, rounded as torchvision rounds."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def _as_uint8_hwc(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image is empty: shape {arr.shape}")
    return np.ascontiguousarray(arr)


def resize_crop(image: ImageLike, spec: PreprocessSpec) -> np.ndarray:
    """Resize + centre crop to ``crop x crop``, uint8 HxWx3, channel order unchanged."""
    arr = _as_uint8_hwc(image)
    h, w = arr.shape[:2]
    new_w, new_h = resized_size(w, h, spec.resize)
    left, top = crop_box(new_w, new_h, spec.crop)
    c = spec.crop
    if new_w < c or new_h < c:  # cannot happen with resize >= crop; kept as a guard
        raise ValueError(f"resized image {new_w}x{new_h} is smaller than crop {c}")
    if (new_w, new_h) == (w, h):
        return arr[top : top + c, left : left + c]
    pil = Image.fromarray(arr, mode="RGB")
    if spec.interpolation != "bilinear":
        # Pillow's box resize matches resize-then-crop within 1/255 only for bilinear (measured on random sizes);
        # bicubic differs by up to ~19/255 and nearest picks other pixels, so those resize the whole image.
        full = pil.resize((new_w, new_h), _PIL_FILTERS[spec.interpolation])
        return np.asarray(full)[top : top + c, left : left + c]
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + c) * sx, (top + c) * sy)
    out = pil.resize((c, c), _PIL_FILTERS[spec.interpolation], box=box)
    return np.asarray(out)


def _normalizer(spec: PreprocessSpec) -> Tuple[np.ndarray, np.ndarray]:
    std = np.asarray(spec.std, dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def preprocess_one(image: ImageLike, spec: PreprocessSpec, bgr: bool = False, out: np.ndarray = None) -> np.ndarray:
    """One image (RGB, or BGR with ``bgr=True`` as OpenCV decodes) → float32 CHW, normalized."""
    small = resize_crop(image, spec)
    if bgr:
        small = small[:, :, ::-1]
    scale, bias = _normalizer(spec)
    chw = small.transpose(2, 0, 1).astype(np.float32)
    if out is None:
        out = np.empty_like(chw)
    np.multiply(chw, scale[:, None, None], out=out)
    out += bias[:, None, None]
    return out


def preprocess(images: Sequence[ImageLike], spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """A batch of images → float32 NCHW ``(len(images), 3, crop, crop)``, ready for any backend."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) or isinstance(images, Image.Image):
        images = [images]
    batch = np.empty((len(images), 3, spec.crop, spec.crop), dtype=np.float32)
    for i, im in enumerate(images):
        preprocess_one(im, spec, bgr=bgr, out=batch[i])
    return batch
