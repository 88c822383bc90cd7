"""Which layers to keep in higher precision: per-layer quantization error measured on calibration images, then
the fewest of the most sensitive layers that make the INT8 model pass its gates.

**Per-layer SQNR** (:func:`layer_sensitivity`): one run of the fully quantized Q/DQ model (optimizations off,
so Q/DQ execute as written) in which every weighted layer (Conv/Gemm/MatMul) is paired with a float twin: the
same node fed the *same* input before its QuantizeLinear, with the original FP32 weights and bias. The twin
isolates what quantizing this layer alone (its input activation and its weights) does to its output, apart from
the error accumulated upstream — ``SQNR = 10·log10(Σ y² / Σ (y_q − y)²)`` over the images. onnxruntime's
``quantization.qdq_loss_debug`` reports the activation and weight errors separately (and the cross-model error,
which mixes in upstream layers); the twin gives the layer's own output error in one pass.

**Search** (:func:`fewest_passing`): layers ranked from lowest SQNR; keep the first ``k`` in FP32 for
``k = 0, 1, 2, 4, …`` until a candidate passes, then bisect down to the smallest passing ``k``. The caller's
``passes(k)`` quantizes, re-fits the confidence and applies the gates on the *selection* images only.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.export.quantize import WEIGHTED_OPS

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)

TWIN_PREFIX = "edgecls_fp32_twin/"


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    op: str
    sqnr_db: float  # higher is better; +inf when quantization changes nothing
    macs: int  # multiply-accumulates per image
    weight_params: int

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, "op": self.op, "sqnr_db": None if math.isinf(self.sqnr_db) else
                round(self.sqnr_db, 2), "macs": self.macs, "weight_params": self.weight_params}


# ------------------------------------------------------------------------------------------------ costs


def layer_costs(model: onnx.ModelProto, crop: int) -> Dict[str, Tuple[int, int]]:
    """``{weighted node: (MACs per image, weight parameters)}`` from shapes inferred at batch 1."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto.FromString(model.SerializeToString())
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, crop, crop)):
        d.ClearField("dim_param")
        d.dim_value = v
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    inits = {t.name: numpy_helper.to_array(t).shape for t in m.graph.initializer}
    out: Dict[str, Tuple[int, int]] = {}
    for n in m.graph.node:
        if n.op_type not in WEIGHTED_OPS or not n.name or len(n.input) < 2:
            continue
        w = inits.get(n.input[1])
        y = shapes.get(n.output[0])
        if w is None or not y or not all(y):
            continue
        params = int(np.prod(w))
        if n.op_type in ("Conv", "ConvTranspose"):
            macs = int(np.prod(y)) * int(np.prod(w[1:]))
        else:  # Gemm / MatMul: every output element is one dot product over K
            k = w[0] if n.op_type == "MatMul" or not any(a.name == "transB" and a.i for a in n.attribute) else w[1]
            macs = int(np.prod(y)) * int(k)
        out[n.name] = (macs, params)
    return out


# ------------------------------------------------------------------------------------------- SQNR by layer


def _float_input(m: onnx.ModelProto, tensor: str, producer: Dict[str, Any], inits: set, memo: Dict[str, str]) -> str:
    """The float value of ``tensor`` with the Q/DQ pairs removed back to the nearest weighted layer, merge (a node
    with several activation inputs, e.g. a residual Add) or graph input; cloning the single-input ops on the way
    (Relu, Clip, pooling, Flatten, ...). Returns the name of that float tensor."""
    import onnx

    if tensor in memo:
        return memo[tensor]
    n = producer.get(tensor)
    out = tensor
    if n is not None and n.op_type == "DequantizeLinear":
        q = producer.get(n.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            out = _float_input(m, q.input[0], producer, inits, memo)
    elif n is not None and n.op_type not in WEIGHTED_OPS and n.op_type != "QuantizeLinear":
        acts = [x for x in n.input if x and x not in inits]
        if len(acts) == 1:
            src = _float_input(m, acts[0], producer, inits, memo)
            if src != acts[0]:
                clone = onnx.NodeProto()
                clone.CopyFrom(n)
                clone.name = TWIN_PREFIX + n.name
                for j, x in enumerate(clone.input):
                    if x == acts[0]:
                        clone.input[j] = src
                del clone.output[:]
                clone.output.extend(TWIN_PREFIX + o for o in n.output)
                m.graph.node.append(clone)
                out = TWIN_PREFIX + tensor
    memo[tensor] = out
    return out


def _twin_model(fp32: onnx.ModelProto, qmodel: onnx.ModelProto) -> Tuple[onnx.ModelProto, Dict[str, Tuple[str, str]]]:
    """``qmodel`` with a float twin beside each quantized weighted layer; ``{layer: (quantized out, twin out)}``.

    The twin's input is the quantized model's own activation with the Q/DQ pairs since the previous weighted
    layer (or merge) taken out (:func:`_float_input`): the layer's error includes its input's quantization and its
    weights', not the error that reached that input from further upstream."""
    import onnx

    m = onnx.ModelProto.FromString(qmodel.SerializeToString())
    producer = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name for t in m.graph.initializer}
    fnodes = {n.name: n for n in fp32.graph.node if n.op_type in WEIGHTED_OPS and n.name}
    finits = {t.name: t for t in fp32.graph.initializer}
    pairs: Dict[str, Tuple[str, str]] = {}
    added, memo = set(), {}
    for qn in list(m.graph.node):
        fn = fnodes.get(qn.name)
        if qn.op_type not in WEIGHTED_OPS or fn is None:
            continue
        x = _float_input(m, qn.input[0], producer, inits, memo)
        quantized_weight = len(qn.input) > 1 and qn.input[1] not in finits
        if x == qn.input[0] and not quantized_weight:
            continue  # kept in FP32: nothing to measure
        twin = onnx.NodeProto()
        twin.CopyFrom(fn)
        twin.name = TWIN_PREFIX + fn.name
        twin.input[0] = x
        for j in range(1, len(fn.input)):
            if fn.input[j] in finits:
                twin.input[j] = TWIN_PREFIX + fn.input[j]
                if fn.input[j] not in added:
                    t = onnx.TensorProto()
                    t.CopyFrom(finits[fn.input[j]])
                    t.name = TWIN_PREFIX + fn.input[j]
                    m.graph.initializer.append(t)
                    added.add(fn.input[j])
        del twin.output[:]
        twin.output.append(TWIN_PREFIX + "out/" + fn.output[0])
        m.graph.node.append(twin)
        pairs[qn.name] = (qn.output[0], twin.output[0])
    existing = {o.name for o in m.graph.output}
    for a, b in pairs.values():
        for name in (a, b):
            if name not in existing:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
                existing.add(name)
    return m, pairs


def layer_sqnr(fp32: onnx.ModelProto, qmodel: onnx.ModelProto, x: np.ndarray, batch: int = 8) -> Dict[str, float]:
    """``{layer: SQNR in dB}`` of each quantized weighted layer of ``qmodel`` on the images ``x`` (NCHW)."""
    import onnx
    import onnxruntime as ort

    m, pairs = _twin_model(fp32, qmodel)
    signal = {k: 0.0 for k in pairs}
    noise = {k: 0.0 for k in pairs}
    with tempfile.TemporaryDirectory(prefix="edgecls-sqnr-") as tmp:
        path = Path(tmp) / "twins.onnx"
        onnx.save(m, os.fspath(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ as written
        sess = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        input_name = sess.get_inputs()[0].name
        for i in range(0, len(x), batch):
            outs = dict(zip(names, sess.run(None, {input_name: x[i:i + batch]})))
            for k, (a, b) in pairs.items():
                ref = outs[b].astype(np.float64)
                signal[k] += float(np.sum(ref * ref))
                noise[k] += float(np.sum((outs[a] - ref) ** 2))
    return {k: (math.inf if noise[k] == 0 else 10.0 * math.log10(max(signal[k], 1e-30) / noise[k])) for k in pairs}


def layer_sensitivity(fp32: onnx.ModelProto, qmodel: onnx.ModelProto, x: np.ndarray, crop: int,
                      ) -> List[LayerSensitivity]:
    """The quantized layers of ``qmodel``, most sensitive (lowest SQNR) first."""
    sqnr = layer_sqnr(fp32, qmodel, x)
    costs = layer_costs(fp32, crop)
    ops = {n.name: n.op_type for n in fp32.graph.node}
    out = [LayerSensitivity(k, ops.get(k, "?"), v, *costs.get(k, (0, 0))) for k, v in sqnr.items()]
    return sorted(out, key=lambda s: (s.sqnr_db, s.name))


# ----------------------------------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchResult:
    keep: Optional[int]  # the fewest layers kept that passed; None: none within the limit
    tried: Dict[int, bool]


def fewest_passing(passes: Callable[[int], bool], limit: int) -> SearchResult:
    """The smallest ``k`` in ``0..limit`` with ``passes(k)``: ``k = 0, 1, 2, 4, …`` (capped at ``limit``) until
    one passes, then bisection between the last failure and it (each ``k`` evaluated at most once)."""
    tried: Dict[int, bool] = {}

    def ok(k: int) -> bool:
        if k not in tried:
            tried[k] = bool(passes(k))
        return tried[k]

    if ok(0):
        return SearchResult(0, tried)
    lo, hi, k = 0, None, 1
    while k <= limit:
        if ok(k):
            hi = k
            break
        lo = k
        if k == limit:
            break
        k = min(2 * k, limit)
    if hi is None:
        return SearchResult(None, tried)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return SearchResult(hi, tried)


def describe_kept(kept: Sequence[LayerSensitivity], total_macs: int, total_params: int) -> str:
    """One line: the layers kept, their SQNR and their share of the model's compute and weights."""
    if not kept:
        return "no layer kept in higher precision (full INT8)"
    macs = sum(s.macs for s in kept)
    params = sum(s.weight_params for s in kept)
    layers = ", ".join(s.name + ("" if math.isnan(s.sqnr_db) else f" ({s.sqnr_db:.1f} dB)") for s in kept[:8]) \
        + (" …" if len(kept) > 8 else "")
    share = f"{100 * macs / total_macs:.1f}% of the MACs" if total_macs else "?"
    return (f"{len(kept)} layer(s) kept in FP32: {layers}; {share}, +{3 * params / 2**10:.0f} KB of weights "
            f"(FP32 instead of INT8, {100 * params / max(total_params, 1):.1f}% of them)")
