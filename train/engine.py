"""The training loop behind ``edgecls train``: head phase on cached features, fine-tuning, checkpoints, reports.

``train(config)`` runs one training run and returns a :class:`TrainResult`; ``resume(path_or_run)`` continues an
interrupted one from its ``last.pt``. Single process or under ``torchrun`` (DDP; rank 0 writes the outputs).

Per epoch (epoch 0 = the head phase when the recipe has one) the model is evaluated on val through the runtime
preprocessing, the best epoch is chosen by the recipe's ``select`` metric (balanced accuracy by default; ties
broken by the positive class's average precision when there is one, then by the lower val loss), and ``best.pt`` (on improvement) and ``last.pt`` (always, with the train state for
``--resume``) are written atomically, each already calibrated: temperature fitted on val and, with a positive
class, the threshold for the target precision.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.errors import InputError
from edgecls.runtime import metrics as M
from edgecls.runtime.spec import ModelSpec, PreprocessSpec
from edgecls.train import distributed as D
from edgecls.train.calibrate import Calibration, calibrate
from edgecls.train.config import RESUMABLE_CHANGES, Recipe, TrainConfig
from edgecls.train.data import DataSplit

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "epoch", "phase", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_balanced_acc", "val_macro_f1",
    "val_pos_precision", "val_pos_recall", "val_pos_ap", "train_samples", "skipped", "seconds", "elapsed_s", "best",
)


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
            f"confidence temperature {cal.temperature:.4f}: ECE {cal.ece_before:.4f} -> {cal.ece_after:.4f}, "
            f"NLL {cal.nll_before:.4f} -> {cal.nll_after:.4f}",
        ]
        if cal.threshold is not None:
            t = cal.threshold
            lines.append(
                f"threshold  {t.threshold:.4f} for {cal.positive!r} at target precision {t.target_precision:.2f}: "
                f"precision {t.precision:.4f}, recall {t.recall:.4f}" + ("" if t.achieved else "  (TARGET NOT MET)")
            )
        lines += ["", self.report.table(), "", f"best.pt {self.best_path}", f"last.pt {self.last_path}"]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ helpers


def _atomic_write_text(path: Path, text: str) -> None:
    from edgecls.fileio import write_text

    write_text(path, text)


def _free_run_dir(project: Path, name: str) -> Path:
    """``project/name``, or ``name2``, ``name3`` ... : the first one that does not exist yet."""
    cand = project / name
    i = 2
    while cand.exists():
        cand = project / f"{name}{i}"
        i += 1
    return cand


def choose_run_dir(config: TrainConfig) -> Path:
    """The run folder: never an existing non-empty one unless ``exist_ok``."""
    if config.out:
        out = Path(config.out).expanduser()
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not config.exist_ok:
            raise InputError(
                f"--out {out} already holds a run; pass --exist-ok to write into it, --resume {out} to continue "
                f"it, or choose another --out"
            )
        return out
    project = Path(config.project).expanduser()
    if config.exist_ok:
        return project / config.name
    return _free_run_dir(project, config.name)


def _rank0(ctx: D.DistContext, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 and hand its result (or its exception) to every rank."""
    if not ctx.distributed:
        return fn(*args, **kwargs)
    box: Any = None
    if ctx.is_main:
        try:
            box = ("ok", fn(*args, **kwargs))
        except Exception as e:  # re-raised on every rank below
            box = ("err", e)
    box = D.broadcast(ctx, box)
    if box[0] == "err":
        raise box[1]
    return box[1]


def lr_at(recipe: Recipe, epoch: int, step: int, steps: int) -> float:
    """Learning rate at ``step``/``steps`` of fine-tuning ``epoch`` (1-based): a pure function, so resumable."""
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** ((epoch - 1) // recipe.step_size)
    if recipe.schedule == "cosine":
        t = (epoch - 1 + step / max(steps, 1)) / max(recipe.epochs, 1)
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return recipe.lr


def _weighted_ce(logits: np.ndarray, y: np.ndarray, weights: Optional[np.ndarray]) -> float:
    """Cross-entropy as torch computes it with ``weight=``: ``sum(w_y * nll) / sum(w_y)``."""
    if len(y) == 0:
        return float("nan")
    lp = M.log_softmax(logits)
    nll = -lp[np.arange(len(y)), y]
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)[y]
    return float(np.sum(w * nll) / np.sum(w))


def _score(report: M.ClassificationReport, select: str, val_loss: float, pos_ap: Optional[float]) -> Tuple[float, ...]:
    """What "better" means: the recipe's metric, then (with a positive class) its average precision — the
    ranking the deployed threshold acts on — then the lower val loss."""
    main = report.balanced_accuracy if select == "balanced_accuracy" else report.macro_f1
    return (float(main), float(pos_ap) if pos_ap is not None else 0.0,
            -float(val_loss) if math.isfinite(val_loss) else -1e30)


def _cpu_state(model) -> Dict[str, Any]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    def __init__(self, config: TrainConfig, ctx: D.DistContext, resume_from: Optional[Path] = None):
        self.config = config
        self.recipe = config.recipe
        self.ctx = ctx
        self.resume_from = resume_from
        self.bad_paths: Dict[str, str] = {}
        self.history: List[Dict[str, Any]] = []
        self.best_epoch = -1
        self.best_score: Tuple[float, ...] = (-math.inf, -math.inf, -math.inf)
        self.best_logits: Optional[np.ndarray] = None
        self.best_index: Optional[np.ndarray] = None
        self.bad_epochs = 0
        self.elapsed_before = 0.0
        self.stop_reason: Optional[str] = None  # set when the run ends (None while it runs)
        self.head_info: Dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------- setup

    def _progress(self) -> bool:
        return self.config.progress and self.ctx.is_main

    def _workers(self) -> int:
        if self.config.workers is not None:
            return self.config.workers
        cpus = os.cpu_count() or 1
        return min(8, cpus) if self.ctx.cuda else min(8, cpus // 4)

    def _setup_data(self, ckpt) -> DataSplit:
        from edgecls.train.data import discover, split_from_checkpoint_data

        if ckpt is not None:
            return split_from_checkpoint_data(ckpt.data)
        return _rank0(
            self.ctx, discover, self.config.data_path, val_fraction=self.config.val_fraction, seed=self.config.seed
        )

    def _eval_loader(self, items, batch_size: int):
        import torch
        from torch.utils.data import DataLoader, Subset

        from edgecls.train.data import EvalDataset, collate_skip

        ds = EvalDataset(items, self.pspec)
        if self.ctx.distributed:
            ds = Subset(ds, list(range(self.ctx.rank, len(ds), self.ctx.world_size)))
        return DataLoader(
            ds, batch_size=batch_size, shuffle=False, num_workers=self._workers(), collate_fn=collate_skip,
            pin_memory=self.ctx.cuda, generator=torch.Generator().manual_seed(0),
        )

    def _note_bad(self, bad: Sequence[Tuple[str, str]]) -> None:
        for p, reason in bad:
            if p not in self.bad_paths:
                self.bad_paths[p] = reason
                if self.ctx.is_main:
                    log.warning("skipping unreadable image %s (%s)", p, reason)

    def _gather_bad(self) -> None:
        merged: Dict[str, str] = {}
        for d in D.all_gather(self.ctx, dict(self.bad_paths)):
            merged.update(d)
        self.bad_paths = merged

    def _to_device(self, x):
        import torch

        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x

    def _autocast(self):
        import torch

        return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp)

    # -------------------------------------------------------------------------------------------- evaluate

    def _run_eval(self, model, items, desc: str, hook_features: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Forward ``items`` in eval mode: ``(outputs, index)`` gathered over ranks, sorted by index.

        ``hook_features`` returns the head's *input* (the frozen features) instead of the logits.
        """
        import torch
        from tqdm import tqdm

        from edgecls.train.models import head_of

        model.eval()
        grabbed: List[Any] = []
        handle = None
        if hook_features:
            handle = head_of(model, self.config.arch).register_forward_hook(
                lambda mod, inp, out: grabbed.append(inp[0].detach().float().cpu())
            )
        outs, idxs = [], []
        loader = self._eval_loader(items, max(self.recipe.batch_size, 32))
        try:
            with torch.inference_mode():
                for batch in tqdm(loader, desc=desc, disable=not self._progress(), leave=False, unit="batch"):
                    self._note_bad(batch.bad)
                    if len(batch.y) == 0:
                        continue
                    with self._autocast():
                        out = model(self._to_device(batch.x))
                    outs.append(grabbed.pop() if hook_features else out.float().cpu())
                    idxs.append(batch.index)
        finally:
            if handle is not None:
                handle.remove()
        dim = outs[0].shape[1] if outs else (0 if hook_features else self.num_classes)
        out = torch.cat(outs).numpy() if outs else np.zeros((0, dim), np.float32)
        idx = torch.cat(idxs).numpy() if idxs else np.zeros(0, np.int64)
        if self.ctx.distributed:  # every rank saw its own shard (indices are positions in ``items``): gather
            parts = D.all_gather(self.ctx, (out, idx))
            out = np.concatenate([p[0] for p in parts])
            idx = np.concatenate([p[1] for p in parts])
            self._gather_bad()
        order = np.argsort(idx, kind="stable")
        return out[order], idx[order]

    def _val_report(self, logits: np.ndarray, index: np.ndarray) -> Tuple[M.ClassificationReport, float]:
        y = self.val_y[index]
        report = M.classification_report(y, M.softmax(logits), self.classes)
        return report, _weighted_ce(logits, y, self.class_weights)  # balanced: imbalance cannot fool it

    # ------------------------------------------------------------------------------------------ checkpoint

    def _spec(self, cal: Calibration) -> ModelSpec:
        return ModelSpec(
            arch=self.config.arch,
            classes=self.classes,
            preprocess=self.pspec,
            positive=self.config.positive,
            temperature=cal.temperature,
            threshold=cal.spec_threshold,
        )

    def _calibrate(self, logits: np.ndarray, index: np.ndarray) -> Calibration:
        return calibrate(logits, self.val_y[index], self.classes, self.config.positive, self.config.target_precision)

    def _data_record(self) -> Dict[str, Any]:
        return self.data.without(list(self.bad_paths)).to_checkpoint_data()

    def _calibrated_report(self, logits: np.ndarray, index: np.ndarray, cal: Calibration) -> M.ClassificationReport:
        pos = self.config.positive
        return M.classification_report(
            self.val_y[index], M.softmax(logits, cal.temperature), self.classes, positive=pos,
            threshold=cal.spec_threshold if pos is not None else None,
        )

    def _save(self, path: Path, epoch: int, state: Dict[str, Any], cal: Calibration,
              report: M.ClassificationReport, phase: str, train_state: Optional[Dict[str, Any]]) -> None:
        from edgecls.train.checkpoint import Checkpoint, save_checkpoint

        ckpt = Checkpoint(
            spec=self._spec(cal),
            state_dict=state,
            epoch=epoch,
            metrics={
                "epoch": epoch,
                "phase": phase,
                "select": self.recipe.select,
                "val": report.to_dict(),
                "calibration": cal.to_dict(),
            },
            data=self._data_record(),
            train_state=train_state,
        )
        save_checkpoint(ckpt, path)

    def _train_state(self, epoch: int) -> Dict[str, Any]:
        import torch

        return {
            "config": self.config.to_dict(),
            "epoch": int(epoch),
            "head_done": bool(self.head_done),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None and self.use_amp else None,
            "history": list(self.history),
            "best_epoch": int(self.best_epoch),
            "best_score": [float(s) for s in self.best_score],
            "best_val_logits": torch.from_numpy(np.ascontiguousarray(self.best_logits, dtype=np.float32)),
            "best_val_index": torch.from_numpy(np.ascontiguousarray(self.best_index, dtype=np.int64)),
            "bad_epochs": int(self.bad_epochs),
            "elapsed_s": float(self._elapsed()),
            "stop_reason": self.stop_reason or "running",
            "world_size": self.ctx.world_size,
            "head_info": _jsonable(self.head_info),
        }

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t0)

    def _end_epoch(self, epoch: int, phase: str, row: Dict[str, Any], logits: np.ndarray, index: np.ndarray,
                   state_fn) -> bool:
        """Record an epoch, save best/last, return True when the run should stop (early stopping/time)."""
        report, val_loss = self._val_report(logits, index)
        pos = self.config.positive
        pk = self.classes.index(pos) if pos is not None else None
        pos_ap = None
        if pk is not None and np.any(self.val_y[index] == pk):
            pos_ap = M.average_precision(M.softmax(logits)[:, pk], self.val_y[index] == pk)
        score = _score(report, self.recipe.select, val_loss, pos_ap)
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_logits, self.best_index = logits, index
        else:
            self.bad_epochs += 1
        row.update(
            epoch=epoch,
            phase=phase,
            val_loss=val_loss,
            val_acc=report.accuracy,
            val_balanced_acc=report.balanced_accuracy,
            val_macro_f1=report.macro_f1,
            val_pos_precision=report.per_class[pk].precision if pk is not None else None,
            val_pos_recall=report.per_class[pk].recall if pk is not None else None,
            val_pos_ap=pos_ap,
            skipped=len(self.data.skipped) + len(self.bad_paths),
            elapsed_s=round(self._elapsed(), 3),
            best=improved,
        )
        self.history.append(row)
        stop = False
        if self.recipe.patience is not None and self.bad_epochs >= self.recipe.patience and phase != "head":
            self.stop_reason = f"early stopping (no better {self.recipe.select} for {self.bad_epochs} epochs)"
            stop = True
        if self.config.max_minutes is not None and self._elapsed() > 60 * self.config.max_minutes:
            self.stop_reason = f"time budget ({self.config.max_minutes:g} min)"
            stop = True
        if not stop and epoch >= self.recipe.epochs:
            self.stop_reason = "completed"
        log.info(
            "epoch %d (%s): train loss %s acc %s | val loss %.4f acc %.4f balanced %.4f macro-F1 %.4f%s | %.1fs%s",
            epoch, phase, _fmt(row.get("train_loss")), _fmt(row.get("train_acc")), val_loss, report.accuracy,
            report.balanced_accuracy, report.macro_f1,
            f" {pos} P/R {report.per_class[pk].precision:.3f}/{report.per_class[pk].recall:.3f}" if pk is not None
            else "", row.get("seconds", 0.0), "  * best" if improved else "",
        )
        if self.ctx.is_main:
            state, cal = state_fn(), self._calibrate(logits, index)
            cal_report = self._calibrated_report(logits, index, cal)
            if improved:
                self._save(self.run_dir / "best.pt", epoch, state, cal, cal_report, phase, None)
            self._save(self.run_dir / "last.pt", epoch, state, cal, cal_report, phase, self._train_state(epoch))
            self._write_csv()
        return stop

    def _write_csv(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
        _atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())

    # ---------------------------------------------------------------------------------------- head phase

    def _head_phase(self, model) -> bool:
        import torch

        from edgecls.train.models import head_of

        t = time.monotonic()
        feats_tr, idx_tr = self._run_eval(model, self.data.train, "features train", hook_features=True)
        feats_va, idx_va = self._run_eval(model, self.data.val, "features val", hook_features=True)
        extract_s = time.monotonic() - t
        n_imgs = len(idx_tr) + len(idx_va)
        log.info("features: %d images in %.1fs (%.1f img/s)", n_imgs, extract_s, n_imgs / max(extract_s, 1e-9))
        y_tr = self.train_y[idx_tr]
        r = self.recipe
        t_fit = time.monotonic()
        l2 = r.head_l2
        if l2 is None:
            l2, cv_table = _rank0(
                self.ctx, select_head_l2, feats_tr, y_tr, self.num_classes, r.head_l2_grid, r.head_cv_folds,
                self.config.seed, r.head_balance, r.head_max_iter,
            )
            self.head_info["cv"] = cv_table
        weight, bias = fit_linear_head(feats_tr, y_tr, self.num_classes, self.head_weights, l2, r.head_max_iter)
        fit_s = time.monotonic() - t_fit
        self.head_info.update(l2=l2, fit_seconds=round(fit_s, 3), feature_seconds=round(extract_s, 3),
                              feature_images=int(n_imgs), feature_dim=int(feats_tr.shape[1]))
        head = head_of(model, self.config.arch)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(weight).to(head.weight))
            head.bias.copy_(torch.from_numpy(bias).to(head.bias))
        tr_logits = feats_tr @ weight.T + bias
        va_logits = (feats_va @ weight.T + bias).astype(np.float32)
        log.info("head (L2 %g) fitted on %d cached features in %.3fs", l2, len(y_tr), fit_s)
        self.head_done = True
        self.feature_seconds = extract_s
        row = {
            "lr": None,
            "train_loss": _weighted_ce(tr_logits, y_tr, self.head_weights),
            "train_acc": float(np.mean(tr_logits.argmax(1) == y_tr)) if len(y_tr) else float("nan"),
            "train_samples": int(len(y_tr)),
            "seconds": round(time.monotonic() - t, 3),
        }
        return self._end_epoch(0, "head", row, va_logits, idx_va, lambda: _cpu_state(_unwrap(model)))

    # ----------------------------------------------------------------------------------------- fine-tune

    def _make_optimizer(self, model):
        import torch

        r = self.recipe
        params = [p for p in model.parameters() if p.requires_grad]
        if r.optimizer == "sgd":
            return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
        return torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)

    def _finetune_epoch(self, ddp_model, epoch: int, sampler, criterion) -> Dict[str, Any]:
        import torch
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        from edgecls.train.data import collate_skip

        r = self.recipe
        t = time.monotonic()
        sampler.set_epoch(epoch)
        torch.manual_seed(self.config.seed * 1000003 + epoch * 101 + self.ctx.rank)
        loader = DataLoader(
            self.train_ds, batch_size=r.batch_size, sampler=sampler, num_workers=self._workers(),
            collate_fn=collate_skip, pin_memory=self.ctx.cuda, drop_last=len(sampler) > r.batch_size,
            generator=torch.Generator().manual_seed(self.config.seed * 7919 + epoch),
        )
        ddp_model.train()
        if r.bn_eval and self.config.pretrained:  # keep pretrained BN statistics (small data, FixRes gap)
            for m in ddp_model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        steps = len(loader)
        loss_sum, correct, seen = 0.0, 0, 0
        last_good = None
        bar = tqdm(loader, desc=f"epoch {epoch}/{r.epochs}", disable=not self._progress(), unit="batch")
        for i, batch in enumerate(bar):
            lr = lr_at(r, epoch, i, steps)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self._note_bad(batch.bad)
            degenerate = len(batch.y) < 2  # BatchNorm cannot train on one sample
            if degenerate and not self.ctx.distributed:
                continue
            if degenerate:  # keep DDP's collectives in step across ranks: a zero-weight step on old data
                if last_good is None:
                    raise InputError("a whole training batch was unreadable before any good batch")
                batch, scale = last_good, 0.0
            else:
                last_good, scale = batch, 1.0
            x, y = self._to_device(batch.x), batch.y.to(self.device, non_blocking=True)
            with self._autocast():
                out = ddp_model(x)
                loss = criterion(out.float(), y) * scale
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if scale:
                n = len(y)
                loss_sum += float(loss.detach()) * n
                correct += int((out.detach().argmax(1) == y).sum())
                seen += n
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}")
        bar.close()
        totals = D.all_gather(self.ctx, (loss_sum, correct, seen))
        loss_sum, correct, seen = (sum(t_[k] for t_ in totals) for k in range(3))
        if self.ctx.distributed:
            self._gather_bad()
        return {
            "lr": lr_at(r, epoch, 0, steps),
            "train_loss": loss_sum / seen if seen else float("nan"),
            "train_acc": correct / seen if seen else float("nan"),
            "train_samples": int(seen),
            "seconds": round(time.monotonic() - t, 3),
        }

    # ----------------------------------------------------------------------------------------------- run

    def run(self) -> TrainResult:
        import torch

        from edgecls.train.checkpoint import load_checkpoint
        from edgecls.train.data import EpochSampler, TrainDataset, class_weights, train_transform
        from edgecls.train.models import build_model, get_arch

        self.t0 = time.monotonic()
        cfg, r, ctx = self.config, self.recipe, self.ctx
        try:
            get_arch(cfg.arch)
        except ValueError as e:
            raise InputError(f"--arch: {e}") from e
        ckpt = load_checkpoint(self.resume_from) if self.resume_from is not None else None
        ts = (ckpt.train_state or {}) if ckpt is not None else {}
        self.data = self._setup_data(ckpt)
        self.classes = tuple(self.data.classes)
        self.num_classes = len(self.classes)
        if cfg.positive is not None and cfg.positive not in self.classes:
            raise InputError(f"--positive {cfg.positive!r} is not a class of {self.data.root}; valid: "
                             f"{', '.join(self.classes)}")
        self.train_y, self.val_y = self.data.labels("train"), self.data.labels("val")
        counts = self.data.counts("train")
        self.class_weights = class_weights(counts)  # N / (C * n_c): for the val loss, the head, --balance weights
        self.head_weights = self.class_weights if r.head_balance else None
        self.pspec = PreprocessSpec.for_image_size(r.image_size)
        self.device = torch.device(ctx.device)
        self.use_amp = bool(cfg.amp and ctx.cuda)
        if ctx.cuda:
            torch.backends.cudnn.benchmark = True

        # model (before any output exists: bad --weights must not leave a run folder)
        torch.manual_seed(cfg.seed)
        if ckpt is not None:
            model = build_model(cfg.arch, self.num_classes, weights="none")
            model.load_state_dict(ckpt.state_dict, strict=True)
        else:
            model = build_model(cfg.arch, self.num_classes, weights=cfg.weights)
        model = model.to(self.device).to(memory_format=torch.channels_last)

        if ckpt is not None:
            self.run_dir = Path(self.resume_from).parent
        else:
            self.run_dir = _rank0(ctx, choose_run_dir, cfg)
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        log.info("run folder %s", self.run_dir)

        self.optimizer = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.head_done = bool(ts.get("head_done", False))
        self.feature_seconds = 0.0
        start_epoch = 1
        if ckpt is not None:
            self.history = list(ts.get("history", []))
            self.best_epoch = int(ts.get("best_epoch", -1))
            self.best_score = tuple(ts.get("best_score", (-math.inf, -math.inf, -math.inf)))
            if ts.get("best_val_logits") is not None:
                self.best_logits = ts["best_val_logits"].numpy().astype(np.float32)
                self.best_index = ts["best_val_index"].numpy().astype(np.int64)
            self.bad_epochs = int(ts.get("bad_epochs", 0))
            self.head_info = dict(ts.get("head_info") or {})
            self.elapsed_before = float(ts.get("elapsed_s", 0.0))
            start_epoch = int(ts.get("epoch", 0)) + 1
            self.bad_paths = {p: "decode failed" for p, reason in ckpt.data.get("skipped", [])
                              if reason == "decode failed"}
            log.info("resuming %s at epoch %d of %d", self.run_dir, start_epoch, r.epochs)

        try:
            # phase 1: head on cached frozen features
            stop = False
            if r.head_max_iter > 0 and not self.head_done:
                if cfg.pretrained:
                    stop = self._head_phase(model)
                else:
                    log.info("--weights none: no pretrained features to cache, skipping the head phase")
            if r.epochs == 0 and self.best_epoch < 0:
                raise InputError("nothing to train: --epochs 0 and no head phase (it needs pretrained --weights)")

            # phase 2: fine-tune everything
            if start_epoch <= r.epochs and not stop:
                self._finetune(model, start_epoch, ts.get("optimizer"), ts.get("scaler"),
                               EpochSampler, TrainDataset, train_transform)
            elif ckpt is not None:
                self.stop_reason = ts.get("stop_reason") if ts.get("stop_reason") != "running" else None
                log.info("the run is already at epoch %d of %d: nothing to train, outputs refreshed",
                         start_epoch - 1, r.epochs)
        except KeyboardInterrupt:
            if ctx.is_main:
                log.warning("interrupted: last.pt holds the last finished epoch; continue with --resume %s",
                            self.run_dir)
            raise
        result = self._finish()
        D.barrier(ctx)
        return result

    def _finetune(self, model, start_epoch, opt_state, scaler_state, EpochSampler, TrainDataset, train_transform):
        import torch
        from torch import nn

        cfg, r, ctx = self.config, self.recipe, self.ctx
        for p in model.parameters():
            p.requires_grad_(True)
        ddp_model = model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp_model = DDP(model, device_ids=[self.device.index] if ctx.cuda else None)
        self.optimizer = self._make_optimizer(model)
        if opt_state is not None:
            self.optimizer.load_state_dict(opt_state)
        if scaler_state is not None and self.use_amp:
            self.scaler.load_state_dict(scaler_state)
        tf = train_transform(r.crop_size, r.scale, r.hflip, self.pspec)
        self.train_ds = TrainDataset(self.data.train, tf)
        sampler = EpochSampler(
            self.train_y, self.num_classes, balanced=(r.balance == "sampler"),
            num_samples=r.epoch_samples, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size,
        )
        weight = None
        if r.balance == "weights":
            weight = torch.as_tensor(self.class_weights, dtype=torch.float32, device=self.device)
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=r.label_smoothing)
        for epoch in range(start_epoch, r.epochs + 1):
            row = self._finetune_epoch(ddp_model, epoch, sampler, criterion)
            t = time.monotonic()
            logits, index = self._run_eval(model, self.data.val, f"val {epoch}")
            row["seconds"] = round(row["seconds"] + time.monotonic() - t, 3)
            if self._end_epoch(epoch, "finetune", row, logits, index, lambda: _cpu_state(model)):
                log.info("stopping after epoch %d: %s", epoch, self.stop_reason)
                break

    def _finish(self) -> TrainResult:
        """Plots, summary.json, and the result (every rank returns it; rank 0 wrote the files)."""
        self.stop_reason = self.stop_reason or "completed"
        logits, index = self.best_logits, self.best_index
        cal = self._calibrate(logits, index)
        y = self.val_y[index]
        report = self._calibrated_report(logits, index, cal)
        spec = self._spec(cal)
        summary = {
            "run_dir": str(self.run_dir),
            "config": self.config.to_dict(),
            "recipe": self.recipe.to_dict(),
            "spec": spec.to_dict(),
            "data": self.data.without(list(self.bad_paths)).summary(),
            "device": self.ctx.device,
            "world_size": self.ctx.world_size,
            "best_epoch": self.best_epoch,
            "head": self.head_info,
            "epochs_run": max((int(h["epoch"]) for h in self.history), default=0),
            "stop_reason": self.stop_reason,
            "val": report.to_dict(),
            "calibration": cal.to_dict(),
            "elapsed_s": round(self._elapsed(), 3),
            "history": self.history,
            "files": {},
        }
        from edgecls.train.checkpoint import versions

        summary["versions"] = versions()
        best_path, last_path = self.run_dir / "best.pt", self.run_dir / "last.pt"
        if self.ctx.is_main:
            summary["files"] = self._plots(report, cal, logits, y)
            summary["files"].update({"best": str(best_path), "last": str(last_path),
                                     "metrics": str(self.run_dir / "metrics.csv"),
                                     "summary": str(self.run_dir / "summary.json")})
            _atomic_write_text(self.run_dir / "summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")
        return TrainResult(
            run_dir=self.run_dir,
            best_path=best_path,
            last_path=last_path,
            best_epoch=self.best_epoch,
            epochs_run=summary["epochs_run"],
            stop_reason=self.stop_reason,
            report=report,
            calibration=cal,
            history=tuple(self.history),
            elapsed_s=summary["elapsed_s"],
            summary=_jsonable(summary),
        )

    def _plots(self, report, cal: Calibration, logits: np.ndarray, y: np.ndarray) -> Dict[str, str]:
        from edgecls.train import plots

        files: Dict[str, str] = {}
        try:
            loss_png, acc_png = plots.plot_curves(self.history, self.run_dir, self.best_epoch)
            files["loss_plot"], files["accuracy_plot"] = str(loss_png), str(acc_png)
            files["confusion_plot"] = str(plots.plot_confusion(report.confusion, self.classes,
                                                               self.run_dir / "confusion_matrix.png"))
            before = M.reliability_bins(M.softmax(logits), y)
            after = M.reliability_bins(M.softmax(logits, cal.temperature), y)
            files["reliability_plot"] = str(plots.plot_reliability(before, after, cal.temperature,
                                                                   self.run_dir / "reliability.png"))
            if self.config.positive is not None:
                k = self.classes.index(self.config.positive)
                scores = M.softmax(logits, cal.temperature)[:, k]
                prec, rec, _ = M.pr_curve(scores, y == k)
                files["pr_plot"] = str(plots.plot_pr(
                    prec, rec, self.config.positive, self.run_dir / "pr_curve.png",
                    cal.threshold.to_dict() if cal.threshold is not None else None,
                    M.average_precision(scores, y == k),
                ))
        except Exception as e:  # a plotting problem must not lose a finished training run
            log.warning("plotting failed (%s: %s); checkpoints and metrics are written", type(e).__name__, e)
        return files


def fit_linear_head(
    feats: np.ndarray, y: np.ndarray, num_classes: int, weights: Optional[np.ndarray], l2: float, max_iter: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on cached features: class-weighted CE + ``l2/2 * |W|^2``, full-batch L-BFGS.

    Deterministic (zero init). Returns ``(weight (C, D), bias (C,))`` as float32.
    """
    import torch

    x = torch.as_tensor(np.asarray(feats), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    cw = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=int(max_iter), history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, t, weight=cw) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def select_head_l2(
    feats: np.ndarray, y: np.ndarray, num_classes: int, grid: Sequence[float], folds: int, seed: int,
    balanced: bool, max_iter: int,
) -> Tuple[float, List[Dict[str, Any]]]:
    """The head's L2 from ``grid`` by stratified k-fold cross-validation on the *train* features.

    Picks the best out-of-fold balanced accuracy, ties broken by the lower (class-weighted) out-of-fold loss.
    Val is not used, so it stays an honest estimate. With fewer than 2 samples in some class, or a one-value
    grid, returns the grid's middle value without CV.
    """
    from edgecls.train.data import class_weights

    grid = list(grid)
    counts = np.bincount(y, minlength=num_classes)
    k = int(min(folds, counts.min()))
    if len(grid) == 1 or k < 2:
        choice = grid[len(grid) // 2]
        log.info("head L2 %g (no cross-validation: %s)", choice,
                 "one value" if len(grid) == 1 else "a class has fewer than 2 train images")
        return choice, []
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in range(num_classes):
        idx = np.nonzero(y == c)[0]
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    weights = class_weights(counts) if balanced else None
    table = []
    for l2 in grid:
        oof = np.zeros((len(y), num_classes), dtype=np.float64)
        for f in range(k):
            tr = fold != f
            w_tr = class_weights(np.bincount(y[tr], minlength=num_classes)) if balanced else None
            W, b = fit_linear_head(feats[tr], y[tr], num_classes, w_tr, l2, max_iter)
            oof[~tr] = feats[~tr] @ W.T + b
        rep = M.classification_report(y, M.softmax(oof), [str(i) for i in range(num_classes)])
        table.append({"l2": l2, "cv_balanced_acc": rep.balanced_accuracy, "cv_macro_f1": rep.macro_f1,
                      "cv_loss": _weighted_ce(oof, y, weights)})
    best = max(table, key=lambda row: (row["cv_balanced_acc"], -row["cv_loss"]))
    log.info("head L2 by %d-fold CV on train: %s -> %g", k,
             ", ".join(f"{r['l2']:g}: bal {r['cv_balanced_acc']:.4f} loss {r['cv_loss']:.4f}" for r in table),
             best["l2"])
    return float(best["l2"]), table


def _unwrap(model):
    return getattr(model, "module", model)


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    return o


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
    from edgecls.train.checkpoint import CheckpointError, load_checkpoint

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
