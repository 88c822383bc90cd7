"""A run's progress: one metrics row per epoch, the best epoch so far, when to stop, and ``metrics.csv``.

:class:`RunState` is everything ``--resume`` restores from ``last.pt``'s train state (with the optimizer, which
the trainer adds): the history, the best epoch's score and val logits, the early-stopping count, the elapsed time.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.fileio import write_text
from edgecls.train.config import TrainConfig
from edgecls.train.crossfit import CrossFit
from edgecls.train.selection import ValJudgement

CSV_COLUMNS = (
    "epoch", "phase", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_balanced_acc", "val_macro_f1",
    "val_pos_precision", "val_pos_recall", "val_pos_ap", "train_samples", "skipped", "seconds", "elapsed_s", "best",
)
NO_SCORE = (-math.inf, -math.inf, -math.inf)


@dataclass
class RunState:
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: Tuple[float, ...] = NO_SCORE
    best_logits: Optional[np.ndarray] = None  # the best epoch's val logits and their item indices
    best_index: Optional[np.ndarray] = None
    bad_epochs: int = 0  # epochs since the last improvement
    head_done: bool = False
    head_info: Dict[str, Any] = field(default_factory=dict)
    crossfit: Optional[CrossFit] = None  # the head phase's out-of-fold scores of every labelled image
    head_model: Optional[Dict[str, Any]] = None  # the head phase's weights, val logits/index (this process only)
    stop_reason: Optional[str] = None  # set when the run ends (None while it runs)
    elapsed_before: float = 0.0  # seconds spent before a resume
    t0: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t0)

    @classmethod
    def restore(cls, ts: Dict[str, Any], t0: float) -> RunState:
        """The state saved in a ``last.pt``'s train state (see :meth:`to_train_state`)."""
        state = cls(
            history=list(ts.get("history", [])),
            best_epoch=int(ts.get("best_epoch", -1)),
            best_score=tuple(ts.get("best_score", NO_SCORE)),
            bad_epochs=int(ts.get("bad_epochs", 0)),
            head_done=bool(ts.get("head_done", False)),
            head_info=dict(ts.get("head_info") or {}),
            elapsed_before=float(ts.get("elapsed_s", 0.0)),
            t0=t0,
            crossfit=CrossFit.from_state(ts.get("crossfit")),
        )
        if ts.get("best_val_logits") is not None:
            state.best_logits = ts["best_val_logits"].numpy().astype(np.float32)
            state.best_index = ts["best_val_index"].numpy().astype(np.int64)
        return state

    def to_train_state(self) -> Dict[str, Any]:
        import torch

        return {
            "head_done": bool(self.head_done),
            "history": list(self.history),
            "best_epoch": int(self.best_epoch),
            "best_score": [float(s) for s in self.best_score],
            "best_val_logits": torch.from_numpy(np.ascontiguousarray(self.best_logits, dtype=np.float32)),
            "best_val_index": torch.from_numpy(np.ascontiguousarray(self.best_index, dtype=np.int64)),
            "bad_epochs": int(self.bad_epochs),
            "elapsed_s": float(self.elapsed()),
            "stop_reason": self.stop_reason or "running",
            "head_info": jsonable(self.head_info),
            "crossfit": self.crossfit.to_state() if self.crossfit is not None else None,
        }

    def record(self, epoch: int, phase: str, row: Dict[str, Any], j: ValJudgement, logits: np.ndarray,
               index: np.ndarray, skipped: int) -> bool:
        """Append the epoch's row (``row`` holds its train columns); True when it is the best so far."""
        improved = j.score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = j.score, epoch, 0
            self.best_logits, self.best_index = logits, index
        else:
            self.bad_epochs += 1
        pk, rep = j.pos_index, j.report
        row.update(
            epoch=epoch,
            phase=phase,
            val_loss=j.val_loss,
            val_acc=rep.accuracy,
            val_balanced_acc=rep.balanced_accuracy,
            val_macro_f1=rep.macro_f1,
            val_pos_precision=rep.per_class[pk].precision if pk is not None else None,
            val_pos_recall=rep.per_class[pk].recall if pk is not None else None,
            val_pos_ap=j.pos_ap,
            skipped=skipped,
            elapsed_s=round(self.elapsed(), 3),
            best=improved,
        )
        self.history.append(row)
        return improved

    def should_stop(self, epoch: int, phase: str, config: TrainConfig) -> bool:
        """Early stopping (never after the head phase) or the time budget; sets :attr:`stop_reason`."""
        recipe = config.recipe
        stop = False
        if recipe.patience is not None and self.bad_epochs >= recipe.patience and phase != "head":
            self.stop_reason = f"early stopping (no better {recipe.select} for {self.bad_epochs} epochs)"
            stop = True
        if config.max_minutes is not None and self.elapsed() > 60 * config.max_minutes:
            self.stop_reason = f"time budget ({config.max_minutes:g} min)"
            stop = True
        if not stop and epoch >= recipe.epochs:
            self.stop_reason = "completed"
        return stop

    @property
    def epochs_run(self) -> int:
        return max((int(h["epoch"]) for h in self.history), default=0)


def write_metrics_csv(history: List[Dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
    write_text(path, buf.getvalue())


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def fmt(v) -> str:
    """A metric for a log line: 4 decimals, ``-`` when missing."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def jsonable(o):
    """``o`` with numpy scalars as Python numbers, non-finite floats as None, paths as strings."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    return o
