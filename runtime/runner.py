"""The ``edgecls run`` loop: sources → decode → preprocess → infer → decide → records, annotated output, summary.

Files and videos: decoding and preprocessing run on a thread pool ahead of inference (in order, nothing dropped),
so the backend is kept busy; ``batch`` images go through the model at once. Live sources: the newest frame of
each source is taken as soon as the previous result is out (no queue, no stale frames), one at a time.

Records go to ``out`` (stdout: JSON lines by default, or CSV / a table); the summary goes to ``err`` (stderr), so
stdout stays clean JSONL. Ctrl-C stops the loop, the summary is still printed, and the CLI exits 130.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from edgecls.errors import CapabilityError, InputError
from edgecls.runtime.decision import NO, UNCERTAIN, YES, Prediction, Smoother, check_threshold
from edgecls.runtime.sources import (
    Frame,
    ImageSource,
    LiveSource,
    RetryPolicy,
    VideoFileSource,
    import_cv2,
    parse_sources,
    read_image,
)

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "table")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``edgecls run`` was asked to do."""

    model: str
    sources: Tuple[str, ...] = ()
    cameras: Tuple[int, ...] = ()
    device: str = "auto"
    threads: Optional[int] = None  # onnxruntime intra-op threads (None: onnxruntime's default)
    batch: int = 1  # images per inference call for files/videos (live sources: always 1)
    threshold: Optional[float] = None  # None: the model's
    topk: int = 3
    smooth: int = 1  # average probabilities over the last N frames of a video/live source
    fmt: str = "jsonl"
    show: bool = False
    save: Optional[str] = None
    allow_fallback: bool = False
    max_frames: Optional[int] = None  # per source
    workers: Optional[int] = None  # decode/preprocess threads (None: half the CPUs, 1 to 4)
    retries: int = 5  # reopen attempts for a dropped stream
    probs: bool = False  # add every class probability to the records
    summary: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in (self.sources or ())))
        object.__setattr__(self, "cameras", tuple(int(c) for c in (self.cameras or ())))
        if self.fmt not in FORMATS:
            raise InputError(f"--format {self.fmt!r} is not one of {', '.join(FORMATS)}")
        for name in ("batch", "topk", "smooth"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"--{name} must be an integer >= 1, got {v!r}")
        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")
        for name in ("threads", "workers", "max_frames"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise InputError(f"--retries must be an integer >= 0, got {self.retries!r}")
        if not self.sources and not self.cameras:
            raise InputError("no source: give image files, folders, globs, videos, streams, csi://N or --camera N")


# ------------------------------------------------------------------------------------------------ records


def _r(x: Optional[float], nd: int = 3) -> Optional[float]:
    return None if x is None else round(float(x), nd)


def _base_record(frame: Frame) -> Dict[str, Any]:
    d: Dict[str, Any] = {"source": frame.source, "index": frame.index}
    if frame.path is not None:
        d["path"] = frame.path
    if frame.frame is not None:
        d["frame"] = frame.frame
    return d


def prediction_record(
    frame: Frame, pred: Prediction, preprocess_ms: float, infer_ms: float, batch: int, probs: bool = False,
    latency_ms: Optional[float] = None,
) -> Dict[str, Any]:
    d = _base_record(frame)
    d.update(pred.to_dict(probs=probs))
    t = {"decode": _r(frame.decode_ms), "preprocess": _r(preprocess_ms), "infer": _r(infer_ms)}
    if batch > 1:
        t["batch"] = batch
    if latency_ms is not None:
        t["latency"] = _r(latency_ms)
    d["timings_ms"] = t
    return d


def error_record(frame: Frame) -> Dict[str, Any]:
    d = _base_record(frame)
    d["error"] = frame.error
    return d


class JsonlWriter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, rec: Dict[str, Any]) -> None:
        self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class CsvWriter:
    COLUMNS = (
        "source", "index", "frame", "path", "label", "confidence", "decision", "positive", "p_positive", "topk",
        "decode_ms", "preprocess_ms", "infer_ms", "latency_ms", "error",
    )

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.w = csv.writer(stream, lineterminator="\n")
        self.w.writerow(self.COLUMNS)

    def write(self, rec: Dict[str, Any]) -> None:
        t = rec.get("timings_ms", {})
        row = dict(rec)
        row["topk"] = "|".join(f"{k['label']}:{k['p']:.4f}" for k in rec.get("topk", []))
        row.update({"decode_ms": t.get("decode"), "preprocess_ms": t.get("preprocess"), "infer_ms": t.get("infer"),
                    "latency_ms": t.get("latency")})
        self.w.writerow(["" if row.get(c) is None else row.get(c) for c in self.COLUMNS])
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class TableWriter:
    """A human-readable streaming table (one line per image)."""

    def __init__(self, stream: TextIO, width: int = 44) -> None:
        self.stream = stream
        self.width = width
        self.stream.write(
            f"{'item':<{width}} {'label':<14} {'conf':>6} {'decision':<10} {'p_pos':>6} {'infer_ms':>9}\n"
            + "-" * (width + 52) + "\n"
        )

    def _item(self, rec: Dict[str, Any]) -> str:
        item = rec.get("path") or f"{rec['source']}#{rec.get('frame', rec['index'])}"
        return item if len(item) <= self.width else "…" + item[-(self.width - 1):]

    def write(self, rec: Dict[str, Any]) -> None:
        item = self._item(rec)
        if "error" in rec:
            self.stream.write(f"{item:<{self.width}} ERROR: {rec['error']}\n")
        else:
            pp = "" if rec.get("p_positive") is None else f"{rec['p_positive']:.3f}"
            self.stream.write(
                f"{item:<{self.width}} {rec['label']:<14} {rec['confidence']:>6.3f} {rec['decision']:<10} {pp:>6} "
                f"{rec['timings_ms']['infer']:>9.2f}\n"
            )
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def make_writer(fmt: str, stream: TextIO):
    return {"jsonl": JsonlWriter, "csv": CsvWriter, "table": TableWriter}[fmt](stream)


# ------------------------------------------------------------------------------------------------ annotation

_COLORS = {YES: (40, 200, 60), NO: (200, 200, 200), UNCERTAIN: (255, 165, 0)}


def overlay_text(pred: Optional[Prediction], fps: Optional[float] = None) -> List[str]:
    lines = []
    if pred is not None:
        if pred.positive is not None:
            lines.append(f"{pred.positive}: {pred.decision} ({pred.p_positive:.2f})")
        lines.append(f"{pred.label} {pred.confidence:.2f}" if pred.label != UNCERTAIN else
                     f"uncertain ({pred.class_name} {pred.confidence:.2f})")
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    return lines


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def annotate(image: np.ndarray, lines: Sequence[str], bgr: bool = False, color: Tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A copy of ``image`` with ``lines`` drawn top-left on a dark box (same channel order as the input)."""
    from PIL import Image, ImageDraw

    rgb = image[:, :, ::-1] if bgr else image
    pil = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(pil)
    h = pil.height
    size = max(10, min(48, h // 18))
    font = _font(size)
    pad = max(2, size // 4)
    y = pad
    for i, line in enumerate(lines):
        box = draw.textbbox((pad, y), line, font=font)
        draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=(0, 0, 0))
        draw.text((pad, y), line, fill=color if i == 0 else (255, 255, 255), font=font)
        y = box[3] + 2 * pad
    out = np.asarray(pil)
    return np.ascontiguousarray(out[:, :, ::-1]) if bgr else out


_PIL_SAVE = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


class Saver:
    """``--save DIR``: annotated images (same relative names) or annotated videos (``<name>.annotated.mp4``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--save {os.fspath(root)!r}: cannot create the folder: {e}") from e
        self.written: set = set()
        self.videos: Dict[str, Tuple[Any, Path, Path]] = {}  # source name → (writer, tmp path, final path)
        self.images = 0

    def save_image(self, frame: Frame, image: np.ndarray) -> Optional[str]:
        from PIL import Image

        rel = Path(frame.save_name or f"{frame.index:06d}.jpg")
        if rel.suffix.lower() not in _PIL_SAVE:
            rel = rel.with_suffix(".png")
        dest = self.root / rel
        if dest in self.written:
            dest = dest.with_name(f"{dest.stem}_{frame.index}{dest.suffix}")
        if frame.path is not None and dest.resolve() == Path(frame.path).resolve():
            return f"--save would overwrite the input {frame.path}; choose another folder"
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            Image.fromarray(image).save(tmp, format=_PIL_SAVE[dest.suffix.lower()])
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.written.add(dest)
        self.images += 1
        return None

    def save_video_frame(self, frame: Frame, image_bgr: np.ndarray, fps: Optional[float]) -> None:
        entry = self.videos.get(frame.source)
        if entry is None:
            cv2 = import_cv2("--save for videos and cameras")
            name = frame.save_name or "video"
            final = self.root / f"{name}.annotated.mp4"
            tmp = self.root / f".{name}.annotated.partial.mp4"
            h, w = image_bgr.shape[:2]
            writer = cv2.VideoWriter(os.fspath(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or 30.0), (w, h))
            if not writer.isOpened():
                raise CapabilityError(f"--save: OpenCV cannot write {final} (codec mp4v unavailable in this build)")
            entry = self.videos[frame.source] = (writer, tmp, final)
        entry[0].write(image_bgr)

    def close(self) -> List[Path]:
        done = []
        for writer, tmp, final in self.videos.values():
            writer.release()
            if tmp.exists():
                os.replace(tmp, final)
                done.append(final)
        self.videos.clear()
        return done


class Viewer:
    """``--show``: one OpenCV window per source; q or Esc quits."""

    def __init__(self) -> None:
        cv2 = import_cv2("--show")
        gui = ""
        for line in cv2.getBuildInformation().splitlines():
            if line.strip().startswith("GUI:"):
                gui = line.split(":", 1)[1].strip()
        if gui.upper().startswith("NONE"):
            raise CapabilityError(
                f"--show needs an OpenCV with a GUI, but this cv2 {cv2.__version__} has none (GUI: NONE, e.g. "
                "opencv-python-headless). Use --save DIR instead, or an OpenCV with GUI (JetPack's, or opencv-python)"
            )
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise CapabilityError("--show needs a display (DISPLAY is not set); use --save DIR instead")
        self.cv2 = cv2

    def show(self, name: str, image_bgr: np.ndarray) -> bool:
        self.cv2.imshow(f"edgecls: {name}", image_bgr)
        key = self.cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            self.cv2.destroyAllWindows()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------ stats


def _pct(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


class RunStats:
    """Counts and latencies of one run; ``format()`` is the summary printed to stderr, ``to_dict()`` its JSON."""

    def __init__(self, decider, backend_desc: str, batch: int, load_s: float) -> None:
        self.positive = decider.spec.positive
        self.threshold = decider.threshold
        self.decision_names = decider.decision_names()
        self.backend_desc = backend_desc
        self.batch = batch
        self.load_s = load_s
        self.decisions: Counter = Counter()
        self.labels: Counter = Counter()
        self.frames = 0
        self.errors = 0
        self.dropped = 0
        self.sources = 0
        self.decode: List[float] = []
        self.preprocess: List[float] = []
        self.infer_batch: List[float] = []
        self.infer_image: List[float] = []
        self.latency: List[float] = []
        self.notes: List[str] = []
        self.saved: List[str] = []
        self.interrupted = False
        self.t0 = time.perf_counter()
        self.t1: Optional[float] = None

    @property
    def elapsed(self) -> float:
        return (self.t1 or time.perf_counter()) - self.t0

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, pred: Prediction) -> None:
        self.frames += 1
        self.decisions[pred.decision] += 1
        self.labels[pred.label] += 1

    def finish(self) -> None:
        self.t1 = time.perf_counter()

    def stages(self) -> Dict[str, Dict[str, Optional[float]]]:
        out = {}
        for name, vals in (
            ("decode", self.decode), ("preprocess", self.preprocess), ("infer_batch", self.infer_batch),
            ("infer_per_image", self.infer_image), ("latency_live", self.latency),
        ):
            if vals:
                out[name] = {"p50": _r(_pct(vals, 50)), "p95": _r(_pct(vals, 95)), "n": len(vals)}
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {
            "frames": self.frames,
            "errors": self.errors,
            "dropped_live_frames": self.dropped,
            "elapsed_s": _r(self.elapsed),
            "frames_per_s": _r(self.fps, 2),
            "model_load_s": _r(self.load_s),
            "backend": self.backend_desc,
            "batch": self.batch,
            "positive": self.positive,
            "threshold": self.threshold,
            "decisions": {k: self.decisions.get(k, 0) for k in self.decision_names},
            "labels": dict(sorted(self.labels.items())),
            "latency_ms": self.stages(),
            "interrupted": self.interrupted,
            "saved": self.saved,
            "notes": self.notes,
        }

    def format(self) -> str:
        lines = [
            f"edgecls run: {self.frames} frames, {self.errors} errors from {self.sources} source(s) in "
            f"{self.elapsed:.2f} s → {self.fps:.1f} frames/s  ({self.backend_desc}, batch {self.batch}, model load "
            f"{self.load_s:.2f} s){'  [INTERRUPTED]' if self.interrupted else ''}"
        ]
        dec = " · ".join(f"{k} {self.decisions.get(k, 0)}" for k in self.decision_names)
        head = f"{self.positive}" if self.positive else "decisions"
        lines.append(f"{head}: {dec} · errors {self.errors}   (threshold {self.threshold:.2f})")
        if self.positive:
            lines.append("labels: " + " · ".join(f"{k} {v}" for k, v in sorted(self.labels.items())))
        if self.dropped:
            lines.append(f"live: {self.dropped} stale frames skipped (newest-frame policy)")
        st = self.stages()
        if st:
            lines.append(f"{'latency ms':<22}{'p50':>9}{'p95':>9}")
            names = {"decode": "decode", "preprocess": "preprocess", "infer_batch": "infer (per batch)",
                     "infer_per_image": "infer (per image)", "latency_live": "capture→result (live)"}
            for k, v in st.items():
                lines.append(f"  {names[k]:<20}{v['p50']:>9.2f}{v['p95']:>9.2f}")
        for s in self.saved:
            lines.append(f"saved: {s}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the loop


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ordered_prefetch(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], lookahead: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``pool``, in order, with at most ``lookahead`` items in flight."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _Loop:
    def __init__(self, clf, cfg: RunConfig, writer, saver: Optional[Saver], viewer: Optional[Viewer], stats: RunStats):
        self.clf = clf
        self.cfg = cfg
        self.writer = writer
        self.saver = saver
        self.viewer = viewer
        self.stats = stats
        self.smoother = Smoother(cfg.smooth) if cfg.smooth > 1 else None
        self.keep_images = saver is not None or viewer is not None
        self.workers = cfg.workers or max(1, min(4, usable_cpus() // 2))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="edgecls-prep")
        self.infer_exec = ThreadPoolExecutor(1, thread_name_prefix="edgecls-infer")
        self.stopped = False
        self._fps: Dict[str, Tuple[float, float]] = {}  # source → (last time, ema fps)
        self.sources: Dict[str, Any] = {}  # source name → source object (for its fps when saving video)

    # -- per-frame work done on the pool ---------------------------------------------------------------------
    def _prepare(self, frame: Frame) -> Tuple[Frame, Optional[np.ndarray], float]:
        if frame.error is not None or frame.image is None:
            return frame, None, 0.0
        t0 = time.perf_counter()
        try:
            chw = self.clf.prepare(frame.image, bgr=frame.bgr)
        except Exception as e:  # a decodable but unusable image (e.g. 0-sized)
            frame.error = f"cannot preprocess {frame.path or frame.source}: {e}"
            return frame, None, 0.0
        ms = (time.perf_counter() - t0) * 1e3
        if not self.keep_images:
            frame.image = None
        return frame, chw, ms

    def _read_and_prepare(self, task: Tuple[str, int, Path, str]) -> Tuple[Frame, Optional[np.ndarray], float]:
        return self._prepare(read_image(*task))

    # -- emitting --------------------------------------------------------------------------------------------
    def _fps_of(self, source: str) -> Optional[float]:
        now = time.perf_counter()
        last = self._fps.get(source)
        if last is None:
            self._fps[source] = (now, 0.0)
            return None
        dt = now - last[0]
        inst = 1.0 / dt if dt > 0 else 0.0
        ema = inst if last[1] == 0 else 0.9 * last[1] + 0.1 * inst
        self._fps[source] = (now, ema)
        return ema

    def _emit_error(self, frame: Frame) -> None:
        self.stats.errors += 1
        self.writer.write(error_record(frame))

    def _emit(self, frame: Frame, pred: Prediction, pre_ms: float, infer_ms: float, n: int, live: bool) -> None:
        latency = (time.perf_counter() - frame.t_capture) * 1e3 if live else None
        if latency is not None:
            self.stats.latency.append(latency)
        self.stats.add(pred)
        self.stats.decode.append(frame.decode_ms)
        self.stats.preprocess.append(pre_ms)
        self.writer.write(prediction_record(frame, pred, pre_ms, infer_ms, n, self.cfg.probs, latency))
        if self.keep_images and frame.image is not None:
            if not isinstance(frame.image, np.ndarray):  # a decoded PIL image (RGB) from an image file
                frame.image = np.asarray(frame.image)
            sequence = frame.frame is not None
            fps = self._fps_of(frame.source) if sequence else None
            color = _COLORS.get(pred.decision, (255, 255, 255))
            lines = overlay_text(pred, fps)
            if self.saver is not None:
                if sequence:
                    img = annotate(frame.image, lines, bgr=frame.bgr, color=color)
                    if not frame.bgr:
                        img = img[:, :, ::-1]
                    src_fps = getattr(self.sources.get(frame.source), "fps", None)
                    self.saver.save_video_frame(frame, np.ascontiguousarray(img), src_fps)
                else:
                    rgb = frame.image[:, :, ::-1] if frame.bgr else frame.image
                    err = self.saver.save_image(frame, annotate(rgb, lines, color=color))
                    if err:
                        log.error(err)
                        self.stats.notes.append(err)
            if self.viewer is not None:
                img = annotate(frame.image, lines, bgr=frame.bgr, color=color)
                if not frame.bgr:
                    img = np.ascontiguousarray(img[:, :, ::-1])
                if not self.viewer.show(frame.source, img):
                    self.stopped = True
            frame.image = None

    def _decide(self, frames: List[Frame], logits: np.ndarray, sequence: bool) -> List[Prediction]:
        d = self.clf.decider
        probs = d.probabilities(logits)
        preds = []
        for f, row in zip(frames, probs):
            if self.smoother is not None and sequence:
                avg, n = self.smoother.update(f.source, row)
                preds.append(d.from_probs(avg, smoothed=n))
            else:
                preds.append(d.from_probs(row))
        return preds

    def _timed_infer(self, batch: np.ndarray) -> Tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        logits = self.clf.infer(batch)
        return logits, (time.perf_counter() - t0) * 1e3

    def _submit(self, items: List[Tuple[Frame, Optional[np.ndarray], float]], sync: bool = False) -> _Batch:
        """Start inference of the prepared items (on the inference thread unless ``sync``)."""
        good = [it for it in items if it[1] is not None]
        if not good:
            return _Batch(items, good, None)
        batch = np.stack([chw for _, chw, _ in good])
        if sync:
            return _Batch(items, good, self._timed_infer(batch))
        return _Batch(items, good, self.infer_exec.submit(self._timed_infer, batch))

    def _finish(self, b: _Batch, sequence: bool, live: bool = False) -> None:
        """Wait for a batch's logits, decide, and emit its records in order."""
        preds: Dict[int, Prediction] = {}
        infer_ms = 0.0
        if b.good:
            logits, infer_ms = b.result.result() if hasattr(b.result, "result") else b.result
            self.stats.infer_batch.append(infer_ms)
            self.stats.infer_image.extend([infer_ms / len(b.good)] * len(b.good))
            try:
                out = self._decide([f for f, _, _ in b.good], logits, sequence)
            except ValueError as e:  # non-finite logits: say so per frame, keep going
                for f, _, _ in b.good:
                    f.error = f"model output unusable: {e}"
                out = []
            for (f, _, _), p in zip(b.good, out):
                preds[id(f)] = p
        for f, _, ms in b.items:
            p = preds.get(id(f))
            if p is None:
                if f.error is None:
                    f.error = "no prediction"
                self._emit_error(f)
            else:
                self._emit(f, p, ms, infer_ms, len(b.good), live)

    def _flush(self, items: List[Tuple[Frame, Optional[np.ndarray], float]], sequence: bool, live: bool = False) -> None:
        """Infer and emit now (live frames: no queue, lowest latency)."""
        self._finish(self._submit(items, sync=True), sequence, live)

    def run_sequence(self, name: str, items: Iterator[Any], fn: Callable, sequence: bool) -> None:
        """Files or a video, in order: ``fn`` decodes/preprocesses on the pool, ``batch`` frames per inference on
        the inference thread, while this thread emits the previous batch's records (so the model never waits)."""
        batch = self.cfg.batch
        lookahead = max(2 * batch, 2 * self.workers)
        pending: List[Tuple[Frame, Optional[np.ndarray], float]] = []
        in_flight: Optional[_Batch] = None
        n_good = 0
        done = 0
        gen = ordered_prefetch(self.pool, fn, items, lookahead)
        try:
            for item in gen:
                pending.append(item)
                if item[1] is not None:
                    n_good += 1
                done += 1
                if n_good >= batch:
                    nxt = self._submit(pending)
                    if in_flight is not None:
                        self._finish(in_flight, sequence)
                    in_flight, pending, n_good = nxt, [], 0
                if self.stopped or (self.cfg.max_frames is not None and done >= self.cfg.max_frames):
                    break
            nxt = self._submit(pending) if pending else None
            for b in (in_flight, nxt):
                if b is not None:
                    in_flight = None
                    self._finish(b, sequence)
        finally:
            gen.close()
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def run_live(self, sources: List[LiveSource], notify: threading.Event) -> None:
        """Round-robin over live sources, always taking each one's newest frame."""
        active = list(sources)
        counts = {id(s): 0 for s in active}
        while active and not self.stopped:
            notify.wait(0.25)
            notify.clear()
            for s in list(active):
                f = s.get(timeout=0)
                if f is None:
                    if s.finished:
                        active.remove(s)
                        if s.end_reason:
                            self.stats.notes.append(f"{s.name}: {s.end_reason}")
                    continue
                item = self._prepare(f)
                self._flush([item], sequence=True, live=True)
                counts[id(s)] += 1
                if self.cfg.max_frames is not None and counts[id(s)] >= self.cfg.max_frames:
                    s.close()
                    active.remove(s)
                if self.stopped:
                    break

    def close(self) -> None:
        for ex in (self.pool, self.infer_exec):
            try:
                ex.shutdown(wait=False, cancel_futures=True)
            except TypeError:  # Python 3.8
                ex.shutdown(wait=False)


@dataclass
class _Batch:
    items: List[Tuple[Frame, Optional[np.ndarray], float]]
    good: List[Tuple[Frame, Optional[np.ndarray], float]]
    result: Any  # a Future of (logits, infer_ms), or (logits, infer_ms), or None


def _groups(sources: Sequence[Any]) -> List[Any]:
    """Consecutive live sources become one round-robin group; other sources stay one by one."""
    out: List[Any] = []
    for s in sources:
        if s.live and out and isinstance(out[-1], list):
            out[-1].append(s)
        elif s.live:
            out.append([s])
        else:
            out.append(s)
    return out


def run(
    config: RunConfig,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
    classifier: Any = None,
    sources: Optional[Sequence[Any]] = None,
) -> RunStats:
    """Run the loop; return its :class:`RunStats`. ``classifier``/``sources`` may be given (tests, the API)."""
    from edgecls.runtime.classifier import Classifier

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    t0 = time.perf_counter()
    owns = classifier is None
    clf = classifier or Classifier.load(
        config.model, device=config.device, threads=config.threads, allow_fallback=config.allow_fallback,
        threshold=config.threshold, topk=config.topk,
    )
    load_s = time.perf_counter() - t0
    started: List[LiveSource] = []
    loop: Optional[_Loop] = None
    saver: Optional[Saver] = None
    viewer: Optional[Viewer] = None
    stats: Optional[RunStats] = None
    try:
        if sources is None:
            sources = parse_sources(config.sources, config.cameras, RetryPolicy(retries=config.retries))
        notify = threading.Event()
        for s in sources:  # open cameras first: one that cannot open fails the run before any work (exit 5)
            if s.live:
                s.set_notify(notify)
                s.start()
                started.append(s)
        if config.batch > 1 and any(s.live for s in sources):
            log.info("--batch applies to files and videos; live sources are classified one frame at a time")
        if config.smooth > 1 and not any(s.live or isinstance(s, VideoFileSource) for s in sources):
            log.warning("--smooth %d has no effect: it averages over frames of videos and live sources", config.smooth)
        saver = Saver(Path(config.save)) if config.save else None
        viewer = Viewer() if config.show else None
        writer = make_writer(config.fmt, out)
        stats = RunStats(clf.decider, clf.backend.describe(), config.batch, load_s)
        if getattr(clf.backend, "fallback", None):
            stats.notes.append(f"FALLBACK: {clf.backend.fallback}")
        stats.sources = len(sources)
        loop = _Loop(clf, config, writer, saver, viewer, stats)
        loop.sources = {s.name: s for s in sources}
        try:
            for g in _groups(sources):
                if isinstance(g, list):
                    loop.run_live(g, notify)
                    stats.dropped += sum(s.dropped for s in g)
                elif isinstance(g, ImageSource):
                    loop.run_sequence(g.name, g.tasks(), loop._read_and_prepare, sequence=False)
                else:
                    loop.run_sequence(g.name, g.frames(), loop._prepare, sequence=True)
                if loop.stopped:
                    break
        except KeyboardInterrupt:
            stats.interrupted = True
        writer.close()
    finally:
        for s in started:
            s.close()
        if loop is not None:
            loop.close()
        if saver is not None:
            saved = saver.close()
            if stats is not None:
                stats.saved.extend(os.fspath(p) for p in saved)
                if saver.images:
                    stats.saved.append(f"{saver.images} annotated images under {saver.root}")
        if viewer is not None:
            viewer.close()
        if owns:
            clf.close()
    stats.finish()
    if config.summary:
        err.write(stats.format())
        err.flush()
    return stats


def write_summary_json(stats: RunStats, path: str) -> None:
    """Write the summary as JSON atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(stats.to_dict(), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = [
    "FORMATS", "RunConfig", "RunStats", "run", "annotate", "overlay_text", "prediction_record", "error_record",
    "make_writer", "ordered_prefetch", "write_summary_json",
]
