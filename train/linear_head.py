"""The head phase (epoch 0): the frozen backbone's features are extracted once (cached, eval preprocessing) and a
linear head is fitted on them — full-batch L-BFGS, class-weighted cross-entropy, L2 by cross-validation on train.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime import metrics as M
from edgecls.train import distributed as D
from edgecls.train.crossfit import crossfit_head
from edgecls.train.epoch import EpochRunner
from edgecls.train.selection import weighted_ce

log = logging.getLogger(__name__)


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


def _stratified_folds(y: np.ndarray, num_classes: int, k: int, seed: int) -> np.ndarray:
    """Each sample's fold in ``[0, k)``: every class shuffled with ``seed`` and dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in range(num_classes):
        idx = np.nonzero(y == c)[0]
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


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
    fold = _stratified_folds(y, num_classes, k, seed)
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
                      "cv_loss": weighted_ce(oof, y, weights)})
    best = max(table, key=lambda row: (row["cv_balanced_acc"], -row["cv_loss"]))
    log.info("head L2 by %d-fold CV on train: %s -> %g", k,
             ", ".join(f"{r['l2']:g}: bal {r['cv_balanced_acc']:.4f} loss {r['cv_loss']:.4f}" for r in table),
             best["l2"])
    return float(best["l2"]), table


def _with_turned_views(runner: EpochRunner, model, feats: np.ndarray, y: np.ndarray,
                       share: float) -> Tuple[np.ndarray, np.ndarray, float]:
    """Train features plus those of each image turned 1, 2 and 3 quarter turns, the upright ones repeated so that
    turned views make up ``share`` of the fit (``--rotate`` 0.5: half), as the fine-tuning epochs' random turns do.
    The L2 was chosen by CV on the upright features alone (turned twins of one image in different folds would leak)."""
    t = time.monotonic()
    turned = []
    for k in (1, 2, 3):
        f, idx = runner.run_eval(model, runner.setup.data.train, f"features train turned {90 * k}°",
                                 hook_features=True, quarter_turns=k)
        if len(idx) != len(y):  # an image that failed to decode now but not before: skip the turned views
            log.warning("--rotate: %d of %d train images gave turned features; head fitted upright only",
                        len(idx), len(y))
            return feats, y, time.monotonic() - t
        turned.append(f)
    upright = max(1, int(round(3 * (1 - share) / max(share, 1e-9))))
    x = np.concatenate([feats] * upright + turned)
    yy = np.concatenate([y] * (upright + 3))
    log.info("--rotate: head fitted on %d upright (x%d) + %d turned train views", len(y), upright, 3 * len(y))
    return x, yy, time.monotonic() - t


def head_phase(runner: EpochRunner, model, head_info: Dict[str, Any], keep: Optional[Dict[str, Any]] = None):
    """Cache the features, fit the head, copy it into ``model``: ``(metrics row, val logits, val index, crossfit)``.

    ``head_info`` gets the chosen L2 (and the CV table when it was chosen by CV), timings and the feature size.
    ``crossfit``: the out-of-fold scores of every labelled image (:mod:`~edgecls.train.crossfit`), None when
    they cannot be made (a class with one image, ``--rotate``: the deployed head also saw turned views).
    ``keep`` (a dict) receives the cached features (``feats_tr``, ``idx_tr``, ``feats_va``, ``idx_va``).
    """
    import torch

    from edgecls.reference.models import head_of

    setup = runner.setup
    r = setup.recipe
    t = time.monotonic()
    feats_tr, idx_tr = runner.run_eval(model, setup.data.train, "features train", hook_features=True)
    feats_va, idx_va = runner.run_eval(model, setup.data.val, "features val", hook_features=True)
    extract_s = time.monotonic() - t
    if keep is not None:
        keep.update(feats_tr=feats_tr, idx_tr=idx_tr, feats_va=feats_va, idx_va=idx_va)
    n_imgs = len(idx_tr) + len(idx_va)
    log.info("features: %d images in %.1fs (%.1f img/s)", n_imgs, extract_s, n_imgs / max(extract_s, 1e-9))
    y_tr = setup.train_y[idx_tr]
    t_fit = time.monotonic()
    l2 = r.head_l2
    if l2 is None:
        l2, cv_table = D.on_rank0(
            setup.ctx, select_head_l2, feats_tr, y_tr, setup.num_classes, r.head_l2_grid, r.head_cv_folds,
            setup.config.seed, r.head_balance, r.head_max_iter,
        )
        head_info["cv"] = cv_table
    fit_x, fit_y = feats_tr, y_tr
    if r.rotate > 0:  # --rotate: the head also sees every train image turned 90/180/270°, in the recipe's share
        fit_x, fit_y, turned_s = _with_turned_views(runner, model, feats_tr, y_tr, r.rotate)
        extract_s += turned_s
        t_fit += turned_s
    weight, bias = fit_linear_head(fit_x, fit_y, setup.num_classes, setup.head_weights, l2, r.head_max_iter)
    fit_s = time.monotonic() - t_fit
    head_info.update(l2=l2, fit_seconds=round(fit_s, 3), feature_seconds=round(extract_s, 3),
                     feature_images=int(n_imgs), feature_dim=int(feats_tr.shape[1]))
    head = head_of(model, setup.config.arch)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight).to(head.weight))
        head.bias.copy_(torch.from_numpy(bias).to(head.bias))
    tr_logits = feats_tr @ weight.T + bias
    va_logits = (feats_va @ weight.T + bias).astype(np.float32)
    log.info("head (L2 %g) fitted on %d cached features in %.3fs", l2, len(fit_y), fit_s)
    crossfit = None
    if r.rotate > 0:
        log.info("no cross-fitted scores with --rotate (the head also fits turned views): calibration on val only")
    else:
        t_cf = time.monotonic()
        crossfit = D.on_rank0(setup.ctx, crossfit_head, feats_tr, y_tr, feats_va, setup.val_y[idx_va],
                              setup.num_classes, l2, setup.config.seed, r.head_balance, r.head_max_iter)
        if crossfit is not None:
            crossfit = dataclasses.replace(crossfit, ids=tuple(
                os.path.realpath(setup.data.train[int(i)][0]) for i in idx_tr) + tuple(
                os.path.realpath(setup.data.val[int(i)][0]) for i in idx_va))
            head_info["crossfit"] = {"folds": crossfit.folds, "images": crossfit.n,
                                     "seconds": round(time.monotonic() - t_cf, 3)}
            log.info("cross-fitted head: out-of-fold scores of %d labelled images (%d folds) in %.1fs",
                     crossfit.n, crossfit.folds, time.monotonic() - t_cf)
    row = {
        "lr": None,
        "train_loss": weighted_ce(tr_logits, y_tr, setup.head_weights),
        "train_acc": float(np.mean(tr_logits.argmax(1) == y_tr)) if len(y_tr) else float("nan"),
        "train_samples": int(len(y_tr)),
        "seconds": round(time.monotonic() - t, 3),
    }
    return row, va_logits, idx_va, crossfit
