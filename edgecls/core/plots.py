"""The one plotting stack: PNG figures of training runs and evaluations (matplotlib's Agg canvas, imported lazily).

- ``loss.png`` / ``accuracy.png``: train and val curves per epoch (the seed's figures 4-7 in two panels each)
- ``confusion_matrix.png``: the best epoch's val confusion matrix (counts and row-normalised recall)
- ``pr_curve.png``: precision/recall of the positive class, with the operating threshold marked (train, eval)
- ``reliability.png``: reliability diagram with a confidence histogram; train shows it before and after
  temperature scaling, eval at the model's temperature
- ``risk_coverage.png``: error rate among the most confident share of images (eval)

Every figure is written atomically (:mod:`edgecls.core.fileio`); :func:`available` tells whether matplotlib is there.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def available() -> bool:
    """True when matplotlib is installed (the plots are optional: without it callers skip them)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _figure(figsize: Tuple[float, float]):
    """A matplotlib Figure on the Agg canvas: no pyplot state, no display, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    """Write atomically (temp file + rename): an interrupted run never leaves a torn PNG."""
    from edgecls.core.fileio import atomic_output

    path = Path(path)
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def _series(history: Sequence[Dict[str, Any]], key: str):
    xs, ys = [], []
    for row in history:
        v = row.get(key)
        if v is not None and v != "":
            xs.append(int(row["epoch"]))
            ys.append(float(v))
    return xs, ys


def plot_curves(history: Sequence[Dict[str, Any]], out_dir: Path, best_epoch: Optional[int] = None) -> List[Path]:
    """``loss.png`` and ``accuracy.png`` (epoch 0 is the head phase when there is one)."""
    out_dir = Path(out_dir)
    paths = []
    for fname, title, keys in (
        ("loss.png", "loss", (("train_loss", "train"), ("val_loss", "val"))),
        ("accuracy.png", "accuracy", (("train_acc", "train accuracy"), ("val_acc", "val accuracy"),
                                      ("val_balanced_acc", "val balanced accuracy"))),
    ):
        from matplotlib.ticker import MaxNLocator

        fig = _figure((6, 4))
        ax = fig.subplots()
        for key, label in keys:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch (0 = head on frozen features)" if any(r.get("phase") == "head" for r in history)
                      else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(title)
        ax.set_title(f"{title} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out_dir / fname))
    return paths


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    cm = np.asarray(confusion, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(rows, 1)
    n = len(classes)
    fig = _figure((1.2 * n + 3, 1.0 * n + 2.5))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    ax.set_xticks(range(n))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticks(range(n))
    ax.set_yticklabels(classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title("val confusion matrix (best epoch)")
    return _save(fig, path)


def plot_pr(
    precision: Sequence[float], recall: Sequence[float], positive: str, path: PathLike,
    chosen: Optional[Dict[str, Any]] = None, ap: Optional[float] = None, title: Optional[str] = None,
) -> Path:
    """Precision-recall curve of the ``positive`` class, with the operating point ``chosen`` marked.

    ``chosen`` has ``threshold``, ``precision``, ``recall`` (and ``target_precision`` when the threshold was picked
    for one); ``title`` defaults to the training run's (val, calibrated scores).
    """
    fig = _figure((5.5, 4.5))
    ax = fig.subplots()
    ax.step(recall, precision, where="post", color="#4c72b0",
            label=f"{positive} (AP {ap:.3f})" if ap is not None else positive)
    if chosen:
        label = f"threshold {chosen['threshold']:.3f}: P {chosen['precision']:.3f} R {chosen['recall']:.3f}"
        if chosen.get("target_precision") is not None:
            label += f" (target precision {chosen['target_precision']:.2f})"
        ax.plot([chosen["recall"]], [chosen["precision"]], "o", color="#c44e52", label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or f"val precision-recall of {positive!r} (calibrated scores)")
    return _save(fig, path)


def _reliability_panel(ax, axh, bins: Dict[str, Any], title: str) -> None:
    """Accuracy per confidence bin (gap to the mean confidence shaded) above a histogram of the images per bin."""
    edges = np.asarray(bins["edges"])
    width = edges[1] - edges[0]
    centers = edges[:-1] + width / 2
    acc = np.array([np.nan if a is None else a for a in bins["accuracy"]], dtype=float)
    conf = np.array([np.nan if c is None else c for c in bins["confidence"]], dtype=float)
    ok = ~np.isnan(acc)
    ax.bar(centers[ok], acc[ok], width=width * 0.95, color="#4c72b0", label="accuracy")
    ax.bar(centers[ok], (conf - acc)[ok], bottom=acc[ok], width=width * 0.95, color="#dd8452", alpha=0.5,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: ECE {bins['ece']:.4f}")
    ax.grid(alpha=0.3)
    axh.bar(centers, bins["count"], width=width * 0.95, color="#8c8c8c")
    axh.set_xlabel("top-1 confidence")
    axh.set_xlim(0, 1)


def plot_reliability(
    bins: Dict[str, Any], after: Optional[Dict[str, Any]], temperature: Optional[float], path: PathLike,
    title: Optional[str] = None,
) -> Path:
    """Reliability diagram of ``bins`` (:func:`edgecls.runtime.metrics.reliability_bins`), confidence histogram below.

    With ``after`` (the same data's bins at ``temperature``) a second panel beside it: before and after temperature
    scaling. ``title`` names the first panel (default ``before (T = 1)``).
    """
    panels = [(bins, title or "before (T = 1)")]
    if after is not None:
        panels.append((after, f"after (T = {temperature:.3f})"))
    fig = _figure((5.5 * len(panels), 4.5))
    axes = fig.subplots(2, len(panels), sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1]})
    for col, (b, t) in enumerate(panels):
        _reliability_panel(axes[0][col], axes[1][col], b, t)
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("images")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_risk_coverage(
    coverage: Sequence[float], risk: Sequence[float], path: PathLike, aurc: Optional[float] = None,
    title: Optional[str] = None, marks: Optional[Sequence[Tuple[float, float, str]]] = None,
) -> Path:
    """Risk–coverage curve of selective classification: error rate among the most confident share of images
    (:func:`edgecls.runtime.confidence.curves.risk_coverage`); ``marks``: ``(coverage, risk, label)`` points."""
    fig = _figure((5.5, 4.5))
    ax = fig.subplots()
    ax.step(coverage, risk, where="post", color="#4c72b0",
            label=f"top-1 confidence (AURC {aurc:.4f})" if aurc is not None else "top-1 confidence")
    for c, r, label in marks or ():
        ax.plot([c], [r], "o", label=label)
    ax.set_xlabel("coverage (share of images answered, most confident first)")
    ax.set_ylabel("risk (error rate among them)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, max(0.05, float(np.max(risk)) * 1.1 if len(risk) else 0.05))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "risk-coverage")
    return _save(fig, path)


def plot_time_to_accuracy(panels: Dict[str, Dict[str, List[List[Tuple[float, float]]]]], path: PathLike,
                          ylabel: str = "val accuracy") -> Path:
    """Time-to-accuracy curves: one panel per data set, one colour per recipe, one thin line per seed (points:
    ``(seconds since the run started, accuracy)`` at each epoch end) and the seeds' mean as a thick line."""
    fig = _figure((6 * max(1, len(panels)), 4))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (title, recipes) in zip(axes, panels.items()):
        for k, (name, runs) in enumerate(recipes.items()):
            color = f"C{k}"
            for run in runs:
                if run:
                    ax.plot([p[0] for p in run], [p[1] for p in run], color=color, alpha=0.35, linewidth=1,
                            marker=".")
            n = min((len(r) for r in runs if r), default=0)
            if n:
                mean_t = np.mean([[p[0] for p in r[:n]] for r in runs if r], axis=0)
                mean_a = np.mean([[p[1] for p in r[:n]] for r in runs if r], axis=0)
                ax.plot(mean_t, mean_a, color=color, linewidth=2.2, marker="o", label=f"{name} ({len(runs)} seeds)")
        ax.set_xlabel("wall-clock seconds since the run started")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
