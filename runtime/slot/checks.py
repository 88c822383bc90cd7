"""What a new model must pass before it replaces the current one: the same input, the same classes (unless new
classes are allowed), a warm-up whose outputs are finite, and optionally a golden set it classifies at least as
well as the current model (within a tolerance).

Each check returns a :class:`Refusal` (a short ``reason`` for the metric label, a sentence for the log) or None.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.confidence.bounds import cp_lower, cp_upper

log = logging.getLogger(__name__)

GOLDEN_BATCH = 16
MAX_GOLDEN = 2000  # images of a golden set (each check runs them all through both models)


@dataclass(frozen=True)
class Refusal:
    reason: str  # load | input | classes | warmup | golden | first_inputs (the metric's label)
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def _input_shape(clf: Any) -> Tuple[Any, ...]:
    return tuple(getattr(getattr(clf, "backend", None), "input_shape", None) or ())  # () once closed


def check_compatible(current: Any, new: Any, allow_new_classes: bool) -> Optional[Refusal]:
    """Same preprocessing, input/output names and input shape; the same classes unless ``allow_new_classes``."""
    a, b = current.spec, new.spec
    if a.preprocess != b.preprocess:
        diff = {k: (v, b.preprocess.to_dict()[k]) for k, v in a.preprocess.to_dict().items()
                if b.preprocess.to_dict()[k] != v}
        return Refusal("input", f"its preprocessing differs from the current model's: "
                                f"{', '.join(f'{k} {x!r} -> {y!r}' for k, (x, y) in diff.items())}")
    if (a.input_name, a.output_name) != (b.input_name, b.output_name):
        return Refusal("input", f"its tensors are named {b.input_name!r} -> {b.output_name!r}, the current model's "
                                f"{a.input_name!r} -> {a.output_name!r} (clients send and read them by name)")
    sa, sb = _input_shape(current), _input_shape(new)
    if sa and sb and (len(sa) != len(sb) or any(isinstance(x, int) and isinstance(y, int) and x != y
                                                for x, y in zip(sa, sb))):
        return Refusal("input", f"its input shape is {list(sb)}, the current model's {list(sa)}")
    if tuple(a.classes) != tuple(b.classes) and not allow_new_classes:
        return Refusal("classes", f"its classes {list(b.classes)} differ from the current {list(a.classes)} "
                                  "(allow it with --allow-new-classes)")
    return None


def bad_output(out: Any, n: int, classes: int) -> Optional[str]:
    """Why a model's output for ``n`` images is unusable (wrong shape, NaN/inf), or None."""
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape != (n, classes):
        return f"output shape {list(arr.shape)}, expected [{n}, {classes}]"
    if not np.all(np.isfinite(arr)):
        return f"{int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))} non-finite output value(s) (NaN/inf)"
    return None


def warm_up(clf: Any, batch: int = 1) -> Optional[Refusal]:
    """One call on a deterministic batch (the backend allocates now, not on the first live frame); its output must
    have the right shape and be finite."""
    crop = clf.spec.preprocess.crop
    x = np.random.default_rng(0).standard_normal((max(1, batch), 3, crop, crop)).astype(np.float32)
    try:
        out = clf.infer(x)
    except Exception as e:
        return Refusal("warmup", f"its warm-up inference failed: {type(e).__name__}: {e}")
    why = bad_output(out, x.shape[0], clf.spec.num_classes)
    return Refusal("warmup", f"its warm-up gave {why}") if why else None


class GoldenSet:
    """A labelled folder (one sub-folder per class, images inside) a new model must classify at least as well as
    the current one, within ``tolerance`` points of accuracy."""

    def __init__(self, root: os.PathLike | str, tolerance_pt: float = 2.0) -> None:
        from edgecls.core.images import class_folders, list_images

        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"--golden {os.fspath(root)!r} is not a folder (expected one sub-folder per class)")
        self.tolerance = float(tolerance_pt)
        self.items: List[Tuple[Path, str]] = []
        for d in class_folders(self.root):
            self.items.extend((p, d.name) for p in list_images(d))
        if not self.items:
            raise InputError(f"--golden {os.fspath(root)!r} has no images in class sub-folders "
                             "(layout: DIR/<class>/<image>.jpg)")
        if len(self.items) > MAX_GOLDEN:
            raise InputError(f"--golden {os.fspath(root)!r} has {len(self.items)} images; at most {MAX_GOLDEN} "
                             "(each check runs them through two models)")
        self._accuracy: Dict[str, Tuple[int, int]] = {}  # model sha256 -> (correct, n)

    def check_labels(self, clf: Any) -> None:
        """Refuse (InputError) a golden set whose folders are not classes of the model it starts with."""
        unknown = sorted({lab for _, lab in self.items} - set(clf.spec.classes))
        if unknown:
            raise InputError(f"--golden {os.fspath(self.root)!r}: folders {unknown} are not classes of the model "
                             f"(its classes: {list(clf.spec.classes)})")

    def accuracy(self, clf: Any, sha256: str, classes: Optional[set] = None) -> Tuple[int, int]:
        """``(correct, n)`` over the golden images whose label is in ``classes`` (default: the model's)."""
        from edgecls.runtime.preprocess import open_rgb

        keep = classes if classes is not None else set(clf.spec.classes)
        key = f"{sha256}:{','.join(sorted(keep))}"
        if key in self._accuracy:
            return self._accuracy[key]
        items = [(p, lab) for p, lab in self.items if lab in keep]
        names = list(clf.spec.classes)
        correct = 0
        for i in range(0, len(items), GOLDEN_BATCH):
            chunk = items[i:i + GOLDEN_BATCH]
            x = np.stack([clf.prepare(open_rgb(p, clf.max_pixels)) for p, _ in chunk])
            pred = np.argmax(np.asarray(clf.infer(x)), axis=1)
            correct += sum(names[int(k)] == lab for k, (_, lab) in zip(pred, chunk))
        self._accuracy[key] = (correct, len(items))
        return correct, len(items)

    def compare(self, current: Any, current_sha: str, new: Any, new_sha: str) -> Tuple[Optional[Refusal], str]:
        """``(refusal or None, one line saying both accuracies with n)``."""
        shared = set(current.spec.classes) & set(new.spec.classes)
        c, n = self.accuracy(current, current_sha, shared)
        c2, n2 = self.accuracy(new, new_sha, shared)
        if n == 0:
            return Refusal("golden", f"--golden {self.root}: no image of a class both models know"), ""
        a, b = 100.0 * c / n, 100.0 * c2 / n2
        lo, hi = 100.0 * cp_lower(c2, n2, 0.025), 100.0 * cp_upper(c2, n2, 0.025)
        line = (f"golden set {self.root} (n={n}): new {b:.1f} % (95 % Clopper-Pearson {lo:.1f}-{hi:.1f}) vs current {a:.1f} % "
                f"(tolerance {self.tolerance:g} pt)")
        if b < a - self.tolerance:
            return Refusal("golden", f"{line}: accuracy dropped {a - b:.1f} pt"), line
        return None, line

