"""The confusion matrix at catalog scale: the top confused pairs for the terminal, the full matrix as CSV and PNG.

A 28-class matrix printed as text is ~480 columns wide; :func:`report_text` keeps the classic report when the
matrix fits in :data:`WIDTH` columns and otherwise prints the per-class table sorted by F1 (worst first) and the
most frequent (true → predicted) confusions, while :func:`confusion_csv` and :func:`plot_confusion` hold the whole
matrix.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np

WIDTH = 120  # terminal columns the text report must fit in
TOP = 10  # confused pairs printed


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell: ``count`` images of class ``true`` predicted as ``predicted``."""

    true: str
    predicted: str
    count: int
    share_of_true: float  # count / the true class's support


def top_confusions(confusion: Any, classes: Sequence[str], k: int = TOP) -> List[Confusion]:
    """The ``k`` largest off-diagonal cells, largest first (ties: by class order); zero cells never appear."""
    cm = np.asarray(confusion, dtype=np.int64)
    support = cm.sum(axis=1)
    cells = [(-int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    return [Confusion(classes[i], classes[j], -c, -c / max(int(support[i]), 1)) for c, i, j in sorted(cells)[:k]]


def matrix_width(report: Any) -> int:
    """Columns the classic text matrix (runtime ClassificationReport.table) takes."""
    names = list(report.classes)
    w = max(8, max(len(c) for c in names))
    cw = max(6, max(len(c) for c in names), max(len(str(v)) for r in report.confusion for v in r))
    return w + 2 + len(names) * (cw + 2) - 2


def report_text(report: Any, width: int = WIDTH, top: int = TOP) -> str:
    """The report for a terminal, at most ``width`` columns: the classic one when its matrix fits, else the summary,
    per-class metrics sorted by F1 (worst first), the top confused pairs, and a pointer to the CSV/PNG."""
    if matrix_width(report) <= width:
        return report.table()
    per = sorted(report.per_class, key=lambda c: (c.f1, c.recall, c.name))
    w = min(max(8, max(len(c.name) for c in per)), 40)
    lines = [
        f"samples {report.n}   accuracy {report.accuracy:.4f}   balanced accuracy {report.balanced_accuracy:.4f}   "
        f"macro F1 {report.macro_f1:.4f}   ECE {report.ece:.4f}   NLL {report.nll:.4f}",
        "",
        f"per class, sorted by F1 (worst first; {len(per)} classes)",
        f"{'class':<{w}}  {'precision':>9}  {'recall':>7}  {'f1':>7}  {'support':>7}",
    ]
    lines += [f"{c.name[:w]:<{w}}  {c.precision:>9.4f}  {c.recall:>7.4f}  {c.f1:>7.4f}  {c.support:>7d}" for c in per]
    pairs = top_confusions(report.confusion, list(report.classes), top)
    errors = int(np.asarray(report.confusion).sum() - np.trace(np.asarray(report.confusion)))
    lines += ["", f"top confusions ({len(pairs)} of the pairs behind {errors} errors; the whole matrix: "
                  "confusion.csv and confusion.png in the output folder)"]
    if pairs:
        tw = min(max(len(p.true) for p in pairs), 40)
        pw = min(max(len(p.predicted) for p in pairs), 40)
        lines.append(f"  {'count':>5}  {'true':<{tw}}  →  {'predicted':<{pw}}  {'of true':>7}")
        lines += [f"  {p.count:>5d}  {p.true[:tw]:<{tw}}  →  {p.predicted[:pw]:<{pw}}  {p.share_of_true:>7.1%}"
                  for p in pairs]
    else:
        lines.append("  none")
    if report.positive_metrics is not None:
        m = report.positive_metrics
        lines += ["", f"positive class {report.positive!r} at threshold {report.threshold:.4f}: precision "
                      f"{m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}  (tp {m['tp']}, fp {m['fp']}, "
                      f"fn {m['fn']}, tn {m['tn']})  AP {m['average_precision']:.4f}"]
    return "\n".join(_wrap(line, width) for line in lines)


def _wrap(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    import textwrap

    return "\n".join(textwrap.wrap(line, width, subsequent_indent="  "))


def confusion_csv(confusion: Any, classes: Sequence[str]) -> str:
    """The whole matrix: a header row ``true\\predicted, <classes...>, support``, one row per true class."""
    cm = np.asarray(confusion, dtype=np.int64)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true\\predicted"] + list(classes) + ["support"])
    for name, row in zip(classes, cm):
        w.writerow([name] + [int(v) for v in row] + [int(row.sum())])
    return buf.getvalue()


def plot_confusion(confusion: Any, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """The matrix as a PNG readable at catalog scale: the diagonal in blue, errors in red (shade = share of the
    true class), every non-zero cell labelled with its count, zeros left blank; rows = true, columns = predicted."""
    from matplotlib.colors import LinearSegmentedColormap

    from edgecls.core.plots import _figure, _save

    cm = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    eye = np.eye(n, dtype=bool)
    side = max(4.0, 0.34 * n + 2.5)
    fig = _figure((side + 1.0, side))
    ax = fig.subplots()
    blues = LinearSegmentedColormap.from_list("d", ["#eef4fb", "#2f6db3"])
    reds = LinearSegmentedColormap.from_list("e", ["#fde0d9", "#c0261a"])
    ax.imshow(np.ma.masked_where(~eye | (cm == 0), norm), cmap=blues, vmin=0, vmax=1, interpolation="nearest")
    off = np.ma.masked_where(eye | (cm == 0), norm)
    if off.count():
        ax.imshow(off, cmap=reds, vmin=0, vmax=max(0.25, float(off.max())), interpolation="nearest")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    fs = 9 if n <= 30 else (7 if n <= 60 else 5)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                dark = norm[i, j] > 0.55 if i == j else norm[i, j] > 0.2
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fs,
                        color="white" if dark else "black", fontweight="normal" if i == j else "bold")
    ax.set_xticks(range(n))
    ax.set_xticklabels(classes, rotation=90, fontsize=fs)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{c} ({int(s)})" for c, s in zip(classes, cm.sum(axis=1))], fontsize=fs)
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    acc = float(np.trace(cm)) / max(int(cm.sum()), 1)
    ax.set_title(f"{title + ': ' if title else ''}confusion matrix, {int(cm.sum())} images, accuracy {acc:.3f}\n"
                 "blue: correct; red: errors (shade = share of the true class)", fontsize=10)
    return _save(fig, path)
