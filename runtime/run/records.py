"""One JSON-able record per frame: the prediction with its timings, or why the frame has none."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from edgecls.runtime.decision import Prediction
from edgecls.runtime.sources.frame import Frame


def rounded(x: Optional[float], nd: int = 3) -> Optional[float]:
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
    latency_ms: Optional[float] = None, model: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """``model``: the identity of the model that answered (name, version, sha256 prefix: runtime.slot)."""
    d = _base_record(frame)
    d.update(pred.to_dict(probs=probs))
    if model is not None:
        d["model"] = model
    t = {"decode": rounded(frame.decode_ms), "preprocess": rounded(preprocess_ms), "infer": rounded(infer_ms)}
    if batch > 1:
        t["batch"] = batch
    if latency_ms is not None:  # live: capture -> decision, and when the frame was captured (Unix time, s)
        t["latency"] = rounded(latency_ms)
        d["capture_time"] = round(time.time() - latency_ms / 1e3, 3)
    d["timings_ms"] = t
    return d


def error_record(frame: Frame) -> Dict[str, Any]:
    d = _base_record(frame)
    d["error"] = frame.error
    return d
