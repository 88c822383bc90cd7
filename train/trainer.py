"""The training run behind ``edgecls train``: head phase on cached features, fine-tuning, checkpoints, reports.

``train(config)`` runs one training run and returns a :class:`~edgecls.train.report.TrainResult`;
``resume_config(path_or_run)`` + ``train(config, resume_from=last.pt)`` continue an interrupted one. Single
process or under ``torchrun`` (DDP; rank 0 writes the outputs).

Per epoch (epoch 0 = the head phase when the recipe has one) the model is evaluated on val through the runtime
preprocessing, the best epoch is chosen by the recipe's ``select`` metric (balanced accuracy by default; ties
broken by the positive class's average precision when there is one, then by the lower val loss), and ``best.pt``
(on improvement) and ``last.pt`` (always, with the train state for ``--resume``) are written atomically, each
already calibrated: temperature fitted on val and, with a positive class, the threshold for the target precision.

The flow, one file per step: :mod:`~edgecls.train.session` (data, model, run folder) →
:mod:`~edgecls.train.linear_head` (epoch 0) → :mod:`~edgecls.train.epoch` (fine-tuning epochs, eval passes) →
:mod:`~edgecls.train.selection` + :mod:`~edgecls.train.history` (judge, record, stop) →
:mod:`~edgecls.train.outputs` (checkpoints, metrics.csv) → :mod:`~edgecls.train.report` (summary, plots).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError, TrainingDiverged
from edgecls.train import distributed as D
from edgecls.train.config import RESUMABLE_CHANGES, TrainConfig
from edgecls.train.epoch import EpochRunner, FineTune, make_optimizer
from edgecls.train.history import RunState, fmt
from edgecls.train.linear_head import head_phase
from edgecls.train.outputs import write_epoch
from edgecls.train.report import TrainResult, finish
from edgecls.train.selection import judge
from edgecls.train.session import BadImages, RunSetup, prepare

log = logging.getLogger(__name__)


class Trainer:
    """One run. :meth:`run` builds the :class:`RunSetup` (fixed), the :class:`RunState` (what the run has done,
    restored on resume), :class:`BadImages` and an :class:`EpochRunner`, then runs the two phases."""

    def __init__(self, config: TrainConfig, ctx: D.DistContext, resume_from: Optional[Path] = None):
        self.config = config
        self.ctx = ctx
        self.resume_from = resume_from

    def run(self) -> TrainResult:
        import torch

        t0 = time.monotonic()
        setup, model, ckpt = prepare(self.config, self.ctx, self.resume_from)
        ts = (ckpt.train_state or {}) if ckpt is not None else {}
        state = RunState.restore(ts, t0) if ckpt is not None else RunState(t0=t0)
        bad = BadImages.recorded(self.ctx, setup.data) if ckpt is not None else BadImages(self.ctx)
        scaler = torch.amp.GradScaler("cuda", enabled=setup.use_amp)
        phases = _Phases(setup, state, bad, scaler)
        start_epoch = int(ts.get("epoch", 0)) + 1 if ckpt is not None else 1
        if ckpt is not None:
            log.info("resuming %s at epoch %d of %d", setup.run_dir, start_epoch, setup.recipe.epochs)
        try:
            phases.run(model, start_epoch, ts, resumed=ckpt is not None)
        except KeyboardInterrupt:
            if self.ctx.is_main:
                log.warning("interrupted: last.pt holds the last finished epoch; continue with --resume %s",
                            setup.run_dir)
            raise
        result = finish(setup, state, bad)
        if self.config.calib_data and self.ctx.is_main:
            result = calibrate_on_folder(result, self.config)
        D.barrier(self.ctx)
        return result


class _Phases:
    """The head phase, then fine-tuning; every epoch ends in :meth:`end_epoch`."""

    def __init__(self, setup: RunSetup, state: RunState, bad: BadImages, scaler) -> None:
        self.setup, self.state, self.bad = setup, state, bad
        self.runner = EpochRunner(setup, bad)
        self.scaler = scaler
        self.optimizer = None  # created by the fine-tuning phase
        self.teacher = None  # distillation targets (recipe.distill > 0), made after the head phase

    def run(self, model, start_epoch: int, ts: Dict[str, Any], resumed: bool) -> None:
        cfg, r, state = self.setup.config, self.setup.recipe, self.state
        stop = False
        if r.head_max_iter > 0 and not state.head_done:  # phase 1: head on cached frozen features
            if cfg.pretrained:
                stop = self.head(model)
            else:
                log.info("--weights none: no pretrained features to cache, skipping the head phase")
        if r.epochs == 0 and state.best_epoch < 0:
            raise InputError("nothing to train: --epochs 0 and no head phase (it needs pretrained --weights)")
        if start_epoch <= r.epochs and not stop and r.finetune == "partial":  # phase 2: the tail on cached views
            self.partial(model, start_epoch, ts.get("optimizer"))
        elif start_epoch <= r.epochs and not stop:  # phase 2: fine-tune everything
            self.finetune(model, start_epoch, ts.get("optimizer"), ts.get("scaler"))
        elif resumed:
            state.stop_reason = ts.get("stop_reason") if ts.get("stop_reason") != "running" else None
            log.info("the run is already at epoch %d of %d: nothing to train, outputs refreshed",
                     start_epoch - 1, r.epochs)

    def head(self, model) -> bool:
        from edgecls.train.outputs import cpu_state

        keep: Dict[str, Any] = {}
        row, logits, index, crossfit = head_phase(self.runner, model, self.state.head_info, keep)
        if self.setup.ctx.is_main:  # for --add-classes on the head-phase model: no second extraction
            from edgecls.train.feature_cache import store_head_phase

            data = self.setup.data
            store_head_phase(self.setup.run_dir, model, self.setup.config.arch, list(data.train) + list(data.val),
                             np.concatenate([keep["feats_tr"], keep["feats_va"]]),
                             np.concatenate([keep["idx_tr"], keep["idx_va"] + len(data.train)]))
        r = self.setup.recipe
        if r.distill > 0 and r.epochs > 0 and self.setup.config.pretrained:  # its targets serve fine-tuning only
            from edgecls.train.distill import teacher_targets

            self.teacher = teacher_targets(self.setup, keep["feats_tr"], keep["idx_tr"], keep["feats_va"],
                                           keep["idx_va"])
            self.state.head_info["teacher"] = {"oof_train_acc": self.teacher.oof_accuracy,
                                               "val_acc": self.teacher.val_accuracy,
                                               "feature_dim": self.teacher.feature_dim,
                                               "seconds": self.teacher.seconds}
        self.state.head_done = True
        self.state.crossfit = crossfit
        if crossfit is not None:  # kept to deploy it when its promise is stronger (report.choose_deployed)
            self.state.head_model = {"weights": cpu_state(model), "logits": logits, "index": index, "row": row}
        return self.end_epoch(0, "head", row, logits, index, model)

    def _fine_tune_setup(self, model, opt_state, scaler_state) -> FineTune:
        import torch
        from torch import nn

        from edgecls.train.data import EpochSampler, TrainDataset, train_transform

        setup, r, ctx = self.setup, self.setup.recipe, self.setup.ctx
        for p in model.parameters():
            p.requires_grad_(True)
        ddp_model = model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp_model = DDP(model, device_ids=[setup.device.index] if ctx.cuda else None)
        from edgecls.reference.models import head_of

        self.optimizer = make_optimizer(model, r, head=head_of(model, setup.config.arch))
        if opt_state is not None:
            self.optimizer.load_state_dict(opt_state)
        if scaler_state is not None and setup.use_amp:
            self.scaler.load_state_dict(scaler_state)
        dataset = TrainDataset(setup.data.train, train_transform(r.crop_size, r.scale, r.hflip, setup.pspec,
                                                                    r.rotate))
        sampler = EpochSampler(
            setup.train_y, setup.num_classes, balanced=(r.balance == "sampler"),
            num_samples=r.epoch_samples, seed=setup.config.seed, rank=ctx.rank, world_size=ctx.world_size,
        )
        weight = None
        if r.balance == "weights":
            weight = torch.as_tensor(setup.class_weights, dtype=torch.float32, device=setup.device)
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=r.label_smoothing)
        if r.distill > 0 and setup.config.pretrained:
            from edgecls.train.distill import DistillLoss, backbone_features, teacher_targets

            if self.teacher is None:  # resumed after the head phase: the frozen backbone's features again
                f_tr, i_tr = backbone_features(setup, setup.data.train, setup.config.arch, setup.config.weights,
                                               "features train (teacher)")
                self.teacher = teacher_targets(setup, f_tr, i_tr, None, None)
            criterion = DistillLoss(self.teacher.logits, r.distill, r.distill_t, criterion, setup.device)
        return FineTune(ddp_model, self.optimizer, self.scaler, sampler, criterion, dataset)

    def finetune(self, model, start_epoch: int, opt_state, scaler_state) -> None:
        fit = self._fine_tune_setup(model, opt_state, scaler_state)
        for epoch in range(start_epoch, self.setup.recipe.epochs + 1):
            row = self.runner.train_epoch(fit, epoch)
            t = time.monotonic()
            logits, index = self.runner.run_eval(model, self.setup.data.val, f"val {epoch}")
            row["seconds"] = round(row["seconds"] + time.monotonic() - t, 3)
            if self.end_epoch(epoch, "finetune", row, logits, index, model):
                log.info("stopping after epoch %d: %s", epoch, self.state.stop_reason)
                break

    def partial(self, model, start_epoch: int, opt_state) -> None:
        """The ``partial`` recipe: cache the frozen front's activations once, train the tail epoch by epoch."""
        from edgecls.train.partial_finetune import PartialFineTune

        fit = PartialFineTune(self.setup, self.bad, model)
        self.optimizer = fit.optimizer
        if opt_state is not None:
            fit.optimizer.load_state_dict(opt_state)
        t = time.monotonic()
        fit.build_cache()
        cache_s = time.monotonic() - t
        for epoch in range(start_epoch, self.setup.recipe.epochs + 1):
            row = fit.run_epoch(epoch)
            t = time.monotonic()
            logits, index = fit.val_logits()
            row["seconds"] = round(row["seconds"] + time.monotonic() - t + (cache_s if epoch == start_epoch else 0), 3)
            if self.end_epoch(epoch, "partial", row, logits, index, model):
                log.info("stopping after epoch %d: %s", epoch, self.state.stop_reason)
                break

    def end_epoch(self, epoch: int, phase: str, row: Dict[str, Any], logits: np.ndarray, index: np.ndarray,
                  model) -> bool:
        """Judge and record an epoch, save best/last (rank 0); True when the run should stop (early/time)."""
        setup, state = self.setup, self.state
        check_finite(setup, state, epoch, phase, row, logits)
        j = judge(setup, logits, index)
        improved = state.record(epoch, phase, row, j, logits, index,
                                skipped=len(setup.data.skipped) + len(self.bad.paths))
        stop = state.should_stop(epoch, phase, setup.config)
        pk, rep = j.pos_index, j.report
        log.info(
            "epoch %d (%s): train loss %s acc %s | val loss %.4f acc %.4f balanced %.4f macro-F1 %.4f%s | %.1fs%s",
            epoch, phase, fmt(row.get("train_loss")), fmt(row.get("train_acc")), j.val_loss, rep.accuracy,
            rep.balanced_accuracy, rep.macro_f1,
            f" {setup.config.positive} P/R {rep.per_class[pk].precision:.3f}/{rep.per_class[pk].recall:.3f}"
            if pk is not None else "", row.get("seconds", 0.0), "  * best" if improved else "",
        )
        if setup.ctx.is_main:
            write_epoch(setup, state, self.bad, epoch, phase, model, logits, index, improved, self.optimizer,
                        self.scaler)
        return stop


def calibrate_on_folder(result: TrainResult, config: TrainConfig) -> TrainResult:
    """``--calib-data DIR``: best.pt and last.pt re-fitted on the labelled folder (their weights untouched); the
    summary records what each can now state."""
    import dataclasses
    import json

    from edgecls.core.fileio import write_text
    from edgecls.reference.recalibrate import recalibrate_checkpoint
    from edgecls.runtime.confidence import ConfidenceSettings

    settings = ConfidenceSettings(coverage=config.coverage, target_precision=config.target_precision,
                                  delta=config.delta, best=config.best_promise)
    done = {}
    for path in (result.best_path, result.last_path):
        r = recalibrate_checkpoint(path, config.calib_data, settings, combine=False)  # instead of val's
        done[path.name] = {"images": r.images, "positives": r.positives, "temperature": r.spec.temperature,
                           "statement": r.statement}
    log.info("--calib-data %s: best.pt re-fitted on %d labelled images: %s", config.calib_data,
             done["best.pt"]["images"], done["best.pt"]["statement"])
    summary = dict(result.summary, recalibrated={"data": config.calib_data, **done})
    write_text(result.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return dataclasses.replace(result, summary=summary)


def check_finite(setup: RunSetup, state: RunState, epoch: int, phase: str, row: Dict[str, Any],
                 logits: np.ndarray) -> None:
    """TrainingDiverged (exit 9) when the train loss or the val logits are NaN/infinite: a clear message instead
    of a traceback from the metrics, and no checkpoint written from a broken model (the earlier ones stay)."""
    loss = row.get("train_loss")
    bad = []
    if loss is not None and row.get("train_samples") and not np.isfinite(loss):
        bad.append(f"train loss {loss}")
    if not np.all(np.isfinite(logits)):
        bad.append(f"{int(np.sum(~np.isfinite(logits).all(axis=-1)))} of {len(logits)} val logit rows")
    if not bad:
        return
    kept = (f"best.pt (epoch {state.best_epoch}) and last.pt in {setup.run_dir} are from before and intact"
            if state.best_epoch >= 0 else "no checkpoint was written")
    raise TrainingDiverged(
        f"training diverged at epoch {epoch} ({phase}): {' and '.join(bad)} became NaN or infinite. The learning "
        f"rate is probably too high (--lr {setup.recipe.lr:g}): try 10x lower; {kept}"
    )


# ------------------------------------------------------------------------------------------------- API


def train(config: TrainConfig, resume_from: Optional[os.PathLike] = None) -> TrainResult:
    """Train (or, with ``resume_from`` = a ``last.pt``, continue) one run. Sets up / tears down torchrun's DDP."""
    ctx = D.setup(config.device)
    try:
        return Trainer(config, ctx, Path(resume_from) if resume_from is not None else None).run()
    finally:
        D.cleanup(ctx)


def resume_config(path_or_run: os.PathLike, **changes: Any) -> Tuple[TrainConfig, Path]:
    """The stored config of an interrupted run and its ``last.pt``, with the allowed ``changes`` applied.

    ``changes`` may only touch :data:`~edgecls.train.config.RESUMABLE_CHANGES` (``epochs``, ``workers``,
    ``device``, ``progress``, ``max_minutes``, ``patience``); anything else that differs is refused.
    """
    from edgecls.reference.checkpoint import CheckpointError, load_checkpoint

    p = Path(path_or_run).expanduser()
    last = p / "last.pt" if p.is_dir() else p
    if not last.is_file():
        what = "does not exist" if not p.exists() else "has no last.pt"
        raise CheckpointError(f"--resume {p} {what} (expected a run folder holding last.pt, or a last.pt)")
    ckpt = load_checkpoint(last)
    ts = ckpt.train_state
    if not ts or "config" not in ts:
        raise CheckpointError(f"--resume {last}: this checkpoint has no train state (only a run's last.pt can resume)")
    cfg = TrainConfig.from_dict(ts["config"])
    recipe_changes = {k: v for k, v in changes.items() if v is not None and hasattr(cfg.recipe, k)}
    cfg_changes = {k: v for k, v in changes.items() if v is not None and not hasattr(cfg.recipe, k)}
    bad = [k for k in list(recipe_changes) + list(cfg_changes) if k not in RESUMABLE_CHANGES]
    if bad:
        raise InputError(
            f"--resume continues the run with its own settings; these cannot change: {bad} "
            f"(may change: {', '.join(RESUMABLE_CHANGES)})"
        )
    if recipe_changes:
        cfg = cfg.replace(recipe=cfg.recipe.override(**recipe_changes))
    if cfg_changes:
        cfg = cfg.replace(**cfg_changes)
    return cfg, last
