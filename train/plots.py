"""PNG figures of a training run (matplotlib, Agg backend; no display needed).

- ``loss.png`` / ``accuracy.png``: train and val curves per epoch (the seed's figures 4-7 in two panels each)
- ``confusion_matrix.png``: the best epoch's val confusion matrix (counts and row-normalised recall)
- ``pr_curve.png``: precision/recall of the positive class on val, with the chosen threshold marked
- ``reliability.png``: reliability diagram before and after temperature scaling
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write atomically (temp file + rename): an interrupted run never leaves a torn PNG."""
    from edgecls.fileio import atomic_output

    path = Path(path)
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        _plt().close(fig)
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
    plt = _plt()
    out_dir = Path(out_dir)
    paths = []
    for fname, title, keys in (
        ("loss.png", "loss", (("train_loss", "train"), ("val_loss", "val"))),
        ("accuracy.png", "accuracy", (("train_acc", "train accuracy"), ("val_acc", "val accuracy"),
                                      ("val_balanced_acc", "val balanced accuracy"))),
    ):
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(6, 4))
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
    plt = _plt()
    cm = np.asarray(confusion, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(rows, 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * n + 3, 1.0 * n + 2.5))
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
    precision: np.ndarray, recall: np.ndarray, positive: str, path: Path,
    chosen: Optional[Dict[str, Any]] = None, ap: Optional[float] = None,
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.step(recall, precision, where="post", label=f"{positive} (AP {ap:.3f})" if ap is not None else positive)
    if chosen:
        ax.plot([chosen["recall"]], [chosen["precision"]], "ro",
                label=f"threshold {chosen['threshold']:.3f} (target precision {chosen['target_precision']:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"val precision-recall of {positive!r} (calibrated scores)")
    return _save(fig, path)


def plot_reliability(before: Dict[str, Any], after: Dict[str, Any], temperature: float, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for ax, bins, title in ((axes[0], before, "before (T = 1)"), (axes[1], after, f"after (T = {temperature:.3f})")):
        edges = np.asarray(bins["edges"])
        centers = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
        acc = np.array([np.nan if a is None else a for a in bins["accuracy"]], dtype=float)
        conf = np.array([np.nan if c is None else c for c in bins["confidence"]], dtype=float)
        ax.bar(centers, np.nan_to_num(acc), width=width * 0.9, alpha=0.7, label="accuracy", edgecolor="k")
        ax.plot(centers, conf, "r.", label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-1 confidence")
        ax.set_title(f"{title}: ECE {bins['ece']:.4f}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    return _save(fig, path)
