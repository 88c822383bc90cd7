"""Cross-layer equalization of linear regions before INT8: exact in float, kinder to 8 bits.

A *region* is a set of tensors joined by ``Add`` nodes (a residual stream) whose producers are all convolutions
with nothing after them (MobileNetV2's linear bottlenecks, projection convs) and whose consumers are all ``Add``
nodes of the region or ordinary (group 1) convolutions. Scaling channel ``c`` of every producer's output by
``1/s_c`` and channel ``c`` of every consumer's input weights by ``s_c`` leaves the network's function unchanged
(everything between is linear), but changes what per-tensor INT8 sees: BatchNorm folding leaves such tensors with
channels of wildly different ranges (a few large ones set the scale, the others round to a handful of levels) and
the consumer weights with the inverse disparity. With ``s_c = sqrt(a_c / w_c)`` (``a_c``: the channel's largest
activation on calibration images; ``w_c``: the largest consumer weight reading it) both are balanced — the
data-aware form of Nagel et al.'s cross-layer equalization (ICCV 2019) with SmoothQuant's α = ½.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Set, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    tensors: Tuple[str, ...]
    producers: Tuple[str, ...]  # Conv node names
    consumers: Tuple[str, ...]  # Conv node names (group 1)


def _attr(node, name: str, default: int = 1) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def find_regions(model: onnx.ModelProto) -> List[Region]:
    """Every linear region of ``model`` that can be equalized (see the module)."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: Dict[str, list] = {}
    for n in nodes:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    outputs = {o.name for o in model.graph.output}
    inits = {t.name for t in model.graph.initializer}
    seen: Set[str] = set()
    regions = []
    for start in (n.output[0] for n in nodes if n.op_type == "Conv"):
        if start in seen:
            continue
        tensors, stack, ok = set(), [start], True
        while stack and ok:
            t = stack.pop()
            if t in tensors:
                continue
            tensors.add(t)
            p = producer.get(t)
            if t in outputs or p is None:
                ok = False
            elif p.op_type == "Add":
                stack.extend(x for x in p.input if x not in inits)
            elif p.op_type != "Conv" or len(p.input) < 2 or p.input[1] not in inits:
                ok = False
            for c in consumers.get(t, []):
                if c.op_type == "Add":
                    stack.extend(c.output)
                elif c.op_type != "Conv" or _attr(c, "group") != 1 or c.input[0] != t or c.input[1] not in inits:
                    ok = False
        seen |= tensors
        if not ok:
            continue
        prods = sorted({producer[t].name for t in tensors if producer[t].op_type == "Conv"})
        cons = sorted({c.name for t in tensors for c in consumers.get(t, []) if c.op_type == "Conv"})
        if prods and cons:
            regions.append(Region(tuple(sorted(tensors)), tuple(prods), tuple(cons)))
    return regions


def channel_maxima(model: onnx.ModelProto, tensors: List[str], x: np.ndarray, batch: int = 8) -> Dict[str, np.ndarray]:
    """``{tensor: per-channel max |value|}`` over the images ``x``."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    out: Dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="edgecls-cle-") as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(m, os.fspath(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        inp = sess.get_inputs()[0].name
        for i in range(0, len(x), batch):
            res = dict(zip(names, sess.run(None, {inp: x[i:i + batch]})))
            for t in tensors:
                a = np.abs(res[t]).max(axis=tuple(k for k in range(res[t].ndim) if k != 1))
                out[t] = a if t not in out else np.maximum(out[t], a)
    return out


def equalize(model: onnx.ModelProto, x: np.ndarray) -> Tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every linear region equalized on the images ``x``; returns (model, regions)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto.FromString(model.SerializeToString())
    regions = find_regions(m)
    if not regions:
        return m, 0
    maxima = channel_maxima(m, sorted({t for r in regions for t in r.tensors}), x)
    inits = {t.name: t for t in m.graph.initializer}
    by_name = {n.name: n for n in m.graph.node}
    done = 0
    for r in regions:
        a = np.max([maxima[t] for t in r.tensors], axis=0).astype(np.float64)
        ws = [numpy_helper.to_array(inits[by_name[c].input[1]]).astype(np.float64) for c in r.consumers]
        w = np.max([np.abs(v).max(axis=tuple(k for k in range(v.ndim) if k != 1)) for v in ws], axis=0)
        if a.shape != w.shape or not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(w <= 0):
            continue
        s = np.sqrt(a / w)
        s = np.clip(s / np.exp(np.mean(np.log(s))), 1e-3, 1e3)  # geometric mean 1: only relative scales matter
        for name in r.producers:
            n = by_name[name]
            for j in (1, 2):  # weight and bias: output channel c divided by s_c
                if j < len(n.input) and n.input[j] in inits:
                    t = inits[n.input[j]]
                    v = numpy_helper.to_array(t).astype(np.float64)
                    v = v / s.reshape([-1] + [1] * (v.ndim - 1))
                    t.CopyFrom(numpy_helper.from_array(v.astype(np.float32), t.name))
        for name in r.consumers:
            t = inits[by_name[name].input[1]]
            v = numpy_helper.to_array(t).astype(np.float64)
            v = v * s.reshape([1, -1] + [1] * (v.ndim - 2))
            t.CopyFrom(numpy_helper.from_array(v.astype(np.float32), t.name))
        done += 1
    log.info("cross-layer equalization: %d linear region(s)", done)
    return m, done
