"""FP32 ONNX → FP16 ONNX with FP32 inputs and outputs (a Cast at each end), via onnxconverter-common.

Weights and compute are FP16 (half the file, TensorRT/GPU FP16 kernels); callers keep feeding float32 NCHW and
reading float32 logits, so the runtime needs no special case.
"""
from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from edgecls.core.errors import CapabilityError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise CapabilityError(
            "FP16 export needs onnxconverter-common: pip install 'edgecls[export]' (or pip install onnxconverter-common)"
        ) from e
    src = onnx.ModelProto.FromString(model.SerializeToString())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = float16.convert_float_to_float16(src, keep_io_types=True)
    clipped = [w for w in caught if "truncated" in str(w.message)]
    if clipped:
        log.info("FP16: %d constants outside FP16's range were clamped (e.g. %s)", len(clipped), clipped[0].message)
    for w in caught:
        if w not in clipped:
            log.debug("float16 converter: %s", w.message)
    float_t = onnx.TensorProto.FLOAT
    _casts_follow_their_outputs(out)
    for v in list(out.graph.input) + list(out.graph.output):
        if v.type.tensor_type.elem_type != float_t:
            raise RuntimeError(f"FP16 conversion changed the type of graph I/O {v.name!r}; expected float32")
    n16 = sum(1 for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    n32 = sum(1 for t in out.graph.initializer if t.data_type == float_t)
    if n16 == 0:
        raise RuntimeError("FP16 conversion produced no FP16 weights")
    log.info("FP16: %d FP16 initializers, %d left FP32", n16, n32)
    onnx.checker.check_model(out)
    return out


def _casts_follow_their_outputs(model: onnx.ModelProto) -> int:
    """Cast-to-float nodes whose output the converter declared FP16 now cast to FP16: the converter retypes the
    tensor but not the Cast, which onnxruntime refuses (timm's TF "same" padding computes its pads from the input
    shape through such Casts). Returns how many were changed."""
    import onnx

    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or declared.get(node.output[0]) != onnx.TensorProto.FLOAT16:
            continue
        for a in node.attribute:
            if a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.FLOAT16
                fixed += 1
    if fixed:
        log.info("FP16: %d Cast node(s) to float retargeted to float16 (shape arithmetic)", fixed)
    return fixed
