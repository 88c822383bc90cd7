"""One pass over the data: an eval pass (val logits, or the frozen features the head is fitted on) and one
fine-tuning epoch. Both skip unreadable images (noted in :class:`~edgecls.train.session.BadImages`) and, under
DDP, work on this rank's shard and gather the results over ranks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.progress import progress
from edgecls.train import distributed as D
from edgecls.train.config import Recipe
from edgecls.train.session import BadImages, RunSetup


def lr_at(recipe: Recipe, epoch: int, step: int, steps: int) -> float:
    """Learning rate at ``step``/``steps`` of fine-tuning ``epoch`` (1-based): a pure function, so resumable."""
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** ((epoch - 1) // recipe.step_size)
    if recipe.schedule == "cosine":
        t = (epoch - 1 + step / max(steps, 1)) / max(recipe.epochs, 1)
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return recipe.lr


def make_optimizer(model, recipe: Recipe, head=None):
    """SGD or AdamW over the trainable parameters; with ``head`` (the classifier) and ``recipe.head_lr`` the head
    is a second parameter group whose lr is ``head_lr / lr`` times the backbone's (``lr_scale``, kept by the
    schedule)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params, "lr_scale": 1.0}]
    if head is not None and recipe.head_lr is not None:
        in_head = {id(p) for p in head.parameters()}
        groups = [{"params": [p for p in params if id(p) not in in_head], "lr_scale": 1.0},
                  {"params": [p for p in params if id(p) in in_head], "lr_scale": recipe.head_lr / recipe.lr}]
    for g in groups:
        g["lr"] = recipe.lr * g["lr_scale"]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


@dataclass
class FineTune:
    """What every fine-tuning epoch works with (built once per run by the trainer)."""

    model: Any  # the network, DDP-wrapped under torchrun
    optimizer: Any
    scaler: Any  # torch.amp.GradScaler (a no-op without AMP)
    sampler: Any  # EpochSampler
    criterion: Any
    dataset: Any  # TrainDataset


@dataclass
class _Totals:
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


class EpochRunner:
    """Eval passes and fine-tuning epochs on this process's device."""

    def __init__(self, setup: RunSetup, bad: BadImages) -> None:
        self.setup = setup
        self.ctx = setup.ctx
        self.bad = bad

    def to_device(self, x):
        import torch

        x = x.to(self.setup.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x

    def autocast(self):
        import torch

        return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.setup.use_amp)

    # -------------------------------------------------------------------------------------------------- eval

    def _eval_loader(self, items, batch_size: int):
        import torch
        from torch.utils.data import DataLoader, Subset

        from edgecls.train.data import EvalDataset, collate_skip

        ds = EvalDataset(items, self.setup.pspec)
        if self.ctx.distributed:
            ds = Subset(ds, list(range(self.ctx.rank, len(ds), self.ctx.world_size)))
        return DataLoader(
            ds, batch_size=batch_size, shuffle=False, num_workers=self.setup.workers, collate_fn=collate_skip,
            pin_memory=self.ctx.cuda, generator=torch.Generator().manual_seed(0),
        )

    def run_eval(self, model, items: Sequence, desc: str, hook_features: bool = False,
                 quarter_turns: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Forward ``items`` in eval mode: ``(outputs, index)`` gathered over ranks, sorted by index.

        ``hook_features`` returns the head's *input* (the frozen features) instead of the logits.
        ``quarter_turns`` turns each eval view ``k`` × 90° counter-clockwise (the centre crop of a turned photo is the
        turned centre crop, up to a pixel of crop rounding: the resize keys on the shorter side, which turning keeps).
        """
        import torch

        from edgecls.reference.models import head_of

        model.eval()
        grabbed: List[Any] = []
        handle = None
        if hook_features:
            handle = head_of(model, self.setup.config.arch).register_forward_hook(
                lambda mod, inp, out: grabbed.append(inp[0].detach().float().cpu())
            )
        outs, idxs = [], []
        loader = self._eval_loader(items, max(self.setup.recipe.batch_size, 32))
        try:
            with torch.inference_mode():
                for batch in progress(loader, desc=desc, unit="batch", enabled=self.setup.progress):
                    self.bad.note(batch.bad)
                    if len(batch.y) == 0:
                        continue
                    x = torch.rot90(batch.x, quarter_turns, dims=(2, 3)) if quarter_turns % 4 else batch.x
                    with self.autocast():
                        out = model(self.to_device(x))
                    outs.append(grabbed.pop() if hook_features else out.float().cpu())
                    idxs.append(batch.index)
        finally:
            if handle is not None:
                handle.remove()
        dim = outs[0].shape[1] if outs else (0 if hook_features else self.setup.num_classes)
        out = torch.cat(outs).numpy() if outs else np.zeros((0, dim), np.float32)
        idx = torch.cat(idxs).numpy() if idxs else np.zeros(0, np.int64)
        return self._gathered(out, idx)

    def _gathered(self, out: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.ctx.distributed:  # every rank saw its own shard (indices are positions in ``items``): gather
            parts = D.all_gather(self.ctx, (out, idx))
            out = np.concatenate([p[0] for p in parts])
            idx = np.concatenate([p[1] for p in parts])
            self.bad.gather()
        order = np.argsort(idx, kind="stable")
        return out[order], idx[order]

    # --------------------------------------------------------------------------------------------- fine-tune

    def _train_loader(self, fit: FineTune, epoch: int):
        import torch
        from torch.utils.data import DataLoader

        from edgecls.train.data import collate_skip

        seed, r = self.setup.config.seed, self.setup.recipe
        fit.sampler.set_epoch(epoch)
        torch.manual_seed(seed * 1000003 + epoch * 101 + self.ctx.rank)
        return DataLoader(
            fit.dataset, batch_size=r.batch_size, sampler=fit.sampler, num_workers=self.setup.workers,
            collate_fn=collate_skip, pin_memory=self.ctx.cuda, drop_last=len(fit.sampler) > r.batch_size,
            generator=torch.Generator().manual_seed(seed * 7919 + epoch),
        )

    def _train_mode(self, model) -> None:
        import torch

        model.train()
        if self.setup.recipe.bn_eval and self.setup.config.pretrained:  # keep pretrained BN statistics
            for m in model.modules():  # (small data, FixRes gap)
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def train_epoch(self, fit: FineTune, epoch: int) -> Dict[str, Any]:
        """One fine-tuning epoch: the metrics.csv row's train columns (summed over ranks)."""
        r = self.setup.recipe
        t = time.monotonic()
        loader = self._train_loader(fit, epoch)
        self._train_mode(fit.model)
        steps = len(loader)
        totals = _Totals()
        last_good = None
        bar = progress(loader, desc=f"epoch {epoch}/{r.epochs}", unit="batch", enabled=self.setup.progress,
                       leave=True)
        for i, batch in enumerate(bar):
            lr = lr_at(r, epoch, i, steps)
            for g in fit.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            self.bad.note(batch.bad)
            degenerate = len(batch.y) < 2  # BatchNorm cannot train on one sample
            if degenerate and not self.ctx.distributed:
                continue
            if degenerate:  # keep DDP's collectives in step across ranks: a zero-weight step on old data
                if last_good is None:
                    raise InputError("a whole training batch was unreadable before any good batch")
                batch, scale = last_good, 0.0
            else:
                last_good, scale = batch, 1.0
            self._step(fit, batch, scale, totals)
            if scale:
                bar.set_postfix_str(f"acc={totals.correct / totals.seen:.3f}, "
                                    f"loss={totals.loss_sum / totals.seen:.4f}, lr={lr:.2e}")
        bar.close()
        return self._epoch_row(totals, lr_at(r, epoch, 0, steps), t)

    def _step(self, fit: FineTune, batch, scale: float, totals: _Totals) -> None:
        """One optimizer step on ``batch``; its loss is multiplied by ``scale`` (0: a step that changes nothing)."""
        x, y = self.to_device(batch.x), batch.y.to(self.setup.device, non_blocking=True)
        with self.autocast():
            out = fit.model(x)
            if getattr(fit.criterion, "needs_index", False):  # distillation: the teacher's targets by position
                loss = fit.criterion(out.float(), y, batch.index) * scale
            else:
                loss = fit.criterion(out.float(), y) * scale
        fit.optimizer.zero_grad(set_to_none=True)
        fit.scaler.scale(loss).backward()
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        if scale:
            n = len(y)
            totals.loss_sum += float(loss.detach()) * n
            totals.correct += int((out.detach().argmax(1) == y).sum())
            totals.seen += n

    def _epoch_row(self, totals: _Totals, lr: float, t: float) -> Dict[str, Any]:
        gathered = D.all_gather(self.ctx, (totals.loss_sum, totals.correct, totals.seen))
        loss_sum, correct, seen = (sum(t_[k] for t_ in gathered) for k in range(3))
        if self.ctx.distributed:
            self.bad.gather()
        return {
            "lr": lr,
            "train_loss": loss_sum / seen if seen else float("nan"),
            "train_acc": correct / seen if seen else float("nan"),
            "train_samples": int(seen),
            "seconds": round(time.monotonic() - t, 3),
        }
