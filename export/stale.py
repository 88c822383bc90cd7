"""An export folder holds one checkpoint's artifacts: those of another checkpoint are moved aside, never deleted.

``edgecls export A --fp16 --out E`` then ``edgecls export B --out E`` used to leave A's ``model_fp16.onnx`` beside
B's files, with a ``parity.json`` that said ``"passed": true`` at the top. Now, before B's export writes anything,
every artifact in ``E`` whose recorded source checkpoint (``source_sha256`` in its sidecar or in ``parity.json``)
is not B's is moved, with its sidecar, to ``E/stale/<sha256[:12]>/`` — and the log says so. Artifacts of the same
checkpoint stay (a re-export replaces them one by one, and a failed one never replaces a good one), and so do files
that record no checkpoint at all.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from edgecls.runtime.model_io import MODEL_SUFFIXES
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

STALE_DIR = "stale"


def _sidecar_sha(path: Path) -> Optional[str]:
    """The source checkpoint sha256 a sidecar records; None when the file is not a readable spec or records none."""
    try:
        return ModelSpec.from_json(path.read_text(encoding="utf-8")).source_sha256
    except Exception:  # not a spec (or a broken one): it says nothing about where artifacts came from
        return None


def _artifact_files(out: Path, stem: str) -> List[Path]:
    """``stem``'s model files in ``out``: ``stem.onnx``/``.engine``/... and their ``.failed`` copies."""
    names = [stem + s for s in MODEL_SUFFIXES]
    names += [n + ".failed" for n in names]
    return [out / n for n in names if (out / n).is_file()]


def foreign_artifacts(out: Path, sha: str) -> Dict[Path, str]:
    """``{file: its checkpoint sha256}`` for every artifact file in ``out`` exported from another checkpoint."""
    found: Dict[Path, str] = {}
    for side in sorted(out.glob("*.json")):
        if side.name == "parity.json":
            continue
        other = _sidecar_sha(side)
        if other and other != sha:
            files = _artifact_files(out, side.stem)
            for f in files + [side]:
                found[f] = other
    parity = out / "parity.json"
    if parity.is_file():
        try:
            entries = json.loads(parity.read_text(encoding="utf-8")).get("artifacts", {}) or {}
        except (OSError, ValueError, AttributeError):
            entries = {}
        for name, entry in entries.items():
            other = entry.get("source_sha256") if isinstance(entry, dict) else None
            f = out / str(entry.get("file", name)) if isinstance(entry, dict) else None
            if other and other != sha and f is not None and f.is_file() and f.parent == out:
                found.setdefault(f, other)
    return found


def set_aside_foreign(out: Path, sha: str) -> List[str]:
    """Move the artifacts of other checkpoints out of ``out`` (see the module docstring); one line per checkpoint,
    for the log and the export's warnings. The previous ``parity.json`` is copied alongside for the record."""
    found = foreign_artifacts(out, sha)
    if not found:
        return []
    by_sha: Dict[str, List[Path]] = {}
    for f, other in found.items():
        by_sha.setdefault(other, []).append(f)
    messages = []
    for other, files in sorted(by_sha.items()):
        dest = out / STALE_DIR / other[:12]
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(files):
            os.replace(f, _free(dest / f.name))
        parity = out / "parity.json"
        if parity.is_file():
            (dest / "parity.json").write_bytes(parity.read_bytes())
        msg = (f"{out} held {len(files)} file(s) exported from another checkpoint (sha256 {other[:12]}…): "
               f"{', '.join(sorted(f.name for f in files))} — moved to {dest} so this folder only presents this "
               f"checkpoint's artifacts")
        log.warning("%s", msg)
        messages.append(msg)
    return messages


def _free(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2`` ... : never overwrite what an earlier move put there."""
    cand, i = path, 1
    while cand.exists():
        cand = path.with_name(f"{path.name}.{i}")
        i += 1
    return cand
