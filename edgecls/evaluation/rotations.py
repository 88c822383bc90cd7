"""``edgecls eval --rotations``: accuracy with every image turned 0/90/180/270 degrees.

Each decoded (EXIF-upright) image is turned counter-clockwise (:func:`edgecls.evaluation.data.rotated`) *before*
the one preprocessing function, so the model sees what a camera held sideways or upside down would give it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.evaluation.data import ROTATIONS


def rotation_metrics(
    opened, items: Sequence[Tuple[str, int]], upright_logits: np.ndarray, batch: int, workers: int = 2,
    progress: bool = False, preprocess: str = "standard",
) -> Dict[str, Dict[str, Any]]:
    """``{"0": {...}, "90": {...}, ...}``: accuracy, balanced accuracy, macro-F1 and the drop from upright.

    ``upright_logits`` are the logits already computed at 0 degrees (not recomputed)."""
    from edgecls.evaluation.evaluate import predict_logits
    from edgecls.runtime import metrics as M

    spec = opened.spec
    y = np.array([label for _, label in items], dtype=np.int64)
    out: Dict[str, Dict[str, Any]] = {}
    for deg in ROTATIONS:
        logits = upright_logits if deg == 0 else predict_logits(
            opened, items, batch, workers, progress, preprocess, rotation=deg)
        rep = M.classification_report(y, M.softmax(logits, spec.temperature), spec.classes)
        out[str(deg)] = {"accuracy": rep.accuracy, "balanced_accuracy": rep.balanced_accuracy,
                         "macro_f1": rep.macro_f1, "n": int(len(y))}
    up = out["0"]
    for row in out.values():
        row["accuracy_drop"] = up["accuracy"] - row["accuracy"]
    return out


def rotation_lines(rotations: Optional[Dict[str, Dict[str, Any]]]) -> List[str]:
    """The table's lines (empty without ``--rotations``)."""
    if not rotations:
        return []
    lines = ["rotation (ccw)  accuracy  balanced  macro-F1  drop vs 0"]
    for deg, r in rotations.items():
        lines.append(f"{deg + ' deg':<15} {r['accuracy']:>8.4f}  {r['balanced_accuracy']:>8.4f}  "
                     f"{r['macro_f1']:>8.4f}  {r['accuracy_drop']:>+9.4f}")
    return lines
