"""``parity.json``: the export folder's record of every artifact, its parity verdict, calibration and engines.

Artifacts not redone by this export are carried over (marked ``from_previous_export``) while their file exists; a
failed artifact points at its ``.failed`` file and, when an earlier good one is still in place, says so
(``previous_good_file``) — it is NOT from this export.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from edgecls.core import fileio as atomic
from edgecls.export.parity import PARITY_FORMAT, ParityData, ParityReport, Reference, Tolerances

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def previous_artifacts(path: Path, out: Path) -> Dict[str, Any]:
    """The entries of an earlier ``parity.json`` whose file is still in ``out``, marked as carried over."""
    previous: Dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8")).get("artifacts", {}) or {}
        except (OSError, ValueError, AttributeError) as e:
            log.warning("previous %s is unreadable (%s); starting a new one", path, e)
    artifacts: Dict[str, Any] = {}
    for name, entry in previous.items():  # artifacts not redone now: carried over while their file exists
        if isinstance(entry, dict) and (out / str(entry.get("file", name))).is_file():
            artifacts[name] = dict(entry, from_previous_export=True)
    return artifacts


def artifact_entry(report: ParityReport, extra: Mapping[str, Any], out: Path, checkpoint: Path, sha: str,
                   now: str) -> Dict[str, Any]:
    """One artifact's entry: its parity report, what the export added (``extra``) and where the file is."""
    from edgecls.export.metadata import read_sidecar

    entry = report.to_dict()
    entry.update(extra)
    entry.update(source_sha256=sha, checkpoint=os.fspath(checkpoint), exported_at=now, from_previous_export=False)
    final = out / report.artifact
    if not report:
        entry["file"] = Path(report.path).name
        if final.is_file():
            try:
                prev_sha = read_sidecar(final).source_sha256
            except Exception:  # an unreadable sidecar only weakens the note
                prev_sha = None
            entry["previous_good_file"] = {
                "file": report.artifact, "source_sha256": prev_sha,
                "note": "left from an earlier export that passed parity; NOT from this export"
                        + ("" if prev_sha == sha else " (another checkpoint)"),
            }
    else:
        entry["file"] = report.artifact
    return entry


def write_parity_json(
    out: Path, *, checkpoint: Path, sha: str, data: ParityData, reference: Reference, tolerances: Tolerances,
    reports: Sequence[ParityReport], extra: Mapping[str, Dict[str, Any]], timings: Mapping[str, float],
    calib_set=None, calibration=None, engines: Sequence[Any] = (), engine_error: Optional[str] = None,
    selection: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write ``out/parity.json`` atomically (merged with the earlier one) and return its path."""
    from edgecls import __version__

    path = out / "parity.json"
    artifacts = previous_artifacts(path, out)
    now = _now()
    for r in reports:
        artifacts[r.artifact] = artifact_entry(r, extra.get(r.artifact, {}), out, checkpoint, sha, now)
    doc: Dict[str, Any] = {
        "format": PARITY_FORMAT, "edgecls_version": __version__, "created": now,
        "checkpoint": os.fspath(checkpoint), "source_sha256": sha,
        "data": {"source": data.source, "n": data.n, "labelled": data.y is not None},
        "tolerances": tolerances.to_dict(),
        "reference": {"accuracy": reference.accuracy, "positive_recall": reference.positive_recall,
                      "per_class_recall": reference.per_class_recall, "ece": reference.ece,
                      "temperature": reference.temperature},
        "passed": all(reports),
        "artifacts": dict(sorted(artifacts.items())),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    if selection is not None:  # the images that chose the INT8 recipe, apart from the ones reported above
        doc["selection"] = selection
    if calib_set is not None and calibration is not None:
        doc["calibration"] = {
            "source": calib_set.source, "images": calib_set.count, "groups": calib_set.groups,
            "method": calibration.method, "cache": os.fspath(calibration.cache_path),
            "cache_hit": calibration.cache_hit, "images_sha256": calibration.images_sha256,
        }
    if engines or engine_error:
        doc["engines"] = {
            "built": [{"file": e.path.name, "precision": e.precision, "trt_version": e.trt_version,
                       "compute_capability": e.compute_capability, "reused": e.reused,
                       "batch": [e.profile.min, e.profile.opt, e.profile.max]} for e in engines],
            "error": engine_error,
        }
    atomic.write_json(path, doc)
    return path
