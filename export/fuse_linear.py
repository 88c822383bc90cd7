"""Fuse a linear bottleneck into the 1×1 convolution that reads it: exact in float, one quantized tensor less.

MobileNetV2's blocks end in a 1×1 *projection* with no activation (the linear bottleneck); where no residual adds
to it, the next block's 1×1 *expansion* is its only reader. The two are one linear map, ``W_e · W_p``; computing it
as one convolution skips the bottleneck tensor, which per-tensor INT8 must otherwise represent. BatchNorm folding
can leave that pair ill-conditioned — a channel whose large weights cancel a large bias (products28's MobileNetV2:
|w| up to 127 against a bias of 1974 in ``features.2``'s expansion), amplifying the bottleneck's quantization
noise to the size of the signal — and the fused map does not pass through that tensor at all.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Collection, Dict, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)


def _attrs(node) -> Dict[str, object]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pointwise(node, inits) -> bool:
    """A 1×1, stride-1, unpadded, ungrouped Conv with constant weights and bias."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    a = _attrs(node)
    w = inits[node.input[1]]
    return (w.ndim == 4 and w.shape[2:] == (1, 1) and a.get("group", 1) == 1
            and all(s == 1 for s in a.get("strides", [1, 1])) and not any(a.get("pads", [0, 0, 0, 0]))
            and (len(node.input) < 3 or node.input[2] in inits))


MAX_MAC_GROWTH = 1.5  # fuse a pair only when the fused conv costs at most this many times the pair's MACs


def fuse_pointwise_pairs(model: onnx.ModelProto, max_growth: float = MAX_MAC_GROWTH,
                         only: Optional[Collection[str]] = None) -> Tuple[onnx.ModelProto, List[str]]:
    """``(model with each pointwise Conv → pointwise Conv pair fused, the fused pairs as 'A+B')``; the first conv's
    output must have the second as its only reader and not be a graph output, and the fused conv may cost at most
    ``max_growth`` times the pair's multiply-adds; ``only``: the second convs that may be fused (by node name).
    The input model is not changed."""
    import onnx
    from onnx import helper, numpy_helper

    from edgecls.export.quantize import prune_unused_initializers

    m = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    readers: Dict[str, List] = {}
    for n in m.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    outputs = {o.name for o in m.graph.output}
    fused, drop, new_inits = [], set(), []
    for a in list(m.graph.node):
        out = a.output[0] if a.output else ""
        rd = readers.get(out, [])
        if id(a) in drop or out in outputs or len(rd) != 1 or not _pointwise(a, inits) or not _pointwise(rd[0], inits):
            continue
        b = rd[0]
        if id(b) in drop or (only is not None and b.name not in only):
            continue
        wa, wb = inits[a.input[1]][:, :, 0, 0].astype(np.float64), inits[b.input[1]][:, :, 0, 0].astype(np.float64)
        (mid, cin), cout = wa.shape, wb.shape[0]
        if cout * cin > max_growth * (mid * cin + cout * mid):
            continue
        ba = inits[a.input[2]].astype(np.float64) if len(a.input) > 2 else np.zeros(wa.shape[0])
        bb = inits[b.input[2]].astype(np.float64) if len(b.input) > 2 else np.zeros(wb.shape[0])
        w = (wb @ wa)[:, :, None, None].astype(np.float32)
        bias = (wb @ ba + bb).astype(np.float32)
        name = f"{b.name or b.output[0]}/fused"
        new_inits += [numpy_helper.from_array(w, name + "/W"), numpy_helper.from_array(bias, name + "/B")]
        conv = helper.make_node("Conv", [a.input[0], name + "/W", name + "/B"], list(b.output), name=b.name)
        conv.attribute.extend([helper.make_attribute("kernel_shape", [1, 1])])
        m.graph.node.insert(list(m.graph.node).index(b), conv)
        drop.update({id(a), id(b)})
        fused.append(f"{a.name}+{b.name}")
    keep = [n for n in m.graph.node if id(n) not in drop]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(new_inits)
    prune_unused_initializers(m)
    names = {o for n in m.graph.node for o in n.output}
    vi = [v for v in m.graph.value_info if v.name in names]
    del m.graph.value_info[:]
    m.graph.value_info.extend(vi)
    if fused:
        log.info("fused %d linear bottleneck(s) into the convolution reading them", len(fused))
    return m, fused
