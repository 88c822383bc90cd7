"""Parity: every artifact against the PyTorch model, on the same preprocessed held-out images.

Per artifact: max |Δlogit|, max and p99 |Δprob| (both sides at the checkpoint's temperature: fidelity, not a
temperature difference), top-1 agreement, and — when labels are known — accuracy, expected calibration error (ECE,
15 bins, the artifact at its *own* temperature: the confidence it states), per-class recall and, with a positive
class, how often its yes / no / uncertain decision equals PyTorch's. NaN/inf always fails.

Gates by precision (overridable): FP32 max |Δlogit| <= 1e-4 · max(1, max |logit|); FP16 top-1 agreement >= 99.5 %;
INT8 the gates of :mod:`edgecls.export.gates` — accuracy, calibration and decisions, each printed with its n and
a 95 % interval; fidelity (agreement, p99 |Δprob|) is a warning unless ``strict``.

The artifact is run through the runtime's own backend (:func:`edgecls.runtime.backends.load_backend`), so parity
tests what users deploy.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
PARITY_FORMAT = "edgecls.parity/1"


@dataclass(frozen=True)
class Tolerances:
    fp32_logit_rel: float = 1e-4
    fp16_agreement: float = 0.995
    int8_accuracy_drop: float = 0.01  # gate: PyTorch accuracy − the artifact's, on the labelled report images
    int8_ece: float = 0.03  # gate: the artifact's own ECE <= max(int8_ece, PyTorch's ECE + int8_ece_over_reference)
    int8_ece_over_reference: float = 0.015
    int8_decision_agreement: float = 0.97  # gate (positive class): yes/no/uncertain equal to PyTorch's
    int8_agreement: float = 0.99  # fidelity: warned below, gated only when gate_agreement (or without labels)
    int8_p99_prob: float = 0.05  # fidelity: warned above, gated only when gate_p99_prob
    gate_agreement: bool = False  # --strict or an explicit --tol-int8-agreement
    gate_p99_prob: bool = False  # --strict or an explicit --tol-int8-p99-prob
    gate_accuracy_point: bool = False  # --strict: an accuracy drop over the limit fails even when not significant
    ece_min_images: int = 50  # fewer labelled images than this: ECE is reported, not gated (it would be noise)

    def __post_init__(self) -> None:
        for name in ("fp16_agreement", "int8_agreement", "int8_ece", "int8_p99_prob", "int8_ece_over_reference",
                     "int8_decision_agreement", "int8_accuracy_drop"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"tolerance {name} must be a fraction in [0, 1], got {v}")
        if self.fp32_logit_rel < 0:
            raise InputError("tolerance fp32_logit_rel must be >= 0")

    def ece_limit(self, reference_ece: Optional[float]) -> float:
        """max(int8_ece, PyTorch's own ECE on the same images + int8_ece_over_reference): no export can be asked
        to be better calibrated than its model, and a 15-bin ECE on a hundred images is noisy."""
        if reference_ece is None:
            return self.int8_ece
        return max(self.int8_ece, reference_ece + self.int8_ece_over_reference)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def precision_family(precision: str) -> str:
    if precision.startswith("int8"):
        return "int8"
    if precision in ("fp32", "fp16"):
        return precision
    raise InputError(f"unknown precision {precision!r}")


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    op: str  # "<=" or ">="
    ok: bool
    n: Optional[int] = None  # images the value is measured on
    interval: Optional[Tuple[float, float]] = None  # its 95 % interval
    gated: bool = True  # False: reported (and warned about when not ok), never fails the artifact

    def describe(self) -> str:
        extra = []
        if self.interval is not None:
            extra.append(f"95% CI {_fmt(self.interval[0])}..{_fmt(self.interval[1])}")
        if self.n is not None:
            extra.append(f"n={self.n}")
            from edgecls.export.gates import LOW_EVIDENCE

            if self.n < LOW_EVIDENCE:
                extra.append("low evidence")
        return (f"{self.name} {_fmt(self.value)} (must be {self.op} {_fmt(self.limit)})"
                + (f" [{', '.join(extra)}]" if extra else ""))

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "value": _finite(self.value), "limit": self.limit, "op": self.op, "ok": self.ok,
                "n": self.n, "interval": None if self.interval is None else [_finite(v) for v in self.interval],
                "gated": self.gated}


def _fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return str(v)
    return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}"


def _finite(v: Optional[float]) -> Optional[float]:
    if v is None:
        return None
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class ParityData:
    """Preprocessed held-out images (float32 NCHW) with labels when known."""

    x: np.ndarray
    y: Optional[np.ndarray]
    paths: Tuple[str, ...]
    source: str

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Reference:
    """The PyTorch column: logits on the parity data and, with labels, its accuracy / recall."""

    logits: np.ndarray
    accuracy: Optional[float]
    positive_recall: Optional[float]
    per_class_recall: Dict[str, float]
    seconds: float
    temperature: Optional[float] = None  # the checkpoint's (None: the compared artifact's)
    ece: Optional[float] = None
    threshold: Optional[float] = None  # the checkpoint's (None: the compared artifact's)


@dataclass(frozen=True)
class ParityReport:
    """One artifact's parity; truthy when it passed."""

    artifact: str
    path: str
    precision: str
    size_bytes: int
    n: int
    providers: Tuple[str, ...]
    max_abs_logit: Optional[float]
    logit_scale: float
    max_abs_prob: Optional[float]
    agreement: Optional[float]
    accuracy: Optional[float]
    reference_accuracy: Optional[float]
    positive: Optional[str]
    positive_recall: Optional[float]
    per_class_recall: Dict[str, float]
    nonfinite: int
    checks: Tuple[Check, ...]
    failures: Tuple[str, ...]
    seconds: float
    notes: Tuple[str, ...] = ()
    decision_agreement: Optional[float] = None  # positive-class decisions at the spec threshold that match
    p99_abs_prob: Optional[float] = None
    ece: Optional[float] = None
    temperature: Optional[float] = None  # the artifact's own (its spec's)
    threshold: Optional[float] = None  # the artifact's own positive-class threshold (its spec's)
    warnings: Tuple[str, ...] = ()  # reported checks (fidelity) outside their limits: said, not failed
    temperature_source: Optional[str] = None  # how the artifact's temperature was chosen (INT8: kept / re-fitted)

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    @property
    def low_evidence(self) -> bool:
        from edgecls.export.gates import LOW_EVIDENCE

        return any(c.gated and c.n is not None and c.n < LOW_EVIDENCE for c in self.checks)

    @property
    def status(self) -> str:
        return ("pass" if self.passed else "FAIL") + (" (low evidence)" if self.low_evidence else "")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "artifact": self.artifact, "path": self.path, "precision": self.precision, "size_bytes": self.size_bytes,
            "n": self.n, "providers": list(self.providers), "max_abs_logit": _finite(self.max_abs_logit),
            "logit_scale": self.logit_scale, "max_abs_prob": _finite(self.max_abs_prob),
            "agreement": _finite(self.agreement), "accuracy": _finite(self.accuracy),
            "reference_accuracy": _finite(self.reference_accuracy), "positive": self.positive,
            "positive_recall": _finite(self.positive_recall),
            "per_class_recall": {k: _finite(v) for k, v in self.per_class_recall.items()},
            "nonfinite_outputs": self.nonfinite, "checks": [c.to_dict() for c in self.checks],
            "status": "passed" if self.passed else "failed", "failures": list(self.failures),
            "seconds": round(self.seconds, 3), "notes": list(self.notes),
            "decision_agreement": _finite(self.decision_agreement), "p99_abs_prob": _finite(self.p99_abs_prob),
            "ece": _finite(self.ece), "temperature": self.temperature, "threshold": self.threshold,
            "warnings": list(self.warnings), "temperature_source": self.temperature_source,
            "low_evidence": self.low_evidence,
        }


# ---------------------------------------------------------------------------------------------- compare


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    from edgecls.runtime.metrics import softmax

    return np.asarray(softmax(logits, temperature), dtype=np.float64)


def _label_metrics(y: Optional[np.ndarray], logits: np.ndarray, spec: ModelSpec):
    """(accuracy, positive recall at threshold, {class: recall}) — None/{} without labels."""
    if y is None or logits.shape[0] == 0:
        return None, None, {}
    from edgecls.runtime.metrics import classification_report

    probs = _probs(logits, spec.temperature)
    rep = classification_report(y, probs, spec.classes, positive=spec.positive,
                                threshold=spec.threshold if spec.positive is not None else None)
    per_class = {c.name: float(c.recall) for c in rep.per_class}
    pos = None
    if rep.positive_metrics is not None:
        pos = float(rep.positive_metrics["recall"])
    return float(rep.accuracy), pos, per_class


def reference_from(backend, data: ParityData, spec: ModelSpec) -> Reference:
    t0 = time.perf_counter()
    logits = np.asarray(backend.infer(data.x), dtype=np.float32)
    secs = time.perf_counter() - t0
    if logits.shape != (data.n, spec.num_classes):
        raise RuntimeError(f"PyTorch reference produced shape {logits.shape}, expected {(data.n, spec.num_classes)}")
    if not np.all(np.isfinite(logits)):
        raise RuntimeError("the PyTorch reference itself produced NaN/inf logits on the parity images")
    acc, pos, per = _label_metrics(data.y, logits, spec)
    ece = _ece(data.y, logits, spec.temperature)
    return Reference(logits, acc, pos, per, secs, spec.temperature, ece, spec.threshold)


def _ece(y: Optional[np.ndarray], logits: np.ndarray, temperature: float) -> Optional[float]:
    if y is None or logits.shape[0] == 0:
        return None
    from edgecls.runtime.metrics import expected_calibration_error

    return float(expected_calibration_error(_probs(logits, temperature), y))


def reference_subset(reference: Reference, data: ParityData, index: np.ndarray, spec: ModelSpec) -> Reference:
    """The reference restricted to the images ``index`` of ``data`` (metrics recomputed on them)."""
    logits = reference.logits[index]
    y = None if data.y is None else data.y[index]
    acc, pos, per = _label_metrics(y, logits, spec)
    t = reference.temperature if reference.temperature is not None else spec.temperature
    return Reference(logits, acc, pos, per, reference.seconds * len(index) / max(data.n, 1), t, _ece(y, logits, t),
                     reference.threshold)


def compare(
    artifact: str, path: PathLike, precision: str, logits: np.ndarray, reference: Reference, data: ParityData,
    spec: ModelSpec, tolerances: Tolerances, providers: Sequence[str] = (), seconds: float = 0.0,
    notes: Sequence[str] = (),
) -> ParityReport:
    """Metrics and pass/fail of one artifact's logits against the reference (``spec``: the artifact's, with its
    own temperature and threshold; the reference's are the checkpoint's)."""
    fam = precision_family(precision)
    ref = reference.logits
    logits = np.asarray(logits)
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    failures: List[str] = []
    checks: List[Check] = []
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1.0)
    if logits.shape != ref.shape:
        failures.append(f"output shape {logits.shape} differs from PyTorch's {ref.shape}")
        return ParityReport(artifact, os.fspath(path), precision, size, data.n, tuple(providers), None, scale, None,
                            None, None, reference.accuracy, spec.positive, None, {}, 0, (), tuple(failures), seconds,
                            tuple(notes))
    finite = np.isfinite(logits)
    nonfinite = int((~finite).sum())
    if nonfinite:
        failures.append(f"{nonfinite} NaN/inf values in the outputs (NaN always fails)")
        agree = float(np.mean(np.argmax(np.nan_to_num(logits, nan=-np.inf), 1) == np.argmax(ref, 1)))
        return ParityReport(artifact, os.fspath(path), precision, size, data.n, tuple(providers), float("nan"), scale,
                            float("nan"), agree, None, reference.accuracy, spec.positive, None, {}, nonfinite, (),
                            tuple(failures), seconds, tuple(notes))
    from edgecls.export import gates as G

    logits = logits.astype(np.float32)
    max_logit = float(np.abs(logits - ref).max()) if ref.size else 0.0
    t_ref = reference.temperature if reference.temperature is not None else spec.temperature
    thr_ref = reference.threshold if reference.threshold is not None else spec.threshold
    # fidelity: both sides at the checkpoint's temperature (a re-fitted temperature is not a difference in the model)
    dprob = np.abs(_probs(logits, t_ref) - _probs(ref, t_ref)).max(axis=1) if ref.size else np.zeros(1)
    max_prob, p99_prob = float(dprob.max()), float(np.percentile(dprob, 99))
    own = _probs(logits, spec.temperature)  # what the artifact states
    ece = _ece(data.y, logits, spec.temperature)
    same_top1 = np.argmax(logits, 1) == np.argmax(ref, 1)
    agreement = float(np.mean(same_top1)) if ref.size else 1.0
    decisions = None
    same_decision = None
    if spec.positive_index is not None and ref.size:
        from edgecls.runtime.decision import positive_decisions

        k = spec.positive_index
        same_decision = positive_decisions(own[:, k], spec.threshold) == \
            positive_decisions(_probs(ref, t_ref)[:, k], thr_ref)
        decisions = float(np.mean(same_decision))
    acc, pos, per = _label_metrics(data.y, logits, spec)
    warnings: List[str] = []
    if fam == "int8" and ece is not None and data.n < tolerances.ece_min_images:
        notes = tuple(notes) + (f"ECE {ece:.3f} not gated: {data.n} labelled images < "
                                f"{tolerances.ece_min_images} (too few for a 15-bin ECE)",)

    def check(name: str, value: float, op: str, limit: float, count: Optional[int] = None,
              interval: Optional[Tuple[float, float]] = None, gated: bool = True) -> None:
        ok = value <= limit if op == "<=" else value >= limit
        checks.append(Check(name, value, limit, op, ok, count, interval, gated))
        if ok:
            return
        (failures if gated else warnings).append(checks[-1].describe())

    if fam == "fp32":
        check("max |Δlogit|", max_logit, "<=", tolerances.fp32_logit_rel * scale)
    elif fam == "fp16":
        check("top-1 agreement", agreement, ">=", tolerances.fp16_agreement, data.n,
              G.proportion_interval(int(same_top1.sum()), data.n))
    else:
        G.int8_checks(check, tolerances, data, reference, ref, logits, own, ece, same_top1, same_decision, p99_prob)
    return ParityReport(
        artifact, os.fspath(path), precision, size, data.n, tuple(providers), max_logit, scale, max_prob, agreement,
        acc, reference.accuracy, spec.positive, pos, per, 0, tuple(checks), tuple(failures), seconds, tuple(notes),
        decisions, p99_prob, ece, spec.temperature, spec.threshold if spec.positive is not None else None,
        tuple(warnings),
    )


def check_artifact(
    artifact: str, path: PathLike, precision: str, reference: Reference, data: ParityData, spec: ModelSpec,
    tolerances: Tolerances, device: str = "cpu", threads: Optional[int] = None, notes: Sequence[str] = (),
) -> ParityReport:
    """Run ``path`` through the runtime backend users deploy with, then :func:`compare`.

    A backend that cannot load or run the artifact is a failed parity (the message says why), not a crash.
    """
    from edgecls.core.errors import CapabilityError
    from edgecls.runtime.backends import load_backend

    t0 = time.perf_counter()
    try:
        with load_backend(path, device=device, threads=threads, allow_fallback=False, spec=spec) as be:
            providers = tuple(be.providers)
            logits = be.infer(data.x)
    except CapabilityError:
        raise
    except Exception as e:  # a broken artifact: report it as a parity failure with the reason
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        msg = f"could not run: {type(e).__name__}: {e}"
        return ParityReport(artifact, os.fspath(path), precision, size, data.n, (), None, 1.0, None, None, None,
                            reference.accuracy, spec.positive, None, {}, 0, (), (msg,),
                            time.perf_counter() - t0, tuple(notes))
    return compare(artifact, path, precision, logits, reference, data, spec, tolerances, providers,
                   time.perf_counter() - t0, notes)
