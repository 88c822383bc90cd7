"""The KServe v2 / Open Inference Protocol JSON of ``edgecls serve``, with Triton's binary tensor extension.

Request (``POST /v2/models/<name>/infer``)::

    {"id": "42", "inputs": [{"name": "input", "shape": [N, 3, H, W], "datatype": "FP32", "data": [...]}],
     "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}

``data`` is the preprocessed NCHW tensor (row-major, flat or nested), as JSON numbers (strings are refused, as
Triton does, not converted). With the binary extension (what tritonclient
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
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.serve.uploads import UploadError

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_IMAGES_PER_REQUEST = 256


def short(value: Any, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters: error messages never echo a whole (hostile) request."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # very deep nesting; ints too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= n else text[: n - 3] + "..."


def _params(where: str, obj: Dict[str, Any]) -> Dict[str, Any]:
    """``obj["parameters"]``: absent/null is ``{}``; anything but a JSON object is a 400."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise UploadError(400, f"\"parameters\" of {where} must be a JSON object, got {short(params)}")
    return params


def _flag(where: str, params: Dict[str, Any], key: str, default: bool) -> bool:
    v = params.get(key, default)
    if not isinstance(v, bool):
        raise UploadError(400, f"parameter {key!r} of {where} must be true or false, got {short(v)}")
    return v


@dataclass(frozen=True)
class RequestedOutput:
    classification: int = 0  # 0: the raw tensor; k > 0: the top k as "p:index:label"
    binary: bool = False


@dataclass(frozen=True)
class InferRequest:
    id: Optional[str]
    batch: np.ndarray  # float32 (N, 3, H, W)
    output: RequestedOutput


def header_size(header_length: str) -> int:
    """The JSON length an ``Inference-Header-Content-Length`` claims (0 when not a number: the parser says why)."""
    try:
        return max(0, int(header_length))
    except ValueError:
        return 0


FAST_JSON = 1 << 20  # JSON requests over this size get their `data` array parsed by numpy (see _fast_data)
_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_NUMBER_BYTES = b"0123456789+-.eE, \t\r\n"
_LOOSE_DOTS = tuple(c + b"." for c in (b",", b" ", b"\t", b"\r", b"\n", b"-", b"+", b"e", b"E"))  # ".5" is not JSON
_MARK = "\u0000edgecls-data"


def _strict(numbers: bytes) -> bool:
    """What numpy would read but JSON does not: "+1", ".5", leading/trailing commas (cheap checks, no regex)."""
    core = numbers.strip()
    if not core or core[:1] in (b",", b".", b"+") or core.endswith(b","):
        return False
    if numbers.count(b"+") != numbers.count(b"e+") + numbers.count(b"E+"):
        return False
    return not any(p in numbers for p in _LOOSE_DOTS)


def _fast_data(body: Any) -> Optional[Tuple[Dict[str, Any], np.ndarray]]:
    """A big JSON request whose input has one flat array of plain numbers as ``data``: ``(the JSON without that
    array, the numbers as float64)``, parsed by numpy instead of ``json`` — 1.2 M numbers would otherwise become
    1.2 M Python floats (~3x the request's size) that fragment the heap for good. None when the request is not
    of that form (``json`` then parses it all and says what is wrong)."""
    for m in _DATA_KEY.finditer(body):
        start, end = m.end() - 1, body.find(b"]", m.end())
        if end < 0:
            return None
        numbers = bytes(body[start + 1:end])
        if b"[" in numbers or numbers.translate(None, _NUMBER_BYTES) or not _strict(numbers):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy < 2 warns (DeprecationWarning) on what it cannot read
                arr = np.fromstring(numbers, dtype=np.float64, sep=",")
        except (ValueError, DeprecationWarning):
            continue
        del numbers
        try:
            rest = json.loads(bytes(body[:start]) + json.dumps(_MARK).encode() + bytes(body[end + 1:]))
            inputs = rest.get("inputs") if isinstance(rest, dict) else None
            if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict) \
                    and inputs[0].get("data") == _MARK:  # exactly the array json would have given as `data`
                return rest, arr
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        return None
    return None


def _json_part(body: bytes, header_length: Optional[str]) -> Tuple[Dict[str, Any], bytes]:
    n = len(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise UploadError(400, f"{HEADER_LENGTH} {header_length!r} is not a number") from None
        if not 0 < n <= len(body):
            raise UploadError(400, f"{HEADER_LENGTH} {n} does not fit a body of {len(body)} bytes")
    if n == len(body) and n > FAST_JSON:
        fast = _fast_data(body)
        if fast is not None:
            fast[0]["inputs"][0]["data"] = fast[1]
            return fast[0], memoryview(b"")
    try:
        obj = json.loads(body if n == len(body) else body[:n])
    except (ValueError, UnicodeDecodeError) as e:
        raise UploadError(400, f"the inference request is not valid JSON: {e}") from None
    except RecursionError:
        raise UploadError(400, "the inference request's JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise UploadError(400, "the inference request must be a JSON object with an \"inputs\" list")
    return obj, memoryview(body)[n:]


def _tensor(inp: Dict[str, Any], binary: memoryview, input_name: str, crop: int) -> np.ndarray:
    if inp.get("name") != input_name:
        raise UploadError(400, f"unknown input {short(inp.get('name'))}; this model has one input, {input_name!r}")
    if inp.get("datatype") != "FP32":
        raise UploadError(400, f"input datatype {short(inp.get('datatype'))} is not supported; send \"FP32\"")
    shape = inp.get("shape")
    want = [3, crop, crop]
    if (not isinstance(shape, list) or len(shape) != 4 or not all(type(d) is int for d in shape)
            or shape[1:] != want or not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST):
        raise UploadError(400, f"input shape {short(shape)} is not supported; send [N, 3, {crop}, {crop}] with "
                               f"1 <= N <= {MAX_IMAGES_PER_REQUEST} (preprocessed NCHW images)")
    count = math.prod(shape)
    size = _params("the input", inp).get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != 4 * count or len(binary) < size:
            raise UploadError(400, f"binary_data_size {short(size)} does not match shape {shape} (needs the "
                                   f"integer {4 * count}, {len(binary)} bytes sent)")
        arr = np.frombuffer(binary[:size], dtype="<f4").astype(np.float32)
    else:
        arr = _numbers(inp.get("data"), count, shape)
    if not np.all(np.isfinite(arr)):
        raise UploadError(400, "input data contains NaN or inf")
    return arr.reshape(shape)


def _numbers(data: Any, count: int, shape: List[int]) -> np.ndarray:
    """JSON ``data`` as float32: numbers only (flat or nested as ``shape``); strings, booleans, objects: 400."""
    if isinstance(data, np.ndarray):  # parsed by _fast_data
        if data.size != count:
            raise UploadError(400, f"input data has {data.size} values; shape {shape} needs {count}")
        with np.errstate(over="ignore", invalid="ignore"):
            return data.astype(np.float32)
    if not isinstance(data, list):
        raise UploadError(400, f"input data must be a list of numbers, got {short(data)}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(data)  # no dtype: strings stay strings (refused below), not parsed as numbers
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError):
        raise UploadError(400, "input data must be a list of numbers (flat, or nested as the shape)") from None
    if arr.dtype.kind not in "iuf":
        raise UploadError(400, "input data must be JSON numbers (FP32); strings, booleans, nulls and objects are "
                               "not converted")
    if arr.size != count:
        raise UploadError(400, f"input data has {arr.size} values; shape {shape} needs {count}")
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32).reshape(-1)


def _requested(obj: Dict[str, Any], output_name: str) -> RequestedOutput:
    outs = obj.get("outputs")
    outs = [] if outs is None else outs
    default_binary = _flag("the request", _params("the request", obj), "binary_data_output", False)
    if not isinstance(outs, list) or len(outs) > 1:
        raise UploadError(400, f"\"outputs\" must list at most one output ({output_name!r})")
    if not outs:
        return RequestedOutput(0, default_binary)
    out = outs[0]
    if not isinstance(out, dict) or out.get("name") != output_name:
        raise UploadError(400, f"unknown output {short(out.get('name') if isinstance(out, dict) else out)}; "
                               f"this model has one output, {output_name!r}")
    params = _params("the output", out)
    k = params.get("classification", 0)
    if type(k) is not int or k < 0:
        raise UploadError(400, f"classification must be an integer >= 0, got {short(k)}")
    return RequestedOutput(k, _flag("the output", params, "binary_data", default_binary))


def parse_infer_request(body: Any, header_length: Optional[str], input_name: str, output_name: str,
                        crop: int) -> InferRequest:
    """The request's id, its images as a float32 NCHW batch, and what output it wants; UploadError (400) else."""
    obj, binary = _json_part(body, header_length)
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise UploadError(400, f"\"inputs\" must be a list with one tensor ({input_name!r})")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise UploadError(400, f"\"id\" must be a string, got {short(rid)}")
    _params("the request", obj)
    return InferRequest(rid, _tensor(inputs[0], binary, input_name, crop), _requested(obj, output_name))


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
                   probs: np.ndarray, classes: Sequence[str], version: str = "1",
                   sha256: Optional[str] = None) -> Tuple[bytes, Dict[str, str]]:
    """``(body, headers)`` of the response; binary outputs follow the JSON (with the header giving its length).
    ``version`` and ``sha256`` name the model that answered (``model_version``, ``parameters.model_sha256``)."""
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
    doc: Dict[str, Any] = {"model_name": model_name, "model_version": str(version), "outputs": [entry]}
    if sha256:
        doc["parameters"] = {"model_sha256": sha256}
    if req.id is not None:
        doc["id"] = req.id
    head = json.dumps(doc).encode("utf-8")
    if payload is None:
        return head, {"content-type": "application/json"}
    return head + payload, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def model_metadata(name: str, spec, platform: str, versions: Sequence[str] = ("1",)) -> Dict[str, Any]:
    c = spec.preprocess.crop
    return {
        "name": name, "versions": list(versions), "platform": platform,
        "inputs": [{"name": spec.input_name, "datatype": "FP32", "shape": [-1, 3, c, c]}],
        "outputs": [{"name": spec.output_name, "datatype": "FP32", "shape": [-1, spec.num_classes]}],
        "parameters": {"classes": list(spec.classes), "output": spec.output, "temperature": spec.temperature,
                       "threshold": spec.threshold, "positive": spec.positive,
                       "preprocess": spec.preprocess.to_dict()},
    }


def model_config(name: str, spec, platform: str, max_wait_ms: float, max_batch: int,
                 versions: Sequence[str] = ("1",)) -> Dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/<name>/config``, tritonclient's ``get_model_config``) in its
    JSON form: what Triton's ``config.pbtxt`` for this model would say (the loaded version, NCHW FP32 in, FP32
    out)."""
    c = spec.preprocess.crop
    return {
        "name": name, "platform": platform, "backend": platform, "max_batch_size": MAX_IMAGES_PER_REQUEST,
        "version_policy": {"specific": {"versions": [int(v) for v in versions]}},
        "input": [{"name": spec.input_name, "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [3, c, c]}],
        "output": [{"name": spec.output_name, "data_type": "TYPE_FP32", "dims": [spec.num_classes]}],
        "dynamic_batching": {"preferred_batch_size": [max_batch],
                             "max_queue_delay_microseconds": int(round(max_wait_ms * 1000))},
        "instance_group": [{"count": 1}],
    }
