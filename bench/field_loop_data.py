"""The data of ``bench_field_loop.py``: products28 without three classes, and those classes' photos dealt into
what the field sees (to be collected and labelled), what is labelled later (to calibrate) and what is never used
(to judge) — seeded, by whole photos, so no photo is in two roles.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

MISSING = ("ewer", "laptop", "umbrella")  # 68, 65, 60 photos in products28 (train + val)


@dataclass(frozen=True)
class FieldData:
    base: Path  # products28 without MISSING: train/<class>, val/<class> (symlinked class folders)
    field: Dict[str, List[str]]  # photos of the missing classes the camera sees (collected, labelled, learnt from)
    later: Dict[str, List[str]]  # photos labelled after learning (calibrate)
    unseen: Dict[str, List[str]]  # never used: new-class recall
    known_val: Path  # base/val: known-class accuracy before/after
    known_seen: List[str]  # photos of known products the camera also sees (from base/train: nothing judged on them)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(os.path.realpath(src), dst)


def prepare(products28: Path, work: Path, missing: Sequence[str] = MISSING, seed: int = 0,
            shares=(0.55, 0.1), known_seen: int = 240) -> FieldData:
    """Build the folders under ``work`` (idempotent) and deal the missing classes' photos."""
    base = work / "products25"
    for split in ("train", "val"):
        for c in sorted(p.name for p in (products28 / split).iterdir() if p.is_dir()):
            if c not in missing:
                _link(products28 / split / c, base / split / c)
    rng = random.Random(seed)
    field, later, unseen = {}, {}, {}
    for c in missing:
        photos = sorted(os.fspath(p) for split in ("train", "val") for p in (products28 / split / c).iterdir())
        rng.shuffle(photos)
        a = int(round(len(photos) * shares[0]))
        b = a + int(round(len(photos) * shares[1]))
        field[c], later[c], unseen[c] = photos[:a], photos[a:b], photos[b:]
    known = sorted(os.fspath(p) for p in (base / "train").glob("*/*"))
    random.Random(seed + 1).shuffle(known)
    return FieldData(base, field, later, unseen, base / "val", sorted(known[:known_seen]))


def write_flat(dest: Path, photos: Sequence[str]) -> Path:
    """``dest/<n>_<photo name>`` symlinks: what a camera sees, no labels."""
    for i, p in enumerate(photos):
        _link(Path(p), dest / f"{i:04d}_{Path(p).name}")
    return dest


def write_folder(dest: Path, photos: Dict[str, List[str]]) -> Path:
    """``dest/<class>/<photo>`` symlinks (a labelled ImageFolder)."""
    for c, ps in photos.items():
        for p in ps:
            _link(Path(p), dest / c / Path(p).name)
    return dest
