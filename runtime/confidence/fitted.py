"""What an artifact carries about its confidence (``ModelSpec.confidence``), and the settings it was fitted with.

:class:`ConfidenceSpec` travels inside the spec like the temperature: in ``best.pt``, in ``model.json`` and in the
ONNX metadata. It is fitted on the *artifact's own outputs* for held-out calibration images (training: the
calibration split of val; export: the same images re-run through each artifact), and records the temperature its
probabilities used — the runtime refuses an artifact whose temperature changed after the fit.

Numpy only; this module must not import :mod:`edgecls.runtime.spec` (the spec imports it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

from edgecls.core.errors import InputError
from edgecls.runtime.confidence.conformal import METHODS, ConformalFit
from edgecls.runtime.confidence.guarantee import PrecisionGuarantee
from edgecls.runtime.confidence.ood import KINDS, OODFit
from edgecls.runtime.confidence.scores import CalibrationScores


def _unit(name: str, v: float, hint: str) -> float:
    f = float(v)
    if not (math.isfinite(f) and 0.0 < f < 1.0):
        raise InputError(f"{name} must be in (0, 1) ({hint}), got {v!r}")
    return f


@dataclass(frozen=True)
class ConfidenceSettings:
    """How to fit: coverage and method of the sets, the precision promise (target, δ), the OOD score and the share
    of in-catalog images it must accept."""

    coverage: float = 0.90
    method: str = "lac"
    target_precision: float = 0.95
    delta: float = 0.10
    ood_kind: str = "energy"
    ood_accept: float = 0.95
    best: bool = False  # deploy the best promise: the highest ladder target <= target_precision certified (δ/m each)

    def __post_init__(self) -> None:
        _unit("--coverage", self.coverage, "e.g. 0.9: sets hold the true label for 90 % of images")
        t = float(self.target_precision)
        if not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise InputError(f"--target-precision must be in (0, 1], e.g. 0.95, got {self.target_precision!r}")
        _unit("--delta", self.delta, "the failure probability of the precision promise, e.g. 0.1")
        _unit("ood accept", self.ood_accept, "share of in-catalog images kept, e.g. 0.95")
        if self.method not in METHODS:
            raise InputError(f"conformal method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.ood_kind not in KINDS:
            raise InputError(f"OOD score {self.ood_kind!r} is not one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class ConfidenceSpec:
    """The fitted conformal scores, OOD threshold and precision guarantee of one artifact."""

    temperature: float  # the temperature of the probabilities the sets and the guarantee were fitted on
    n: int  # calibration images
    source: str  # which images, which model outputs (for the record)
    conformal: Optional[ConformalFit] = None
    ood: Optional[OODFit] = None
    guarantee: Optional[PrecisionGuarantee] = None
    scores: Optional[CalibrationScores] = None  # the labelled outputs it was fitted on (export, calibrate re-use them)

    def __post_init__(self) -> None:
        t = float(self.temperature)
        if not (math.isfinite(t) and t > 0):
            raise InputError(f"confidence.temperature must be a finite number > 0, got {self.temperature!r}")
        object.__setattr__(self, "temperature", t)

    def settings(self) -> ConfidenceSettings:
        """The settings this was fitted with (defaults for the parts it lacks): re-fitting keeps them."""
        d = ConfidenceSettings()
        c, o, g = self.conformal, self.ood, self.guarantee
        return ConfidenceSettings(
            coverage=c.coverage if c else d.coverage, method=c.method if c else d.method,
            target_precision=(g.requested or g.target) if g else d.target_precision,
            delta=g.delta if g else d.delta, ood_kind=o.kind if o else d.ood_kind,
            ood_accept=o.accept if o else d.ood_accept, best=bool(g.ladder) if g else d.best,
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "temperature": self.temperature, "n": int(self.n), "source": self.source,
            "conformal": self.conformal.to_dict() if self.conformal else None,
            "ood": self.ood.to_dict() if self.ood else None,
            "guarantee": self.guarantee.to_dict() if self.guarantee else None,
            **({"scores": self.scores.to_dict()} if self.scores is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ConfidenceSpec:
        if not isinstance(d, dict):
            raise InputError(f"spec.confidence must be a mapping, got {type(d).__name__}")
        try:
            return cls(
                temperature=d["temperature"], n=int(d.get("n", 0)), source=str(d.get("source", "")),
                conformal=ConformalFit.from_dict(d["conformal"]) if d.get("conformal") else None,
                ood=OODFit.from_dict(d["ood"]) if d.get("ood") else None,
                guarantee=PrecisionGuarantee.from_dict(d["guarantee"]) if d.get("guarantee") else None,
                scores=CalibrationScores.from_dict(d["scores"]) if d.get("scores") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"spec.confidence is invalid ({type(e).__name__}: {e})") from e
