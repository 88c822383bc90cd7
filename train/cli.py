"""``edgecls train``: typer options → a frozen :class:`~edgecls.train.config.TrainConfig` → the trainer → a summary.

Only typer/stdlib at module top: ``edgecls --help`` must not import torch.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import typer


def train_command(
    data: Optional[str] = typer.Option(
        None, "--data", "-d",
        help="Image folder: DATA/train/<class>/ + DATA/val/<class>/, or DATA/<class>/ (split by --val-fraction).",
    ),
    arch: Optional[str] = typer.Option(
        None, "--arch", help="resnet18 (default), resnet50, mobilenet_v2, mobilenet_v3_small/large, efficientnet_b0, "
        "timm:<name>, or several joined by '+' (one network: features concatenated, one head), e.g. "
        "mobilenet_v2+timm:tf_efficientnet_lite0 (recipe: catalog's default)."
    ),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="imagenet (default; torchvision cache / $TORCH_HOME), none, or PATH to a state dict; "
        "for a joined --arch one entry per backbone joined by '+' in the same order (A.pth+B.pth)."
    ),
    teacher_arch: Optional[str] = typer.Option(
        None, "--teacher-arch", help="Distillation teacher for the fine-tuning epochs (with --distill > 0): a linear "
        "probe on this backbone's features joined with the student's, scored out of fold on train; training only."),
    teacher_weights: Optional[str] = typer.Option(
        None, "--teacher-weights", help="Weights of --teacher-arch: imagenet or PATH (default: imagenet)."),
    distill: Optional[float] = typer.Option(
        None, "--distill", help="Weight of the distillation term in [0, 1] (recipe: fast 0, catalog 0.7); without "
        "--teacher-arch the teacher is the student's own out-of-fold probe."),
    recipe: str = typer.Option(
        "fast", "--recipe",
        help="fast: head on cached frozen features, then short fine-tuning with early stopping. "
        "partial: head, then the last backbone blocks trained on cached activations of augmented views. "
        "catalog: MobileNetV2 + EfficientNet-Lite0 joined in one network (--weights A.pth+B.pth), head on their "
        "cached frozen features, no fine-tuning unless --epochs N. "
        "seed: the seed's SGD/StepLR recipe.",
    ),
    positive: Optional[str] = typer.Option(
        None, "--positive", help="Class to detect one-vs-rest: a threshold is chosen for --target-precision on val."
    ),
    target_precision: Optional[float] = typer.Option(
        None, "--target-precision", help="Precision the positive threshold must reach on val (default: 0.95)."
    ),
    delta: Optional[float] = typer.Option(
        None, "--delta", help="The precision promise holds with probability 1 - delta (default: 0.1); refused "
        "(with the positives it would need) when the calibration images cannot support it."),
    coverage: Optional[float] = typer.Option(
        None, "--coverage", help="Default coverage of the conformal sets the model carries (default: 0.9)."),
    calib_fraction: Optional[float] = typer.Option(
        None, "--calib-fraction", help="Share of val held out to calibrate (temperature, threshold, sets, unknown), "
        "never used to pick the epoch (default: 0.5; 0: calibrate on the selection images, not honest)."),
    best_promise: bool = typer.Option(
        False, "--best-promise", help="Deploy the highest precision target (of 0.99, 0.98, 0.95, 0.9, ... up to "
        "--target-precision) the calibration images certify at --delta (each target tested at delta/m)."),
    crossfit: bool = typer.Option(
        True, "--crossfit/--no-crossfit", help="Head-phase model: calibrate on cross-fitted scores of every labelled "
        "image (K heads on cached frozen features, each blind to its fold) instead of half of val."),
    calib_data: Optional[str] = typer.Option(
        None, "--calib-data", help="Labelled folder (<class>/ subfolders) to calibrate best.pt and last.pt on at "
        "the end (temperature, threshold guarantee, sets, unknown), instead of val or cross-fitted scores."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Fine-tuning epochs (recipe: fast 2, seed 25); 0 = head only (fast)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch size (recipe: fast 8, seed 4)."),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="Eval/deployment crop; resize = size*256/224 (default 224; timm: the model's own size and crop_pct)."
    ),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tuning learning rate (recipe: fast 1e-3, or 1e-2 from scratch; seed 1e-3)."),
    balance: Optional[str] = typer.Option(
        None, "--balance", help="Class imbalance: sampler, weights or none (recipe: fast none with a class-weighted head, sampler from scratch; seed none)."
    ),
    patience: Optional[int] = typer.Option(
        None, "--patience", help="Early stopping: epochs without improvement (recipe: fast 2, seed off)."
    ),
    rotate: Optional[bool] = typer.Option(
        None, "--rotate/--no-rotate", help="Turn half the training images 90/180/270 degrees (random) so the model "
        "holds on sideways and upside-down photos (recipe: off)."),
    val_fraction: Optional[float] = typer.Option(
        None, "--val-fraction", help="Val share per class for a DATA/<class>/ folder (default: 0.2)."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the split, init and data order (default: 0)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader workers (auto: 0 on small CPUs)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/train/<name>)."),
    name: str = typer.Option("exp", "--name", help="Run name under runs/train/ (exp, exp2, ... when taken)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into an existing run folder."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue an interrupted run: its folder or its last.pt (may extend --epochs)."
    ),
    max_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", help="Stop after the epoch that exceeds this wall-clock budget."
    ),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    add_classes: Optional[str] = typer.Option(
        None, "--add-classes", help="Learn new classes from DIR/<class>/*.jpg (a few dozen photos each) on top of "
        "--from, without retraining the backbone: a new head on cached features, old classes kept; --data: the "
        "old training folder when its recorded paths moved."),
    from_checkpoint: Optional[str] = typer.Option(None, "--from", help="With --add-classes: the best.pt to grow."),
    add_to_existing: bool = typer.Option(
        False, "--add-to-existing", help="With --add-classes: a folder named like an existing class adds its photos "
        "to that class (otherwise it is refused)."),
    holdout: float = typer.Option(
        0.3, "--holdout", help="With --add-classes: share of each new class's photos held out to calibrate."),
) -> None:
    """Fine-tune a torchvision classifier on an image folder; write best.pt/last.pt, metrics, plots, summary."""
    from edgecls.train.trainer import train

    if add_classes is not None or from_checkpoint is not None:
        from edgecls.train.add_classes import run_cli

        typer.echo(run_cli(add_classes, from_checkpoint, data, out, name, exist_ok, add_to_existing, holdout,
                           seed).table())
        return
    if resume is not None:
        given = {"data": data, "arch": arch, "weights": weights, "positive": positive,
                 "target_precision": target_precision, "delta": delta, "coverage": coverage,
                 "calib_fraction": calib_fraction, "batch_size": batch_size, "image_size": image_size,
                 "lr": lr, "balance": balance, "val_fraction": val_fraction, "seed": seed, "out": out,
                 "rotate": rotate, "calib_data": calib_data, "best_promise": best_promise or None,
                 "teacher_arch": teacher_arch, "teacher_weights": teacher_weights, "distill": distill}
        cfg, last = _resume_config(resume, given, epochs=epochs, patience=patience, workers=workers, device=device,
                                   max_minutes=max_minutes, progress=progress)
        result = train(cfg, resume_from=last)
    else:
        result = train(_new_config(
            data=data, recipe=recipe, arch=arch, weights=weights, positive=positive,
            target_precision=target_precision, delta=delta, coverage=coverage, calib_fraction=calib_fraction,
            epochs=epochs, batch_size=batch_size, image_size=image_size, lr=lr,
            balance=balance, patience=patience, rotate=rotate, val_fraction=val_fraction, seed=seed, workers=workers,
            device=device, best_promise=best_promise, crossfit=crossfit, calib_data=calib_data,
            out=out, name=name, exist_ok=exist_ok, max_minutes=max_minutes, amp=amp, progress=progress,
            teacher_arch=teacher_arch, teacher_weights=teacher_weights, distill=distill,
        ))
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(result.table())


def _resume_config(resume: str, given: Dict[str, Any], **changes: Any):
    """``(config, last.pt)`` of the run to continue; options that would change its settings are refused."""
    from edgecls.core.errors import InputError
    from edgecls.train.trainer import resume_config

    fixed = sorted(k for k, v in given.items() if v is not None)
    if fixed:
        raise InputError(
            f"--resume continues a run with its own settings; drop {', '.join('--' + k.replace('_', '-') for k in fixed)}"
            f" (may change: --epochs, --patience, --workers, --device, --max-minutes)"
        )
    return resume_config(resume, **changes)


def _new_config(*, data, recipe, arch, weights, positive, target_precision, delta, coverage, calib_fraction, epochs,
                batch_size, image_size, lr, balance, patience, rotate, val_fraction, seed, workers, device, out, name,
                exist_ok, max_minutes, amp, progress, best_promise=False, crossfit=True, calib_data=None,
                teacher_arch=None, teacher_weights=None, distill=None):
    """The TrainConfig of a new run: the recipe with the options given on the command line."""
    from edgecls.core.errors import InputError
    from edgecls.train.config import TrainConfig, get_recipe

    if data is None:
        raise InputError("--data is required (or --resume RUN): a folder with train/<class>/ and val/<class>/, "
                         "or with <class>/ folders only")
    arch = arch or get_recipe(recipe).arch  # the catalog recipe names its backbones
    if image_size is None and arch is not None and (arch.startswith("timm:") or "+" in arch):  # the model's own
        from edgecls.reference.models import get_arch, preprocess_for

        try:
            get_arch(arch)
        except ValueError as e:
            raise InputError(f"--arch: {e}") from e
        image_size = preprocess_for(arch).crop
    rec = get_recipe(recipe).for_weights((weights or "imagenet") != "none").override(
        epochs=epochs, batch_size=batch_size, image_size=image_size, lr=lr, balance=balance, patience=patience,
        rotate=None if rotate is None else (0.5 if rotate else 0.0), distill=distill,
    )
    kwargs = dict(
        data=data, recipe=rec, arch=arch or "resnet18", weights=weights or "imagenet", out=out, name=name,
        exist_ok=exist_ok, device=device or "auto", positive=positive, workers=workers,
        max_minutes=max_minutes, amp=amp, progress=progress, best_promise=best_promise, crossfit=crossfit,
        calib_data=calib_data, teacher_arch=teacher_arch, teacher_weights=teacher_weights or "imagenet",
    )
    for k, v in (("target_precision", target_precision), ("delta", delta), ("coverage", coverage),
                 ("calib_fraction", calib_fraction), ("val_fraction", val_fraction), ("seed", seed)):
        if v is not None:
            kwargs[k] = v
    return TrainConfig(**kwargs)
