"""Frozen features of products28 (train + val) through joined networks, cached to disk for bench/bench_joined.py.

Each *view* is one joined network (edgecls.reference.joined) run on the runtime preprocessing of its lead backbone;
every branch's features are saved as ``<out>/<view>/<branch>.npz`` (train, val, their labels). The three views
give each backbone at its own preprocessing (the branch that is its view's lead, or that needs no resize or
re-normalization) and at the other views' shared inputs:

    pair224    mobilenet_v2 + lite0, input = MobileNetV2's (224/256 bilinear, ImageNet mean/std)
    lite0lead  lite0 + mobilenet_v2, input = Lite0's (224/256 bicubic, mean = std = 0.5)
    triple260  mobilenet_v2 + lite0 + lite2, input = Lite2's (260/292 bicubic, 0.5): the 224 branches resized in graph

    /work/bin/cpu timeout 1500 .venv/bin/python bench/joined_features.py --out /work/cache_joined
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
W = SHARED / "weights"
BACKBONES = {  # short name -> (--arch, --weights)
    "mnv2": ("mobilenet_v2", W / "mobilenet_v2_imagenet_features.pth"),
    "lite0": ("timm:tf_efficientnet_lite0", W / "efficientnet_lite0_imagenet_timm.pth"),
    "lite2": ("timm:tf_efficientnet_lite2", W / "efficientnet_lite2_imagenet_timm.pth"),
}
VIEWS = {"pair224": ("mnv2", "lite0"), "lite0lead": ("lite0", "mnv2"), "triple260": ("mnv2", "lite0", "lite2")}


def joined_arch(names) -> str:
    return "+".join(BACKBONES[n][0] for n in names)


def joined_weights(names) -> str:
    return "+".join(str(BACKBONES[n][1]) for n in names)


def extract(view: str, data: Path, out: Path, batch: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    from edgecls.reference.models import build_model, preprocess_for
    from edgecls.train.data import EvalDataset, collate_skip, discover

    names = VIEWS[view]
    split = discover(data)
    arch = joined_arch(names)
    model = build_model(arch, len(split.classes), joined_weights(names)).eval()
    spec = preprocess_for(arch)
    dims = np.cumsum((0,) + model.feature_dims)
    res = {}
    for part in ("train", "val"):
        items = list(getattr(split, part))
        loader = DataLoader(EvalDataset(items, spec), batch_size=batch, shuffle=False, num_workers=0,
                            collate_fn=collate_skip)
        t = time.monotonic()
        feats, ys = [], []
        with torch.inference_mode():
            for b in loader:
                if b.bad:
                    raise SystemExit(f"unreadable images: {b.bad}")
                feats.append(model.features(b.x.contiguous(memory_format=torch.channels_last)).numpy())
                ys.append(b.y.numpy())
        res[part] = (np.concatenate(feats), np.concatenate(ys))
        logging.info("%s %s: %d images in %.1fs", view, part, len(items), time.monotonic() - t)
    (out / view).mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        sl = slice(int(dims[i]), int(dims[i + 1]))
        np.savez(out / view / f"{n}.npz", train=res["train"][0][:, sl], val=res["val"][0][:, sl],
                 y_train=res["train"][1], y_val=res["val"][1], classes=np.array(split.classes),
                 spec=np.array(repr(spec)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "products28"))
    p.add_argument("--out", default="/work/cache_joined")
    p.add_argument("--views", default=",".join(VIEWS))
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    import torch

    torch.set_num_threads(2)
    for v in a.views.split(","):
        if all((Path(a.out) / v / f"{n}.npz").is_file() for n in VIEWS[v]):
            logging.info("%s: cached", v)
            continue
        extract(v, Path(a.data), Path(a.out), a.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
