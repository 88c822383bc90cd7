"""Calibration images: where they come from, a stratified sample, a content hash, and ``edgecls calib-sample``.

INT8 ranges are measured on images run through THE runtime preprocessing; they should look like what the
deployment camera sees (a few hundred). Sources, in order: ``--calib DIR``; else the repo's ``calib_images/``
when it holds images; else a stratified sample of the training items recorded in the checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from edgecls.core.errors import InputError
from edgecls.core.fileio import file_sha256
from edgecls.core.images import IMAGE_EXTENSIONS, list_images

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

DEFAULT_CALIB_DIR = Path("calib_images")
DEFAULT_CALIB_COUNT = 256
MIN_RECOMMENDED = 100


def group_of(path: Path, root: Path) -> str:
    """The first folder under ``root`` (the class in an ImageFolder), or '' for files directly in root."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def stratified_sample(items: Sequence[T], groups: Sequence[str], count: int, seed: int = 0) -> List[T]:
    """``count`` items, each group represented in proportion to its size (largest remainder), at least one per
    non-empty group when ``count`` allows; deterministic for a seed. Returns all items when count >= len(items)."""
    if count < 1:
        raise InputError(f"sample count must be >= 1, got {count}")
    by: OrderedDict[str, List[T]] = OrderedDict()
    for it, g in zip(items, groups):
        by.setdefault(g, []).append(it)
    total = sum(len(v) for v in by.values())
    if count >= total:
        return [it for v in by.values() for it in v]
    quota = {g: count * len(v) / total for g, v in by.items()}
    alloc = {g: int(q) for g, q in quota.items()}
    for g in by:  # every group gets one when there is room
        if alloc[g] == 0 and sum(alloc.values()) < count:
            alloc[g] = 1
    rest = count - sum(alloc.values())
    for g in sorted(by, key=lambda g: (alloc[g] - quota[g], g)):
        if rest <= 0:
            break
        if alloc[g] < len(by[g]):
            alloc[g] += 1
            rest -= 1
    while sum(alloc.values()) > count:  # the minimum-one rule can overshoot with many tiny groups
        g = max(by, key=lambda g: (alloc[g], g))
        alloc[g] -= 1
    rng = random.Random(seed)
    out: List[T] = []
    for g, v in by.items():
        idx = sorted(rng.sample(range(len(v)), min(alloc[g], len(v))))
        out.extend(v[i] for i in idx)
    return out


def image_set_sha256(paths: Sequence[PathLike]) -> str:
    """A hash of the image set's CONTENTS (order and location do not matter)."""
    h = hashlib.sha256()
    for d in sorted(file_sha256(p) for p in paths):
        h.update(d.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class CalibSet:
    paths: Tuple[Path, ...]
    source: str
    groups: Dict[str, int] = field(default_factory=dict)
    requested: int = DEFAULT_CALIB_COUNT
    unused: Tuple[Path, ...] = ()  # folder images not sampled for the ranges (unlabelled agreement evidence)

    @property
    def count(self) -> int:
        return len(self.paths)

    def warnings(self) -> List[str]:
        out = []
        if self.count < MIN_RECOMMENDED:
            out.append(
                f"calibration uses only {self.count} images (< {MIN_RECOMMENDED}): INT8 ranges may not represent "
                f"what the camera sees; put a few hundred deployment-like images in calib_images/ "
                f"(`edgecls calib-sample --data DIR --count 300`) or pass --calib DIR"
            )
        if self.count < self.requested:
            out.append(f"--calib-count {self.requested} asked for, only {self.count} images available ({self.source})")
        return out


def _group_counts(groups: Sequence[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for g in groups:
        out[g or "."] = out.get(g or ".", 0) + 1
    return dict(sorted(out.items()))


def calib_from_folder(folder: PathLike, count: int, seed: int = 0) -> CalibSet:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--calib {os.fspath(folder)!r} is not a folder of images")
    images = list_images(folder)
    if not images:
        raise InputError(
            f"--calib {os.fspath(folder)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
        )
    groups = [group_of(p, folder) for p in images]
    chosen = stratified_sample(list(zip(images, groups)), groups, count, seed)
    used = {p for p, _ in chosen}
    return CalibSet(tuple(p for p, _ in chosen), f"folder {os.fspath(folder)}",
                    _group_counts([g for _, g in chosen]), count, tuple(p for p in images if p not in used))


def calib_from_checkpoint(data: Dict, classes: Sequence[str], count: int, seed: int = 0) -> CalibSet:
    from edgecls.reference.checkpoint import recorded_items  # torch: only when the checkpoint is the source

    items = recorded_items(
        data, "train", "calib_images/ is empty, so pass --calib DIR (a few hundred images like the deployment "
        "camera sees)",
    )
    names = [classes[y] if 0 <= y < len(classes) else str(y) for _, y in items]
    chosen = stratified_sample(items, names, count, seed)
    root = data.get("root") or "?"
    return CalibSet(tuple(p for p, _ in chosen), f"stratified sample of the checkpoint's training items ({root})",
                    _group_counts([classes[y] if 0 <= y < len(classes) else str(y) for _, y in chosen]), count)


def resolve_calib_set(
    calib: Optional[PathLike], count: int, checkpoint_data: Dict, classes: Sequence[str], seed: int = 0,
    default_dir: PathLike = DEFAULT_CALIB_DIR,
) -> CalibSet:
    """``--calib DIR`` if given; else ``calib_images/`` when it has images; else the checkpoint's train items."""
    if count < 1:
        raise InputError(f"--calib-count must be >= 1, got {count}")
    if calib is not None:
        return calib_from_folder(calib, count, seed)
    default_dir = Path(default_dir)
    if default_dir.is_dir() and list_images(default_dir):
        return calib_from_folder(default_dir, count, seed)
    log.info("%s has no images: calibrating on a stratified sample of the checkpoint's training items", default_dir)
    return calib_from_checkpoint(checkpoint_data, classes, count, seed)


# ------------------------------------------------------------------------------------------ calib-sample


@dataclass(frozen=True)
class SampleResult:
    out: Path
    copied: Tuple[Path, ...]
    identical: Tuple[Path, ...]
    groups: Dict[str, int]
    available: int


def sample_source_root(data: PathLike) -> Path:
    """``DIR/train`` when DIR is a split dataset (calibrate on training data, never on the parity/val set)."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"--data {os.fspath(data)!r} is not a folder")
    train = data / "train"
    return train if train.is_dir() and list_images(train) else data


def sample_to_folder(data: PathLike, count: int, out: PathLike = DEFAULT_CALIB_DIR, seed: int = 0) -> SampleResult:
    """Copy a stratified sample of ``data``'s images into ``out`` (keeping ``<class>/<name>``).

    Files already there with the same content are left as they are; a file there with DIFFERENT content makes the
    whole call refuse (InputError listing them) before anything is copied. Nothing in ``out`` is ever deleted.
    """
    from edgecls.core import fileio as atomic

    root = sample_source_root(data)
    images = list_images(root)
    if not images:
        raise InputError(f"--data {os.fspath(data)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    groups = [group_of(p, root) for p in images]
    chosen = stratified_sample(list(zip(images, groups)), groups, count, seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {os.fspath(out)!r} exists and is not a folder")
    plan = [(src, out / src.relative_to(root)) for src, _ in chosen]
    conflicts, identical = [], []
    for src, dst in plan:
        if dst.exists():
            if dst.is_file() and file_sha256(dst) == file_sha256(src):
                identical.append(dst)
            else:
                conflicts.append(dst)
    if conflicts:
        shown = ", ".join(os.fspath(c) for c in conflicts[:5])
        raise InputError(
            f"refusing to overwrite {len(conflicts)} existing file(s) in {os.fspath(out)!r} whose content differs "
            f"from the sample (e.g. {shown}); move them away or choose another --out"
        )
    copied = []
    for src, dst in plan:
        if dst in identical:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic.copy_file(src, dst)
        copied.append(dst)
    return SampleResult(out, tuple(copied), tuple(identical), _group_counts([g for _, g in chosen]), len(images))
