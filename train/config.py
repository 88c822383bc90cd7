"""Training configuration: frozen recipes (typed presets) and the run config built from CLI options.

Four recipes ship (``DEFAULT_RECIPE`` is ``fast``):

``fast`` (the default)
    1. *head phase*: the pretrained backbone is frozen, its features are extracted **once** with the eval
       preprocessing (the runtime's ``preprocess_one``), and a linear head is fitted on the cached features
       (full-batch L-BFGS, class-weighted cross-entropy: the imbalance is handled here, L2 chosen by 5-fold
       cross-validation on train) — a couple of seconds once the features exist.
    2. *fine-tune phase*: the whole network, from that head, for 2 epochs: SGD lr 1e-3 momentum 0.9, batch 8,
       cosine, RandomResizedCrop + flip at the eval size, natural class frequencies (on ../shared/data/mobile a
       balanced sampler or class weights here overfit the 35 phones and lost 5-20 points of balanced accuracy;
       a train crop below the eval size with BatchNorm training hurt as much), early stopping.
    Every epoch (the head phase is epoch 0) is judged on val by balanced accuracy (ties: the positive class's
    average precision, then the lower val loss); the best one is kept. From scratch (``--weights none``) there
    is no head phase: the lr is ``scratch_lr`` (1e-2) and a class-balanced sampler handles the imbalance.

``partial`` (experimental)
    The same head phase, then :mod:`~edgecls.train.partial_finetune`: the backbone's last ``tail_blocks`` blocks
    + head trained on cached activations of ``views`` augmented views per image (the frozen front runs once per
    view). On products28 (issue 14, one seed, loaded machine) it has not yet beaten the head phase: best-epoch
    selection then keeps epoch 0, as with ``fast``.

``catalog``
    Backbones joined in one network (``CATALOG_ARCH``, :mod:`edgecls.reference.joined`; ``--arch`` changes them)
    and the same head phase on their joined cached features; no fine-tuning unless ``--epochs N``: then full
    fine-tuning with BatchNorm frozen, AdamW 3e-5, RandomResizedCrop 0.35-1, and distillation
    (:mod:`~edgecls.train.distill`) from an out-of-fold probe teacher. On products28 fine-tuning never beat its own
    frozen-feature head, and joining backbones did (bench/backbones.md).

``seed``
    The seed project's recipe, kept for comparison: SGD lr 0.001 momentum 0.9, StepLR(7, 0.1), 25 epochs,
    batch 4, RandomResizedCrop(224) + flip, Resize(256)/CenterCrop(224), no imbalance handling.

Every CLI override (``--epochs``, ``--lr`` ...) replaces one field of the chosen recipe (``Recipe.override``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgecls.core.errors import InputError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
BALANCE = ("weights", "sampler", "none")
SELECT_METRICS = ("balanced_accuracy", "macro_f1")
FINETUNE = ("full", "partial")


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training recipe. ``epochs`` counts fine-tuning epochs (the head phase is epoch 0)."""

    name: str
    description: str
    arch: Optional[str] = None  # the backbone(s) when --arch is not given; None = TrainConfig's (resnet18)
    # head-only phase on cached frozen features (0 = no head phase)
    head_max_iter: int = 0  # L-BFGS iterations of the head fit
    head_l2: Optional[float] = None  # L2 of the head; None = chosen from head_l2_grid by stratified k-fold CV on train
    head_l2_grid: Tuple[float, ...] = (1e-3, 1e-2, 3e-2, 1e-1)
    head_cv_folds: int = 5
    head_balance: bool = True  # class-weighted loss for the head (the head phase's imbalance handling)
    # fine-tuning phase: full (the whole network on decoded images) or partial (edgecls.train.partial_finetune:
    # the last ``tail_blocks`` backbone blocks + head on cached activations of ``views`` augmented views)
    finetune: str = "full"
    tail_blocks: int = 5
    views: int = 4
    head_lr: Optional[float] = None  # the classifier's lr, full or partial fine-tuning (None = lr)
    warmup: float = 0.0  # partial: share of the steps with a linear lr warm-up (then cosine)
    epochs: int = 25
    optimizer: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    step_size: int = 7
    gamma: float = 0.1
    batch_size: int = 4
    image_size: int = 224  # eval / deployment crop; Resize is image_size * 256/224
    train_size: Optional[int] = None  # RandomResizedCrop output; None = image_size
    scale: Tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    hflip: bool = True
    rotate: float = 0.0  # probability of turning a training image 90/180/270 degrees (--rotate: 0.5); 0 = never
    balance: str = "none"  # weights: class-weighted loss; sampler: class-balanced sampling; none
    epoch_samples: Optional[int] = None  # samples drawn per epoch with the balanced sampler; None = dataset size
    label_smoothing: float = 0.0
    distill: float = 0.0  # weight of the distillation term (edgecls.train.distill); 0 = plain cross-entropy
    distill_t: float = 2.0  # distillation temperature
    bn_eval: bool = False  # fine-tune with BatchNorm layers in eval mode (pretrained statistics kept)
    scratch_lr: Optional[float] = None  # lr when the backbone is not pretrained (--weights none); None = lr
    scratch_balance: Optional[str] = None  # balance when not pretrained; None = balance
    patience: Optional[int] = None  # early stopping: epochs without improvement; None = off
    select: str = "balanced_accuracy"  # the validation metric that picks the best epoch

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "head_l2_grid", tuple(float(v) for v in self.head_l2_grid))
        _need(self.head_max_iter >= 0, f"head_max_iter must be >= 0, got {self.head_max_iter}")
        _need(self.head_l2 is None or self.head_l2 >= 0, f"head_l2 must be >= 0, got {self.head_l2}")
        _need(len(self.head_l2_grid) >= 1 and all(v >= 0 for v in self.head_l2_grid), "head_l2_grid needs values >= 0")
        _need(self.head_cv_folds >= 2, f"head_cv_folds must be >= 2, got {self.head_cv_folds}")
        _need(self.finetune in FINETUNE, f"finetune {self.finetune!r} is not one of {FINETUNE}")
        _need(self.tail_blocks >= 1, f"tail_blocks must be >= 1, got {self.tail_blocks}")
        _need(self.views >= 0, f"views must be >= 0, got {self.views}")
        _need(self.head_lr is None or self.head_lr > 0, f"head_lr must be > 0, got {self.head_lr}")
        _need(0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        _need(self.epochs >= 0, f"--epochs must be >= 0, got {self.epochs}")
        _need(self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        _need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _need(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        _need(self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}")
        _need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _need(self.image_size >= 16, f"--image-size must be >= 16, got {self.image_size}")
        _need(self.train_size is None or self.train_size >= 16, f"train_size must be >= 16, got {self.train_size}")
        _need(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1,
            f"scale must be (low, high) with 0 < low <= high <= 1, got {self.scale}",
        )
        _need(0 <= self.rotate <= 1, f"rotate must be a probability in [0, 1], got {self.rotate}")
        _need(self.balance in BALANCE, f"--balance {self.balance!r} is not one of {', '.join(BALANCE)}")
        _need(self.scratch_balance is None or self.scratch_balance in BALANCE, f"scratch_balance not in {BALANCE}")
        _need(self.epoch_samples is None or self.epoch_samples >= 1, "epoch_samples must be >= 1")
        _need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _need(0 <= self.distill <= 1, f"distill must be in [0, 1], got {self.distill}")
        _need(self.distill_t > 0, f"distill_t must be > 0, got {self.distill_t}")
        _need(self.patience is None or self.patience >= 1, f"--patience must be >= 1, got {self.patience}")
        _need(self.select in SELECT_METRICS, f"select {self.select!r} is not one of {SELECT_METRICS}")

    def for_weights(self, pretrained: bool) -> Recipe:
        """The recipe for a pretrained backbone as it is; from scratch: ``scratch_lr``, ``scratch_balance`` and
        BatchNorm in train mode (there is no head phase to handle the imbalance). A ``partial`` recipe needs a
        pretrained front to freeze: from scratch it trains like ``fast`` does."""
        if pretrained:
            return self
        if self.finetune == "partial":
            return dataclasses.replace(RECIPES["fast"], name=self.name).for_weights(False)
        return dataclasses.replace(self, lr=self.scratch_lr or self.lr, balance=self.scratch_balance or self.balance,
                                   bn_eval=False)

    @property
    def crop_size(self) -> int:
        """The training crop (RandomResizedCrop output)."""
        return self.train_size or self.image_size

    def override(self, **changes: Any) -> Recipe:
        """A copy with the non-None ``changes`` applied (CLI options left unset keep the recipe's values).

        Changing ``image_size`` without ``train_size`` keeps the recipe's train/eval size ratio.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if "image_size" in changes and "train_size" not in changes and self.train_size is not None:
            ratio = self.train_size / self.image_size
            changes["train_size"] = max(16, int(round(changes["image_size"] * ratio / 8.0)) * 8)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale"] = list(self.scale)
        d["head_l2_grid"] = list(self.head_l2_grid)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Recipe:
        d = dict(d)
        for k in ("scale", "head_l2_grid"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# The catalog recipe's backbones: chosen on the accuracy/latency table of bench/bench_joined.py (bench/backbones.md)
CATALOG_ARCH = "mobilenet_v2+timm:tf_efficientnet_lite0"


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise InputError(msg)


RECIPES: Dict[str, Recipe] = {
    "fast": Recipe(
        name="fast",
        description="class-weighted linear head on cached frozen features (L2 by CV on train), then 2 epochs of "
        "full fine-tuning (SGD 1e-3 momentum 0.9, batch 8, cosine, RandomResizedCrop+flip at 224) with early "
        "stopping; from scratch: class-balanced sampler, lr 1e-2",
        head_max_iter=100,
        head_l2=None,
        epochs=2,
        optimizer="sgd",
        lr=1e-3,
        momentum=0.9,
        weight_decay=0.0,
        schedule="cosine",
        batch_size=8,
        image_size=224,
        train_size=None,
        scale=(0.08, 1.0),
        balance="none",
        epoch_samples=None,
        label_smoothing=0.0,
        bn_eval=False,
        scratch_lr=1e-2,
        scratch_balance="sampler",
        patience=2,
    ),
    "partial": Recipe(
        name="partial",
        description="class-weighted linear head on cached frozen features (L2 by CV on train), then the last 5 "
        "backbone blocks + head trained on cached activations of 4 augmented views per image (RandomResizedCrop "
        "0.35-1 + flip) plus the eval view: AdamW lr 3e-5 (head 1e-4), weight decay 1e-4, no label smoothing, "
        "class-weighted loss, batch 64, 10 % warm-up then cosine, 3 epochs, BatchNorm frozen; from scratch: as fast",
        head_max_iter=100,
        head_l2=None,
        finetune="partial",
        tail_blocks=5,
        views=4,
        epochs=3,
        optimizer="adamw",
        lr=3e-5,  # 10x higher (3e-4, head 1e-3) lost 5 pts on products28 val after one epoch (issue 14)
        head_lr=1e-4,
        weight_decay=1e-4,
        warmup=0.1,
        schedule="cosine",
        batch_size=64,
        image_size=224,
        scale=(0.35, 1.0),
        balance="weights",
        label_smoothing=0.0,  # 0.1 cost 2 pts on products28 val (0.937 vs 0.959, issue 14)
        bn_eval=True,
        patience=2,
    ),
    "catalog": Recipe(
        name="catalog",
        description="MobileNetV2 + EfficientNet-Lite0 joined (one network, one head over both backbones' "
        "features; --arch to change) and a class-weighted linear head on their cached frozen features (L2 by CV "
        "on train); no fine-tuning by default (it lost to the frozen head on products28). With --epochs N: full "
        "fine-tuning with distillation from an out-of-fold probe teacher, AdamW 3e-5, weight decay 0.01, "
        "BatchNorm frozen, batch 16, cosine, RandomResizedCrop 0.35-1 + flip, distill 0.7 at T 2 "
        "(see bench/backbones.md)",
        arch=CATALOG_ARCH,
        head_max_iter=100,
        head_l2=None,
        epochs=0,  # every fine-tuning run on products28 ended below its own frozen-feature head
        optimizer="adamw",
        lr=3e-5,  # 1e-4 dropped val 0.963 -> 0.889 after one epoch, SGD 1e-3 -> 0.667 (MobileNetV2, products28)
        weight_decay=0.01,
        schedule="cosine",
        batch_size=16,
        image_size=224,
        scale=(0.35, 1.0),
        balance="none",
        label_smoothing=0.0,
        distill=0.7,
        distill_t=2.0,
        bn_eval=True,
        scratch_lr=1e-2,
        scratch_balance="sampler",
        patience=None,
    ),
    "seed": Recipe(
        name="seed",
        description="the seed's recipe: SGD lr 0.001 momentum 0.9, StepLR(7, 0.1), 25 epochs, batch 4, "
        "RandomResizedCrop(224)+flip, Resize(256)/CenterCrop(224), no imbalance handling",
        head_max_iter=0,
        epochs=25,
        optimizer="sgd",
        lr=0.001,
        momentum=0.9,
        weight_decay=0.0,
        schedule="step",
        step_size=7,
        gamma=0.1,
        batch_size=4,
        image_size=224,
        train_size=None,
        scale=(0.08, 1.0),
        balance="none",
        patience=None,
    ),
}


DEFAULT_RECIPE = "fast"  # what ``edgecls train`` uses without --recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(f"unknown --recipe {name!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[name]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``recipe`` already carries the CLI overrides."""

    data: str
    recipe: Recipe = field(default_factory=lambda: RECIPES["fast"])
    arch: str = "resnet18"
    weights: str = "imagenet"
    # distillation teacher (recipe.distill > 0): a probe on the student's features joined with this backbone's
    teacher_arch: Optional[str] = None
    teacher_weights: str = "imagenet"
    out: Optional[str] = None  # explicit run folder; None = ``project/name`` with a free name (name, name2, ...)
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    positive: Optional[str] = None
    target_precision: float = 0.95
    delta: float = 0.10  # the precision promise may fail with at most this probability
    coverage: float = 0.90  # default coverage of the conformal sets the checkpoint serves
    calib_fraction: float = 0.5  # share of val kept for calibration (never used to pick the epoch); 0 = none
    best_promise: bool = False  # deploy the highest ladder target <= target_precision the images certify
    crossfit: bool = True  # head-phase model: calibrate on cross-fitted scores of every labelled image
    calib_data: Optional[str] = None  # a labelled folder the final checkpoints are re-calibrated on
    val_fraction: float = 0.2
    seed: int = 0
    workers: Optional[int] = None  # None = auto (0 on small CPU machines)
    max_minutes: Optional[float] = None  # stop after the epoch that exceeds this wall-clock budget
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    progress: bool = True  # tqdm bars on stderr (rank 0 only)

    def __post_init__(self) -> None:
        _need(bool(self.data), "--data is required: a folder with train/<class>/ and val/<class>/, or <class>/")
        _need(0.0 < self.target_precision <= 1.0, f"--target-precision must be in (0, 1], got {self.target_precision}")
        _need(0.0 < self.val_fraction < 1.0, f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        _need(0.0 < self.delta < 1.0, f"--delta must be in (0, 1) (e.g. 0.1 for 90 % confidence), got {self.delta}")
        _need(0.0 < self.coverage < 1.0, f"--coverage must be in (0, 1) (e.g. 0.9), got {self.coverage}")
        _need(0.0 <= self.calib_fraction < 1.0,
              f"--calib-fraction must be in [0, 1) (0: calibrate on the selection images), got {self.calib_fraction}")
        _need(self.workers is None or self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        _need(self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be > 0, got {self.max_minutes}")
        _need(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            f"--device {self.device!r} is not valid; valid: auto, cpu, cuda, cuda:N",
        )
        if isinstance(self.recipe, dict):
            object.__setattr__(self, "recipe", Recipe.from_dict(self.recipe))

    @property
    def data_path(self) -> Path:
        return Path(self.data).expanduser()

    @property
    def pretrained(self) -> bool:
        return self.weights not in ("none", "", None)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["recipe"] = Recipe.from_dict(d["recipe"])
        valid = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in valid})


# Fields that may differ when a run is resumed (everything else must match the run's stored config).
RESUMABLE_CHANGES = ("epochs", "workers", "device", "progress", "max_minutes", "patience")
