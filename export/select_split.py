"""Selection apart from reporting: the parity images are split in two, once, deterministically.

- **select**: chooses the INT8 recipe (calibration method, layers kept in FP32, QAT or not) and fits each INT8
  artifact's own temperature/confidence (:mod:`edgecls.export.refit`);
- **report**: every artifact's numbers in the table and ``parity.json``, and the gates that decide its fate.

When the checkpoint recorded its calibration split of val (``data["calib"]``, the images that fitted its
temperature) and the parity images are its val images, that split is the selection half (the same images fit the
checkpoint's confidence and each artifact's); else each class (or, unlabelled, all images) is ordered by a hash of
the file name and alternate images go to report and select (report takes the odd one).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from edgecls.core.errors import InputError
from edgecls.export.parity import ParityData, Reference, reference_subset
from edgecls.runtime.spec import ModelSpec


@dataclass(frozen=True)
class SelectReportSplit:
    select: ParityData
    report: ParityData
    select_reference: Reference
    report_reference: Reference
    rule: str

    def to_dict(self) -> Dict[str, object]:
        return {"rule": self.rule, "select_images": self.select.n, "report_images": self.report.n,
                "select_files": list(self.select.paths), "report_files": list(self.report.paths)}


def _subset(data: ParityData, index: np.ndarray, role: str) -> ParityData:
    y = None if data.y is None else data.y[index]
    return ParityData(data.x[index], y, tuple(data.paths[int(i)] for i in index),
                      f"{data.source}, {role} split: {len(index)} of {data.n}")


def _name_hash(path: str) -> str:
    return hashlib.sha256(os.path.basename(path).encode()).hexdigest()


def alternate_halves(paths: Sequence[str], y: Optional[np.ndarray]) -> np.ndarray:
    """A boolean mask of the *select* images: per class, images ordered by a hash of their file name, every second
    one selected (the report half gets the odd one; a class of one image is reported)."""
    groups = np.zeros(len(paths), dtype=np.int64) if y is None else np.asarray(y)
    mask = np.zeros(len(paths), dtype=bool)
    for g in np.unique(groups):
        idx = [int(i) for i in np.nonzero(groups == g)[0]]
        idx.sort(key=lambda i: (_name_hash(paths[i]), paths[i]))
        for j, i in enumerate(idx):
            mask[i] = j % 2 == 1
    return mask


def split_select_report(data: ParityData, reference: Reference, spec: ModelSpec,
                        ckpt_data: Optional[Dict] = None) -> SelectReportSplit:
    """Split ``data`` (and its reference logits) into the select and report halves (see the module)."""
    if data.n < 2:
        raise InputError(f"INT8 export needs at least 2 parity images (half choose the recipe, half are reported); "
                         f"got {data.n} from {data.source}")
    calib = {os.path.realpath(p) for p in (ckpt_data or {}).get("calib", [])}
    mask = None
    if calib and data.source.startswith("checkpoint val"):
        m = np.array([os.path.realpath(p) in calib for p in data.paths])
        if 0 < m.sum() < data.n:
            mask = m
            rule = (f"select = the checkpoint's calibration split of val ({int(m.sum())} images, which fitted its "
                    f"temperature); report = the rest of val ({int((~m).sum())} images)")
    if mask is None:
        mask = alternate_halves(data.paths, data.y)
        rule = (f"val split in halves per class by a hash of the file name: select {int(mask.sum())}, report "
                f"{int((~mask).sum())} images")
    if not mask.any():  # e.g. one image per class: move one image over so both halves exist
        mask[int(np.argmax(~mask))] = True
    sel, rep = np.nonzero(mask)[0], np.nonzero(~mask)[0]
    return SelectReportSplit(
        _subset(data, sel, "select"), _subset(data, rep, "report"),
        reference_subset(reference, data, sel, spec), reference_subset(reference, data, rep, spec), rule)


def concat_parity(data: ParityData, reference: Reference, extra: ParityData, extra_reference: Reference,
                  spec: ModelSpec):
    """``(data + extra, their reference)``: ``--gate-data`` appended to the images the gates judge."""
    both = ParityData(np.concatenate([data.x, extra.x]),
                      None if data.y is None or extra.y is None else np.concatenate([data.y, extra.y]),
                      data.paths + extra.paths, f"{data.source} + --gate-data {extra.source}")
    joined = Reference(np.concatenate([reference.logits, extra_reference.logits]), None, None, {},
                       reference.seconds + extra_reference.seconds, reference.temperature, None, reference.threshold)
    return both, reference_subset(joined, both, np.arange(both.n), spec)
