"""``edgecls eval``: any artifact (checkpoint, ONNX, TensorRT engine) on a labeled ImageFolder, through the runtime.

Images go through the one preprocessing function (:mod:`edgecls.runtime.preprocess`) and the backend a deployer
would use (:func:`edgecls.runtime.backends.load_backend`, or the PyTorch model for a ``.pt`` checkpoint), then the
one metrics module (:mod:`edgecls.runtime.metrics`) with the model's own temperature and threshold.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.fileio import write_text as atomic_write_text
from edgecls.core.progress import progress as progress_bar
from edgecls.evaluation.data import iter_batches, labeled_images
from edgecls.evaluation.models import DEVICES, OpenedModel, open_model
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    model: str
    data: str
    batch: int = 32
    threads: Optional[int] = None
    device: str = "auto"
    out: Optional[str] = None  # folder for eval.json, predictions.csv and the PNGs; None writes no files
    json_path: Optional[str] = None
    n_bins: int = 15
    workers: int = 2  # image decoding threads
    progress: bool = False
    preprocess: str = "standard"  # deepstream: the whole image scaled to the input size, as nvinfer does
    coverage: Optional[float] = None  # conformal sets at this coverage (default: the model's own)
    ood_data: Optional[str] = None  # a folder of products the model does not know: OOD AUROC
    rotations: bool = False  # also score every image turned 90/180/270 degrees (edgecls.evaluation.rotations)

    def __post_init__(self) -> None:
        from edgecls.evaluation.data import PREPROCESS_MODES

        if self.preprocess not in PREPROCESS_MODES:
            raise InputError(f"--preprocess {self.preprocess!r} is not one of {', '.join(PREPROCESS_MODES)}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.n_bins < 1:
            raise InputError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.device not in DEVICES:
            raise InputError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")


@dataclass(frozen=True)
class EvalResult:
    model: str
    kind: str
    backend: str
    providers: Tuple[str, ...]
    precision: str
    data: str
    spec: ModelSpec
    report: Any  # edgecls.runtime.metrics.ClassificationReport
    reliability: Dict[str, Any]
    ece_t1: float  # ECE of the raw softmax (temperature 1), beside the calibrated one in the report
    temperature_fit: float  # the temperature this data set would prefer (information only)
    pr: Optional[Dict[str, List[float]]]  # positive class PR curve: precision, recall, thresholds
    # positive class: the runtime's yes/no/uncertain decision (edgecls.runtime.decision) counted per true class
    decisions: Optional[Dict[str, Dict[str, int]]]
    seconds: float
    images_per_second: float
    files: Tuple[str, ...] = field(default_factory=tuple)
    preprocess: str = "standard"  # or deepstream (whole image scaled, no centre crop)
    # sets, risk-coverage, unknown products, the precision promise (edgecls.evaluation.confidence)
    confidence: Optional[Dict[str, Any]] = None
    rotations: Optional[Dict[str, Dict[str, Any]]] = None  # --rotations: metrics per angle ("0", "90", ...)
    # per image, in data order (not in to_dict: predictions.csv has them)
    paths: Tuple[str, ...] = field(default=(), repr=False, compare=False)
    labels: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    logits: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def probs(self) -> np.ndarray:
        """``softmax(logits / spec.temperature)`` per image."""
        from edgecls.runtime.metrics import softmax

        return softmax(self.logits, self.spec.temperature)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "backend": self.backend,
            "providers": list(self.providers),
            "precision": self.precision,
            "data": self.data,
            "spec": self.spec.to_dict(),
            "temperature": self.spec.temperature,
            "threshold": self.spec.threshold,
            "metrics": self.report.to_dict(),
            "reliability": self.reliability,
            "ece_t1": self.ece_t1,
            "temperature_fit": self.temperature_fit,
            "pr_curve": self.pr,
            "decisions": self.decisions,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "files": list(self.files),
            "preprocess": self.preprocess,
            "confidence": self.confidence,
            "rotations": self.rotations,
        }

    def table(self) -> str:
        head = (
            f"model {self.model}  [{self.kind}, {self.precision}, {self.backend}"
            f"{' ' + '/'.join(self.providers) if self.providers else ''}]\n"
            f"data {self.data}: {self.report.n} images, {self.seconds:.1f} s ({self.images_per_second:.1f} img/s)"
            + (", preprocess deepstream: whole image scaled to the input, no centre crop"
               if self.preprocess == "deepstream" else "")
            + f"\ntemperature {self.spec.temperature:.3f} (this data prefers {self.temperature_fit:.3f}; "
            f"ECE at T=1: {self.ece_t1:.4f})\n"
        )
        tail = "".join(f"\nwrote {f}" for f in self.files)
        dec = ""
        if self.decisions:
            dec = f"\n\nruntime decisions at threshold {self.spec.threshold:.4f} (rows = true class):\n" + "\n".join(
                f"  {c:<12} " + "  ".join(f"{k} {v:>5d}" for k, v in counts.items())
                for c, counts in self.decisions.items()
            )
        from edgecls.evaluation.confidence import confidence_lines

        conf = confidence_lines(self.confidence) if self.confidence else []
        conf_text = ("\n\nconfidence:\n" + "\n".join("  " + line for line in conf)) if conf else ""
        from edgecls.evaluation.rotations import rotation_lines

        rot = rotation_lines(self.rotations)
        conf_text += ("\n\nrotations:\n" + "\n".join("  " + line for line in rot)) if rot else ""
        from edgecls.evaluation.confusion import report_text

        return head + "\n" + report_text(self.report) + dec + conf_text + ("\n" + tail if tail else "")


# -------------------------------------------------------------------------------------------- evaluation


def predict_logits(
    opened: OpenedModel, items: Sequence[Tuple[str, int]], batch: int, workers: int = 2, progress: bool = False,
    preprocess: str = "standard", rotation: int = 0,
) -> np.ndarray:
    """Logits ``(N, C)`` of every item, in order, through the runtime preprocessing and ``opened``'s backend
    (each decoded image turned ``rotation`` degrees counter-clockwise first).

    A model with probabilities in the graph (spec ``output="probs"``) gives ``T · log p``, logits whose
    ``softmax(· / T)`` is ``p`` again, so every metric reads the same."""
    out = np.empty((len(items), opened.spec.num_classes), dtype=np.float32)
    with progress_bar(total=len(items), unit="img", desc=f"eval {opened.path.name}", enabled=progress) as bar:
        for start, x in iter_batches(items, opened.spec, batch, workers, preprocess, rotation):
            logits = opened.infer(x)
            if opened.spec.output == "probs":
                logits = opened.spec.temperature * np.log(np.maximum(logits, np.finfo(np.float32).tiny))
            if logits.shape != (x.shape[0], opened.spec.num_classes):
                raise InputError(
                    f"model {opened.path} returned logits of shape {logits.shape}; expected "
                    f"({x.shape[0]}, {opened.spec.num_classes}) for classes {list(opened.spec.classes)}"
                )
            out[start : start + x.shape[0]] = logits
            bar.update(x.shape[0])
    return out


def _positive_class_stats(
    spec: ModelSpec, y: np.ndarray, probs: np.ndarray, data: str
) -> Tuple[Optional[Dict[str, List[float]]], Optional[Dict[str, Dict[str, int]]]]:
    """``(pr curve, decisions per true class)`` of the positive class; ``(None, None)`` without one."""
    from edgecls.runtime import metrics as M
    from edgecls.runtime.decision import NO, UNCERTAIN, YES, positive_decision

    if spec.positive is None:
        return None, None
    k = spec.classes.index(spec.positive)
    decisions = {c: {YES: 0, NO: 0, UNCERTAIN: 0} for c in spec.classes}
    for label, p_pos in zip(y, probs[:, k]):
        decisions[spec.classes[label]][positive_decision(float(p_pos), spec.threshold)] += 1
    pr = None
    if np.any(y == k):
        precision, recall, thresholds = M.pr_curve(probs[:, k], y == k)
        pr = {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": thresholds.tolist()}
    else:
        log.warning("no %r images in %s: no PR curve", spec.positive, data)
    return pr, decisions


def evaluate(config: EvalConfig) -> EvalResult:
    """Run ``config.model`` over ``config.data`` and compute every metric; write files when asked."""
    from edgecls.evaluation.confidence import confidence_metrics
    from edgecls.runtime import metrics as M

    opened = open_model(config.model, config.device, config.threads)
    try:
        spec = opened.spec
        items = labeled_images(config.data, spec.classes)
        log.info("evaluating %s (%s) on %d images from %s", opened.path, opened.kind, len(items), config.data)
        t0 = time.perf_counter()
        logits = predict_logits(opened, items, config.batch, config.workers, config.progress, config.preprocess)
        seconds = time.perf_counter() - t0
        ood_logits = None
        if config.ood_data is not None:
            from edgecls.evaluation.confidence import ood_logits_of

            ood_logits = ood_logits_of(opened, config.ood_data, config.batch, config.workers, config.preprocess)
        rotations = None
        if config.rotations:
            from edgecls.evaluation.rotations import rotation_metrics

            rotations = rotation_metrics(opened, items, logits, config.batch, config.workers, config.progress,
                                         config.preprocess)
    finally:
        opened.close()
    y = np.array([label for _, label in items], dtype=np.int64)
    probs = M.softmax(logits, spec.temperature)
    positive = spec.positive
    report = M.classification_report(
        y, probs, spec.classes, positive=positive, threshold=spec.threshold if positive else None,
        n_bins=config.n_bins,
    )
    pr, decisions = _positive_class_stats(spec, y, probs, config.data)
    result = EvalResult(
        model=str(config.model),
        kind=opened.kind,
        backend=opened.backend_name,
        providers=opened.providers,
        precision=spec.precision,
        data=str(config.data),
        spec=spec,
        report=report,
        reliability=M.reliability_bins(probs, y, config.n_bins),
        ece_t1=M.expected_calibration_error(M.softmax(logits), y, config.n_bins),
        temperature_fit=M.fit_temperature(logits, y),
        pr=pr,
        decisions=decisions,
        seconds=seconds,
        images_per_second=len(items) / seconds if seconds > 0 else float("inf"),
        preprocess=config.preprocess,
        confidence=confidence_metrics(spec, logits, y, config.coverage, ood_logits),
        rotations=rotations,
        paths=tuple(p for p, _ in items),
        labels=y,
        logits=logits,
    )
    files = write_outputs(result, config, items, probs)
    return dataclasses.replace(result, files=tuple(files))


# ------------------------------------------------------------------------------------------------ files


def _predictions_csv(result: EvalResult, items: Sequence[Tuple[str, int]], probs: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    classes = list(result.spec.classes)
    w.writerow(["path", "label", "predicted"] + [f"p_{c}" for c in classes])
    for (p, label), row in zip(items, probs):
        w.writerow([p, classes[label], classes[int(np.argmax(row))]] + [f"{v:.6f}" for v in row])
    return buf.getvalue()


def _write_plots(result: EvalResult, out: Path) -> List[str]:
    """``reliability.png`` and (with a positive class) ``pr_curve.png``; none without matplotlib."""
    from edgecls.core import plots

    if not plots.available():
        log.info("matplotlib is not installed: skipping the reliability and PR plots")
        return []
    title = f"{Path(result.model).name} ({result.precision})"
    files = [str(plots.plot_reliability(result.reliability, None, None, out / "reliability.png", title=title))]
    if result.confidence:
        from edgecls.evaluation.confidence import write_risk_coverage

        files.append(write_risk_coverage(result.confidence, out, title))
    point = result.report.positive_metrics
    if result.pr is not None and point is not None:
        files.append(str(plots.plot_pr(
            result.pr["precision"], result.pr["recall"], result.spec.positive, out / "pr_curve.png",
            chosen=point, ap=point.get("average_precision"), title=f"{title} {result.spec.positive!r}",
        )))
    return files


def _write_confusion(result: EvalResult, out: Path) -> List[str]:
    """``confusion.csv`` (the whole matrix, rows = true) and ``confusion.png`` (with matplotlib)."""
    from edgecls.core import plots
    from edgecls.evaluation.confusion import confusion_csv, plot_confusion

    classes = list(result.spec.classes)
    files = [str(atomic_write_text(out / "confusion.csv", confusion_csv(result.report.confusion, classes)))]
    if plots.available():
        title = f"{Path(result.model).name} ({result.precision}) on {Path(result.data).name}"
        files.append(str(plot_confusion(result.report.confusion, classes, out / "confusion.png", title=title)))
    return files


def write_outputs(
    result: EvalResult, config: EvalConfig, items: Sequence[Tuple[str, int]], probs: np.ndarray
) -> List[str]:
    files: List[str] = []
    if config.out:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        files.append(str(atomic_write_text(out / "predictions.csv", _predictions_csv(result, items, probs))))
        files += _write_confusion(result, out)
        files += _write_plots(result, out)
        files.append(str(out / "eval.json"))
    if config.json_path:
        files.append(str(config.json_path))
    text = json.dumps({**result.to_dict(), "files": files}, indent=2)
    if config.out:
        atomic_write_text(Path(config.out) / "eval.json", text)
    if config.json_path:
        atomic_write_text(config.json_path, text)
    return files
