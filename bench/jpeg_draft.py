"""Does JPEG draft mode (DCT-domain downscaling while decoding, ``Image.draft``) keep parity with training?

Training and every other stage see torchvision's pixels: the full-size decode, then ``Resize(resize)`` (antialiased
bilinear) and ``CenterCrop(crop)``. Draft mode decodes a large JPEG at 1/2, 1/4 or 1/8 scale (still at least the
resize target), then resizes. This script measures the largest per-pixel difference of the two against
torchvision's pixels, in the units of ``tests/test_preprocess.py`` (its tolerance: 1/255), on generated JPEGs of
phone-photo sizes. Prints one row per size and scale.

    python bench/jpeg_draft.py [--spec 256,224]
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image


def _photo(w: int, h: int, seed: int) -> bytes:
    """A photo-like JPEG: smooth gradients, edges and sensor-like noise, quality 90."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (np.sin(xx / 37.0) + np.cos(yy / 23.0)) * 60 + 120], -1)
    base[(xx // 97 + yy // 61) % 3 == 0] *= 0.55  # hard edges
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    import torch  # noqa: F401  (torchvision needs it)
    from torchvision import transforms as T

    from edgecls.runtime.preprocess import preprocess_one, resized_size
    from edgecls.runtime.spec import PreprocessSpec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="256,224", help="RESIZE,CROP")
    args = ap.parse_args()
    resize, crop = (int(v) for v in args.spec.split(","))
    spec = PreprocessSpec(resize=resize, crop=crop)
    tv = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    std = np.asarray(spec.std)[:, None, None]
    mean = np.asarray(spec.mean)[:, None, None]

    def pixels(chw):
        return np.asarray(chw, np.float64) * std + mean

    print(f"spec resize {resize} crop {crop}; tolerance of tests/test_preprocess.py: 1/255 = 1.00")
    print(f"{'size':>11} {'scale':>6} {'decoded':>11} {'max diff /255':>14} {'mean diff /255':>15} "
          f"{'full ms':>8} {'draft ms':>9}")
    for i, (w, h) in enumerate([(1000, 750), (2000, 1500), (4032, 3024), (3024, 4032), (8000, 6000)]):
        data = _photo(w, h, i)
        with Image.open(io.BytesIO(data)) as im:
            want = pixels(tv(im.convert("RGB")).numpy())
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            full = pixels(preprocess_one(im.convert("RGB"), spec))
        t_full = (time.perf_counter() - t0) * 1e3
        base = np.abs(full - want).max() * 255
        print(f"{w:>5}x{h:<5} {'1':>6} {f'{w}x{h}':>11} {base:>14.2f} {np.abs(full - want).mean() * 255:>15.3f} "
              f"{t_full:>8.1f} {'':>9}")
        rw, rh = resized_size(w, h, resize)
        for scale in (2, 4, 8):
            if w // scale < rw or h // scale < rh:
                continue
            t0 = time.perf_counter()
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (w // scale, h // scale))
                got = pixels(preprocess_one(im.convert("RGB"), spec))
                size = im.size
            t_draft = (time.perf_counter() - t0) * 1e3
            d = np.abs(got - want)
            print(f"{'':>11} {f'1/{scale}':>6} {f'{size[0]}x{size[1]}':>11} {d.max() * 255:>14.2f} "
                  f"{d.mean() * 255:>15.3f} {'':>8} {t_draft:>9.1f}")


if __name__ == "__main__":
    main()
