"""``edgecls eval``: any artifact (checkpoint, ONNX, TensorRT engine) on a labeled ImageFolder, through the runtime.

Images go through the one preprocessing function (:mod:`edgecls.runtime.preprocess`) and the backend a deployer
would use (:func:`edgecls.runtime.backends.load_backend`, or the PyTorch model for a ``.pt`` checkpoint), then the
one metrics module (:mod:`edgecls.runtime.metrics`) with the model's own temperature and threshold.

Only torch-free modules are imported at the top; checkpoints pull in torch when (and only when) one is evaluated.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgecls.errors import CapabilityError, InputError
from edgecls.fileio import write_bytes as atomic_write_bytes
from edgecls.fileio import write_text as atomic_write_text
from edgecls.runtime.model_io import model_kind as runtime_model_kind
from edgecls.runtime.preprocess import IMAGE_EXTENSIONS as IMG_EXTENSIONS
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth")
DEVICES = ("auto", "cpu", "cuda")
PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------- helpers


def model_kind(path: PathLike) -> str:
    """``checkpoint`` | ``onnx`` | ``engine`` from the suffix; InputError naming the valid ones otherwise."""
    if Path(path).suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    try:
        return runtime_model_kind(path)
    except InputError as e:
        raise InputError(f"{e}; or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) from `edgecls train`") from None


@dataclass
class OpenedModel:
    """A backend ready to ``infer`` plus the spec that travels with the artifact."""

    path: Path
    kind: str
    spec: ModelSpec
    backend: Any
    threads: Optional[int] = None

    @property
    def providers(self) -> Tuple[str, ...]:
        return tuple(getattr(self.backend, "providers", ()) or ())

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.kind == "checkpoint" and self.threads:
            import torch  # the global torch pool may have been changed by another model in the same process

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        return np.asarray(self.backend.infer(batch), dtype=np.float32)

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def _resolve_torch_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CapabilityError("--device cuda: torch sees no CUDA GPU here; valid on this machine: cpu, auto")
    return device


def open_model(path: PathLike, device: str = "auto", threads: Optional[int] = None) -> OpenedModel:
    """Open a checkpoint (PyTorch eager, the reference), an ONNX model or an engine, with its :class:`ModelSpec`."""
    path = Path(path)
    if device not in DEVICES:
        raise InputError(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    kind = model_kind(path)
    if not path.is_file():
        raise InputError(f"model {os.fspath(path)!r} does not exist")
    if kind == "checkpoint":
        import torch

        from edgecls.export.torch_backend import TorchBackend
        from edgecls.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        if threads:
            torch.set_num_threads(threads)
        backend = TorchBackend(ckpt, device=_resolve_torch_device(device), threads=threads)
        return OpenedModel(path, kind, ckpt.spec, backend, threads)
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.model_io import load_model_spec

    spec = load_model_spec(path)
    backend = load_backend(path, device=device, threads=threads, spec=spec)
    return OpenedModel(path, kind, spec, backend, threads)


# -------------------------------------------------------------------------------------------------- data


def labeled_images(root: PathLike, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """``[(path, index in classes), ...]`` of an ImageFolder ``root/<class>/*.jpg``, folder names mapped by name.

    Every class folder must be a class of the model; model classes without a folder are allowed (no support).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {os.fspath(root)!r} is not a folder (expected DIR/<class>/*.jpg)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"--data {os.fspath(root)!r} has no class folders (expected DIR/<class>/*.jpg)")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [p.name for p in folders if p.name not in index]
    if unknown:
        hint = ""
        if {"train", "val"} & set(unknown):
            hint = f" (it looks like a split root: try --data {os.fspath(root / 'val')})"
        raise InputError(
            f"--data {os.fspath(root)!r}: class folder(s) {unknown} are not classes of the model; "
            f"model classes: {list(classes)}{hint}"
        )
    items: List[Tuple[str, int]] = []
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()
        )
        items += [(str(p), index[folder.name]) for p in files]
    if not items:
        raise InputError(f"--data {os.fspath(root)!r}: no images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    missing = [c for c in classes if c not in {p.name for p in folders}]
    if missing:
        log.warning("model classes without a folder in %s (no support): %s", root, missing)
    return items


def _load_batch(items: Sequence[Tuple[str, int]], spec: ModelSpec) -> np.ndarray:
    # open_rgb: the same decoded RGB pixels as load_image, handed to preprocess without a copy into numpy
    from edgecls.runtime.preprocess import ImageReadError, open_rgb, preprocess

    images = []
    for p, _ in items:
        try:
            images.append(open_rgb(p))
        except ImageReadError as e:
            raise InputError(str(e)) from e
    return preprocess(images, spec.preprocess)


def iter_batches(
    items: Sequence[Tuple[str, int]], spec: ModelSpec, batch: int, workers: int = 2
) -> Iterator[Tuple[int, np.ndarray]]:
    """Preprocessed batches ``(start index, NCHW)`` in order, decoded by ``workers`` threads a few batches ahead."""
    starts = list(range(0, len(items), batch))
    ahead = max(1, workers) + 1
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {}
        for k, s in enumerate(starts[:ahead]):
            futures[k] = pool.submit(_load_batch, items[s : s + batch], spec)
        for k, s in enumerate(starts):
            x = futures.pop(k).result()
            nxt = k + ahead
            if nxt < len(starts):
                futures[nxt] = pool.submit(_load_batch, items[starts[nxt] : starts[nxt] + batch], spec)
            yield s, x


# ------------------------------------------------------------------------------------------------ config


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

    def __post_init__(self) -> None:
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
        }

    def table(self) -> str:
        head = (
            f"model {self.model}  [{self.kind}, {self.precision}, {self.backend}"
            f"{' ' + '/'.join(self.providers) if self.providers else ''}]\n"
            f"data {self.data}: {self.report.n} images, {self.seconds:.1f} s ({self.images_per_second:.1f} img/s)"
            f"\ntemperature {self.spec.temperature:.3f} (this data prefers {self.temperature_fit:.3f}; "
            f"ECE at T=1: {self.ece_t1:.4f})\n"
        )
        tail = "".join(f"\nwrote {f}" for f in self.files)
        dec = ""
        if self.decisions:
            dec = f"\n\nruntime decisions at threshold {self.spec.threshold:.4f} (rows = true class):\n" + "\n".join(
                f"  {c:<12} " + "  ".join(f"{k} {v:>5d}" for k, v in counts.items())
                for c, counts in self.decisions.items()
            )
        return head + "\n" + self.report.table() + dec + ("\n" + tail if tail else "")


# ------------------------------------------------------------------------------------------------- plots


def _figure_png(draw) -> Optional[bytes]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(5.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    draw(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def reliability_png(reliability: Dict[str, Any], title: str) -> Optional[bytes]:
    """Reliability diagram (accuracy vs confidence per bin, gap shaded) above a confidence histogram."""

    def draw(fig):
        ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        edges = np.asarray(reliability["edges"])
        width = edges[1] - edges[0]
        centers = edges[:-1] + width / 2
        acc = np.array([np.nan if a is None else a for a in reliability["accuracy"]])
        conf = np.array([np.nan if c is None else c for c in reliability["confidence"]])
        ok = ~np.isnan(acc)
        ax.bar(centers[ok], acc[ok], width=width * 0.95, color="#4c72b0", label="accuracy")
        ax.bar(centers[ok], (conf - acc)[ok], bottom=acc[ok], width=width * 0.95, color="#dd8452", alpha=0.5,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}  ECE {reliability['ece']:.4f}")
        ax.legend(loc="upper left", fontsize=8)
        axh.bar(centers, reliability["count"], width=width * 0.95, color="#8c8c8c")
        axh.set_xlabel("top-1 confidence")
        axh.set_ylabel("images")
        axh.set_xlim(0, 1)

    return _figure_png(draw)


def pr_png(pr: Dict[str, Any], point: Dict[str, Any], title: str) -> Optional[bytes]:
    """PR curve of the positive class with the model's operating point marked."""

    def draw(fig):
        ax = fig.subplots()
        ax.step(pr["recall"], pr["precision"], where="post", color="#4c72b0")
        ax.plot([point["recall"]], [point["precision"]], "o", color="#c44e52",
                label=f"threshold {point['threshold']:.3f}: P {point['precision']:.3f} R {point['recall']:.3f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{title}  AP {point.get('average_precision', float('nan')):.4f}")
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)

    return _figure_png(draw)


# -------------------------------------------------------------------------------------------- evaluation


def predict_logits(
    opened: OpenedModel, items: Sequence[Tuple[str, int]], batch: int, workers: int = 2, progress: bool = False
) -> np.ndarray:
    """Logits ``(N, C)`` of every item, in order, through the runtime preprocessing and ``opened``'s backend."""
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(items), unit="img", desc=f"eval {opened.path.name}", leave=False)
        except ImportError:
            bar = None
    out = np.empty((len(items), opened.spec.num_classes), dtype=np.float32)
    try:
        for start, x in iter_batches(items, opened.spec, batch, workers):
            logits = opened.infer(x)
            if logits.shape != (x.shape[0], opened.spec.num_classes):
                raise InputError(
                    f"model {opened.path} returned logits of shape {logits.shape}; expected "
                    f"({x.shape[0]}, {opened.spec.num_classes}) for classes {list(opened.spec.classes)}"
                )
            out[start : start + x.shape[0]] = logits
            if bar is not None:
                bar.update(x.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return out


def evaluate(config: EvalConfig) -> EvalResult:
    """Run ``config.model`` over ``config.data`` and compute every metric; write files when asked."""
    from edgecls.runtime import metrics as M

    opened = open_model(config.model, config.device, config.threads)
    try:
        spec = opened.spec
        items = labeled_images(config.data, spec.classes)
        log.info("evaluating %s (%s) on %d images from %s", opened.path, opened.kind, len(items), config.data)
        t0 = time.perf_counter()
        logits = predict_logits(opened, items, config.batch, config.workers, config.progress)
        seconds = time.perf_counter() - t0
    finally:
        opened.close()
    y = np.array([label for _, label in items], dtype=np.int64)
    probs = M.softmax(logits, spec.temperature)
    positive = spec.positive
    report = M.classification_report(
        y, probs, spec.classes, positive=positive, threshold=spec.threshold if positive else None,
        n_bins=config.n_bins,
    )
    reliability = M.reliability_bins(probs, y, config.n_bins)
    pr = None
    decisions = None
    if positive is not None:
        from edgecls.runtime.decision import NO, UNCERTAIN, YES, positive_decision

        k = spec.classes.index(positive)
        decisions = {c: {YES: 0, NO: 0, UNCERTAIN: 0} for c in spec.classes}
        for label, p_pos in zip(y, probs[:, k]):
            decisions[spec.classes[label]][positive_decision(float(p_pos), spec.threshold)] += 1
        if np.any(y == k):
            precision, recall, thresholds = M.pr_curve(probs[:, k], y == k)
            pr = {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": thresholds.tolist()}
        else:
            log.warning("no %r images in %s: no PR curve", positive, config.data)
    result = EvalResult(
        model=str(config.model),
        kind=opened.kind,
        backend=opened.backend_name,
        providers=opened.providers,
        precision=spec.precision,
        data=str(config.data),
        spec=spec,
        report=report,
        reliability=reliability,
        ece_t1=M.expected_calibration_error(M.softmax(logits), y, config.n_bins),
        temperature_fit=M.fit_temperature(logits, y),
        pr=pr,
        decisions=decisions,
        seconds=seconds,
        images_per_second=len(items) / seconds if seconds > 0 else float("inf"),
        paths=tuple(p for p, _ in items),
        labels=y,
        logits=logits,
    )
    files = write_outputs(result, config, items, probs)
    return dataclasses.replace(result, files=tuple(files))


def write_outputs(
    result: EvalResult, config: EvalConfig, items: Sequence[Tuple[str, int]], probs: np.ndarray
) -> List[str]:
    files: List[str] = []
    title = f"{Path(result.model).name} ({result.precision})"
    if config.out:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        w = csv.writer(buf)
        classes = list(result.spec.classes)
        w.writerow(["path", "label", "predicted"] + [f"p_{c}" for c in classes])
        for (p, label), row in zip(items, probs):
            w.writerow([p, classes[label], classes[int(np.argmax(row))]] + [f"{v:.6f}" for v in row])
        files.append(str(atomic_write_text(out / "predictions.csv", buf.getvalue())))
        png = reliability_png(result.reliability, title)
        if png is None:
            log.info("matplotlib is not installed: skipping the reliability and PR plots")
        else:
            files.append(str(atomic_write_bytes(out / "reliability.png", png)))
            if result.pr is not None and result.report.positive_metrics is not None:
                png = pr_png(result.pr, result.report.positive_metrics, f"{title} {result.spec.positive!r}")
                files.append(str(atomic_write_bytes(out / "pr_curve.png", png)))
        files.append(str(out / "eval.json"))
    if config.json_path:
        files.append(str(config.json_path))
    d = {**result.to_dict(), "files": files}
    text = json.dumps(d, indent=2)
    if config.out:
        atomic_write_text(Path(config.out) / "eval.json", text)
    if config.json_path:
        atomic_write_text(config.json_path, text)
    return files
