#!/usr/bin/env python
"""Proof that the promise holds on the mission's own data (issue 19): the head-phase model on cached MobileNetV2
features of ../shared/data/mobile, re-sampled ``--repeats`` times (>= 200).

Each repeat splits the 1430 labelled images (44 phones) at random, per class, into a *pool* (``--pool`` share: the
labelled images a user has) and a *test* part outside everything used. In the pool, 80 % are "train" and 20 %
"val" as ``edgecls train`` sees them; the deployed head is fitted on train (class-weighted L-BFGS, L2 0.03 as the
default run chose by CV), exactly :func:`edgecls.train.linear_head.fit_linear_head`. Two ways to state a promise:

- **cross-fitted** (the default of ``edgecls train`` for the head-phase model): 5 heads over the whole pool, each
  blind to its fold (:func:`edgecls.train.crossfit.out_of_fold_logits`); the temperature, the threshold guarantee,
  the best promise (``--best-promise``) and the conformal quantile are fitted on those out-of-fold scores;
- **split** (before): half of the pool's val, scored by the deployed head.

Both are judged on the test part with the *deployed* head: how often a promise was made, how often the test
precision fell below the promised target (must be <= δ; the small test part adds noise, so this over-counts), the
recall kept, beside the point-estimate threshold's failure rate; and the conformal coverage of the deployed head's
sets with the cross-fitted quantile (band [1-α-0.02, 1-α+0.03]).

Features are computed once (single thread, ~1 min) and cached in ``--cache`` (default /work/bench_cache/promise).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_promise.py --repeats 200
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_CACHE = Path("/work/bench_cache/promise")
L2, MAX_ITER, FOLDS = 0.03, 100, 5


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "mobile"))
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"))
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--pool", type=float, default=0.7, help="share of the images a user has labelled (the rest: test)")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--delta", type=float, default=0.10)
    p.add_argument("--alpha", type=float, default=0.10, help="conformal miscoverage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def features(args) -> Dict[str, np.ndarray]:
    """MobileNetV2 features (the head's input, eval preprocessing) of every image of train/ and val/, cached."""
    cache = Path(args.cache) / "features.npz"
    if cache.is_file():
        d = np.load(cache)
        return {k: d[k] for k in d.files}
    import torch

    from edgecls.reference.models import build_model, head_of
    from edgecls.runtime.confidence.recalibrate import labelled_folder
    from edgecls.runtime.preprocess import load_image, preprocess
    from edgecls.runtime.spec import PreprocessSpec

    torch.set_num_threads(1)
    classes = ("mobile", "other")
    items = [(p, y, s) for s in ("train", "val") for p, y in labelled_folder(Path(args.data) / s, classes)]
    model = build_model("mobilenet_v2", 2, weights=args.weights).eval()
    grabbed: List[np.ndarray] = []
    head_of(model, "mobilenet_v2").register_forward_hook(lambda m, i, o: grabbed.append(i[0].numpy().copy()))
    pspec, t = PreprocessSpec(), time.monotonic()
    with torch.inference_mode():
        for i in range(0, len(items), 32):
            model(torch.from_numpy(preprocess([load_image(p) for p, _, _ in items[i:i + 32]], pspec)))
    out = {"feats": np.concatenate(grabbed).astype(np.float32), "y": np.array([y for _, y, _ in items]),
           "is_train": np.array([s == "train" for _, _, s in items])}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    print(f"features of {len(items)} images in {time.monotonic() - t:.0f}s -> {cache}", file=sys.stderr)
    return out


def stratified(y: np.ndarray, share: float, rng) -> np.ndarray:
    mask = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        mask[rng.permutation(idx)[:int(round(idx.size * share))]] = True
    return mask


def judged(conf, logits: np.ndarray, y: np.ndarray, pos: int, threshold: float):
    """(test precision, recall, accepted) of the runtime's yes: p >= threshold and not unknown."""
    from edgecls.runtime import metrics as M
    from edgecls.runtime.confidence.ood import ood_scores

    p = M.softmax(logits, conf.temperature)[:, pos]
    unknown = conf.ood.unknown(ood_scores(logits, conf.ood.kind, "logits", conf.temperature))
    yes = (p >= threshold) & ~unknown
    tp = int(np.sum(yes & (y == pos)))
    return tp / max(int(yes.sum()), 1), tp / max(int(np.sum(y == pos)), 1), int(yes.sum())


def one_repeat(F, args, rng) -> Dict[str, float]:
    from edgecls.runtime import metrics as M
    from edgecls.runtime.confidence import ConfidenceSettings, fit_confidence
    from edgecls.runtime.confidence.conformal import coverage_and_size
    from edgecls.runtime.confidence.guarantee import point_threshold
    from edgecls.runtime.confidence.recalibrate import fit_temperature
    from edgecls.train.crossfit import out_of_fold_logits
    from edgecls.train.data import class_weights
    from edgecls.train.linear_head import fit_linear_head

    x, y = F["feats"], F["y"].astype(np.int64)
    pos, classes = 0, ("mobile", "other")
    pool = stratified(y, args.pool, rng)
    test = ~pool
    pi = np.nonzero(pool)[0]
    tr_in_pool = stratified(y[pi], 0.8, rng)
    tr, va = pi[tr_in_pool], pi[~tr_in_pool]
    W, b = fit_linear_head(x[tr], y[tr], 2, class_weights(np.bincount(y[tr], minlength=2)), L2, MAX_ITER)
    z_test = x[test] @ W.T + b
    y_test = y[test]
    settings = ConfidenceSettings(coverage=1 - args.alpha, target_precision=args.target, delta=args.delta)
    out: Dict[str, float] = {}
    # cross-fitted: every pool image scored by a head blind to its fold
    oof = out_of_fold_logits(x[pi], y[pi], 2, L2, FOLDS, int(rng.integers(1 << 30)), True, MAX_ITER)
    t, _ = fit_temperature(oof, y[pi])
    conf = fit_confidence(oof, y[pi], classes, temperature=t, positive="mobile", settings=settings)
    g = conf.guarantee
    out["cf_made"] = float(g.certified)
    if g.certified:
        prec, rec, _ = judged(conf, z_test, y_test, pos, g.threshold)
        out.update(cf_broken=float(prec < g.target), cf_recall=rec)
    if g.best_target is not None or g.certified:
        target = g.target if g.certified else g.best_target
        thr = g.threshold if g.certified else g.best_threshold
        prec, rec, _ = judged(conf, z_test, y_test, pos, thr)
        out.update(best_made=1.0, best_target=target, best_broken=float(prec < target), best_recall=rec)
    else:
        out["best_made"] = 0.0
    sets = conf.conformal.sets(M.softmax(z_test, t))
    out["coverage"], out["set_size"] = coverage_and_size(sets, y_test)
    # split (before): half of the pool's val, scored by the deployed head; and its point estimate
    cal = va[stratified(y[va], 0.5, rng)]
    z_cal = x[cal] @ W.T + b
    t2, _ = fit_temperature(z_cal, y[cal])
    conf2 = fit_confidence(z_cal, y[cal], classes, temperature=t2, positive="mobile", settings=settings)
    out["split_made"] = float(conf2.guarantee.certified)
    if conf2.guarantee.certified:
        prec, _, _ = judged(conf2, z_test, y_test, pos, conf2.guarantee.threshold)
        out["split_broken"] = float(prec < args.target)
    pt, _, _ = point_threshold(M.softmax(z_cal, t2)[:, pos], y[cal] == pos, args.target)
    prec, rec, acc = judged(conf2, z_test, y_test, pos, pt)
    out.update(point_broken=float(prec < args.target), point_recall=rec)
    return out


def mean(rows, key) -> float:
    v = [r[key] for r in rows if key in r]
    return float(np.mean(v)) if v else float("nan")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    F = features(args)
    rng = np.random.default_rng(args.seed)
    t0, rows = time.monotonic(), []
    for i in range(args.repeats):
        rows.append(one_repeat(F, args, rng))
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{args.repeats} repeats, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    n, d, a = len(rows), args.delta, args.alpha
    npos = int(round(np.sum(F["y"] == 0) * args.pool))
    cov = [r["coverage"] for r in rows]
    targets = [r["best_target"] for r in rows if "best_target" in r]
    summary = {
        "repeats": n, "pool_share": args.pool, "pool_phones": npos, "target": args.target, "delta": d,
        "crossfit_promised": mean(rows, "cf_made"), "crossfit_broken": mean(rows, "cf_broken"),
        "crossfit_recall": mean(rows, "cf_recall"),
        "best_promised": mean(rows, "best_made"), "best_broken": mean(rows, "best_broken"),
        "best_recall": mean(rows, "best_recall"),
        "best_targets": {f"{t:g}": int(np.sum(np.isclose(targets, t))) for t in sorted(set(targets), reverse=True)},
        "split_promised": mean(rows, "split_made"), "split_broken": mean(rows, "split_broken"),
        "point_broken": mean(rows, "point_broken"), "point_recall": mean(rows, "point_recall"),
        "coverage_mean": float(np.mean(cov)), "coverage_min": float(np.min(cov)), "coverage_max": float(np.max(cov)),
        "set_size": mean(rows, "set_size"), "seconds": round(time.monotonic() - t0, 1),
    }
    s = summary
    print(f"mobile, head phase on cached MobileNetV2 features: {n} re-samples, pool {100 * args.pool:g} % "
          f"(~{npos} phones), the rest judged by the deployed head")
    print(f"precision >= {args.target:g} at delta {d:g}, cross-fitted: promised {100 * s['crossfit_promised']:.1f} %, "
          f"broken {100 * s['crossfit_broken']:.1f} % of promises, recall {s['crossfit_recall']:.3f}")
    print(f"best promise (ladder, delta/m), cross-fitted: made {100 * s['best_promised']:.1f} %, targets "
          f"{s['best_targets']}, broken {100 * s['best_broken']:.1f} % (<= {100 * d:g} %), recall {s['best_recall']:.3f}")
    print(f"split (half of val) at {args.target:g}: promised {100 * s['split_promised']:.1f} %, broken "
          f"{100 * s['split_broken']:.1f} %; its point estimate fell below {args.target:g} in "
          f"{100 * s['point_broken']:.1f} % (recall {s['point_recall']:.3f})")
    lo, hi = 1 - a - 0.02, 1 - a + 0.03
    ok = lo <= s["coverage_mean"] <= hi
    print(f"conformal {100 * (1 - a):g} % sets, cross-fitted quantile, deployed head: coverage {s['coverage_mean']:.3f} "
          f"mean (min {s['coverage_min']:.3f}, max {s['coverage_max']:.3f}; band [{lo:.2f}, {hi:.2f}]: "
          f"{'ok' if ok else 'OUT'}), {s['set_size']:.2f} labels per set  ({s['seconds']}s)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    broken_ok = all(not (s[k] > d) for k in ("crossfit_broken", "best_broken"))
    return 0 if ok and broken_ok else 1


if __name__ == "__main__":
    sys.exit(main())
