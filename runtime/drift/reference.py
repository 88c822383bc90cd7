"""The drift reference: what the calibration images looked like to one artifact, stored beside it.

``model.onnx`` → ``model.drift.json``: the artifact's sha256, how many calibration images and where they came from,
the artifact's own scores on them (max probability, the OOD score the unknown threshold is fitted on,
positive-class probability, conformal set size) and the class mix; and image statistics (:mod:`.image_checks`) of
every image the model learned and was calibrated from (``stats_source``: they do not depend on the model, and the
tails the image checks compare with need more than a calibration split of a hundred images to be pinned down). The
values are stored per image, not summarized: the monitor's tests rank live values among them.

A reference belongs to one artifact: loading it for another (its sha256 differs) is refused with an error naming
both; an artifact without one runs without drift signals (:func:`load_reference` returns None).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.drift.image_checks import STATS

log = logging.getLogger(__name__)

FORMAT = 1
SCORES: Tuple[str, ...] = ("max_prob", "ood_score", "p_positive", "set_size")
MIN_IMAGES = 30  # fewer calibration images cannot resolve the tails the checks compare against


class DriftReferenceError(InputError):
    """A drift reference that cannot be used with this model (another model's, unreadable, too small)."""


def reference_path(model_path: os.PathLike | str) -> Path:
    """``model.onnx`` → ``model.drift.json`` (same folder, same stem)."""
    return Path(model_path).with_suffix(".drift.json")


@dataclass(frozen=True)
class DriftReference:
    """Per-image statistics and scores of the calibration images, for the artifact with ``model_sha256``."""

    model_sha256: str
    source: str  # the scores' images, in words ("calibration split recorded in the checkpoint (136 val images)")
    stats: Mapping[str, Tuple[float, ...]]  # STATS name -> one value per image (of stats_source)
    scores: Mapping[str, Tuple[float, ...]] = field(default_factory=dict)  # SCORES name -> values (absent: n/a)
    stats_source: str = ""  # the statistics' images, in words (default: the same as the scores')
    classes: Mapping[str, int] = field(default_factory=dict)  # predicted label -> images
    ood_kind: Optional[str] = None  # the OOD score's kind (energy, msp, ...): higher = less like calibration

    def __post_init__(self) -> None:
        missing = [s for s in STATS if s not in self.stats]
        if missing:
            raise DriftReferenceError(f"drift reference lacks image statistics {missing}; it needs {list(STATS)}")
        for what, cols in (("image statistics", self.stats), ("scores", self.scores)):
            n = {len(v) for v in cols.values()}
            if len(n) > 1:
                raise DriftReferenceError(f"drift reference {what} have columns of different lengths {sorted(n)}")
            if n and min(n) < MIN_IMAGES:
                raise DriftReferenceError(f"drift reference {what} from {min(n)} images: at least {MIN_IMAGES} are "
                                          "needed")
        for name, v in list(self.stats.items()) + list(self.scores.items()):
            if not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
                raise DriftReferenceError(f"drift reference column {name!r} holds non-finite values")

    @property
    def n(self) -> int:
        """Images behind the image statistics."""
        return len(next(iter(self.stats.values())))

    @property
    def n_scores(self) -> int:
        """Images behind the scores (the calibration images)."""
        return len(next(iter(self.scores.values()))) if self.scores else 0

    def stat(self, name: str) -> np.ndarray:
        return np.asarray(self.stats[name], dtype=np.float64)

    def score(self, name: str) -> Optional[np.ndarray]:
        v = self.scores.get(name)
        return None if v is None else np.asarray(v, dtype=np.float64)

    def to_dict(self) -> Dict[str, Any]:
        r = lambda v: [round(float(x), 6) for x in v]  # noqa: E731
        return {"format": FORMAT, "model_sha256": self.model_sha256, "source": self.source,
                "stats_source": self.stats_source or self.source, "n": self.n, "n_scores": self.n_scores,
                "ood_kind": self.ood_kind, "classes": dict(self.classes),
                "stats": {k: r(v) for k, v in self.stats.items()}, "scores": {k: r(v) for k, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReference:
        if d.get("format") != FORMAT:
            raise DriftReferenceError(f"drift reference format {d.get('format')!r} is not {FORMAT}; rebuild it with "
                                      "`edgecls drift-reference MODEL`")
        try:
            return cls(model_sha256=str(d["model_sha256"]), source=str(d.get("source", "")),
                       stats={k: tuple(map(float, v)) for k, v in d["stats"].items()},
                       scores={k: tuple(map(float, v)) for k, v in (d.get("scores") or {}).items()},
                       classes={str(k): int(v) for k, v in (d.get("classes") or {}).items()},
                       stats_source=str(d.get("stats_source", "")),
                       ood_kind=d.get("ood_kind"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DriftReferenceError(f"drift reference is malformed ({type(e).__name__}: {e})") from e

    def save(self, model_path: os.PathLike | str) -> Path:
        from edgecls.core.fileio import write_text

        return write_text(reference_path(model_path), json.dumps(self.to_dict()) + "\n")


def load_reference(model_path: os.PathLike | str, path: Optional[os.PathLike | str] = None,
                   model_sha256: Optional[str] = None) -> Optional[DriftReference]:
    """The reference of ``model_path`` (``path``, default its ``.drift.json``); None when there is none.

    Raises :class:`DriftReferenceError` (exit 2) when it is unreadable or was made for another model."""
    from edgecls.core.fileio import file_sha256

    p = Path(path) if path is not None else reference_path(model_path)
    if not p.is_file():
        if path is not None:
            raise DriftReferenceError(f"drift reference {os.fspath(p)!r} does not exist")
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DriftReferenceError(f"drift reference {os.fspath(p)!r} is not readable JSON: {e}") from e
    if not isinstance(d, dict):
        raise DriftReferenceError(f"drift reference {os.fspath(p)!r} is not a JSON object")
    ref = DriftReference.from_dict(d)
    sha = model_sha256 or file_sha256(model_path)
    if ref.model_sha256 != sha:
        raise DriftReferenceError(
            f"drift reference {os.fspath(p)!r} was made for the model with sha256 {ref.model_sha256[:12]}…, not for "
            f"{os.fspath(model_path)!r} (sha256 {sha[:12]}…): rebuild it with `edgecls drift-reference "
            f"{os.fspath(model_path)}`, or remove it to run without drift signals")
    return ref
