"""Distillation targets for the fine-tuning epochs (``Recipe.distill`` > 0).

The *teacher* is a linear probe on frozen features: the student backbone's own (the head phase's cache), joined
with those of ``--teacher-arch``/``--teacher-weights`` when given (e.g. MobileNetV2 + EfficientNet-Lite2: 0.970 on
products28 val against 0.959–0.963 for each alone). Only one backbone is deployed: the teacher exists at training
time only.

Its targets are **out of fold**: every train image is scored by a teacher head fitted on the other folds, so the
soft labels carry what the teacher does *not* know about that image (a head fitted on all of train scores its own
images near one-hot, which would teach nothing beyond the labels). The fine-tuning loss is then
``(1 - distill) * CE(student, label) + distill * T² * KL(teacher_T ‖ student_T)`` at temperature ``T``
(``distill_t``), each augmented view of an image taking its eval-view target.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from edgecls.train.linear_head import _stratified_folds, fit_linear_head, select_head_l2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherTargets:
    logits: np.ndarray  # (len(train items), C) out-of-fold teacher logits; unreadable images: one-hot * 10
    oof_accuracy: float  # of those logits on train
    val_accuracy: Optional[float]  # the teacher fitted on all train, on val (information only: never selects)
    feature_dim: int
    seconds: float


def backbone_features(setup, items: Sequence, arch: str, weights: str, desc: str) -> Tuple[np.ndarray, np.ndarray]:
    """The frozen features (the head's input) of ``arch`` with ``weights`` on ``items`` at the arch's own eval
    preprocessing: ``(features, positions in items)``; unreadable images are left out."""
    import torch
    from torch.utils.data import DataLoader

    from edgecls.core.progress import progress
    from edgecls.reference.models import build_model, head_of, preprocess_for
    from edgecls.train.data import EvalDataset, collate_skip

    model = build_model(arch, setup.num_classes, weights=weights).eval()
    grabbed = []
    handle = head_of(model, arch).register_forward_hook(lambda m, inp, out: grabbed.append(inp[0].detach().float()))
    loader = DataLoader(EvalDataset(items, preprocess_for(arch)), batch_size=32, shuffle=False,
                        num_workers=setup.workers, collate_fn=collate_skip)
    feats, idx = [], []
    try:
        with torch.inference_mode():
            for batch in progress(loader, desc=desc, unit="batch", enabled=setup.progress):
                if len(batch.y) == 0:
                    continue
                model(batch.x.contiguous(memory_format=torch.channels_last))
                feats.append(grabbed.pop().numpy())
                idx.append(batch.index.numpy())
    finally:
        handle.remove()
    return np.concatenate(feats), np.concatenate(idx)


def oof_logits(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, seed: int, weights: Optional[np.ndarray],
               max_iter: int, folds: int = 5) -> np.ndarray:
    """Each row scored by a linear head fitted (same L2, class weights) on the other stratified folds."""
    from edgecls.train.data import class_weights

    k = int(max(2, min(folds, np.bincount(y, minlength=num_classes).min())))
    fold = _stratified_folds(y, num_classes, k, seed + 17)
    out = np.zeros((len(y), num_classes), dtype=np.float32)
    for f in range(k):
        tr = fold != f
        w = class_weights(np.bincount(y[tr], minlength=num_classes)) if weights is not None else None
        W, b = fit_linear_head(x[tr], y[tr], num_classes, w, l2, max_iter)
        out[~tr] = x[~tr] @ W.T + b
    return out


def teacher_targets(setup, feats_tr: np.ndarray, idx_tr: np.ndarray, feats_va: Optional[np.ndarray],
                    idx_va: Optional[np.ndarray]) -> TeacherTargets:
    """Out-of-fold teacher logits for every train item (see the module docstring)."""
    t = time.monotonic()
    cfg, r = setup.config, setup.recipe
    x_tr, x_va = feats_tr, feats_va
    if cfg.teacher_arch:
        f_tr, i_tr = backbone_features(setup, setup.data.train, cfg.teacher_arch, cfg.teacher_weights,
                                       "teacher features train")
        pos = {int(i): k for k, i in enumerate(i_tr)}
        keep = np.array([int(i) in pos for i in idx_tr])
        feats_tr, idx_tr = feats_tr[keep], idx_tr[keep]
        x_tr = np.concatenate([feats_tr, f_tr[[pos[int(i)] for i in idx_tr]]], axis=1)
        if feats_va is not None:
            f_va, i_va = backbone_features(setup, setup.data.val, cfg.teacher_arch, cfg.teacher_weights,
                                           "teacher features val")
            pos_va = {int(i): k for k, i in enumerate(i_va)}
            keep_va = np.array([int(i) in pos_va for i in idx_va])
            idx_va = idx_va[keep_va]
            x_va = np.concatenate([feats_va[keep_va], f_va[[pos_va[int(i)] for i in idx_va]]], axis=1)
    y_tr = setup.train_y[idx_tr]
    weights = setup.head_weights
    l2, _ = select_head_l2(x_tr, y_tr, setup.num_classes, r.head_l2_grid, r.head_cv_folds, cfg.seed,
                           r.head_balance, r.head_max_iter)
    oof = oof_logits(x_tr, y_tr, setup.num_classes, l2, cfg.seed, weights, r.head_max_iter)
    logits = np.eye(setup.num_classes, dtype=np.float32)[setup.train_y] * 10.0
    logits[idx_tr] = oof
    val_acc = None
    if x_va is not None and len(idx_va):
        W, b = fit_linear_head(x_tr, y_tr, setup.num_classes, weights, l2, r.head_max_iter)
        val_acc = float(np.mean((x_va @ W.T + b).argmax(1) == setup.val_y[idx_va]))
    res = TeacherTargets(logits=logits, oof_accuracy=float(np.mean(oof.argmax(1) == y_tr)), val_accuracy=val_acc,
                         feature_dim=int(x_tr.shape[1]), seconds=round(time.monotonic() - t, 3))
    log.info("distillation teacher: linear probe on %d features (%s%s), L2 %g: out-of-fold train accuracy %.4f, "
             "val %s (information only), %.1fs", res.feature_dim, cfg.arch,
             f" + {cfg.teacher_arch}" if cfg.teacher_arch else "", l2, res.oof_accuracy,
             "-" if val_acc is None else f"{val_acc:.4f}", res.seconds)
    return res


class DistillLoss:
    """``(1 - a) * CE(out, y) + a * T² * KL(softmax(teacher/T) ‖ softmax(out/T))``; called with the batch's
    positions in the train items to look the teacher's logits up."""

    needs_index = True

    def __init__(self, teacher_logits: np.ndarray, alpha: float, temperature: float, ce: Any, device: Any) -> None:
        import torch

        self.teacher = torch.as_tensor(teacher_logits, dtype=torch.float32, device=device)
        self.alpha, self.t, self.ce = float(alpha), float(temperature), ce

    def __call__(self, out, y, index):
        import torch.nn.functional as F

        t = self.teacher[index.to(self.teacher.device)]
        kl = F.kl_div(F.log_softmax(out / self.t, dim=1), F.log_softmax(t / self.t, dim=1), log_target=True,
                      reduction="batchmean")
        return (1 - self.alpha) * self.ce(out, y) + self.alpha * self.t ** 2 * kl
