#!/usr/bin/env python
"""A confidence you can state (issue 13), measured in one run: conformal coverage, the precision guarantee, OOD.

1. **Conformal sets** (products28, 28 classes): the val logits of a checkpoint trained with the toolkit, split at
   random ``--splits`` times into calibration / test halves. Per α: empirical coverage on test (mean, min, max over
   splits; the acceptance band is [1−α, 1−α+0.03] on average) and the average set size, for LAC and APS.
2. **Guaranteed precision** (mobile, binary): the same re-splits; on each calibration half the temperature is
   fitted and the threshold certified (Clopper–Pearson + fixed-sequence Learn-then-Test), then judged on the test
   half. Printed per (target, δ): how often a promise was made, the share of splits whose test precision fell
   below the target (must be ≤ δ), and the same share for the point-estimate threshold the toolkit used before.
   Two logit sources: the checkpoint's val split (9 phones: the promise must refuse and say what it needs) and
   out-of-fold logits of a 5-fold cross-fit over all 1430 images (44 phones; head-only runs).
3. **Unknown products**: a model trained on 24 of the 28 product classes (head only), the other 4 as unknown:
   AUROC of the energy, max-logit and max-probability scores, and the rates at the fitted energy threshold.

Logits are computed once through the toolkit (``edgecls.train.train`` → ``edgecls.evaluation.evaluate``) and
cached in ``--cache`` (default /work/bench_cache/confidence); later runs only do the statistics (seconds).

    .venv/bin/python bench/bench_confidence.py                 # train/cache what is missing, then print
    .venv/bin/python bench/bench_confidence.py --prepare-only  # only the cached logits
    .venv/bin/python bench/bench_confidence.py --splits 1000 --json runs/bench/confidence.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
DEFAULT_CACHE = Path("/work/bench_cache/confidence")
CROSSFIT_FOLDS = 5
OOD_HELD_OUT = 4


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "data"), help="folder holding products28/ and mobile/")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="cached logits and the training runs behind them")
    p.add_argument("--splits", type=int, default=500, help="random calibration/test re-splits (>= 100)")
    p.add_argument("--alphas", default="0.05,0.10", help="conformal miscoverage levels")
    p.add_argument("--targets", default="0.95,0.90,0.80", help="precision targets of the guarantee")
    p.add_argument("--delta", type=float, default=0.10, help="stated failure probability of the guarantee")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepare-only", action="store_true", help="compute the cached logits, print nothing else")
    p.add_argument("--json", default=None, help="also write the numbers here")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------- cached logits


def _train(data: Path, run: Path, positive: Optional[str] = None, head_only: bool = False) -> Path:
    """``best.pt`` of a toolkit run (MobileNetV2 from the shared ImageNet backbone), trained once."""
    best = run / "best.pt"
    if best.is_file():
        return best
    from edgecls.train.config import RECIPES, TrainConfig
    from edgecls.train.trainer import train

    recipe = RECIPES["fast"].override(epochs=0) if head_only else RECIPES["fast"]
    cfg = TrainConfig(data=str(data), recipe=recipe, arch="mobilenet_v2", weights=str(WEIGHTS), out=str(run),
                      exist_ok=True, positive=positive, progress=False, seed=0)
    t0 = time.monotonic()
    train(cfg)
    logging.getLogger("bench").info("trained %s in %.0f s (load %s)", run.name, time.monotonic() - t0, _load())
    return best


def _logits(model: Path, folder: Path) -> Tuple[np.ndarray, np.ndarray, List[str], Tuple[str, ...]]:
    """(logits, labels, paths, classes) of an ImageFolder through the runtime path (``edgecls eval``)."""
    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    r = evaluate(EvalConfig(model=str(model), data=str(folder), out=None, workers=1))
    return np.asarray(r.logits, np.float64), np.asarray(r.labels), list(r.paths), r.spec.classes


def _save(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _link_tree(dst: Path, items: Sequence[Tuple[str, str]]) -> None:
    """``dst/<class>/<file>`` symlinks to ``(path, class)`` items."""
    for p, c in items:
        d = dst / c
        d.mkdir(parents=True, exist_ok=True)
        link = d / Path(p).name
        if not link.exists():
            link.symlink_to(p)


def _items(root: Path) -> List[Tuple[str, str]]:
    from edgecls.core.images import list_images

    return [(str(p), c.name) for c in sorted(root.iterdir()) if c.is_dir() for p in list_images(c)]


def cached_val(cache: Path, data: Path, name: str, positive: Optional[str]) -> Dict[str, np.ndarray]:
    """Val logits of the default recipe trained on ``data/name``."""
    f = cache / f"{name}_val.npz"
    if not f.is_file():
        best = _train(data / name, cache / "runs" / name, positive=positive)
        logits, y, _, classes = _logits(best, data / name / "val")
        _save(f, logits=logits, y=y, classes=np.asarray(classes))
    return dict(np.load(f))


def cached_crossfit(cache: Path, data: Path, name: str, positive: str) -> Dict[str, np.ndarray]:
    """Out-of-fold logits for every image of ``data/name`` (train + val): 5 head-only runs, stratified folds."""
    f = cache / f"{name}_crossfit.npz"
    if f.is_file():
        return dict(np.load(f))
    items = _items(data / name / "train") + _items(data / name / "val")
    rng = np.random.default_rng(0)
    fold = np.empty(len(items), dtype=np.int64)
    for c in sorted({c for _, c in items}):
        idx = np.array([i for i, (_, ci) in enumerate(items) if ci == c])
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % CROSSFIT_FOLDS
    logits: Optional[np.ndarray] = None
    y = np.empty(len(items), dtype=np.int64)
    for k in range(CROSSFIT_FOLDS):
        root = cache / "folds" / name / f"fold{k}"
        _link_tree(root / "train", [it for it, fk in zip(items, fold) if fk != k])
        _link_tree(root / "val", [it for it, fk in zip(items, fold) if fk == k])
        best = _train(root, cache / "runs" / f"{name}_fold{k}", positive=positive, head_only=True)
        lk, yk, paths, classes = _logits(best, root / "val")
        if logits is None:
            logits = np.empty((len(items), lk.shape[1]))
        where = {os.path.realpath(p): i for i, (p, _) in enumerate(items)}
        for row, lab, p in zip(lk, yk, paths):
            i = where[os.path.realpath(p)]
            logits[i], y[i] = row, lab
    _save(f, logits=logits, y=y, fold=fold, classes=np.asarray(classes))
    return dict(np.load(f))


def cached_ood(cache: Path, data: Path) -> Dict[str, np.ndarray]:
    """A head-only model on 24 of the 28 products28 classes (4 held out at random, seed 0): logits of the 24
    classes' val images (in catalog) and of every image of the 4 held-out classes (unknown)."""
    f = cache / "ood24.npz"
    if f.is_file():
        return dict(np.load(f))
    root = data / "products28"
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    held = sorted(np.random.default_rng(0).choice(classes, OOD_HELD_OUT, replace=False).tolist())
    kept = [c for c in classes if c not in held]
    tree = cache / "folds" / "ood24"
    for split in ("train", "val"):
        _link_tree(tree / split, [it for it in _items(root / split) if it[1] in kept])
        _link_tree(tree / "unknown", [it for it in _items(root / split) if it[1] in held])
    best = _train(tree, cache / "runs" / "ood24", head_only=True)
    lin, yin, _, cls = _logits(best, tree / "val")
    # the unknown images, scored by the 24-class model (their folders are not its classes: run the backend)
    from edgecls.evaluation.data import iter_batches
    from edgecls.evaluation.models import open_model

    unk = [(p, 0) for p, _ in _items(tree / "unknown")]
    opened = open_model(str(best), "cpu", None)
    try:
        lout = np.concatenate([opened.infer(x) for _, x in iter_batches(unk, opened.spec, 32, 1)])
    finally:
        opened.close()
    _save(f, logits_in=lin, y_in=yin, logits_out=np.asarray(lout, np.float64), classes=np.asarray(cls),
          held_out=np.asarray(held))
    return dict(np.load(f))


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("edgecls",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cache, data = Path(args.cache), Path(args.data)
    t0 = time.monotonic()
    p28 = cached_val(cache, data, "products28", None)
    mob = cached_val(cache, data, "mobile", "mobile")
    mob_cf = cached_crossfit(cache, data, "mobile", "mobile")
    ood = cached_ood(cache, data)
    logging.getLogger("bench").info("logits ready in %.0f s (load %s)", time.monotonic() - t0, _load())
    if args.prepare_only:
        return 0
    from bench_confidence_report import report  # noqa: E402  (the statistics, next to this file)

    out = report(args, p28, mob, mob_cf, ood)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
