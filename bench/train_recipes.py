#!/usr/bin/env python
"""Time-to-accuracy of the training recipes, side by side in one run: the default ``fast`` vs the seed's recipe.

Trains the same model on the same data with each recipe (library calls, as ``edgecls train`` would), reads each
run's per-epoch history (wall-clock time since the run started, val balanced accuracy) and prints one table:
time to reach each balanced-accuracy target, best balanced accuracy, positive-class recall, total time.

The seed recipe (SGD 0.001, StepLR 7/0.1, 25 epochs, batch 4, 224 px, no imbalance handling) takes a long time
on a CPU: ``--seed-epochs`` and ``--seed-max-minutes`` cap it, and the table says so in its column header.

    .venv/bin/python bench/train_recipes.py                                  # ../shared/data/mobile, MobileNetV2
    .venv/bin/python bench/train_recipes.py --seed-epochs 3 --seed-max-minutes 8
    .venv/bin/python bench/train_recipes.py --json runs/bench/train_recipes.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "mobile"))
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"))
    p.add_argument("--positive", default="mobile")
    p.add_argument("--recipes", default="fast,seed", help="comma-separated recipe names, in column order")
    p.add_argument("--targets", default="0.90,0.95,0.97", help="balanced-accuracy targets")
    p.add_argument("--seed-epochs", type=int, default=4, help="cap on the seed recipe's 25 epochs (CPU time)")
    p.add_argument("--seed-max-minutes", type=float, default=10.0, help="wall-clock cap on the seed recipe")
    p.add_argument("--fast-epochs", type=int, default=None, help="override the fast recipe's epochs")
    p.add_argument("--image-size", type=int, default=None, help="override both recipes' image size (smoke tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temp folder, removed)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings on stderr")
    return p.parse_args(argv)


def first_time_at(history: Sequence[Dict[str, Any]], target: float) -> Optional[Dict[str, Any]]:
    for row in history:
        if row.get("val_balanced_acc") is not None and float(row["val_balanced_acc"]) >= target - 1e-12:
            return row
    return None


def run_recipe(name: str, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    from edgecls.train.config import TrainConfig, get_recipe
    from edgecls.train.trainer import train

    recipe = get_recipe(name)
    cap = None
    max_minutes = None
    if name == "seed":
        if args.seed_epochs is not None and args.seed_epochs < recipe.epochs:
            cap = f"{args.seed_epochs} of {recipe.epochs} epochs"
            recipe = recipe.override(epochs=args.seed_epochs)
        max_minutes = args.seed_max_minutes
    elif name == "fast" and args.fast_epochs is not None:
        recipe = recipe.override(epochs=args.fast_epochs)
    if args.image_size:
        recipe = recipe.override(image_size=args.image_size)
    cfg = TrainConfig(
        data=args.data, recipe=recipe, arch=args.arch, weights=args.weights, out=str(work / name),
        positive=args.positive, device=args.device, max_minutes=max_minutes, progress=not args.quiet,
    )
    t = time.monotonic()
    res = train(cfg)
    wall = time.monotonic() - t
    pos = args.positive
    pk = res.report.classes.index(pos) if pos else None
    best = next(h for h in res.history if int(h["epoch"]) == res.best_epoch)
    header = name if cap is None and "time budget" not in res.stop_reason else (
        f"{name} (capped: {cap or ''}{', ' if cap and max_minutes else ''}"
        f"{f'{max_minutes:g} min' if max_minutes else ''})"
    )
    return {
        "recipe": name,
        "header": header,
        "capped": cap,
        "max_minutes": max_minutes,
        "stop_reason": res.stop_reason,
        "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch,
        "best_balanced_acc": best["val_balanced_acc"],
        "best_elapsed_s": best["elapsed_s"],
        "pos_recall_argmax": res.report.per_class[pk].recall if pk is not None else None,
        "pos_precision_argmax": res.report.per_class[pk].precision if pk is not None else None,
        "threshold": res.calibration.threshold.to_dict() if res.calibration.threshold is not None else None,
        "ece_before": res.calibration.ece_before,
        "ece_after": res.calibration.ece_after,
        "total_s": wall,
        "history": [{k: h.get(k) for k in ("epoch", "phase", "elapsed_s", "val_balanced_acc", "val_pos_recall")}
                    for h in res.history],
    }


def table(results: List[Dict[str, Any]], targets: Sequence[float], positive: str) -> str:
    cols = [r["header"] for r in results]
    rows: List[List[str]] = []

    def fmt_t(row):
        return "not reached" if row is None else f"{row['elapsed_s']:.0f}s (epoch {row['epoch']})"

    for tgt in targets:
        hits = [first_time_at(r["history"], tgt) for r in results]
        cells = [fmt_t(h) for h in hits]
        if len(results) == 2 and all(hits):
            ratio = hits[1]["elapsed_s"] / max(hits[0]["elapsed_s"], 1e-9)
            cells.append(f"{ratio:.1f}x")
        rows.append([f"time to balanced acc >= {tgt:.2f}", *cells])
    rows.append(["best val balanced accuracy", *[f"{r['best_balanced_acc']:.4f} (epoch {r['best_epoch']})"
                                                   for r in results]])
    rows.append([f"{positive} recall / precision (argmax)",
                 *[f"{r['pos_recall_argmax']:.3f} / {r['pos_precision_argmax']:.3f}" for r in results]])
    rows.append([f"{positive} recall / precision at threshold",
                 *["-" if not r["threshold"] else
                   f"{r['threshold']['recall']:.3f} / {r['threshold']['precision']:.3f} (t={r['threshold']['threshold']:.3f})"
                   for r in results]])
    rows.append(["ECE before -> after temperature", *[f"{r['ece_before']:.4f} -> {r['ece_after']:.4f}"
                                                       for r in results]])
    rows.append(["epochs run (stop reason)", *[f"{r['epochs_run']} ({r['stop_reason']})" for r in results]])
    rows.append(["total wall time", *[f"{r['total_s']:.0f}s" for r in results]])
    header = ["", *cols] + (["seed / fast"] if len(results) == 2 else [])
    all_rows = [header] + rows
    widths = [max(len(r[i]) if i < len(r) else 0 for r in all_rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(all_rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    targets = [float(t) for t in args.targets.split(",") if t]
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="edgecls-recipes-")
        work = Path(tmp.name)
    try:
        results = [run_recipe(n, args, work) for n in names]
    finally:
        if tmp is not None:
            tmp.cleanup()
    text = (
        f"# time to accuracy: {args.arch} on {args.data} (weights {Path(args.weights).name}), "
        f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs visible\n"
        "# times are wall-clock from the start of each run (data scan, model build and feature extraction "
        "included)\n\n" + table(results, targets, args.positive)
    )
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "targets": targets, "table": text}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
