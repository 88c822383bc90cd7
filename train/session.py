"""What a run works with, fixed once it starts: the checked data, device, preprocessing, labels, run folder.

:class:`RunSetup` is built by :func:`prepare` (data, then the model, then the run folder: a bad ``--weights``
must not leave a folder behind) and never changes; :class:`BadImages` collects the images that fail to decode
while loading, merged over ranks.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.fileio import remove_orphan_temps, write_text
from edgecls.runtime.spec import PreprocessSpec
from edgecls.train import distributed as D
from edgecls.train.calibrate import calibration_mask
from edgecls.train.config import Recipe, TrainConfig
from edgecls.train.data import DataSplit, class_weights
from edgecls.train.rundir import choose_run_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSetup:
    config: TrainConfig
    ctx: D.DistContext
    data: DataSplit
    pspec: PreprocessSpec
    device: Any  # torch.device
    use_amp: bool
    run_dir: Path
    train_y: np.ndarray
    val_y: np.ndarray
    class_weights: np.ndarray  # N / (C * n_c) of train: for the val loss, the head, --balance weights
    calib_mask: Optional[np.ndarray] = None  # val items held out for calibration (never judge an epoch)

    @property
    def calibrating_apart(self) -> bool:
        """Whether calibration has its own images (an honest split), not the ones that select the epoch."""
        return self.calib_mask is not None and bool(self.calib_mask.any()) and not bool(self.calib_mask.all())

    @property
    def recipe(self) -> Recipe:
        return self.config.recipe

    @property
    def classes(self) -> Tuple[str, ...]:
        return tuple(self.data.classes)

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)

    @property
    def head_weights(self) -> Optional[np.ndarray]:
        return self.class_weights if self.recipe.head_balance else None

    @property
    def progress(self) -> bool:
        return self.config.progress and self.ctx.is_main

    @property
    def workers(self) -> int:
        if self.config.workers is not None:
            return self.config.workers
        cpus = os.cpu_count() or 1
        return min(8, cpus) if self.ctx.cuda else min(8, cpus // 4)


class BadImages:
    """Images found unreadable while loading: ``{path: reason}``; each is logged once (by rank 0)."""

    def __init__(self, ctx: D.DistContext, known: Optional[Dict[str, str]] = None) -> None:
        self.ctx = ctx
        self.paths: Dict[str, str] = dict(known or {})

    def note(self, bad: Sequence[Tuple[str, str]]) -> None:
        for p, reason in bad:
            if p not in self.paths:
                self.paths[p] = reason
                if self.ctx.is_main:
                    log.warning("skipping unreadable image %s (%s)", p, reason)

    def gather(self) -> None:
        """Merge every rank's finds (under DDP each rank saw its own shard)."""
        merged: Dict[str, str] = {}
        for d in D.all_gather(self.ctx, dict(self.paths)):
            merged.update(d)
        self.paths = merged

    @classmethod
    def recorded(cls, ctx: D.DistContext, data: DataSplit) -> BadImages:
        """The decode failures a resumed run had already found (kept in its recorded split)."""
        return cls(ctx, {p: "decode failed" for p, reason in data.skipped if reason == "decode failed"})


def load_data(config: TrainConfig, ctx: D.DistContext, ckpt) -> DataSplit:
    """The recorded split of a resumed run (``ckpt``), else the image folder (discovered on rank 0)."""
    from edgecls.reference.checkpoint import recorded_split
    from edgecls.train.data import discover

    if ckpt is not None:
        data = DataSplit(**recorded_split(ckpt.data))
    else:
        data = D.on_rank0(ctx, discover, config.data_path, val_fraction=config.val_fraction, seed=config.seed)
    if config.positive is not None and config.positive not in data.classes:
        raise InputError(f"--positive {config.positive!r} is not a class of {data.root}; valid: "
                         f"{', '.join(data.classes)}")
    return data


def build_model(config: TrainConfig, num_classes: int, ckpt, device):
    """The network on ``device`` (channels-last): the checkpoint's weights when resuming, else ``--weights``."""
    import torch

    from edgecls.reference.models import build_model as build

    torch.manual_seed(config.seed)
    if ckpt is not None:
        model = build(config.arch, num_classes, weights="none")
        model.load_state_dict(ckpt.state_dict, strict=True)
    else:
        model = build(config.arch, num_classes, weights=config.weights)
    return model.to(device).to(memory_format=torch.channels_last)


def prepare(config: TrainConfig, ctx: D.DistContext, resume_from: Optional[Path]):
    """``(RunSetup, model, checkpoint or None)``: check the arch, read ``resume_from`` (a ``last.pt``) if given,
    load the data, build the model, then choose and create the run folder (rank 0 writes ``config.json``)."""
    import torch

    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.reference.models import get_arch, preprocess_for

    try:
        get_arch(config.arch)
    except ValueError as e:
        raise InputError(f"--arch: {e}") from e
    if "+" in config.arch and config.recipe.finetune == "partial" and config.recipe.epochs > 0:
        raise InputError(f"--recipe {config.recipe.name} trains the last blocks of one backbone; the joined "
                         f"--arch {config.arch} takes fast, catalog or seed")
    ckpt = load_checkpoint(resume_from) if resume_from is not None else None
    data = load_data(config, ctx, ckpt)
    device = torch.device(ctx.device)
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True
    model = build_model(config, len(data.classes), ckpt, device)  # before any output exists
    run_dir = Path(resume_from).parent if ckpt is not None else D.on_rank0(ctx, choose_run_dir, config)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        orphans = remove_orphan_temps(run_dir)  # left by a kill -9 during a checkpoint write (tens of MB each)
        if orphans:
            log.warning("removed %d temp file(s) an interrupted write left in %s: %s", len(orphans), run_dir,
                        ", ".join(p.name for p in orphans))
        write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    log.info("run folder %s", run_dir)
    setup = RunSetup(
        config=config, ctx=ctx, data=data, pspec=preprocess_for(config.arch, config.recipe.image_size),
        device=device, use_amp=bool(config.amp and ctx.cuda), run_dir=run_dir, train_y=data.labels("train"),
        val_y=data.labels("val"), class_weights=class_weights(data.counts("train")),
        calib_mask=calibration_mask(data.labels("val"), config.calib_fraction, config.seed),
    )
    return setup, model, ckpt
