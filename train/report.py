"""The end of a run: the best epoch calibrated on val, ``summary.json``, the plots, and :class:`TrainResult`."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from edgecls.core.fileio import write_text
from edgecls.runtime import metrics as M
from edgecls.train.calibrate import Calibration
from edgecls.train.history import RunState, jsonable
from edgecls.train.selection import (
    calibrate_val,
    calibrated_report,
    judge,
    model_spec,
    split_of,
    split_summary,
)
from edgecls.train.session import BadImages, RunSetup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    best_epoch: int
    epochs_run: int
    stop_reason: str
    report: M.ClassificationReport  # best epoch on val, calibrated, at the chosen threshold
    calibration: Calibration
    history: Tuple[Dict[str, Any], ...]
    elapsed_s: float
    summary: Dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """A one-screen summary for the terminal."""
        s = self.summary
        cal = self.calibration
        lines = [
            f"run        {self.run_dir}",
            f"model      {s['config']['arch']} ({s['config']['weights']}), recipe {s['recipe']['name']}, "
            f"image {s['spec']['preprocess']['crop']}px, device {s['device']} x{s['world_size']}",
            f"data       {s['data']['root']} ({s['data']['layout']}): train {s['data']['train_counts']}  "
            f"val {s['data']['val_counts']}  skipped {s['data']['skipped']}",
            f"epochs     {self.epochs_run} run, best epoch {self.best_epoch} ({s['recipe']['select']}), "
            f"stopped: {self.stop_reason}, time {self.elapsed_s:.1f}s",
        ]
        pr = s.get("promise") or {}
        if pr.get("replaced_epoch") is not None:
            lines.append(f"deployed   epoch 0 (head phase) instead of epoch {pr['replaced_epoch']}: it ties on the "
                         "selection images, and its promise (cross-fitted scores) is stronger")
        lines += [
            f"confidence temperature {cal.temperature:.4f}: ECE {cal.ece_before:.4f} -> {cal.ece_after:.4f}, "
            f"NLL {cal.nll_before:.4f} -> {cal.nll_after:.4f}",
        ]
        if cal.threshold is not None:
            t = cal.threshold
            lines.append(
                f"threshold  {t.threshold:.4f} for {cal.positive!r} at target precision {t.target_precision:.2f}: "
                f"precision {t.precision:.4f}, recall {t.recall:.4f}" + ("" if t.achieved else "  (TARGET NOT MET)")
            )
        lines += _confidence_lines(cal, s.get("splits", {}))
        rc = s.get("recalibrated")
        if rc:
            lines.append(f"calib-data best.pt re-fitted on {rc['best.pt']['images']} labelled images of "
                         f"{rc['data']} (the lines above are val's): {rc['best.pt']['statement']}")
        lines += ["", self.report.table(), "", f"best.pt {self.best_path}", f"last.pt {self.last_path}"]
        return "\n".join(lines)


def _confidence_lines(cal: Calibration, splits: Dict[str, Any]) -> list:
    """What the checkpoint can state about its confidence, and which images it was fitted on."""
    lines = []
    conf = cal.confidence
    if splits and conf is not None and conf.source.startswith("cross-fitted"):
        lines.append(f"splits     epoch picked on {splits['selection']['images']} val images; calibrated on "
                     f"{conf.n} cross-fitted scores (every labelled image, scored by a head that never saw it)")
    elif splits:
        sel, c = splits["selection"]["images"], splits["calibration"]["images"]
        lines.append(f"splits     epoch picked on {sel} val images; calibrated on {c} others" if splits["honest"]
                     else f"splits     calibrated on the same {c} val images that picked the epoch (NOT an honest "
                     "split: --calib-fraction 0)")
    conf = cal.confidence
    if conf is not None and conf.conformal is not None:
        q = conf.conformal.quantile()
        lines.append(f"sets       {100 * conf.conformal.coverage:g} % coverage ({conf.conformal.method.upper()}, "
                     f"quantile {q:.4g})" if q != float("inf") else
                     f"sets       {conf.conformal.n} calibration images are too few for "
                     f"{100 * conf.conformal.coverage:g} % coverage: sets hold every label")
    if conf is not None and conf.ood is not None:
        lines.append(f"unknown    {conf.ood.kind} score > {conf.ood.threshold:.4g} (keeps >= "
                     f"{100 * conf.ood.accept:g} % of in-catalog images)")
    if cal.statement:
        lines.append(f"promise    {cal.statement}")
    return lines


def finish(setup: RunSetup, state: RunState, bad: BadImages) -> TrainResult:
    """Plots, summary.json, and the result (every rank returns it; rank 0 wrote the files)."""
    from edgecls.reference.checkpoint import versions

    state.stop_reason = state.stop_reason or "completed"
    promise = choose_deployed(setup, state, bad)
    logits, index = state.best_logits, state.best_index
    cal = calibrate_val(setup, logits, index, _crossfit_for(setup, state, state.best_epoch), announce=True)
    report = calibrated_report(setup, logits, index, cal)
    run_dir = setup.run_dir
    summary = {
        "run_dir": str(run_dir),
        "config": setup.config.to_dict(),
        "recipe": setup.recipe.to_dict(),
        "spec": model_spec(setup, cal).to_dict(),
        "data": setup.data.without(list(bad.paths)).summary(),
        "device": setup.ctx.device,
        "world_size": setup.ctx.world_size,
        "best_epoch": state.best_epoch,
        "head": state.head_info,
        "epochs_run": state.epochs_run,
        "stop_reason": state.stop_reason,
        "val": report.to_dict(),
        "calibration": cal.to_dict(),
        "splits": split_summary(setup, index),
        "promise": promise,
        "elapsed_s": round(state.elapsed(), 3),
        "history": state.history,
        "files": {},
        "versions": versions(),
    }
    best_path, last_path = run_dir / "best.pt", run_dir / "last.pt"
    if setup.ctx.is_main:
        summary["files"] = plot_run(setup, state, report, cal, logits, setup.val_y[index])
        summary["files"].update({"best": str(best_path), "last": str(last_path),
                                 "metrics": str(run_dir / "metrics.csv"), "summary": str(run_dir / "summary.json")})
        write_text(run_dir / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
    return TrainResult(
        run_dir=run_dir,
        best_path=best_path,
        last_path=last_path,
        best_epoch=state.best_epoch,
        epochs_run=summary["epochs_run"],
        stop_reason=state.stop_reason,
        report=report,
        calibration=cal,
        history=tuple(state.history),
        elapsed_s=summary["elapsed_s"],
        summary=jsonable(summary),
    )


def plot_run(setup: RunSetup, state: RunState, report: M.ClassificationReport, cal: Calibration,
             logits: np.ndarray, y: np.ndarray) -> Dict[str, str]:
    """The run's PNGs (curves, confusion, reliability, PR with a positive class): ``{kind: path}``.

    A plotting problem is logged, never raised: it must not lose a finished training run.
    """
    from edgecls.core import plots

    run_dir, positive = setup.run_dir, setup.config.positive
    files: Dict[str, str] = {}
    try:
        loss_png, acc_png = plots.plot_curves(state.history, run_dir, state.best_epoch)
        files["loss_plot"], files["accuracy_plot"] = str(loss_png), str(acc_png)
        files["confusion_plot"] = str(plots.plot_confusion(report.confusion, setup.classes,
                                                           run_dir / "confusion_matrix.png"))
        before = M.reliability_bins(M.softmax(logits), y)
        after = M.reliability_bins(M.softmax(logits, cal.temperature), y)
        files["reliability_plot"] = str(plots.plot_reliability(before, after, cal.temperature,
                                                               run_dir / "reliability.png"))
        if positive is not None:
            k = setup.classes.index(positive)
            scores = M.softmax(logits, cal.temperature)[:, k]
            prec, rec, _ = M.pr_curve(scores, y == k)
            files["pr_plot"] = str(plots.plot_pr(
                prec, rec, positive, run_dir / "pr_curve.png",
                cal.threshold.to_dict() if cal.threshold is not None else None,
                M.average_precision(scores, y == k),
            ))
    except Exception as e:  # a plotting problem must not lose a finished training run
        log.warning("plotting failed (%s: %s); checkpoints and metrics are written", type(e).__name__, e)
    return files


TIE = 1e-9  # the head-phase model ties the best epoch when its selection metric is this close (equal counts)


def _crossfit_for(setup: RunSetup, state: RunState, epoch: int):
    return state.crossfit if epoch == 0 and setup.config.crossfit and state.crossfit is not None else None


def _strength(cal: Calibration) -> Tuple[float, float]:
    """How strong a promise is: (the certified target, its recall); refused, the best promise the images allow
    (always below the requested target); else (0, 0)."""
    g = cal.confidence.guarantee if cal.confidence is not None else None
    if g is None:
        return (0.0, 0.0)
    if g.certified:
        return (g.target, g.recall)
    if getattr(g, "best_target", None) is not None:
        return (float(g.best_target), float(g.best_recall or 0.0))
    return (0.0, 0.0)


def _option(cal: Calibration) -> Dict[str, Any]:
    g = cal.confidence.guarantee if cal.confidence is not None else None
    return {"statement": cal.statement, "certified": bool(g is not None and g.certified),
            "source": cal.confidence.source if cal.confidence is not None else None,
            "best_target": getattr(g, "best_target", None), "best_recall": getattr(g, "best_recall", None)}


def head_replaces(head_metric: float, best_metric: float, head_strength: Tuple[float, float],
                  best_strength: Tuple[float, float]) -> Tuple[bool, bool]:
    """``(ties, stronger)``: the head-phase model is deployed instead of the best epoch only when both hold —
    its selection metric equals the best epoch's (:data:`TIE`) and its promise is stronger (:func:`_strength`)."""
    return head_metric >= best_metric - TIE, head_strength > best_strength


def choose_deployed(setup: RunSetup, state: RunState, bad: BadImages) -> Dict[str, Any]:
    """The honest promise options of the run, measured, and the model deployed as ``best.pt``.

    When the best epoch is a fine-tuned one, its promise can only come from the held-out calibration split; the
    head-phase model (frozen backbone) can use the cross-fitted scores of every labelled image. Accuracy comes
    first: the head-phase model replaces ``best.pt`` only when it *ties* the best epoch on the selection images (the
    recipe's metric equal, :data:`TIE`) and its promise is stronger — the promise breaks ties, it never buys a
    less accurate model. Returns what was compared, for ``summary.json``."""
    from edgecls.train.outputs import save_checkpoint

    head = state.head_model
    out: Dict[str, Any] = {"deployed_epoch": state.best_epoch, "options": {}}
    if state.best_epoch == 0 or head is None or setup.config.positive is None or not setup.config.crossfit:
        out["reason"] = "the selected epoch" + (" (the head phase: cross-fitted scores)"
                                                if _crossfit_for(setup, state, state.best_epoch) else "")
        return out
    best_cal = calibrate_val(setup, state.best_logits, state.best_index)
    head_cal = calibrate_val(setup, head["logits"], head["index"], state.crossfit)
    jb, jh = judge(setup, state.best_logits, state.best_index), judge(setup, head["logits"], head["index"])
    out["options"] = {f"epoch {state.best_epoch} (fine-tuned), held-out calibration split": _option(best_cal),
                      "epoch 0 (head phase), cross-fitted scores": _option(head_cal)}
    tie, stronger = head_replaces(jh.score[0], jb.score[0], _strength(head_cal), _strength(best_cal))
    out["head_ties"], out["head_promise_stronger"] = bool(tie), bool(stronger)
    out["selection"] = {"metric": setup.recipe.select, "head": jh.score[0], f"epoch {state.best_epoch}": jb.score[0],
                        "images": len(split_of(setup, head["index"], False))}
    if not (tie and stronger):
        out["reason"] = ("the fine-tuned epoch: " + (
            f"it is more accurate on the selection images ({setup.recipe.select} {jb.score[0]:.4f} vs the head "
            f"phase's {jh.score[0]:.4f}); the promise only breaks ties" if not tie
            else "the head-phase model ties it but its promise is not stronger"))
        log.info("deploying epoch %d: %s", state.best_epoch, out["reason"])
        return out
    log.info("deploying the head-phase model (epoch 0) instead of epoch %d: it ties on the %d selection images "
             "(%s %.4f) and its promise, on cross-fitted scores of every labelled image, is stronger than the "
             "held-out split's", state.best_epoch, len(split_of(setup, head["index"], False)), setup.recipe.select,
             jh.score[0])
    out.update(deployed_epoch=0, replaced_epoch=state.best_epoch,
               reason="the head-phase model: ties on the selection images, stronger promise")
    if setup.ctx.is_main:
        report = calibrated_report(setup, head["logits"], head["index"], head_cal)
        save_checkpoint(setup, bad, setup.run_dir / "best.pt", 0, head["weights"], head_cal, report, "head", None)
    state.best_epoch, state.best_logits, state.best_index = 0, head["logits"], head["index"]
    return out
