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
    p.add_argument("--splits", type=int, default=200, help="random calibration/test re-splits (>= 100)")
    p.add_argument("--alphas", default="0.05,0.10", help="conformal miscoverage levels")
    p.add_argument("--targets", default="0.95,0.90,0.85,0.80", help="precision targets of the guarantee")
    p.add_argument("--delta", type=float, default=0.10, help="stated failure probability of the guarantee")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepare-only", action="store_true", help="compute the cached logits, print nothing else")
    p.add_argument("--val-recipe", default="fast", choices=("fast", "head"),
                   help="recipe of the products28 / mobile runs behind the val logits: the default (fast) or its head "
                   "phase only (a contended CPU: the fine-tuning epochs take an hour each)")
    p.add_argument("--stages", default="products28,mobile,crossfit,ood",
                   help="with --prepare-only: which cached logits to compute (several processes can share the work)")
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


def cached_val(cache: Path, data: Path, name: str, positive: Optional[str], recipe: str = "fast"
               ) -> Dict[str, np.ndarray]:
    """Val logits of a toolkit run on ``data/name`` (the default recipe, or its head phase only)."""
    f = cache / f"{name}_val.npz"
    if not f.is_file():
        run = cache / "runs" / (name if recipe == "fast" else f"{name}_head")
        best = _train(data / name, run, positive=positive, head_only=recipe == "head")
        logits, y, _, classes = _logits(best, data / name / "val")
        rows = (run / "metrics.csv").read_text().splitlines()[1:] if (run / "metrics.csv").is_file() else []
        epoch = int(rows[-1].split(",")[0]) if rows else -1
        _save(f, logits=logits, y=y, classes=np.asarray(classes), recipe=np.asarray(recipe),
              epochs_run=np.asarray(epoch))
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


# ------------------------------------------------------------------------------------------- statistics


def _halves(rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return perm[: n // 2], perm[n // 2:]


def _temperature(logits: np.ndarray, y: np.ndarray) -> float:
    from edgecls.train.calibrate import fit_temperature  # the toolkit's own fit (numpy), as training does

    return fit_temperature(logits, y)


def bench_conformal(d: Dict[str, np.ndarray], alphas: Sequence[float], splits: int, seed: int) -> Dict[str, Any]:
    """Coverage and set size over random calibration/test halves (temperature re-fitted on each half)."""
    from edgecls.runtime.confidence import ConformalFit
    from edgecls.runtime.confidence.conformal import coverage_and_size, quantile_index
    from edgecls.runtime.metrics import softmax

    logits, y = d["logits"], d["y"]
    rng = np.random.default_rng(seed)
    rows: Dict[Tuple[str, float], List[Tuple[float, float]]] = {}
    for _ in range(splits):
        cal, test = _halves(rng, len(y))
        t = _temperature(logits[cal], y[cal])
        pc, pt = softmax(logits[cal], t), softmax(logits[test], t)
        for method in ("lac", "aps"):
            for a in alphas:
                fit = ConformalFit.fit(pc, y[cal], method, 1 - a)
                sets = fit.sets(pt)
                sizes = sets.sum(axis=1)
                rows.setdefault((method, a), []).append(
                    coverage_and_size(sets, y[test]) + (float(np.mean(sizes == 1)), float(np.mean(sizes == 0))))
    n_cal = len(y) // 2
    out = {"n": int(len(y)), "classes": int(logits.shape[1]), "calibration": n_cal, "test": int(len(y) - n_cal),
           "splits": splits, "accuracy": float(np.mean(logits.argmax(1) == y)), "rows": []}
    for (method, a), vals in rows.items():
        cov = np.array([v[0] for v in vals])
        size = np.array([v[1] for v in vals])
        k = quantile_index(n_cal, a)
        out["rows"].append({
            "method": method, "alpha": a, "target": 1 - a, "expected": min(1.0, k / (n_cal + 1)),
            "coverage_mean": float(cov.mean()), "coverage_min": float(cov.min()), "coverage_max": float(cov.max()),
            "set_size_mean": float(size.mean()),
            "singletons": float(np.mean([v[2] for v in vals])), "empty": float(np.mean([v[3] for v in vals])),
            "in_band": bool(1 - a <= cov.mean() <= 1 - a + 0.03) if method == "lac" else None,
        })
    return out


def bench_guarantee(d: Dict[str, np.ndarray], positive: str, targets: Sequence[float], delta: float, splits: int,
                    seed: int) -> List[Dict[str, Any]]:
    """Per target: how often a promise is made on the calibration half and how often the test half breaks it."""
    from edgecls.runtime.confidence import ConfidenceSettings, fit_confidence, ood_scores
    from edgecls.runtime.confidence.guarantee import point_threshold
    from edgecls.runtime.metrics import softmax

    logits, y = d["logits"], d["y"]
    classes = [str(c) for c in d["classes"]]
    k = classes.index(positive)
    rows = []
    for target in targets:
        rng = np.random.default_rng(seed)
        made = broken = point_broken = 0
        recalls, needed = [], []
        for _ in range(splits):
            cal, test = _halves(rng, len(y))
            t = _temperature(logits[cal], y[cal])
            sc, st = softmax(logits[cal], t)[:, k], softmax(logits[test], t)[:, k]
            # what training fits on its calibration split (the same function), then the runtime's "yes" on test
            conf = fit_confidence(logits[cal], y[cal], classes, temperature=t, positive=positive,
                                  settings=ConfidenceSettings(target_precision=target, delta=delta))
            g = conf.guarantee
            known = ~conf.ood.unknown(ood_scores(logits[test], conf.ood.kind))
            pt_thr = point_threshold(sc, y[cal] == k, target)[0] if np.any(y[cal] == k) else 0.5
            for thr, promised in ((g.threshold, g.certified), (pt_thr, None)):
                acc = (st >= thr) & (known if promised is not None else True)
                prec = float(np.mean(y[test][acc] == k)) if acc.any() else 1.0  # nothing accepted: no false yes
                if promised is None:
                    point_broken += prec < target
                elif promised:
                    made += 1
                    broken += prec < target
                    recalls.append(float(np.mean(acc[y[test] == k])) if np.any(y[test] == k) else float("nan"))
            if not g.certified and g.positives_needed is not None:
                needed.append(g.positives_needed)
        rows.append({
            "target": target, "delta": delta, "splits": splits, "n": int(len(y)), "positives": int(np.sum(y == k)),
            "promised": made / splits, "failed": broken / splits, "failed_ok": broken / splits <= delta,
            "failed_when_promised": broken / made if made else None,
            "recall_when_promised": float(np.nanmedian(recalls)) if recalls else None,
            "point_estimate_failed": point_broken / splits,
            "positives_needed_median": float(np.median(needed)) if needed else None,
        })
    return rows


def bench_ood(d: Dict[str, np.ndarray], splits: int, seed: int, accept: float = 0.95) -> Dict[str, Any]:
    """AUROC of each OOD score, and the rates at the energy threshold fitted on half of the in-catalog images."""
    from edgecls.runtime.confidence import OODFit, auroc, ood_scores

    lin, lout = d["logits_in"], d["logits_out"]
    out: Dict[str, Any] = {"in_catalog": int(len(lin)), "unknown": int(len(lout)),
                           "held_out": [str(c) for c in d["held_out"]],
                           "accuracy_in": float(np.mean(lin.argmax(1) == d["y_in"])), "auroc": {}}
    for kind in ("energy", "max_logit", "msp"):
        out["auroc"][kind] = auroc(ood_scores(lin, kind), ood_scores(lout, kind))
    rng = np.random.default_rng(seed)
    flagged_in, flagged_out = [], []
    for _ in range(splits):
        cal, test = _halves(rng, len(lin))
        fit = OODFit.fit(lin[cal], "energy", accept)
        fi, fo = fit.rates(ood_scores(lin[test], "energy"), ood_scores(lout, "energy"))
        flagged_in.append(fi)
        flagged_out.append(fo)
    out.update(accept=accept, in_flagged_mean=float(np.mean(flagged_in)),
               unknown_flagged_mean=float(np.mean(flagged_out)))
    return out


def _print_tables(res: Dict[str, Any]) -> None:
    c = res["conformal"]
    print(f"\n1. conformal sets, products28 val of a toolkit checkpoint ({c['recipe']}; {c['n']} images, "
          f"{c['classes']} classes, top-1 {c['accuracy']:.3f}): "
          f"{c['splits']} random splits into {c['calibration']} calibration / {c['test']} test images")
    print(f"{'method':<7}{'1-α':>6}{'expected':>10}{'coverage mean':>15}{'min':>8}{'max':>8}{'avg set':>9}"
          f"{'one label':>11}{'empty':>7}{'in [1-α, 1-α+0.03]':>20}")
    for r in sorted(c["rows"], key=lambda r: (r["method"] != "lac", r["alpha"])):
        print(f"{r['method']:<7}{r['target']:>6.2f}{r['expected']:>10.4f}{r['coverage_mean']:>15.4f}"
              f"{r['coverage_min']:>8.3f}{r['coverage_max']:>8.3f}{r['set_size_mean']:>9.3f}"
              f"{100 * r['singletons']:>10.1f}%{100 * r['empty']:>6.1f}%"
              f"{'-' if r['in_band'] is None else 'yes' if r['in_band'] else 'NO':>20}")
    print("   (expected: k/(n+1), k = ceil((n+1)(1-α)), what split conformal gives on average. LAC is what the toolkit "
          "serves; an empty LAC set is 'uncertain'. APS never serves an empty set, so it over-covers when the top "
          "label alone is right more often than 1-α)")
    for name, rows in res["guarantee"].items():
        r0 = rows[0]
        print(f"\n2. precision promise, {name} ({r0['n']} images, {r0['positives']} 'mobile'): {r0['splits']} "
              f"random calibration/test halves, δ = {r0['delta']}")
        print(f"{'target':>7}{'promised':>10}{'test prec < target':>20}{'≤ δ':>5}{'recall (promised)':>19}"
              f"{'point estimate < target':>25}{'positives needed':>18}")
        for r in rows:
            rec = "-" if r["recall_when_promised"] is None else f"{r['recall_when_promised']:.3f}"
            need = "-" if r["positives_needed_median"] is None else f"{r['positives_needed_median']:.0f}"
            print(f"{r['target']:>7.2f}{100 * r['promised']:>9.1f}%{100 * r['failed']:>19.1f}%"
                  f"{'yes' if r['failed_ok'] else 'NO':>5}{rec:>19}{100 * r['point_estimate_failed']:>24.1f}%"
                  f"{need:>18}")
    o = res["ood"]
    print(f"\n3. unknown products: head-only MobileNetV2 on 24 products28 classes (val top-1 {o['accuracy_in']:.3f}); "
          f"held out {', '.join(o['held_out'])}: {o['in_catalog']} in-catalog val images vs {o['unknown']} unknown")
    print("   AUROC " + "  ".join(f"{k} {v:.3f}" for k, v in o["auroc"].items())
          + f"   | energy threshold at {100 * o['accept']:g} % acceptance (fitted on half the in-catalog images): "
          f"{100 * o['in_flagged_mean']:.1f} % of the other half flagged, {100 * o['unknown_flagged_mean']:.1f} % "
          "of unknown flagged")


def _recipe(d: Dict[str, np.ndarray]) -> str:
    r = str(d.get("recipe", "fast"))
    return "default recipe" if r == "fast" else "head phase only"


def report(args: argparse.Namespace, p28, mob, mob_cf, ood) -> Dict[str, Any]:
    alphas = [float(a) for a in args.alphas.split(",")]
    targets = [float(t) for t in args.targets.split(",")]
    if args.splits < 100:
        raise SystemExit("--splits must be >= 100 (the acceptance asks for at least 100 re-splits)")
    t0 = time.monotonic()
    res = {
        "load": _load(),
        "conformal": dict(bench_conformal(p28, alphas, args.splits, args.seed), recipe=_recipe(p28)),
        "guarantee": {
            f"mobile val (toolkit checkpoint, {_recipe(mob)})": bench_guarantee(
                mob, "mobile", targets, args.delta, args.splits, args.seed),
            "mobile cross-fit (5 head-only folds, all 1430 images)": bench_guarantee(
                mob_cf, "mobile", targets, args.delta, args.splits, args.seed),
        },
        "ood": bench_ood(ood, args.splits, args.seed),
    }
    res["seconds"] = round(time.monotonic() - t0, 1)
    _print_tables(res)
    print(f"\n(statistics in {res['seconds']} s; load average {res['load']} on {os.cpu_count()} CPUs)")
    return res


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
    stages = set(args.stages.split(",")) if args.prepare_only else {"products28", "mobile", "crossfit", "ood"}
    p28 = cached_val(cache, data, "products28", None, args.val_recipe) if "products28" in stages else None
    mob = cached_val(cache, data, "mobile", "mobile", args.val_recipe) if "mobile" in stages else None
    mob_cf = cached_crossfit(cache, data, "mobile", "mobile") if "crossfit" in stages else None
    ood = cached_ood(cache, data) if "ood" in stages else None
    logging.getLogger("bench").info("logits ready in %.0f s (load %s)", time.monotonic() - t0, _load())
    if args.prepare_only:
        return 0
    logging.getLogger("edgecls").setLevel(logging.ERROR)  # one warning per perfectly separated half is noise here
    out = report(args, p28, mob, mob_cf, ood)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
