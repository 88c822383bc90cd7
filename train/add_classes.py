"""``edgecls train --add-classes DIR --from best.pt``: learn new classes from a few dozen labelled photos each, in
about a minute on a CPU, without retraining the backbone.

1. The features the deployed head reads (the input of the model's final ``nn.Linear``, whatever backbone feeds it)
   are taken for the old training images (recorded in the checkpoint, or ``--data``; cached on disk by backbone,
   :mod:`~edgecls.train.feature_cache`) and for the new photos.
2. Each new class's photos are split (per class, seeded): ``holdout`` of them are held out, the rest fit.
3. A new linear head over old + new classes is fitted on the old training features *and* the new photos' (the old
   classes keep their evidence, so they do not regress), class-balanced (weights ``N / (C n_c)``), L2 by k-fold
   cross-validation on the fitting rows — the head phase's own fit (:mod:`~edgecls.train.linear_head`).
4. Temperature, conformal sets, unknown threshold and (with a positive class) the precision promise are fitted on
   held-out labelled images that include the new classes: the old val images (the new head never saw them) plus
   the held-out new photos (:func:`edgecls.train.calibrate.calibrate`, training's own calibration).
5. A new checkpoint (backbone weights unchanged, the new head, the grown spec and data record) exports and runs like
   any other.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddClassesConfig:
    checkpoint: Path  # --from: the deployed best.pt
    new: Path  # --add-classes: DIR/<class>/*.jpg, the new classes' labelled photos (and, with extend, old ones)
    out: Path  # the new run folder (best.pt, summary.json)
    data: Optional[Path] = None  # the old training folder when the recorded paths moved
    extend: bool = False  # --add-to-existing: a folder named like an existing class adds photos to it
    holdout: float = 0.3  # share of each new class's photos held out for calibration
    seed: int = 0
    exist_ok: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 1.0:
            raise InputError(f"--holdout must be in (0, 1), e.g. 0.3, got {self.holdout!r}")


@dataclass(frozen=True)
class AddClassesResult:
    checkpoint: Path
    classes: Tuple[str, ...]
    added: Tuple[str, ...]
    seconds: float
    summary: Dict[str, Any]

    def table(self) -> str:
        s = self.summary
        lines = [f"added      {', '.join(self.added)} to {len(self.classes) - len(self.added)} classes "
                 f"({len(self.classes)} now), in {self.seconds:.1f}s (features {s['seconds']['features']:.1f}s, "
                 f"head {s['seconds']['head']:.1f}s)",
                 f"fit        {s['fit']['rows']} images ({s['fit']['new']} new photos), L2 {s['fit']['l2']:g}",
                 f"held out   {s['heldout']['rows']} images ({s['heldout']['new']} new photos) for temperature, sets, "
                 "unknown and the promise"]
        for c, r in s["heldout"]["recall"].items():
            lines.append(f"  recall   {c}: {r['recall']:.3f} ({r['hits']}/{r['n']}, 95 % interval "
                         f"{r['interval'][0]:.2f}-{r['interval'][1]:.2f})")
        lines.append(f"  old      accuracy {s['heldout']['old_accuracy']:.4f} on {s['heldout']['old_rows']} old val "
                     f"images (before {s['heldout']['old_accuracy_before']:.4f})")
        if s.get("promise"):
            lines.append(f"promise    {s['promise']}")
        lines.append(f"best.pt    {self.checkpoint}")
        return "\n".join(lines)


def _new_photos(cfg: AddClassesConfig, old: Sequence[str]) -> Dict[str, List[str]]:
    """``{class: [photo paths]}`` of the folder, checked: names, empty folders, existing classes."""
    from edgecls.core.images import class_folders, list_images

    root = Path(cfg.new)
    if not root.is_dir():
        raise InputError(f"--add-classes {os.fspath(root)!r} is not a folder (expected DIR/<class>/*.jpg)")
    folders = class_folders(root)
    if not folders:
        raise InputError(f"--add-classes {os.fspath(root)!r} has no class folders (expected DIR/<class>/*.jpg)")
    existing = [f.name for f in folders if f.name in old]
    if existing and not cfg.extend:
        raise InputError(f"--add-classes: {', '.join(repr(c) for c in existing)} already "
                         f"{'is a class' if len(existing) == 1 else 'are classes'} of the model (its classes: "
                         f"{', '.join(old)}); rename the folder for a new class, or pass --add-to-existing to add "
                         "these photos to it")
    photos = {f.name: [os.fspath(p) for p in list_images(f)] for f in folders}
    empty = [c for c, ps in photos.items() if not ps]
    if empty:
        raise InputError(f"--add-classes: class folder(s) {', '.join(repr(c) for c in empty)} in "
                         f"{os.fspath(root)!r} hold no images")
    if all(c in old for c in photos):
        raise InputError(f"--add-classes {os.fspath(root)!r}: no new class (every folder is an existing class)")
    few = [c for c, ps in photos.items() if c not in old and len(ps) < 4]
    if few:
        raise InputError(f"--add-classes: {', '.join(repr(c) for c in few)} need at least 4 photos each (some fit "
                         "the head, some are held out to calibrate it); a few dozen are recommended")
    return photos


def _split(photos: Dict[str, List[str]], index: Dict[str, int], holdout: float, seed: int):
    """``(fit items, held-out items)``: per class, ``round(n * holdout)`` (at least 1) held out, seeded."""
    rng = np.random.default_rng([int(seed), 27])
    fit, held = [], []
    for c in sorted(photos):
        ps = sorted(photos[c])
        k = max(1, int(round(len(ps) * holdout)))
        order = rng.permutation(len(ps))
        for j, i in enumerate(order):
            (held if j < k else fit).append((ps[i], index[c]))
    return fit, held


def _old_items(ckpt, data: Optional[Path]):
    """The old train and val items ``[(path, label)]``: recorded in the checkpoint, or ``--data`` (same classes)."""
    from edgecls.reference.checkpoint import recorded_items

    classes = tuple(ckpt.spec.classes)
    if data is not None:
        from edgecls.train.data import discover

        split = discover(data, val_fraction=float(ckpt.data.get("val_fraction", 0.2)),
                         seed=int(ckpt.data.get("seed", 0)))
        if tuple(split.classes) != classes:
            raise InputError(f"--data {os.fspath(data)!r} has classes {list(split.classes)}, but the checkpoint was "
                             f"trained on {list(classes)}: pass the folder it was trained on")
        return list(split.train), list(split.val), split.root
    remedy = "pass --data with the folder it was trained on"
    if tuple(ckpt.data.get("classes", classes)) != classes:
        raise InputError(f"the checkpoint's recorded data classes {ckpt.data.get('classes')} are not its model's "
                         f"{list(classes)}: {remedy}")
    train = [(os.fspath(p), y) for p, y in recorded_items(ckpt.data, "train", remedy)]
    val = [(os.fspath(p), y) for p, y in recorded_items(ckpt.data, "val", remedy)]
    return train, val, ckpt.data.get("root")


def _model(ckpt):
    """The checkpoint's model on CPU; CheckpointError when its weights do not fit its own spec."""
    from edgecls.reference.checkpoint import CheckpointError

    try:
        return ckpt.build_model()
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"--from: the checkpoint's weights do not match its spec ({ckpt.spec.arch}, "
                              f"{ckpt.spec.num_classes} classes): {str(e).splitlines()[0]}") from e


def _grown(ckpt, classes: Tuple[str, ...], weight: np.ndarray, bias: np.ndarray, head_keys) -> Dict:
    """The new state dict: every backbone tensor as it was, the head replaced by ``(weight, bias)``."""
    import torch

    state = {k: v for k, v in ckpt.state_dict.items() if k not in head_keys}
    w_key = next(k for k in head_keys if k.endswith("weight"))
    b_key = next(k for k in head_keys if k.endswith("bias"))
    state[w_key] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    state[b_key] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    from edgecls.reference.models import build_model

    check = build_model(ckpt.spec.arch, len(classes), weights="none")
    check.load_state_dict(state, strict=True)  # the grown model loads like any checkpoint's
    return state


def _recorded_l2(ckpt, path: Path) -> Optional[float]:
    """The L2 the deployed head was fitted with: a grown checkpoint records it, a training run's summary.json next
    to its best.pt too (its head phase chose it by cross-validation on train); None when neither says."""
    grown = ckpt.metrics.get("add_classes", {}).get("fit", {}).get("l2")
    if grown is not None:
        return float(grown)
    summary = Path(path).resolve().parent / "summary.json"
    try:
        head = json.loads(summary.read_text()).get("head") or {}
    except (OSError, ValueError):
        return None
    return float(head["l2"]) if head.get("l2") is not None else None


def _pairs(items: Sequence[Tuple[str, int]]) -> List[List[Any]]:
    return [[p, int(y)] for p, y in items]


def _fit_head(ckpt: Any, cfg: AddClassesConfig, x: np.ndarray, y: np.ndarray, counts: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray, float, List[Any]]:
    """The grown head over old + new classes, class-balanced, at the L2 the deployed head was fitted with (chosen
    by cross-validation again only where the checkpoint does not record it)."""
    from edgecls.train.config import RECIPES
    from edgecls.train.data import class_weights
    from edgecls.train.linear_head import fit_linear_head, select_head_l2

    recipe, n = RECIPES["fast"], len(counts)
    l2, cv = _recorded_l2(ckpt, Path(cfg.checkpoint)), []
    if l2 is None:  # 20 extra head fits: ~50 s for 28 classes on 2 loaded cores
        l2, cv = select_head_l2(x, y, n, recipe.head_l2_grid, recipe.head_cv_folds, cfg.seed, True,
                                recipe.head_max_iter)
    else:
        log.info("head L2 %g: the one the deployed head was fitted with (chosen by cross-validation then)", l2)
    weight, bias = fit_linear_head(x, y, n, class_weights(counts), l2, recipe.head_max_iter)
    return weight, bias, l2, cv


def _heldout_figures(ckpt: Any, head_keys: Sequence[str], f_va: np.ndarray, y_old: np.ndarray, logits: np.ndarray,
                     yh: np.ndarray, added: Sequence[str], index: Dict[str, int]) -> Tuple[float, float, Dict]:
    """The old classes' accuracy on the old val images before and after (the deployed head, the grown one), and
    each new class's recall on its held-out photos with n and a 95 % Clopper-Pearson interval."""
    from edgecls.runtime.confidence.bounds import cp_lower, cp_upper

    w0 = ckpt.state_dict[next(k for k in head_keys if k.endswith("weight"))].numpy().astype(np.float64)
    b0 = ckpt.state_dict[next(k for k in head_keys if k.endswith("bias"))].numpy().astype(np.float64)
    before = float(np.mean((f_va @ w0.T + b0).argmax(1) == y_old)) if len(y_old) else float("nan")
    after = float(np.mean(logits[: len(y_old)].argmax(1) == y_old)) if len(y_old) else float("nan")
    pred = logits.argmax(1)
    recall = {}
    for c in added:
        k = index[c]
        m = yh == k
        hits, n = int(np.sum(pred[m] == k)), int(m.sum())
        recall[c] = {"recall": hits / max(n, 1), "hits": hits, "n": n,
                     "interval": [cp_lower(hits, n, 0.025), cp_upper(hits, n, 0.025)] if n else [0.0, 1.0]}
    return before, after, recall


def add_classes(cfg: AddClassesConfig) -> AddClassesResult:
    """Run the whole flow (see the module) and write ``cfg.out/best.pt`` and ``summary.json``."""
    from edgecls.core.fileio import write_text
    from edgecls.reference.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from edgecls.runtime import metrics as M
    from edgecls.runtime.confidence import ConfidenceSettings
    from edgecls.train.calibrate import calibrate
    from edgecls.train.feature_cache import FeatureCache, backbone_key, head_names

    t0 = time.monotonic()
    out = Path(cfg.out)
    if (out / "best.pt").exists() and not cfg.exist_ok:
        raise InputError(f"--out {os.fspath(out)!r} already holds a best.pt; pass --exist-ok or choose another --out")
    ckpt = load_checkpoint(cfg.checkpoint)
    old = tuple(ckpt.spec.classes)
    photos = _new_photos(cfg, old)
    added = tuple(sorted(c for c in photos if c not in old))
    classes = old + added
    index = {c: i for i, c in enumerate(classes)}
    train_old, val_old, root = _old_items(ckpt, cfg.data)
    model = _model(ckpt)
    head_keys = head_names(model, ckpt.spec.arch)
    fit_new, held_new = _split(photos, index, cfg.holdout, cfg.seed)

    t = time.monotonic()
    cache = FeatureCache(Path(cfg.checkpoint).resolve().parent / "features", backbone_key(ckpt.state_dict, head_keys))
    feats = functools.partial(cache.features, model, ckpt.spec.arch, ckpt.spec.preprocess)
    (f_tr, p_tr), (f_va, p_va) = feats(train_old, "old training"), feats(val_old, "old val")
    cache.save()  # the old images' features: kept for the next time
    (f_fn, p_fn), (f_hn, p_hn) = feats(fit_new, "new (fit)"), feats(held_new, "new (held out)")
    feat_s = time.monotonic() - t

    t = time.monotonic()
    x = np.concatenate([f_tr, f_fn])
    y = np.array([train_old[i][1] for i in p_tr] + [fit_new[i][1] for i in p_fn], dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    weight, bias, l2, cv = _fit_head(ckpt, cfg, x, y, counts)
    head_s = time.monotonic() - t

    xh = np.concatenate([f_va, f_hn])
    yh = np.array([val_old[i][1] for i in p_va] + [held_new[i][1] for i in p_hn], dtype=np.int64)
    ids = [os.path.realpath(val_old[i][0]) for i in p_va] + [os.path.realpath(held_new[i][0]) for i in p_hn]
    logits = xh.astype(np.float64) @ weight.T.astype(np.float64) + bias
    base = ckpt.spec.confidence.settings() if ckpt.spec.confidence is not None else ConfidenceSettings()
    cal = calibrate(logits, yh, classes, ckpt.spec.positive, base.target_precision, settings=base,
                    source=(f"held-out labelled images: {len(p_va)} old val + {len(p_hn)} new photos, never used to "
                            "fit the grown head"), honest=True, ids=ids)
    spec = ckpt.spec.replace(classes=classes, temperature=cal.temperature, threshold=cal.spec_threshold,
                             confidence=cal.confidence)
    state = _grown(ckpt, classes, weight, bias, head_keys)

    y_old = np.array([val_old[i][1] for i in p_va], dtype=np.int64)
    before, after, recall = _heldout_figures(ckpt, head_keys, f_va, y_old, logits, yh, added, index)
    data = {"root": root, "layout": ckpt.data.get("layout", "train/val"), "classes": list(classes),
            "train": _pairs(train_old) + _pairs(fit_new), "val": _pairs(val_old) + _pairs(held_new),
            "calib": [val_old[i][0] for i in p_va] + [held_new[i][0] for i in p_hn],
            "skipped": [], "val_fraction": ckpt.data.get("val_fraction", 0.2), "seed": ckpt.data.get("seed", 0),
            "added": {"classes": list(added), "from": os.fspath(cfg.checkpoint), "folder": os.fspath(cfg.new)}}
    report = M.classification_report(yh, M.softmax(logits, cal.temperature), classes)
    summary = {
        "from": os.fspath(cfg.checkpoint), "folder": os.fspath(cfg.new), "added": list(added),
        "classes": list(classes), "extended": sorted(c for c in photos if c in old),
        "fit": {"rows": int(len(y)), "new": int(len(p_fn)), "l2": float(l2), "cv": cv,
                "counts": {c: int(n) for c, n in zip(classes, counts)}},
        "heldout": {"rows": int(len(yh)), "new": int(len(p_hn)), "old_rows": int(len(p_va)), "recall": recall,
                    "old_accuracy": after, "old_accuracy_before": before, "report": report.to_dict()},
        "calibration": cal.to_dict(), "promise": cal.statement,
        "seconds": {"features": round(feat_s, 3), "head": round(head_s, 3)},
        "feature_cache": os.fspath(cache.path),
    }
    out.mkdir(parents=True, exist_ok=True)
    best = out / "best.pt"
    metrics = {"epoch": ckpt.epoch, "phase": "add-classes", "val": report.to_dict(), "calibration": cal.to_dict(),
               "add_classes": {k: summary[k] for k in ("added", "from", "folder", "fit")}}
    save_checkpoint(Checkpoint(spec=spec, state_dict=state, epoch=ckpt.epoch, metrics=metrics, data=data), best)
    seconds = time.monotonic() - t0
    summary["seconds"]["total"] = round(seconds, 3)
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    log.info("added %s in %.1fs: %s", ", ".join(added), seconds, best)
    return AddClassesResult(best, classes, added, seconds, summary)


def run_cli(folder: Optional[str], checkpoint: Optional[str], data: Optional[str], out: Optional[str], name: str,
            exist_ok: bool, extend: bool, holdout: float, seed: Optional[int]) -> AddClassesResult:
    """``edgecls train --add-classes DIR --from best.pt``: the options checked, then :func:`add_classes`."""
    from edgecls.train.rundir import free_run_dir

    if folder is None or checkpoint is None:
        raise InputError("--add-classes DIR and --from best.pt go together (the new classes' photos and the model "
                         "to grow)")
    dest = Path(out).expanduser() if out else free_run_dir(Path("runs/train"), name if name != "exp" else "added")
    return add_classes(AddClassesConfig(checkpoint=Path(checkpoint), new=Path(folder), out=dest,
                                        data=Path(data) if data else None, extend=extend, holdout=holdout,
                                        seed=seed or 0, exist_ok=exist_ok))
