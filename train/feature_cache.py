"""The head's input features of a checkpoint's backbone, extracted once per image and cached on disk.

Adding classes (:mod:`~edgecls.train.add_classes`) fits a new head on the features the deployed head reads (the
input of the model's final ``nn.Linear``, :func:`edgecls.reference.models.head_of` — whatever backbone feeds it).
The old training images' features depend only on the backbone's weights, so they are cached under
``<checkpoint folder>/features/<backbone key>.npz`` (the key: sha256 of every tensor but the head's), with the
images' real paths, sizes and mtimes: a changed or new file is extracted again, the rest is read back.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edgecls.core.fileio import write_bytes

log = logging.getLogger(__name__)


def head_names(model, arch: str) -> Tuple[str, ...]:
    """The state-dict keys of the head (the final ``nn.Linear``), found by module identity."""
    from edgecls.reference.models import head_of

    head = head_of(model, arch)
    for name, mod in model.named_modules():
        if mod is head:
            return tuple(f"{name}.{k}" if name else k for k in mod.state_dict())
    raise ValueError(f"the head of {arch} is not a module of the model")


def backbone_key(state_dict: Dict, head_keys: Sequence[str]) -> str:
    """sha256 (first 16 hex digits) of every tensor but the head's, in key order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        if k in head_keys:
            continue
        t = state_dict[k]
        h.update(k.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}|{st.st_size}|{int(st.st_mtime_ns)}"


def extract(model, arch: str, pspec, items: Sequence[Tuple[str, int]], threads: int = 0
            ) -> Tuple[np.ndarray, List[int]]:
    """``(features (N', D) float32, positions of the readable items)``: the head's input for each image."""
    import torch
    from torch.utils.data import DataLoader

    from edgecls.reference.models import head_of
    from edgecls.train.data import EvalDataset, collate_skip

    grabbed: List = []
    handle = head_of(model, arch).register_forward_hook(lambda m, inp, out: grabbed.append(inp[0].detach().float()))
    loader = DataLoader(EvalDataset(items, pspec), batch_size=32, shuffle=False, num_workers=threads,
                        collate_fn=collate_skip)
    feats, idx = [], []
    try:
        model.eval()
        with torch.inference_mode():
            for batch in loader:
                for p, why in batch.bad:
                    log.warning("skipping unreadable image %s (%s)", p, why)
                if len(batch.y) == 0:
                    continue
                model(batch.x.contiguous(memory_format=torch.channels_last))
                feats.append(grabbed.pop().numpy())
                idx.extend(int(i) for i in batch.index)
    finally:
        handle.remove()
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), idx


class FeatureCache:
    """Features of one backbone, by image stamp; :meth:`features` extracts only what is missing."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = Path(folder) / f"{key}.npz"
        self.rows: Dict[str, np.ndarray] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    self.rows = dict(zip(z["stamps"].tolist(), z["feats"]))
            except (OSError, ValueError, KeyError) as e:
                log.warning("feature cache %s unreadable (%s): extracting again", self.path, e)
        self.dirty = False

    def features(self, model, arch: str, pspec, items: Sequence[Tuple[str, int]], what: str
                 ) -> Tuple[np.ndarray, List[int]]:
        """``(features, positions of the readable items)`` — cached rows read back, the others extracted."""
        stamps = [_stamp(p) for p, _ in items]
        todo = [i for i, s in enumerate(stamps) if s not in self.rows]
        if todo:
            t = time.monotonic()
            f, ok = extract(model, arch, pspec, [items[i] for i in todo])
            for row, j in zip(f, ok):
                self.rows[stamps[todo[j]]] = row
            self.dirty = True
            log.info("features of %d %s images extracted in %.1fs (%d cached)", len(todo), what,
                     time.monotonic() - t, len(items) - len(todo))
        else:
            log.info("features of %d %s images read from the cache %s", len(items), what, self.path)
        pos = [i for i, s in enumerate(stamps) if s in self.rows]
        if not pos:
            return np.zeros((0, 0), np.float32), []
        return np.stack([self.rows[stamps[i]] for i in pos]).astype(np.float32), pos

    def save(self) -> None:
        if not self.dirty:
            return
        buf = io.BytesIO()
        keys = sorted(self.rows)
        np.savez(buf, stamps=np.array(keys), feats=np.stack([self.rows[k] for k in keys]).astype(np.float32))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path, buf.getvalue())
        self.dirty = False


def store_head_phase(run_dir: Path, model, arch: str, items: Sequence[Tuple[str, int]], feats: np.ndarray,
                     index: Sequence[int]) -> Path:
    """Cache the head phase's features (``feats`` of ``items[index]``) under ``run_dir/features``, keyed by the
    frozen backbone: a later ``--add-classes --from best.pt`` of the head-phase model reads them back."""
    state = {k: v for k, v in model.state_dict().items()}
    cache = FeatureCache(Path(run_dir) / "features", backbone_key(state, head_names(model, arch)))
    for row, i in zip(np.asarray(feats, dtype=np.float32), index):
        cache.rows[_stamp(items[int(i)][0])] = row
    cache.dirty = True
    cache.save()
    return cache.path
