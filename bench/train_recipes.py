"""Time-to-accuracy of the training recipes, side by side in one run: the default recipe, the seed's recipe
(capped) and a linear probe (the default recipe's head phase alone), on each data set, with several seeds.

Trains with library calls (as ``edgecls train`` would), reads each run's per-epoch history (wall-clock seconds
since the run started, val accuracy, balanced accuracy, positive recall) and prints one table per data set:
best val accuracy and balanced accuracy as mean ± half the min-max spread over seeds, time to each accuracy target,
total time. ``--png`` draws the curves (edgecls.core.plots), ``--markdown`` writes the tables.

The seed recipe (SGD 0.001, StepLR 7/0.1, 25 epochs, batch 4, 224 px) is slow on a CPU: ``--seed-epochs`` and
``--seed-max-minutes`` cap it and the table says so.

    .venv/bin/python bench/train_recipes.py --threads 2                       # both shared data sets, seed 0
    .venv/bin/python bench/train_recipes.py --seeds 0,1,2 --png bench/train_recipes.png \
        --markdown bench/train_recipes.md --json runs/bench/train_recipes.json
    .venv/bin/python bench/train_recipes.py --datasets products28 --recipes default,probe
    .venv/bin/python bench/train_recipes.py --datasets products28 --recipes default,probe \
        --backbones mobilenet_v2,lite0,lite2,resnet18-scratch     # the backbone axis (a column per pair)

``--backbones`` (presets of :data:`BACKBONES`: the shared ImageNet weights, ResNet18 from scratch as the floor)
replaces ``--arch``/``--weights``; a from-scratch backbone has no probe column (no features to probe).
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
POSITIVES = {"mobile": "mobile"}  # the positive class of each shared data set (none for catalogs)
WEIGHTS = SHARED / "weights"
# --backbones presets: (arch, weights); timm ones need the `timm` extra, their input size is the model's own
BACKBONES = {
    "mobilenet_v2": ("mobilenet_v2", str(WEIGHTS / "mobilenet_v2_imagenet_features.pth")),
    "lite0": ("timm:tf_efficientnet_lite0", str(WEIGHTS / "efficientnet_lite0_imagenet_timm.pth")),
    "lite2": ("timm:tf_efficientnet_lite2", str(WEIGHTS / "efficientnet_lite2_imagenet_timm.pth")),
    "resnet18-scratch": ("resnet18", "none"),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="mobile,products28",
                   help="comma-separated: names under ../shared/data or folders")
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"))
    p.add_argument("--backbones", default=None,
                   help=f"comma-separated presets ({', '.join(BACKBONES)}): a backbone axis instead of --arch/--weights")
    p.add_argument("--recipes", default="default,seed,probe",
                   help="comma-separated, in column order: recipe names, 'default' (the train command's default "
                   "recipe) and 'probe' (the default recipe's head phase alone)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (split, init, data order)")
    p.add_argument("--targets", default="0.90,0.95,0.97", help="val accuracy targets")
    p.add_argument("--seed-epochs", type=int, default=4, help="cap on the seed recipe's 25 epochs (CPU time)")
    p.add_argument("--seed-max-minutes", type=float, default=10.0, help="wall-clock cap on the seed recipe")
    p.add_argument("--image-size", type=int, default=None, help="override every recipe's image size (smoke tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temp folder, removed)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--markdown", default=None, help="also write the tables here")
    p.add_argument("--png", default=None, help="draw the time-to-accuracy curves here")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings on stderr")
    return p.parse_args(argv)


def first_time_at(history: Sequence[Dict[str, Any]], target: float, key: str = "val_acc") -> Optional[Dict[str, Any]]:
    for row in history:
        if row.get(key) is not None and float(row[key]) >= target - 1e-12:
            return row
    return None


def recipe_for(name: str, args: argparse.Namespace) -> Tuple[Any, Optional[str], Optional[float]]:
    """``(recipe, cap note, max minutes)`` of a column name."""
    from edgecls.train.config import DEFAULT_RECIPE, get_recipe

    if name == "probe":
        return get_recipe(DEFAULT_RECIPE).override(epochs=0), None, None
    recipe = get_recipe(DEFAULT_RECIPE if name == "default" else name)
    cap, max_minutes = None, None
    if recipe.name == "seed":
        if args.seed_epochs is not None and args.seed_epochs < recipe.epochs:
            cap = f"{args.seed_epochs} of {recipe.epochs} epochs"
            recipe = recipe.override(epochs=args.seed_epochs)
        max_minutes = args.seed_max_minutes
    return recipe, cap, max_minutes


def data_path(name: str) -> Path:
    p = Path(name)
    return p if p.is_dir() else SHARED / "data" / name


def run_recipe(name: str, data: str, seed: int, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    from edgecls.reference.models import preprocess_for
    from edgecls.train.config import DEFAULT_RECIPE, TrainConfig
    from edgecls.train.trainer import train

    recipe, cap, max_minutes = recipe_for(name, args)
    recipe = recipe.for_weights(args.weights != "none")
    if args.image_size:
        recipe = recipe.override(image_size=args.image_size)
    elif args.arch.startswith("timm:"):  # the model's own input size (Lite2: 260)
        recipe = recipe.override(image_size=preprocess_for(args.arch).crop)
    positive = POSITIVES.get(Path(data).name)
    cfg = TrainConfig(
        data=str(data_path(data)), recipe=recipe, arch=args.arch, weights=args.weights,
        out=str(work / f"{Path(data).name}-{getattr(args, 'backbone', None) or 'bb'}-{name}-s{seed}"),
        positive=positive, device=args.device,
        max_minutes=max_minutes, progress=not args.quiet, seed=seed,
    )
    load_before = _loadavg()
    t = time.monotonic()
    res = train(cfg)
    wall = time.monotonic() - t
    pk = res.report.classes.index(positive) if positive else None
    best = next(h for h in res.history if int(h["epoch"]) == res.best_epoch)
    label = {"default": f"default ({DEFAULT_RECIPE})", "probe": "linear probe"}.get(name, name)
    if cap or "time budget" in (res.stop_reason or ""):
        label += f" (capped: {', '.join(x for x in (cap, f'{max_minutes:g} min' if max_minutes else None) if x)})"
    bb = getattr(args, "backbone", None)
    return {
        "recipe": f"{bb}/{name}" if bb else name, "header": f"{bb}: {label}" if bb else label, "backbone": bb,
        "arch": args.arch, "weights": Path(args.weights).name, "data": Path(data).name, "seed": seed, "capped": cap,
        "stop_reason": res.stop_reason, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
        "best_acc": best["val_acc"], "best_balanced_acc": best["val_balanced_acc"],
        "best_elapsed_s": best["elapsed_s"],
        "pos_recall": res.report.per_class[pk].recall if pk is not None else None,
        "total_s": wall, "load_before": load_before, "load_after": _loadavg(),
        "history": [{k: h.get(k) for k in ("epoch", "phase", "elapsed_s", "val_acc", "val_balanced_acc",
                                           "val_pos_recall")} for h in res.history],
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _mean_pm(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± half the min-max spread`` (one value: the value)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(max(vals) - min(vals)) / 2:.{digits}f}"


def table(results: List[Dict[str, Any]], targets: Sequence[float]) -> str:
    """One data set's table: a column per recipe, each cell over that recipe's seeds."""
    names = list(dict.fromkeys(r["recipe"] for r in results))
    by = {n: [r for r in results if r["recipe"] == n] for n in names}
    cols = [by[n][0]["header"] for n in names]
    rows: List[List[str]] = []
    for tgt in targets:
        cells = []
        for n in names:
            hits = [first_time_at(r["history"], tgt) for r in by[n]]
            got = [h["elapsed_s"] for h in hits if h is not None]
            cells.append("not reached" if not got else
                         f"{_mean_pm(got, 0)}s" + (f" ({len(got)}/{len(hits)} seeds)" if len(got) < len(hits) else ""))
        rows.append([f"time to val accuracy >= {tgt:.2f}", *cells])
    rows.append(["best val accuracy", *[_mean_pm([r["best_acc"] for r in by[n]]) for n in names]])
    rows.append(["its balanced accuracy", *[_mean_pm([r["best_balanced_acc"] for r in by[n]]) for n in names]])
    if any(r["pos_recall"] is not None for r in results):
        rows.append(["positive recall (argmax, best epoch)", *[_mean_pm([r["pos_recall"] for r in by[n]], 3)
                                                               for n in names]])
    rows.append(["best epoch / epochs run", *[", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in by[n])
                                              for n in names]])
    rows.append(["total wall time", *[f"{_mean_pm([r['total_s'] for r in by[n]], 0)}s" for n in names]])
    rows.append(["seeds", *[",".join(str(r["seed"]) for r in by[n]) for n in names]])
    rows.append(["load average (before)", *[" | ".join(r["load_before"] for r in by[n]) for n in names]])
    header = ["", *cols]
    all_rows = [header] + rows
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(all_rows):
        lines.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def curves(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, List[List[Tuple[float, float]]]]]:
    """``{data: {recipe header: [[(elapsed_s, val_acc), ...] per seed]}}`` for the PNG."""
    out: Dict[str, Dict[str, List[List[Tuple[float, float]]]]] = {}
    for r in results:
        pts = [(float(h["elapsed_s"]), float(h["val_acc"])) for h in r["history"] if h.get("val_acc") is not None]
        out.setdefault(r["data"], {}).setdefault(r["header"], []).append(pts)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    targets = [float(t) for t in args.targets.split(",") if t]
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="edgecls-recipes-")
        work = Path(tmp.name)
    results: List[Dict[str, Any]] = []
    backbones = [b.strip() for b in (args.backbones or "").split(",") if b.strip()]
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        raise SystemExit(f"--backbones: unknown {unknown}; valid: {', '.join(BACKBONES)}")
    runs = [argparse.Namespace(**{**vars(args), "backbone": b, "arch": BACKBONES[b][0], "weights": BACKBONES[b][1]})
            for b in backbones] or [args]
    try:
        for data in datasets:
            for seed in seeds:
                for run_args in runs:
                    for name in names:
                        if name == "probe" and run_args.weights == "none":
                            continue  # nothing to probe from scratch
                        results.append(run_recipe(name, data, seed, run_args, work))
    finally:
        if tmp is not None:
            tmp.cleanup()
    which = (", ".join(f"{b} = {BACKBONES[b][0]} ({Path(BACKBONES[b][1]).name})" for b in backbones) if backbones
             else f"{args.arch} (weights {Path(args.weights).name})")
    head = (f"time to accuracy: {which}, "
            f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
            f"{os.cpu_count()} CPUs visible; wall-clock from the start of each run (data scan, model build, "
            "feature caching included); mean ± half the spread over seeds")
    text = head + "".join(f"\n\n{data}\n\n" + table([r for r in results if r["data"] == Path(data).name], targets)
                          for data in datasets)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.png:
        from edgecls.core import plots

        if plots.available():
            plots.plot_time_to_accuracy(curves(results), args.png)
        else:
            logging.getLogger(__name__).warning("matplotlib is not installed: no --png")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "targets": targets, "table": text}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
