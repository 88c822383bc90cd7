"""The collection sink of ``edgecls run --collect DIR`` (:class:`Collector`).

The run loop's side (:meth:`Collector.offer`) only checks the rules and the rate cap and hands the frame's image
reference to a bounded queue: a live frame with ``put_nowait`` (a full queue — a slow disk — drops the frame and
counts it; the camera never waits), a file or video frame waiting at most :data:`FILE_WAIT_S` (a folder is read
faster than a disk takes fsync'd images, and nothing goes stale while it waits; a stuck disk still cannot stall it). A
writer thread does the rest: near-duplicate check, JPEG encoding, the atomic image write, then the manifest lines
of a batch with one fsync. The disk cap, a full disk (ENOSPC, quota) or a read-only remount stop collection with one
warning and a count; the run goes on, and nothing half-written is left (images are renamed into place, a failed
manifest batch is cut back and its images removed).
"""
from __future__ import annotations

import datetime as _dt
import io
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgecls.core.errors import WRITE_ERRNOS, InputError
from edgecls.core.fileio import remove_orphan_temps, remove_quietly, temp_path, write_bytes
from edgecls.runtime.collect.config import CollectConfig
from edgecls.runtime.collect.manifest import IMAGES, Manifest, line_text
from edgecls.runtime.collect.rules import NearDuplicates, RateCap, dhash, margin_of, reasons

log = logging.getLogger(__name__)

MIN_FREE_BYTES = 8 * 1024 * 1024  # less free space than this at start: the folder is refused as full
MAX_SIDE = 1280  # kept images are scaled down to this longest side (never up)
JPEG_QUALITY = 92
BATCH = 32  # manifest lines per fsync at most
FILE_WAIT_S = 2.0  # files and videos: how long the loop may wait for room in the queue before dropping the frame
CLOSE_WAIT_S = 10.0  # at the end of a run, how long the writer may take to finish what is queued
OUTCOMES = ("kept", "duplicate", "rate_capped", "dropped_slow_disk", "stopped", "write_error")


def check_folder(folder: str) -> Path:
    """Create ``folder`` and prove a file can be written there; InputError (exit 2) saying what is wrong."""
    root = Path(folder).expanduser()
    what = f"--collect {os.fspath(folder)!r}"
    try:
        (root / IMAGES).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what}: cannot create the folder: {e.strerror or e}; choose a writable folder") from e
    try:
        probe = temp_path(root / ".write-probe")
        with open(probe, "wb") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
        remove_quietly(probe)
    except OSError as e:
        raise InputError(f"{what}: cannot write there: {e.strerror or e} (read-only disk or no permission); "
                         "choose a writable folder") from e
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise InputError(f"{what}: the disk is full ({free / 1e6:.1f} MB free, at least "
                         f"{MIN_FREE_BYTES / 1e6:.0f} MB needed); free some space or choose another disk")
    return root


def folder_bytes(root: Path) -> int:
    """Bytes under ``root``, each file counted once (hard links, e.g. the labelling page's, count once)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def encode_jpeg(image: Any, bgr: bool, max_side: int = MAX_SIDE, quality: int = JPEG_QUALITY) -> tuple:
    """``(JPEG bytes, width, height)`` of ``image`` (an array, BGR when ``bgr``, or a PIL image), scaled down to
    ``max_side``."""
    from PIL import Image

    if isinstance(image, Image.Image):
        im = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        arr = arr[:, :, :3]
        im = Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1] if bgr else arr))
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), im.width, im.height


def model_identity(model_path: str, spec: Any, identity: Any = None) -> Dict[str, Any]:
    """What each kept frame says about the model: name, version, sha256 of the file (full), file name, classes,
    precision, arch, and the checkpoint it was exported from. ``identity``: the model slot's
    :class:`~edgecls.runtime.slot.identity.ModelIdentity` (its sha256 already computed), else the file is hashed."""
    path = Path(model_path)
    if identity is not None:
        head: Dict[str, Any] = {"name": identity.name, "version": identity.version, "sha256": identity.sha256 or None}
    else:
        from edgecls.core.fileio import file_sha256

        try:
            digest: Optional[str] = file_sha256(path)
        except OSError:  # e.g. a remote model named by URL
            digest = None
        head = {"name": path.name, "sha256": digest}
    return {**head, "file": path.name, "classes": list(spec.classes), "arch": spec.arch,
            "precision": spec.precision, "source_sha256": spec.source_sha256}


def _line_bytes(d: Dict[str, Any]) -> int:
    """The bytes ``d`` takes as a manifest line."""
    return len(line_text(d).encode()) + 1


def _utc(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class Collector:
    """Keeps flagged frames under ``cfg.folder`` (see the module docstring). ``model``: the identity written with
    each frame (name, sha256, classes). ``write_image`` may be replaced (tests: a slow or full disk)."""

    def __init__(self, cfg: CollectConfig, model: Dict[str, Any], clock=time.monotonic) -> None:
        self.cfg = cfg
        self.root = check_folder(cfg.folder)
        remove_orphan_temps(self.root)
        remove_orphan_temps(self.root / IMAGES)
        self.model = dict(model)
        self.known: Dict[str, Dict[str, Any]] = {}  # sha256 prefix -> the full identity of a model that answered
        self.add_model(model)
        self.counts: Counter = Counter()  # the writer's outcomes
        self.early: Counter = Counter()  # the loop's (rate-capped before queueing, queue full, after a stop)
        self.kept_by_rule: Counter = Counter()
        self.flagged = 0
        self.used = folder_bytes(self.root)
        self.written = 0  # bytes this run
        self.stopped: Optional[str] = None
        self.rate = RateCap(cfg.rate_per_min, clock)
        self.dups = NearDuplicates(cfg.dup_bits)
        self.forced: Dict[str, str] = {}  # source → reason (force())
        self.run_id = secrets.token_hex(3)
        self._n = 0
        self._q: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue)
        self._lock = threading.Lock()
        self.write_image = write_bytes
        self.manifest = Manifest(self.root)
        start = {"event": "start", "time": round(time.time(), 3), "time_utc": _utc(time.time()), "run": self.run_id,
                 "model": self.model, "rules": list(cfg.rules), "margin": cfg.margin, "max_mb": cfg.max_mb,
                 "rate_per_min": cfg.rate_per_min, "dup_bits": cfg.dup_bits}
        if self.used + _line_bytes(start) > cfg.max_bytes:
            self._stop(f"the folder already holds {self.used / 2**20:.1f} MB, at --collect-max-mb "
                       f"{cfg.max_mb:g}: label and move the images out, or raise the cap")
        else:
            self._append([start])
        self._thread = threading.Thread(target=self._run, name="edgecls-collect", daemon=True)
        self._thread.start()
        log.info("collecting %s into %s (at most %g MB, %s)", ",".join(cfg.rules), self.root, cfg.max_mb,
                 f"{cfg.rate_per_min}/min per live source and rule" if cfg.rate_per_min else "no rate cap")

    def add_model(self, identity: Dict[str, Any]) -> None:
        """A model that answers from now on (the first, or one swapped in): kept frames name it in full."""
        self.model = dict(identity)
        if identity.get("sha256"):
            self.known[str(identity["sha256"])[:12]] = dict(identity)

    # -- the run loop's side: cheap, never waits ----------------------------------------------------------------
    def check_model(self, decider: Any) -> List[str]:
        """Warnings for rules this model can never meet (no OOD threshold, no conformal sets)."""
        conf = getattr(decider, "confidence", None)
        notes = []
        if "unknown" in self.cfg.rules and getattr(conf, "ood", None) is None:
            notes.append("--collect-rules unknown never fires: the model carries no unknown (OOD) threshold")
        sets = [r for r in ("empty-set", "multi-set") if r in self.cfg.rules]
        if sets and getattr(conf, "conformal", None) is None:
            notes.append(f"--collect-rules {','.join(sets)} never fire(s): the model carries no conformal sets")
        for n in notes:
            log.warning(n)
        return notes

    def force(self, source: str, on: bool = True, reason: str = "forced") -> None:
        """Keep every frame of ``source`` (caps and duplicates still apply) while ``on``; e.g. a drift monitor."""
        with self._lock:
            if on:
                self.forced[str(source)] = reason
            else:
                self.forced.pop(str(source), None)

    def offer(self, frame: Any, pred: Any, record: Dict[str, Any], live: bool) -> None:
        """The loop's call per classified frame (before it drops the frame's image)."""
        why = reasons(pred, self.cfg.rules, self.cfg.margin)
        forced = self.forced.get(frame.source)
        if forced:
            why.append(forced)
        if not why:
            return
        self.flagged += 1
        if self.stopped is not None:
            self.early["stopped"] += 1
            return
        if frame.image is None:
            return
        if live and not self.rate.available(frame.source, why[:1]):  # counted under its first rule
            self.early["rate_capped"] += 1
            return
        item = (frame.source, frame.image, bool(frame.bgr), pred, record, why, live, time.time())
        try:  # a live frame never waits; a file or video frame waits a little (nothing goes stale meanwhile)
            self._q.put(item, block=not live, timeout=None if live else FILE_WAIT_S)
        except queue.Full:
            self.early["dropped_slow_disk"] += 1

    # -- the writer thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        done = False
        while not done:
            batch = [self._q.get()]
            while len(batch) < min(BATCH, self.cfg.queue):  # images held: at most twice the queue
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            lines, files = [], []
            for item in batch:
                if item is None:
                    continue
                try:
                    got = self._keep(item)
                except Exception as e:  # a bug or an odd image must not kill the writer: count, say once
                    self.counts["write_error"] += 1
                    if self.counts["write_error"] == 1:
                        log.warning("collection: a frame could not be kept (%s); later ones are counted", e)
                    continue
                if got is not None:
                    lines.append(got[0])
                    files.append(got[1])
            if lines:
                self._commit(lines, files)

    def _keep(self, item: tuple) -> Optional[tuple]:
        source, image, bgr, pred, record, why, live, t = item
        if self.stopped is not None:
            self.counts["stopped"] += 1
            return None
        h = dhash(image, bgr)
        if self.dups.seen(source, h):
            self.counts["duplicate"] += 1
            return None
        if live and not self.rate.take(source, why[:1]):
            self.counts["rate_capped"] += 1
            return None
        jpeg, w, hgt = encode_jpeg(image, bgr)
        self._n += 1
        stem = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(t))}-{self.run_id}-{self._n:06d}"
        rel = f"{IMAGES}/{stem}.jpg"
        line = {k: v for k, v in record.items() if k != "timings_ms"}
        line.update({"event": "kept", "id": stem, "image": rel, "time": round(t, 3), "time_utc": _utc(t),
                     "reasons": why, "margin": None if margin_of(pred) is None else round(margin_of(pred), 6),
                     "dhash": f"{h:016x}", "width": w, "height": hgt, "bytes": len(jpeg)})
        answered = record.get("model")  # the model that answered this frame (records name it: the model slot)
        if isinstance(answered, dict) and answered.get("sha256"):
            full = self.known.get(str(answered["sha256"])[:12], {})
            line["model"] = {**full, **answered, **({"sha256": full["sha256"]} if full.get("sha256") else {})}
        else:
            line["model"] = self.model
        size = len(jpeg) + _line_bytes(line)
        if self.used + size > self.cfg.max_bytes:
            self.counts["stopped"] += 1
            self._stop(f"the disk cap --collect-max-mb {self.cfg.max_mb:g} is reached "
                       f"({self.used / 2**20:.2f} MB used)")
            return None
        path = self.root / rel
        try:
            self.write_image(path, jpeg)
        except OSError as e:
            self.counts["stopped" if e.errno in WRITE_ERRNOS else "write_error"] += 1
            if e.errno in WRITE_ERRNOS:
                self._stop(f"cannot write {path}: {e.strerror or e}")
            elif self.counts["write_error"] == 1:
                log.warning("collection: cannot write %s (%s); later failures are counted", path, e)
            return None
        self.dups.add(source, h)
        self.used += size  # the image and its manifest line, reserved before the line is written
        self.written += size
        return line, path

    def _commit(self, lines: List[Dict[str, Any]], files: Sequence[Path]) -> None:
        if not self._append(lines, reserved=True):
            for p in files:  # their lines are not in the manifest: no orphan images
                remove_quietly(p)
            freed = sum(int(d["bytes"]) + _line_bytes(d) for d in lines)
            self.used -= freed
            self.written -= freed
            self.counts["stopped"] += len(lines)
            return
        self.counts["kept"] += len(lines)
        for d in lines:
            self.kept_by_rule.update(d["reasons"])

    def _append(self, lines: List[Dict[str, Any]], reserved: bool = False) -> bool:
        try:
            n = self.manifest.append(lines)
        except OSError as e:
            self._stop(f"cannot write {self.manifest.path}: {e.strerror or e}")
            return False
        if not reserved:
            self.used += n
            self.written += n
        return True

    def _stop(self, why: str) -> None:
        if self.stopped is None:
            self.stopped = why
            log.warning("collection stopped: %s; the run goes on (frames that would have been kept are counted)",
                        why)

    # -- the end -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish what is queued (at most :data:`CLOSE_WAIT_S`), then write the run's counts."""
        try:
            self._q.put(None, timeout=CLOSE_WAIT_S)
        except queue.Full:
            pass
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            log.warning("collection: the writer did not finish in %.0f s (a slow disk); queued frames are lost",
                        CLOSE_WAIT_S)
        elif self.stopped is None:
            self._append([{"event": "end", "time": round(time.time(), 3), "run": self.run_id, **self.to_dict()}])
        self.manifest.close()

    def outcomes(self) -> Dict[str, int]:
        """Flagged frames by what became of them (:data:`OUTCOMES`)."""
        return {k: self.counts.get(k, 0) + self.early.get(k, 0) for k in OUTCOMES}

    def to_dict(self) -> Dict[str, Any]:
        return {"folder": os.fspath(self.root), "flagged": self.flagged, **self.outcomes(), "kept_by_rule": dict(self.kept_by_rule),
                "bytes_written": self.written, "folder_mb": round(self.used / 2**20, 3), "max_mb": self.cfg.max_mb,
                "stopped": self.stopped}

    def summary_lines(self) -> List[str]:
        c = self.outcomes()
        parts = [f"{c.get('kept', 0)} kept of {self.flagged} flagged"]
        for k, name in (("duplicate", "near-duplicates"), ("rate_capped", "rate-capped"),
                        ("dropped_slow_disk", "dropped (writer busy: slow disk)"), ("stopped", "after stop"),
                        ("write_error", "write errors")):
            if c.get(k):
                parts.append(f"{c[k]} {name}")
        lines = [f"collect: {', '.join(parts)} → {self.root} ({self.used / 2**20:.1f} of {self.cfg.max_mb:g} MB)"]
        if self.stopped:
            lines.append(f"collect: STOPPED: {self.stopped}")
        return lines
