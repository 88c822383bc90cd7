"""Partial fine-tuning on cached activations: the ``partial`` recipe's fine-tuning phase (epochs 1..N).

The pretrained backbone is cut in two. The *front* (most of the compute: the early, generic blocks) stays frozen
in eval mode and runs **once** per augmented view of every training image (``views`` RandomResizedCrop + flip [+
``--rotate``] views, plus the plain eval view) and once per val image; its activations are cached (float16 for
train, float32 for val). Only the *tail* — the last ``tail_blocks`` blocks of the backbone, its pooling and the
classifier, initialised from the head phase's linear probe — is trained, for ``epochs`` passes over the cached
views: each step costs a fraction of a full forward/backward, so a CPU affords several epochs over several views.

BatchNorm layers stay in eval mode (pretrained statistics; the front's are frozen anyway). Class-weighted
cross-entropy with label smoothing, AdamW with a separate head learning rate, linear warm-up then cosine. Every
epoch is judged on val like any other (the tail over the cached val activations is exactly the full model on the
eval preprocessing), so ``best.pt`` is a normal full model: export and the runtime are unchanged.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.progress import progress
from edgecls.train.config import Recipe
from edgecls.train.session import BadImages, RunSetup

log = logging.getLogger(__name__)


def split_model(model, arch: str, tail_blocks: int):
    """``(front, tail)`` modules sharing ``model``'s parameters: ``tail(front(x)) == model(x)``.

    The tail is the last ``tail_blocks`` entries of ``model.features`` (MobileNets, EfficientNet) or of the ResNet
    stages (stem, layer1..layer4), then the pooling and the classifier."""
    from torch import nn

    if hasattr(model, "features") and hasattr(model, "classifier"):
        blocks = list(model.features)
        pool_tail: List[Any] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier]
    elif hasattr(model, "layer4") and hasattr(model, "fc"):
        blocks = [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool), model.layer1, model.layer2,
                  model.layer3, model.layer4]
        pool_tail = [model.avgpool, nn.Flatten(1), model.fc]
    else:
        raise InputError(f"--arch {arch}: the partial recipe cannot split this network (use --recipe fast)")
    if not 1 <= tail_blocks < len(blocks):
        raise InputError(f"tail_blocks must be in [1, {len(blocks) - 1}] for {arch}, got {tail_blocks}")
    cut = len(blocks) - tail_blocks
    return nn.Sequential(*blocks[:cut]), nn.Sequential(*blocks[cut:], *pool_tail)


def bn_eval(module) -> None:
    """Every BatchNorm layer of ``module`` in eval mode (pretrained statistics kept)."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def lr_factor(recipe: Recipe, step: int, steps: int) -> float:
    """Linear warm-up over ``recipe.warmup`` of the steps, then cosine to 0: a pure function of the step."""
    warm = max(1, int(round(recipe.warmup * steps)))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(steps - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class Cache:
    """The front's activations: train views (float16, ``(views+1) * N``) with labels, val (float32) with index."""

    train_x: Any
    train_y: Any
    val_x: Any
    val_index: np.ndarray
    seconds: float


class PartialFineTune:
    """Caches the front's activations once, then trains the tail epoch by epoch (``run_epoch``)."""

    def __init__(self, setup: RunSetup, bad: BadImages, model) -> None:
        import torch

        if setup.ctx.distributed:
            raise InputError("the partial recipe runs in one process (its activation cache is not sharded); "
                             "run it without torchrun, or use --recipe fast under torchrun")
        self.setup, self.bad, self.model = setup, bad, model
        r = setup.recipe
        self.front, self.tail = split_model(model, setup.config.arch, r.tail_blocks)
        from edgecls.reference.models import head_of

        head = list(head_of(model, setup.config.arch).parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.tail.parameters() if id(p) not in head_ids]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.tail.parameters():
            p.requires_grad_(True)
        groups = [{"params": body, "lr": r.lr, "base_lr": r.lr},
                  {"params": head, "lr": r.head_lr or r.lr, "base_lr": r.head_lr or r.lr}]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=r.weight_decay)
        weight = torch.as_tensor(setup.class_weights, dtype=torch.float32, device=setup.device) \
            if r.balance == "weights" else None
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=r.label_smoothing)
        self.cache: Optional[Cache] = None

    # ------------------------------------------------------------------------------------------------ cache

    def _front_pass(self, loader, desc: str, dtype) -> Tuple[Any, Any]:
        import torch

        xs, idx = [], []
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.setup.use_amp)
        with torch.inference_mode():
            for batch in progress(loader, desc=desc, unit="batch", enabled=self.setup.progress):
                self.bad.note(batch.bad)
                if len(batch.y) == 0:
                    continue
                x = batch.x.to(self.setup.device).contiguous(memory_format=torch.channels_last)
                with autocast:
                    xs.append(self.front(x).to(dtype))
                idx.append(batch.index)
        return torch.cat(xs), torch.cat(idx)

    def build_cache(self) -> Cache:
        """Front activations of val (eval view), train (eval view) and ``views`` augmented views of train."""
        import torch
        from torch.utils.data import DataLoader

        from edgecls.train.data import EvalDataset, TrainDataset, collate_skip, train_transform

        setup, r = self.setup, self.setup.recipe
        t = time.monotonic()
        self.front.eval()
        bs = max(r.batch_size, 32)
        kw = dict(batch_size=bs, shuffle=False, num_workers=setup.workers, collate_fn=collate_skip)
        val_x, val_i = self._front_pass(DataLoader(EvalDataset(setup.data.val, setup.pspec), **kw), "cache val",
                                        torch.float32)
        tx, ty = [], []
        x, i = self._front_pass(DataLoader(EvalDataset(setup.data.train, setup.pspec), **kw), "cache train",
                                torch.float16)
        tx.append(x)
        ty.append(i)
        aug = TrainDataset(setup.data.train, train_transform(r.image_size, r.scale, r.hflip, setup.pspec, r.rotate))
        for v in range(1, r.views + 1):
            torch.manual_seed(setup.config.seed * 1000003 + v)  # the views are a pure function of the seed
            x, i = self._front_pass(DataLoader(aug, **kw), f"cache view {v}/{r.views}", torch.float16)
            tx.append(x)
            ty.append(i)
        y = torch.as_tensor(setup.train_y)[torch.cat(ty)].to(setup.device)
        self.cache = Cache(torch.cat(tx), y, val_x, val_i.numpy(), time.monotonic() - t)
        n = len(self.cache.train_x)
        mb = (self.cache.train_x.numel() * 2 + val_x.numel() * 4) / 2**20
        log.info("partial: cached the front of %d train views (%d images x %d) and %d val images in %.1fs "
                 "(%.0f MiB, activation %s)", n, len(setup.data.train), r.views + 1, len(val_x),
                 self.cache.seconds, mb, tuple(val_x.shape[1:]))
        return self.cache

    # ----------------------------------------------------------------------------------------------- epochs

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.cache.train_x) / self.setup.recipe.batch_size)

    def run_epoch(self, epoch: int) -> Dict[str, Any]:
        """One pass over the cached train views (seeded order); the metrics.csv row's train columns."""
        import torch

        setup, r = self.setup, self.setup.recipe
        if self.cache is None:
            self.build_cache()
        t = time.monotonic()
        c = self.cache
        n, bs = len(c.train_x), r.batch_size
        steps = self.steps_per_epoch()
        total = steps * r.epochs
        g = torch.Generator().manual_seed(setup.config.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        self.tail.train()
        bn_eval(self.tail)
        loss_sum, correct, seen = 0.0, 0, 0
        first_lr = None
        for k in range(steps):
            step = (epoch - 1) * steps + k
            f = lr_factor(r, step, total)
            for grp in self.optimizer.param_groups:
                grp["lr"] = grp["base_lr"] * f
            first_lr = first_lr if first_lr is not None else self.optimizer.param_groups[0]["lr"]
            idx = perm[k * bs:(k + 1) * bs]
            x, y = c.train_x[idx].float(), c.train_y[idx]
            out = self.tail(x)
            loss = self.criterion(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.detach().argmax(1) == y).sum())
            seen += len(y)
        return {"lr": first_lr, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "train_samples": int(seen), "seconds": round(time.monotonic() - t, 3)}

    def val_logits(self) -> Tuple[np.ndarray, np.ndarray]:
        """The tail over the cached val activations in eval mode: the full model's val logits."""
        import torch

        self.model.eval()
        c = self.cache
        with torch.inference_mode():
            out = torch.cat([self.tail(c.val_x[i:i + 256]).float().cpu() for i in range(0, len(c.val_x), 256)])
        order = np.argsort(c.val_index, kind="stable")
        return out.numpy()[order], c.val_index[order]

    def state_dict(self) -> Dict[str, Any]:
        return self.optimizer.state_dict()
