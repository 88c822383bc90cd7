"""The runtime's one preprocessing function equals torchvision's eval transform within 1/255 per pixel.

torchvision: PIL image → Resize(resize) → CenterCrop(crop) → ToTensor → Normalize (what training evaluated with).
Compared in pixel units (un-normalized), on real JPEGs from ../shared where present and on generated images of
odd sizes, aspect ratios and modes (greyscale, RGBA, palette, tiny), so it runs without ../shared too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.runtime.preprocess import ImageReadError, load_image, preprocess, preprocess_one
from edgecls.runtime.spec import PreprocessSpec

torchvision = pytest.importorskip("torchvision")
from torchvision import transforms as T  # noqa: E402

TOL = 1.0 / 255 + 1e-6
SPECS = [
    PreprocessSpec(),  # 256 → 224, bilinear (the default)
    PreprocessSpec(resize=36, crop=32),
    PreprocessSpec(resize=73, crop=64, interpolation="bicubic"),
    PreprocessSpec(resize=224, crop=224),  # resize == crop
    PreprocessSpec(resize=40, crop=32, interpolation="nearest"),
]
_TV_INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
              "nearest": T.InterpolationMode.NEAREST}


def tv_transform(spec: PreprocessSpec):
    return T.Compose([
        T.Resize(spec.resize, interpolation=_TV_INTERP[spec.interpolation]),
        T.CenterCrop(spec.crop),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


def to_pixels(chw: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Normalized CHW → [0, 1] pixel units."""
    std = np.asarray(spec.std, np.float64)[:, None, None]
    mean = np.asarray(spec.mean, np.float64)[:, None, None]
    return chw.astype(np.float64) * std + mean


def assert_matches_torchvision(path: Path, spec: PreprocessSpec) -> float:
    with Image.open(path) as im:
        want = tv_transform(spec)(im.convert("RGB")).numpy()  # torchvision's ImageFolder loader converts to RGB
    got = preprocess_one(load_image(path), spec)
    assert got.shape == want.shape == (3, spec.crop, spec.crop) and got.dtype == np.float32
    diff = np.abs(to_pixels(got, spec) - to_pixels(want, spec)).max()
    assert diff <= TOL, f"{path.name} ({Image.open(path).size}, {spec}): max diff {diff * 255:.2f}/255"
    return diff


def _structured(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) * 7) % 256], -1)
    arr = arr + rng.normal(0, 25, size=arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("prep")
    out = []
    sizes = [(640, 480), (480, 640), (257, 123), (123, 257), (300, 300), (1000, 37), (224, 224), (255, 256),
             (31, 29), (7, 5), (1, 1), (2, 300)]
    for i, (w, h) in enumerate(sizes):
        p = d / f"rgb_{w}x{h}.jpg"
        Image.fromarray(_structured(w, h, i)).save(p, quality=90)
        out.append(p)
    grey = d / "grey_333x250.jpg"
    Image.fromarray(_structured(333, 250, 99)[:, :, 0]).save(grey, quality=90)  # mode L JPEG
    rgba = d / "rgba_120x200.png"
    a = np.dstack([_structured(120, 200, 5), np.linspace(0, 255, 120 * 200).reshape(200, 120).astype(np.uint8)])
    Image.fromarray(a, "RGBA").save(rgba)
    pal = d / "palette_90x60.png"
    Image.fromarray(_structured(90, 60, 6)).convert("P").save(pal)
    cmyk = d / "cmyk_100x80.jpg"
    Image.fromarray(_structured(100, 80, 7)).convert("CMYK").save(cmyk, quality=90)
    return out + [grey, rgba, pal, cmyk]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.resize}-{s.crop}-{s.interpolation}")
def test_generated_images_match_torchvision(generated, spec):
    modes = {Image.open(p).mode for p in generated}
    assert {"RGB", "L", "RGBA", "P", "CMYK"} <= modes
    for p in generated:
        assert_matches_torchvision(p, spec)


@pytest.mark.shared
def test_real_jpegs_match_torchvision(shared_mobile):
    files = sorted((shared_mobile / "val").rglob("*.jpg"))
    by_mode = {}
    for p in files:
        with Image.open(p) as im:
            by_mode.setdefault(im.mode, []).append((im.size, p))
    assert "L" in by_mode, "expected greyscale JPEGs in the shared val set"
    picked = [p for _, p in by_mode["L"][:4]]
    rgb = sorted(by_mode["RGB"], key=lambda sp: sp[0][0] / sp[0][1])  # by aspect ratio
    picked += [p for _, p in rgb[:: max(1, len(rgb) // 12)]]
    sizes = {Image.open(p).size for p in picked}
    assert len(sizes) >= 5
    for p in picked:
        for spec in (SPECS[0], SPECS[1]):
            assert_matches_torchvision(p, spec)


def test_bgr_equals_rgb_on_reversed_channels_and_inputs_agree(generated):
    spec = SPECS[0]
    for p in generated[:6]:
        rgb = load_image(p)
        a = preprocess_one(rgb, spec)
        b = preprocess_one(np.ascontiguousarray(rgb[:, :, ::-1]), spec, bgr=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, preprocess_one(Image.open(p), spec))  # PIL input, any mode
    # batch == stacked singles; greyscale 2-D arrays and RGBA arrays are accepted
    imgs = [load_image(p) for p in generated[:3]]
    np.testing.assert_array_equal(preprocess(imgs, spec), np.stack([preprocess_one(i, spec) for i in imgs]))
    g = _structured(50, 40, 1)[:, :, 0]
    np.testing.assert_array_equal(preprocess_one(g, spec), preprocess_one(np.dstack([g, g, g]), spec))
    rgba = np.dstack([_structured(50, 40, 2), np.full((40, 50), 9, np.uint8)])
    np.testing.assert_array_equal(preprocess_one(rgba, spec), preprocess_one(rgba[:, :, :3], spec))


def test_small_images_are_upsampled_like_torchvision(tmp_path):
    """Images smaller than the crop are resized up (shorter side → resize) before cropping, as torchvision does."""
    for w, h in ((10, 14), (3, 200), (100, 20)):
        p = tmp_path / f"small_{w}x{h}.png"
        Image.fromarray(_structured(w, h, w)).save(p)
        for spec in SPECS:
            assert_matches_torchvision(p, spec)


def test_bad_inputs_are_refused(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageReadError):
        load_image(bad)
    with pytest.raises(TypeError):
        preprocess_one(np.zeros((4, 4, 3), np.float32), SPECS[0])
    with pytest.raises(ValueError):
        preprocess_one(np.zeros((4, 4, 2), np.uint8), SPECS[0])
