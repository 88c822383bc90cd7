"""What rank 0 writes after every epoch: ``best.pt`` (on improvement), ``last.pt`` (always, with the train state
``--resume`` needs) and ``metrics.csv`` — each written atomically, each checkpoint already calibrated on val.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from edgecls.runtime import metrics as M
from edgecls.train.calibrate import Calibration
from edgecls.train.history import RunState, write_metrics_csv
from edgecls.train.selection import calibrate_val, calibrated_report, model_spec
from edgecls.train.session import BadImages, RunSetup


def cpu_state(model) -> Dict[str, Any]:
    """The model's weights, detached copies on the CPU (DDP's wrapper unwrapped)."""
    model = getattr(model, "module", model)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def train_state(setup: RunSetup, state: RunState, epoch: int, optimizer, scaler) -> Dict[str, Any]:
    """``last.pt``'s train state: the config, the epoch, the optimizer and AMP scaler, and the run's progress."""
    return {
        "config": setup.config.to_dict(),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and setup.use_amp else None,
        "world_size": setup.ctx.world_size,
        **state.to_train_state(),
    }


def checkpoint_data(setup: RunSetup, bad: BadImages) -> Dict[str, Any]:
    """The recorded split, with the val images held out for calibration (``calib``: export re-fits each
    artifact's confidence on them)."""
    data = setup.data.without(list(bad.paths)).to_checkpoint_data()
    if setup.calibrating_apart:
        data["calib"] = [p for (p, _), c in zip(setup.data.val, setup.calib_mask) if c and p not in bad.paths]
    return data


def save_checkpoint(setup: RunSetup, bad: BadImages, path: Path, epoch: int, weights: Dict[str, Any],
                    cal: Calibration, report: M.ClassificationReport, phase: str,
                    train_state: Optional[Dict[str, Any]]) -> None:
    from edgecls.reference.checkpoint import Checkpoint
    from edgecls.reference.checkpoint import save_checkpoint as save

    ckpt = Checkpoint(
        spec=model_spec(setup, cal),
        state_dict=weights,
        epoch=epoch,
        metrics={
            "epoch": epoch,
            "phase": phase,
            "select": setup.recipe.select,
            "val": report.to_dict(),
            "calibration": cal.to_dict(),
        },
        data=checkpoint_data(setup, bad),
        train_state=train_state,
    )
    save(ckpt, path)


def write_epoch(setup: RunSetup, state: RunState, bad: BadImages, epoch: int, phase: str, model,
                logits: np.ndarray, index: np.ndarray, improved: bool, optimizer, scaler) -> None:
    """Calibrate this epoch on val, save ``best.pt`` (when ``improved``) and ``last.pt``, rewrite metrics.csv."""
    crossfit = state.crossfit if phase == "head" and setup.config.crossfit else None
    weights, cal = cpu_state(model), calibrate_val(setup, logits, index, crossfit)
    report = calibrated_report(setup, logits, index, cal)
    run_dir = setup.run_dir
    if improved:
        save_checkpoint(setup, bad, run_dir / "best.pt", epoch, weights, cal, report, phase, None)
    save_checkpoint(setup, bad, run_dir / "last.pt", epoch, weights, cal, report, phase,
                    train_state(setup, state, epoch, optimizer, scaler))
    write_metrics_csv(state.history, run_dir / "metrics.csv")
