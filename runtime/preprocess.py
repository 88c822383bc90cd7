"""The one preprocessing function. Evaluation, INT8 calibration, export parity and the camera loop all call it.

It reproduces torchvision's eval transform ``Resize(resize) → CenterCrop(crop) → ToTensor → Normalize`` on a PIL
image, without torch: Pillow does the resampling (its antialiased bilinear filter is what torchvision calls on a
PIL image; OpenCV's INTER_LINEAR differs by up to 99/255), numpy does the rest.

Speed: only the centre-crop region is resampled (``Image.resize(box=...)``), which gives the same pixels as
resizing the whole frame and cropping afterwards, at a fraction of the cost. BGR frames from OpenCV are resampled
as they are and their channels swapped on the small output (resampling is per channel, so this is exact). Arrays
reach Pillow through ``frombuffer`` on just the rows and columns the filter reads; PIL images (:func:`open_rgb`)
are resampled without a round trip through numpy; normalization writes straight into the output (no float
temporaries). Each of these is bit-identical to the plain ``fromarray → resize(box) → astype → normalize`` path.
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


def open_rgb(path: Union[str, os.PathLike]) -> Image.Image:
    """Read an image file as a decoded RGB PIL image (file closed), as torchvision's ImageFolder loader does.

    :func:`preprocess` / :func:`preprocess_one` take it as it is, which skips two full-frame copies (into numpy
    and back into Pillow) compared with :func:`load_image`; the pixels are the same.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return im if im.mode == "RGB" else im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image {os.fspath(path)!r}: {e}") from e


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, exactly as torchvision's ImageFolder loader does (PIL, convert RGB)."""
    return np.asarray(open_rgb(path))


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


def _float32_span(in_size: int, b0: float, b1: float, out_size: int, support: float) -> Tuple[int, int]:
    """First and one-past-last source index Pillow's resampler reads on one axis (its ``precompute_coeffs`` bounds:
    the box edges as float32, centres and rounding in double, C truncation), so a crop of the frame to that span
    feeds Pillow exactly the pixels it would have used."""
    in0, in1 = np.float32(b0), np.float32(b1)
    scale = float(np.float32(in1 - in0)) / out_size
    support = support * max(scale, 1.0)
    first = int(float(in0) + 0.5 * scale - support + 0.5)
    last = int(float(in0) + (out_size - 0.5) * scale + support + 0.5)
    return max(first, 0), min(last, in_size)


def _pil_region(arr: np.ndarray, box: Tuple[float, float, float, float], c: int) -> Tuple[Image.Image, tuple]:
    """A PIL image of only the part of ``arr`` that a bilinear ``resize((c, c), box=box)`` reads, and the box in its
    coordinates. Shifting the box by whole pixels keeps every float32 box edge, centre and weight Pillow computes
    (checked below: the shifted edges must be exact in float32, else the whole frame is used). The region is read
    straight from ``arr``'s buffer (``frombuffer`` with the frame's stride), so only it is copied into Pillow.
    """
    h, w = arr.shape[:2]
    margin = 2  # a little more than needed: Pillow's own bounds clamp inside it exactly as on the full frame
    x0, x1 = _float32_span(w, box[0], box[2], c, 1.0)
    y0, y1 = _float32_span(h, box[1], box[3], c, 1.0)
    x0, y0 = max(x0 - margin, 0), max(y0 - margin, 0)
    x1, y1 = min(x1 + margin, w), min(y1 + margin, h)
    shifted = (
        float(np.float32(box[0])) - x0, float(np.float32(box[1])) - y0,
        float(np.float32(box[2])) - x0, float(np.float32(box[3])) - y0,
    )
    # Pillow >= 13 resamples vertically first when the height shrinks much more than the width (judged on the
    # whole input), which a crop of a tall frame could change: tall frames are passed whole.
    if h > w or (x0, y0, x1, y1) == (0, 0, w, h) or any(float(np.float32(v)) != v for v in shifted):
        return Image.frombuffer("RGB", (w, h), arr, "raw", "RGB", 0, 1), box
    start = (y0 * w + x0) * 3
    view = memoryview(arr).cast("B")[start:]
    return Image.frombuffer("RGB", (x1 - x0, y1 - y0), view, "raw", "RGB", w * 3, 1), shifted


def resize_crop(image: ImageLike, spec: PreprocessSpec) -> np.ndarray:
    """Resize + centre crop to ``crop x crop``, uint8 HxWx3, channel order unchanged."""
    if isinstance(image, Image.Image):  # PIL input is resampled as it is: no round trip through numpy
        pil = image if image.mode == "RGB" else image.convert("RGB")
        arr = None
        w, h = pil.size
        if w < 1 or h < 1:
            raise ValueError(f"image is empty: size {pil.size}")
    else:
        pil = None
        arr = _as_uint8_hwc(image)
        h, w = arr.shape[:2]
    new_w, new_h = resized_size(w, h, spec.resize)
    left, top = crop_box(new_w, new_h, spec.crop)
    c = spec.crop
    if new_w < c or new_h < c:  # cannot happen with resize >= crop; kept as a guard
        raise ValueError(f"resized image {new_w}x{new_h} is smaller than crop {c}")
    if (new_w, new_h) == (w, h):
        if arr is None:
            return np.asarray(pil.crop((left, top, left + c, top + c)))
        return arr[top : top + c, left : left + c]
    if spec.interpolation != "bilinear":
        # Pillow's box resize matches resize-then-crop within 1/255 only for bilinear (measured on random sizes);
        # bicubic differs by up to ~19/255 and nearest picks other pixels, so those resize the whole image.
        if pil is None:
            pil = Image.fromarray(arr, mode="RGB")
        full = pil.resize((new_w, new_h), _PIL_FILTERS[spec.interpolation])
        return np.asarray(full)[top : top + c, left : left + c]
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + c) * sx, (top + c) * sy)
    if pil is None:
        pil, box = _pil_region(arr, box, c)
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
    if out is None:
        out = np.empty((3, small.shape[0], small.shape[1]), dtype=np.float32)
    # uint8 × float32 straight into ``out``: the same float32 arithmetic as astype-then-multiply, no temporaries
    np.multiply(small.transpose(2, 0, 1), scale[:, None, None], out=out)
    np.add(out, bias[:, None, None], out=out)
    return out


def preprocess(images: Sequence[ImageLike], spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """A batch of images → float32 NCHW ``(len(images), 3, crop, crop)``, ready for any backend."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) or isinstance(images, Image.Image):
        images = [images]
    batch = np.empty((len(images), 3, spec.crop, spec.crop), dtype=np.float32)
    for i, im in enumerate(images):
        preprocess_one(im, spec, bgr=bgr, out=batch[i])
    return batch
