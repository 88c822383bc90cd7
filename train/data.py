"""Image folders in, checked splits and datasets out.

Layouts (the same as torchvision's ImageFolder, one folder per class):

- ``DATA/train/<class>/*.jpg`` and ``DATA/val/<class>/*.jpg`` (used as they are), or
- ``DATA/<class>/*.jpg`` only: split into train/val per class (stratified) by ``val_fraction`` with ``seed``.

Class names are the sorted folder names (ImageFolder's order); train and val must have the same classes.
Unreadable images are skipped with a warning and counted, never a crash: a cheap header check at discovery,
and a decode failure while loading drops the sample from its batch (``collate_skip``).

Evaluation uses the runtime's own preprocessing (``open_rgb`` → ``preprocess_one``), so what is validated is
what ships; training augmentation (RandomResizedCrop + flip) is the only other transform.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.images import IMAGE_EXTENSIONS, class_folders, list_images
from edgecls.runtime.preprocess import ImageReadError, open_rgb, preprocess_one, probe_image
from edgecls.runtime.spec import PreprocessSpec

log = logging.getLogger(__name__)

Item = Tuple[str, int]


class DataError(InputError):
    """The image folder is missing, empty or inconsistent; the message names the path and what is valid."""


LAYOUT_HELP = (
    "valid layouts: DATA/train/<class>/*.jpg + DATA/val/<class>/*.jpg, "
    "or DATA/<class>/*.jpg (split by --val-fraction)"
)


@dataclass(frozen=True)
class DataSplit:
    """The checked train/val items (absolute paths, label indices) of one image folder."""

    root: str
    layout: str  # "train/val" or "class folders"
    classes: Tuple[str, ...]
    train: Tuple[Item, ...]
    val: Tuple[Item, ...]
    skipped: Tuple[Tuple[str, str], ...] = ()  # (path, reason) of unreadable images left out
    val_fraction: Optional[float] = None
    seed: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def counts(self, split: str) -> List[int]:
        items = self.train if split == "train" else self.val
        c = [0] * len(self.classes)
        for _, y in items:
            c[y] += 1
        return c

    def labels(self, split: str) -> np.ndarray:
        items = self.train if split == "train" else self.val
        return np.asarray([y for _, y in items], dtype=np.int64)

    def without(self, bad: Sequence[str]) -> DataSplit:
        """A copy without the items whose path is in ``bad`` (found unreadable while loading)."""
        bad = set(bad) - {p for p, _ in self.skipped}
        if not bad:
            return self
        return DataSplit(
            root=self.root,
            layout=self.layout,
            classes=self.classes,
            train=tuple(it for it in self.train if it[0] not in bad),
            val=tuple(it for it in self.val if it[0] not in bad),
            skipped=self.skipped + tuple((p, "decode failed") for p in sorted(bad)),
            val_fraction=self.val_fraction,
            seed=self.seed,
            extra=self.extra,
        )

    def to_checkpoint_data(self) -> Dict[str, Any]:
        """The ``data`` entry of a checkpoint (read back by :func:`edgecls.reference.checkpoint.recorded_split`)."""
        return {
            "root": self.root,
            "layout": self.layout,
            "classes": list(self.classes),
            "train": [[p, int(y)] for p, y in self.train],
            "val": [[p, int(y)] for p, y in self.val],
            "skipped": [[p, r] for p, r in self.skipped],
            "val_fraction": self.val_fraction,
            "seed": self.seed,
        }

    def summary(self) -> Dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "classes": list(self.classes),
            "train_counts": dict(zip(self.classes, self.counts("train"))),
            "val_counts": dict(zip(self.classes, self.counts("val"))),
            "skipped": len(self.skipped),
            "skipped_paths": [p for p, _ in self.skipped][:50],
        }


def header_ok(path: str) -> Optional[str]:
    """None when the file opens as an image the loader accepts (header only, cheap), else the reason it does not."""
    try:
        probe_image(path)
        return None
    except ImageReadError as e:
        return str(e)


def _scan_split(folder: Path, split_name: str, check: bool) -> Tuple[Dict[str, List[str]], List[Tuple[str, str]]]:
    """``{class: [abs paths]}`` of one split folder, after the header check."""
    if not folder.is_dir():
        raise DataError(f"{split_name} folder {folder} does not exist; {LAYOUT_HELP}")
    dirs = class_folders(folder)
    if not dirs:
        raise DataError(f"{folder} has no class folders; {LAYOUT_HELP}")
    per_class: Dict[str, List[str]] = {}
    skipped: List[Tuple[str, str]] = []
    for d in dirs:
        files = [str(p.resolve()) for p in list_images(d)]
        if check:
            good = []
            for p in files:
                reason = header_ok(p)
                if reason is None:
                    good.append(p)
                else:
                    skipped.append((p, reason))
                    log.warning("skipping unreadable image %s (%s)", p, reason)
            files = good
        if not files:
            raise DataError(
                f"class folder {d} has no readable images (extensions: {', '.join(IMAGE_EXTENSIONS)}); "
                f"every class needs images in both train and val"
            )
        per_class[d.name] = files
    if len(per_class) < 2:
        raise DataError(
            f"{folder} has only one class ({', '.join(per_class)}); a classifier needs at least 2 class folders "
            f"(e.g. mobile/ and other/)"
        )
    return per_class, skipped


def stratified_split(
    per_class: Dict[str, List[str]], val_fraction: float, seed: int
) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """Per class: shuffle with ``seed``, ``round(n * val_fraction)`` (at least 1) to val, the rest to train."""
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for cls in sorted(per_class):
        files = sorted(per_class[cls])
        if len(files) < 2:
            raise DataError(
                f"class {cls!r} has {len(files)} image; splitting by --val-fraction needs at least 2 per class"
            )
        order = rng.permutation(len(files))
        n_val = min(len(files) - 1, max(1, int(math.floor(len(files) * val_fraction + 0.5))))
        val[cls] = [files[i] for i in sorted(order[:n_val])]
        train[cls] = [files[i] for i in sorted(order[n_val:])]
    return train, val


def discover(root: os.PathLike, val_fraction: float = 0.2, seed: int = 0, check_images: bool = True) -> DataSplit:
    """Find, check and (for a single class-folder layout) split an image folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"--data {root} does not exist; {LAYOUT_HELP}")
    if not root.is_dir():
        raise DataError(f"--data {root} is not a folder; {LAYOUT_HELP}")
    root = root.resolve()
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train or has_val:
        if not has_train:
            raise DataError(f"{root / 'train'} does not exist but {root / 'val'} does; {LAYOUT_HELP}")
        if not has_val:
            raise DataError(
                f"{root / 'val'} does not exist but {root / 'train'} does; {LAYOUT_HELP} "
                f"(to split train/ itself, pass --data {root / 'train'})"
            )
        train, sk_t = _scan_split(root / "train", "train", check_images)
        val, sk_v = _scan_split(root / "val", "val", check_images)
        if sorted(train) != sorted(val):
            only_t = sorted(set(train) - set(val))
            only_v = sorted(set(val) - set(train))
            raise DataError(
                f"class folders differ between {root / 'train'} and {root / 'val'}: "
                f"only in train {only_t}, only in val {only_v}; both need the same class folders "
                f"(train has {sorted(train)})"
            )
        layout, frac, used_seed, skipped = "train/val", None, None, sk_t + sk_v
    else:
        per_class, skipped = _scan_split(root, "data", check_images)
        train, val = stratified_split(per_class, val_fraction, seed)
        layout, frac, used_seed = "class folders", float(val_fraction), int(seed)
    classes = tuple(sorted(train))
    index = {c: i for i, c in enumerate(classes)}
    split = DataSplit(
        root=str(root),
        layout=layout,
        classes=classes,
        train=tuple((p, index[c]) for c in classes for p in train[c]),
        val=tuple((p, index[c]) for c in classes for p in val[c]),
        skipped=tuple(skipped),
        val_fraction=frac,
        seed=used_seed,
    )
    if skipped:
        log.warning("%d unreadable image(s) skipped in %s", len(skipped), root)
    log.info(
        "data %s (%s): classes %s, train %s, val %s",
        root, layout, list(classes), split.counts("train"), split.counts("val"),
    )
    return split


# --------------------------------------------------------------------------------------------- datasets


class EvalDataset:
    """``(CHW float32 tensor, label, index)`` through the runtime preprocessing; ``None`` when unreadable."""

    def __init__(self, items: Sequence[Item], spec: PreprocessSpec):
        self.items = list(items)
        self.spec = spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        path, y = self.items[i]
        try:
            x = preprocess_one(open_rgb(path), self.spec)
        except (ImageReadError, ValueError) as e:
            return _Bad(path, str(e))
        return torch.from_numpy(x), int(y), int(i)


class TrainDataset:
    """``(augmented tensor, label, index)``: load like ImageFolder, then the torchvision train transform."""

    def __init__(self, items: Sequence[Item], transform):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, y = self.items[i]
        try:
            im = open_rgb(path)
        except (ImageReadError, ValueError) as e:
            return _Bad(path, str(e))
        return self.transform(im), int(y), int(i)


@dataclass(frozen=True)
class _Bad:
    path: str
    reason: str


@dataclass
class Batch:
    x: Any  # float tensor NCHW (empty when every sample failed)
    y: Any  # long tensor N
    index: Any  # long tensor N: positions in the dataset's items
    bad: List[Tuple[str, str]]  # (path, reason) of samples that failed to load


def collate_skip(samples: Sequence[Any]) -> Batch:
    """Stack the readable samples; report the unreadable ones instead of crashing the loader."""
    import torch

    good = [s for s in samples if not isinstance(s, _Bad)]
    bad = [(s.path, s.reason) for s in samples if isinstance(s, _Bad)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), bad)
    return Batch(
        torch.stack([s[0] for s in good]),
        torch.tensor([s[1] for s in good], dtype=torch.long),
        torch.tensor([s[2] for s in good], dtype=torch.long),
        bad,
    )


class RandomRot90:
    """With probability ``p``, turn the PIL image by 90, 180 or 270 degrees (uniformly); else leave it upright.

    The training side of orientation robustness (``--rotate``); draws from torch's RNG, so it follows the
    loader's seeding like the other random transforms."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, im):
        import torch
        from PIL import Image

        if float(torch.rand(())) >= self.p:
            return im
        k = int(torch.randint(1, 4, ()))
        return im.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[k - 1])

    def __repr__(self) -> str:
        return f"RandomRot90(p={self.p})"


def train_transform(crop: int, scale: Tuple[float, float], hflip: bool, spec: PreprocessSpec, rotate: float = 0.0):
    """[RandomRot90(rotate)] + RandomResizedCrop(crop, scale) + optional horizontal flip + ToTensor +
    Normalize(spec.mean, spec.std)."""
    from torchvision import transforms as T

    interp = {
        "bilinear": T.InterpolationMode.BILINEAR,
        "bicubic": T.InterpolationMode.BICUBIC,
        "nearest": T.InterpolationMode.NEAREST,
    }[spec.interpolation]
    steps = [RandomRot90(rotate)] if rotate > 0 else []
    steps.append(T.RandomResizedCrop(crop, scale=tuple(scale), interpolation=interp, antialias=True))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(list(spec.mean), list(spec.std))]
    return T.Compose(steps)


# --------------------------------------------------------------------------------------------- samplers


class EpochSampler:
    """Seeded per-epoch indices for one rank: shuffled, or class-balanced (with replacement), sharded.

    Works without ``torch.distributed`` (``world_size=1``) and under DDP (each rank takes every
    ``world_size``-th index of the same permutation, padded so all ranks get the same count — what
    ``DistributedSampler`` does). ``set_epoch`` makes every epoch's order a pure function of (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_classes: int,
        balanced: bool = False,
        num_samples: Optional[int] = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = num_classes
        self.balanced = balanced
        self.total = int(num_samples or len(self.labels))
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.per_rank = int(math.ceil(self.total / world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> List[int]:
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + self.epoch)
        if self.balanced:
            counts = np.bincount(self.labels, minlength=self.num_classes).astype(np.float64)
            w = 1.0 / np.maximum(counts[self.labels], 1.0)
            idx = torch.multinomial(torch.as_tensor(w), self.total, replacement=True, generator=g).tolist()
        else:
            idx = torch.randperm(len(self.labels), generator=g).tolist()[: self.total]
        padded = self.per_rank * self.world_size
        idx = (idx * (padded // max(len(idx), 1) + 1))[:padded]
        return idx[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return self.per_rank


def class_weights(counts: Sequence[int]) -> np.ndarray:
    """Inverse-frequency weights normalised so a balanced dataset gets all ones: ``N / (C * n_c)``."""
    c = np.asarray(counts, dtype=np.float64)
    return (c.sum() / (len(c) * np.maximum(c, 1.0))).astype(np.float32)
