"""What a person decided about the collected frames: ``DIR/labels.json`` (the record) and ``DIR/labelled/``
(the image folder ``edgecls train`` / ``edgecls calibrate --data`` read, ImageFolder layout).

``labels.json``: ``{"format": "edgecls-labels", "version": 1, "classes": [...], "labels": {id: class},
"discarded": [id, ...]}``; ``classes`` lists every class offered (the model's, then the new ones), each once.
Each labelled image is ``DIR/labelled/<class>/<id>.jpg``, a hard link to ``DIR/images/<id>.jpg`` (a copy where the
disk has no hard links). Every change writes the folder first, then ``labels.json`` atomically; at open, the
folder is brought back in line with ``labels.json``. Only ``labelled/<class>/<id>.jpg`` of collected ids are ever
written or removed: nothing outside ``DIR/labelled`` is touched, nor a file a person put there.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgecls.core.errors import InputError
from edgecls.core.fileio import copy_file, remove_quietly, write_json
from edgecls.runtime.collect.manifest import IMAGES, MANIFEST, read_manifest
from edgecls.runtime.label.names import check_class_name, find_duplicate, same_name

log = logging.getLogger(__name__)

LABELS = "labels.json"
LABELLED = "labelled"
FORMAT = "edgecls-labels"
STATUSES = ("pending", "labelled", "discarded")


def _said(d: Dict[str, Any]) -> str:
    """The model's top class for a kept frame (what it said, whatever the threshold)."""
    topk = d.get("topk") or []
    return str(topk[0]["label"]) if topk else str(d.get("label", "?"))


def _reason(d: Dict[str, Any]) -> str:
    """The first rule a kept frame met (its group on the page, with what the model said)."""
    return str((d.get("reasons") or ["?"])[0])


def read_labels(path: Path, known_ids: Optional[set] = None) -> Dict[str, Any]:
    """Load and check ``labels.json``; InputError naming what is wrong (the file is never rewritten then)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e}); fix or move it (the labelled/ folder is untouched)") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not an edgecls labels file (expected {{\"format\": \"{FORMAT}\", ...}})")
    classes, labels, discarded = data.get("classes", []), data.get("labels", {}), data.get("discarded", [])
    if not isinstance(classes, list) or not isinstance(labels, dict) or not isinstance(discarded, list):
        raise InputError(f"{path}: 'classes' must be a list, 'labels' an object {{id: class}}, 'discarded' a list")
    names = [check_class_name(c) for c in classes]
    dup = find_duplicate(names)
    if dup:
        (i, a), (j, b) = dup
        how = "twice" if a == b else f"twice ({a!r} and {b!r} differ only by case: one folder on macOS/Windows)"
        raise InputError(f"{path}: names class {a!r} {how}, at classes[{i}] and classes[{j}]; list each class once "
                         "(nothing was changed)")
    unlisted = sorted({c for c in labels.values() if c not in names})
    if unlisted:
        raise InputError(f"{path}: labels use class(es) {unlisted} that 'classes' does not list; valid: {names}")
    both = sorted(set(labels) & set(discarded))
    if both:
        raise InputError(f"{path}: ids both labelled and discarded: {both[:5]}; each image is one or the other")
    if known_ids is not None:
        missing = sorted((set(labels) | set(discarded)) - known_ids)
        if missing:
            log.warning("%s: %d id(s) not in the manifest (ignored): %s", path, len(missing), missing[:5])
    return {"classes": names, "labels": dict(labels), "discarded": list(discarded)}


class LabelStore:
    """The collection under ``folder`` and the labels given so far; thread-safe (one lock)."""

    def __init__(self, folder: os.PathLike) -> None:
        self.root = Path(folder).expanduser().resolve()
        if not (self.root / MANIFEST).is_file():
            raise InputError(f"{self.root}: no {MANIFEST} here; give the folder `edgecls run --collect DIR` wrote")
        self.items: Dict[str, Dict[str, Any]] = {}
        model_classes: List[str] = []
        for d in read_manifest(self.root):
            if d.get("event") == "start":
                for c in (d.get("model") or {}).get("classes") or []:
                    if c not in model_classes:
                        model_classes.append(c)
            elif d.get("event") == "kept" and isinstance(d.get("id"), str) and isinstance(d.get("image"), str):
                if self._collected(d["image"]):
                    self.items[d["id"]] = d
        self.model_classes = model_classes
        self.labelled_root = self.root / LABELLED
        path = self.root / LABELS
        saved = read_labels(path, set(self.items)) if path.exists() else {"classes": [], "labels": {}, "discarded": []}
        self.classes: List[str] = list(saved["classes"])
        for c in model_classes:
            if not any(same_name(c, x) for x in self.classes):
                self.classes.append(c)
        self.labels: Dict[str, str] = {k: v for k, v in saved["labels"].items() if k in self.items}
        self.discarded = {k for k in saved["discarded"] if k in self.items}
        self.lock = threading.Lock()
        self._reconcile()

    def _collected(self, rel: str) -> bool:
        """Whether ``rel`` is an image file under DIR/images (the page serves nothing else, whatever a manifest
        line says)."""
        path = (self.root / rel).resolve()
        try:
            path.relative_to(self.root / IMAGES)
        except ValueError:
            log.warning("%s: %r is not under %s/; skipped", MANIFEST, rel, IMAGES)
            return False
        return path.is_file()

    # -- reading -------------------------------------------------------------------------------------------------
    def status(self, item_id: str) -> str:
        return "labelled" if item_id in self.labels else "discarded" if item_id in self.discarded else "pending"

    def image_path(self, item_id: str) -> Optional[Path]:
        d = self.items.get(item_id)
        return None if d is None else self.root / d["image"]

    def state(self) -> Dict[str, Any]:
        """Everything the page shows: classes, groups (what the model said, why kept), items, counts."""
        with self.lock:
            groups: Dict[str, Dict[str, Any]] = {}
            items = []
            for i, d in sorted(self.items.items(), key=lambda kv: (_said(kv[1]), _reason(kv[1]), kv[1].get("time", 0))):
                reason = _reason(d)
                key = f"{_said(d)} · {reason}"
                g = groups.setdefault(key, {"key": key, "label": _said(d), "reason": reason, "count": 0})
                g["count"] += 1
                items.append({"id": i, "url": f"/images/{i}.jpg", "group": key, "source": d.get("source"),
                              "path": d.get("path"), "frame": d.get("frame"), "time_utc": d.get("time_utc"),
                              "label": d.get("label"), "decision": d.get("decision"),
                              "confidence": d.get("confidence"), "reasons": d.get("reasons"),
                              "model": (d.get("model") or {}).get("name"), "status": self.status(i),
                              "class": self.labels.get(i)})
            counts = {s: 0 for s in STATUSES}
            for it in items:
                counts[it["status"]] += 1
            per_class = {c: 0 for c in self.classes}
            for c in self.labels.values():
                per_class[c] = per_class.get(c, 0) + 1
            return {"folder": os.fspath(self.root), "classes": list(self.classes),
                    "model_classes": list(self.model_classes), "groups": list(groups.values()), "items": items,
                    "counts": counts, "per_class": per_class, "labelled_folder": os.fspath(self.labelled_root)}

    # -- changes -------------------------------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[Any]) -> List[str]:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise InputError("'ids' must be a non-empty list of image ids (from GET /api/state)")
        unknown = [i for i in ids if i not in self.items]
        if unknown:
            raise LookupError(f"unknown image id(s) {unknown[:5]}; ids come from GET /api/state")
        return list(dict.fromkeys(ids))

    def _class_for(self, name: Any) -> tuple:
        """(the class's name as listed, whether it is new); a new name is checked against the rule."""
        n = check_class_name(name)
        for c in self.classes:
            if c == n:
                return c, False
            if same_name(c, n):
                raise InputError(f"class {n!r} differs only by case from the existing class {c!r} (one folder on "
                                 f"macOS/Windows); use {c!r}")
        return n, True

    def assign(self, ids: Sequence[Any], name: Any) -> Dict[str, Any]:
        with self.lock:
            ids = self._check_ids(ids)
            cls, new = self._class_for(name)
            if new:
                self.classes.append(cls)
            for i in ids:
                old = self.labels.get(i)
                if old is not None and old != cls:
                    self._unlink(i, old)
                self._link(i, cls)
                self.labels[i] = cls
                self.discarded.discard(i)
            self._save()
            return {"assigned": len(ids), "class": cls, "new_class": new}

    def discard(self, ids: Sequence[Any]) -> Dict[str, Any]:
        return {"discarded": self._unlabel(ids, discard=True)}

    def reset(self, ids: Sequence[Any]) -> Dict[str, Any]:
        return {"reset": self._unlabel(ids, discard=False)}

    def _unlabel(self, ids: Sequence[Any], discard: bool) -> int:
        """Take the images' labels (and their links) away; mark them discarded or back to unlabelled."""
        with self.lock:
            ids = self._check_ids(ids)
            for i in ids:
                old = self.labels.pop(i, None)
                if old is not None:
                    self._unlink(i, old)
                if discard:
                    self.discarded.add(i)
                else:
                    self.discarded.discard(i)
            self._save()
            return len(ids)

    # -- the folder ------------------------------------------------------------------------------------------------
    def _dest(self, item_id: str, cls: str) -> Path:
        dest = self.labelled_root / cls / f"{item_id}.jpg"
        base = self.labelled_root.resolve()
        try:  # names.py already forbids what could leave the folder; this checks the result, not the rule
            ok = dest.parent.resolve() == base / cls and bool(dest.resolve().relative_to(base))
        except ValueError:
            ok = False
        if not ok:
            raise InputError(f"refused to write outside {base}: {dest}")
        return dest

    def _link(self, item_id: str, cls: str) -> None:
        dest = self._dest(item_id, cls)
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.root / self.items[item_id]["image"]
        try:
            os.link(src, dest)
        except OSError:  # no hard links on this disk (or across disks): an atomic copy
            copy_file(src, dest)

    def _unlink(self, item_id: str, cls: str) -> None:
        remove_quietly(self._dest(item_id, cls))

    def _save(self) -> None:
        write_json(self.root / LABELS, {"format": FORMAT, "version": 1, "updated": round(time.time(), 3),
                                        "classes": self.classes, "labels": self.labels,
                                        "discarded": sorted(self.discarded)})

    def _reconcile(self) -> None:
        """Bring labelled/ in line with labels.json (after a crash between the two): link what is missing, remove
        links of collected ids to any other class."""
        for i, cls in self.labels.items():
            self._link(i, cls)
        if not self.labelled_root.is_dir():
            return
        for d in self.labelled_root.iterdir():
            if not d.is_dir():
                continue
            for f in d.glob("*.jpg"):
                i = f.stem
                if i in self.items and self.labels.get(i) != d.name:
                    log.info("labelled/: removing %s (labels.json says %s)", f, self.labels.get(i, "not labelled"))
                    remove_quietly(f)
