"""The KServe v2 / Open Inference Protocol JSON of ``edgecls serve``, with Triton's binary tensor extension.

Request (``POST /v2/models/<name>/infer``)::

    {"id": "42", "inputs": [{"name": "input", "shape": [N, 3, H, W], "datatype": "FP32", "data": [...]}],
     "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}

``data`` is the preprocessed NCHW tensor (row-major, flat or nested). With the binary extension (what tritonclient
sends by default) the JSON is followed by the raw little-endian bytes: the ``Inference-Header-Content-Length``
header gives the JSON's length and each input's ``parameters.binary_data_size`` its byte count.

Response: ``{"model_name", "model_version", "id", "outputs": [{"name", "datatype", "shape", "data"}]}`` — the
model's output tensor, or with ``"classification": k`` the top k as Triton writes them, ``"<p>:<index>:<label>"``
(BYTES), where ``p`` is the probability ``edgecls run`` reports (temperature applied). Outputs asked with
``"binary_data": true`` (or the request's ``"binary_data_output": true``) come back as bytes after the JSON.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.serve.uploads import UploadError

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_IMAGES_PER_REQUEST = 256


@dataclass(frozen=True)
class RequestedOutput:
    classification: int = 0  # 0: the raw tensor; k > 0: the top k as "p:index:label"
    binary: bool = False


@dataclass(frozen=True)
class InferRequest:
    id: Optional[str]
    batch: np.ndarray  # float32 (N, 3, H, W)
    output: RequestedOutput


def _json_part(body: bytes, header_length: Optional[str]) -> Tuple[Dict[str, Any], bytes]:
    n = len(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise UploadError(400, f"{HEADER_LENGTH} {header_length!r} is not a number") from None
        if not 0 < n <= len(body):
            raise UploadError(400, f"{HEADER_LENGTH} {n} does not fit a body of {len(body)} bytes")
    try:
        obj = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError) as e:
        raise UploadError(400, f"the inference request is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise UploadError(400, "the inference request must be a JSON object with an \"inputs\" list")
    return obj, body[n:]


def _tensor(inp: Dict[str, Any], binary: bytes, input_name: str, crop: int) -> np.ndarray:
    if inp.get("name") != input_name:
        raise UploadError(400, f"unknown input {inp.get('name')!r}; this model has one input, {input_name!r}")
    if inp.get("datatype") != "FP32":
        raise UploadError(400, f"input datatype {inp.get('datatype')!r} is not supported; send \"FP32\"")
    shape = inp.get("shape")
    want = [3, crop, crop]
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) for d in shape)
            or shape[1:] != want or not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST):
        raise UploadError(400, f"input shape {shape!r} is not supported; send [N, 3, {crop}, {crop}] with "
                               f"1 <= N <= {MAX_IMAGES_PER_REQUEST} (preprocessed NCHW images)")
    count = math.prod(shape)
    size = (inp.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != 4 * count or len(binary) < size:
            raise UploadError(400, f"binary_data_size {size!r} does not match shape {shape} (needs {4 * count} "
                                   f"bytes, {len(binary)} sent)")
        arr = np.frombuffer(binary[:size], dtype="<f4").astype(np.float32)
    else:
        try:
            arr = np.asarray(inp.get("data"), dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise UploadError(400, "input data must be a list of numbers") from None
        if arr.size != count:
            raise UploadError(400, f"input data has {arr.size} values; shape {shape} needs {count}")
    if not np.all(np.isfinite(arr)):
        raise UploadError(400, "input data contains NaN or inf")
    return arr.reshape(shape)


def _requested(obj: Dict[str, Any], output_name: str) -> RequestedOutput:
    outs = obj.get("outputs") or []
    default_binary = bool((obj.get("parameters") or {}).get("binary_data_output", False))
    if not isinstance(outs, list) or len(outs) > 1:
        raise UploadError(400, f"\"outputs\" must list at most one output ({output_name!r})")
    if not outs:
        return RequestedOutput(0, default_binary)
    out = outs[0]
    if not isinstance(out, dict) or out.get("name") != output_name:
        raise UploadError(400, f"unknown output {out.get('name') if isinstance(out, dict) else out!r}; "
                               f"this model has one output, {output_name!r}")
    params = out.get("parameters") or {}
    k = params.get("classification", 0)
    if not isinstance(k, int) or k < 0:
        raise UploadError(400, f"classification must be an integer >= 0, got {k!r}")
    return RequestedOutput(k, bool(params.get("binary_data", default_binary)))


def parse_infer_request(body: bytes, header_length: Optional[str], input_name: str, output_name: str,
                        crop: int) -> InferRequest:
    """The request's id, its images as a float32 NCHW batch, and what output it wants; UploadError (400) else."""
    obj, binary = _json_part(body, header_length)
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise UploadError(400, f"\"inputs\" must be a list with one tensor ({input_name!r})")
    rid = obj.get("id")
    return InferRequest(None if rid is None else str(rid), _tensor(inputs[0], binary, input_name, crop),
                        _requested(obj, output_name))


def classification_strings(probs: np.ndarray, classes: Sequence[str], k: int) -> List[List[str]]:
    """Triton's classification extension: per row, the top ``k`` as ``"<p>:<index>:<label>"``."""
    k = min(k, probs.shape[1])
    rows = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        rows.append([f"{float(row[i]):f}:{int(i)}:{classes[int(i)]}" for i in order])
    return rows


def _bytes_tensor(items: Sequence[str]) -> bytes:
    out = bytearray()
    for s in items:
        b = s.encode("utf-8")
        out += struct.pack("<I", len(b)) + b
    return bytes(out)


def infer_response(model_name: str, req: InferRequest, output_name: str, outputs: np.ndarray,
                   probs: np.ndarray, classes: Sequence[str]) -> Tuple[bytes, Dict[str, str]]:
    """``(body, headers)`` of the response; binary outputs follow the JSON (with the header giving its length)."""
    want = req.output
    entry: Dict[str, Any] = {"name": output_name}
    if want.classification:
        rows = classification_strings(probs, classes, want.classification)
        flat = [s for r in rows for s in r]
        entry.update(datatype="BYTES", shape=[len(rows), len(rows[0]) if rows else 0])
        payload = _bytes_tensor(flat) if want.binary else None
        data: Any = flat
    else:
        arr = np.ascontiguousarray(outputs, dtype="<f4")
        entry.update(datatype="FP32", shape=list(arr.shape))
        payload = arr.tobytes() if want.binary else None
        data = arr.reshape(-1).tolist()
    if payload is None:
        entry["data"] = data
    else:
        entry["parameters"] = {"binary_data_size": len(payload)}
    doc: Dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": [entry]}
    if req.id is not None:
        doc["id"] = req.id
    head = json.dumps(doc).encode("utf-8")
    if payload is None:
        return head, {"content-type": "application/json"}
    return head + payload, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def model_metadata(name: str, spec, platform: str) -> Dict[str, Any]:
    c = spec.preprocess.crop
    return {
        "name": name, "versions": ["1"], "platform": platform,
        "inputs": [{"name": spec.input_name, "datatype": "FP32", "shape": [-1, 3, c, c]}],
        "outputs": [{"name": spec.output_name, "datatype": "FP32", "shape": [-1, spec.num_classes]}],
        "parameters": {"classes": list(spec.classes), "output": spec.output, "temperature": spec.temperature,
                       "threshold": spec.threshold, "positive": spec.positive,
                       "preprocess": spec.preprocess.to_dict()},
    }
