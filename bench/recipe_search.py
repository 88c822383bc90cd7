"""One products28 fine-tuning run per call, recipe fields given as JSON: per-epoch accuracy on *all* val images
(``calib_fraction`` 0, so epoch 0 = the frozen linear probe and every later epoch are judged on the same 270
held-out images), wall-clock seconds, appended as one JSON line. The recipe search behind bench/backbones.md.

    /work/bin/heavy .venv/bin/python bench/recipe_search.py --arch mobilenet_v2 \\
        --weights ../shared/weights/mobilenet_v2_imagenet_features.pth \\
        --set '{"epochs": 4, "bn_eval": true, "lr": 0.003, "scale": [0.25, 1]}' --out /work/runs21/search.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "products28"))
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"))
    p.add_argument("--recipe", default="fast")
    p.add_argument("--teacher-arch", default=None)
    p.add_argument("--teacher-weights", default="imagenet")
    p.add_argument("--set", default="{}", help="JSON: recipe fields to override")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--work", default="/work/runs21/search")
    p.add_argument("--out", default="/work/runs21/search.jsonl")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from edgecls.train.config import TrainConfig, get_recipe
    from edgecls.train.trainer import train

    changes = json.loads(a.set)
    if "scale" in changes:
        changes["scale"] = tuple(changes["scale"])
    recipe = get_recipe(a.recipe).override(**changes)
    if "image_size" not in changes and a.arch.startswith("timm:"):
        from edgecls.reference.models import preprocess_for

        recipe = recipe.override(image_size=preprocess_for(a.arch).crop)
    cfg = TrainConfig(data=a.data, recipe=recipe, arch=a.arch, weights=a.weights, seed=a.seed, calib_fraction=0.0,
                      teacher_arch=a.teacher_arch, teacher_weights=a.teacher_weights,
                      project=a.work, name=(a.tag or "run"), progress=False)
    t = time.monotonic()
    res = train(cfg)
    hist = [{"epoch": r["epoch"], "val_acc": round(float(r["val_acc"]), 4), "elapsed_s": r["elapsed_s"]}
            for r in res.history]
    row = {"tag": a.tag, "arch": a.arch, "teacher": a.teacher_arch, "teacher_info": res.summary.get("head", {}).get(
               "teacher") if isinstance(res.summary.get("head"), dict) else None, "recipe": a.recipe, "set": json.loads(a.set), "seed": a.seed,
           "probe": hist[0]["val_acc"], "last": hist[-1]["val_acc"], "best_epoch": res.best_epoch,
           "seconds": round(time.monotonic() - t, 1), "history": hist, "load1": os.getloadavg()[0],
           "cpu": platform.processor() or platform.machine(), "run": str(res.run_dir)}
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
