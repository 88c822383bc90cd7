"""PyTorch → one FP32 ONNX file: dynamic batch axis, opset 17 by default, simplified, spec embedded by the caller.

Opset 17 is what TensorRT 8.5 (JetPack 5) parses; ``--opset`` changes it. Opsets up to 20 use torch's
TorchScript-based exporter (``dynamo=False``), which writes one self-contained file and folds BatchNorm into the
convolutions; above 20 the dynamo exporter is used with external data turned off. The graph is then simplified
with onnxscript's optimizer (constant folding, Identity/Constant removal) when that keeps the outputs identical.
"""
from __future__ import annotations

import inspect
import io
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (INT8 Q/DQ) needs 13
TORCHSCRIPT_MAX_OPSET = 20
BATCH_DIM = "batch"


@dataclass(frozen=True)
class OnnxExportInfo:
    opset: int
    exporter: str
    simplified: bool
    nodes_before: int
    nodes_after: int
    op_counts: Dict[str, int]


def check_opset(opset: int) -> int:
    import torch.onnx._constants as consts  # the exporter's own limits

    max_opset = int(getattr(consts, "ONNX_MAX_OPSET", TORCHSCRIPT_MAX_OPSET))
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset:
        raise InputError(
            f"--opset {opset!r} is not supported: valid {MIN_OPSET}..{max_opset} with this torch "
            f"(default {DEFAULT_OPSET}, which TensorRT 8.5 / JetPack 5 parses; INT8 Q/DQ needs >= {MIN_OPSET})"
        )
    return opset


def _export_bytes(model: torch.nn.Module, spec: ModelSpec, opset: int) -> tuple:
    import torch

    c = spec.preprocess.crop
    dummy = torch.zeros(2, 3, c, c, dtype=torch.float32)
    params = inspect.signature(torch.onnx.export).parameters
    buf = io.BytesIO()
    kwargs = dict(input_names=[spec.input_name], output_names=[spec.output_name], opset_version=opset)
    if opset <= TORCHSCRIPT_MAX_OPSET:
        exporter = "torchscript"
        kwargs.update(
            dynamic_axes={spec.input_name: {0: BATCH_DIM}, spec.output_name: {0: BATCH_DIM}},
            do_constant_folding=True,
        )
        if "dynamo" in params:
            kwargs["dynamo"] = False
    else:
        exporter = "dynamo"
        batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
        kwargs.update(dynamo=True, external_data=False, dynamic_shapes=({0: batch},))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(model.eval(), (dummy,), buf, **kwargs)
    for w in caught:
        log.debug("torch.onnx.export: %s", w.message)
    return buf.getvalue(), exporter


def _run(model_bytes: bytes, x: np.ndarray, input_name: str) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    return sess.run(None, {input_name: x})[0]


def simplify(model: onnx.ModelProto, spec: ModelSpec) -> Optional[onnx.ModelProto]:
    """onnxscript's optimizer, kept only if it changes nothing observable (same opset, same I/O, same outputs).

    Returns None (and logs why) when the optimizer is unavailable or the result is not equivalent.
    """
    try:
        from onnxscript import optimizer
    except ImportError as e:
        log.info("onnxscript is not installed (%s): the ONNX graph is left unsimplified", e)
        return None
    import onnx

    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # their INFO lines describe each pass; ours says what matters
        lg.setLevel(max(logging.WARNING, lg.level))
    try:
        simplified = optimizer.optimize(onnx.ModelProto.FromString(model.SerializeToString()))
    except Exception as e:  # the optimizer is best effort: a failure is reported and the plain graph kept
        log.warning("ONNX simplification failed (%s: %s); keeping the unsimplified graph", type(e).__name__, e)
        return None
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    if _default_opset(simplified) != _default_opset(model) or _io_signature(simplified) != _io_signature(model):
        log.warning("ONNX simplification changed the opset or the inputs/outputs; keeping the unsimplified graph")
        return None
    c = spec.preprocess.crop
    x = np.random.default_rng(0).standard_normal((3, 3, c, c)).astype(np.float32)
    a = _run(model.SerializeToString(), x, spec.input_name)
    b = _run(simplified.SerializeToString(), x, spec.input_name)
    scale = max(float(np.abs(a).max()), 1.0)
    if a.shape != b.shape or not np.all(np.isfinite(b)) or float(np.abs(a - b).max()) > 1e-5 * scale:
        log.warning("ONNX simplification changed the outputs; keeping the unsimplified graph")
        return None
    return simplified


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)


def _io_signature(model: onnx.ModelProto) -> tuple:
    def sig(vis):
        return tuple(
            (v.name, v.type.tensor_type.elem_type, tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim))
            for v in vis
        )

    return sig(model.graph.input), sig(model.graph.output)


def export_onnx(
    model: torch.nn.Module, spec: ModelSpec, opset: int = DEFAULT_OPSET, simplify_graph: bool = True
) -> tuple[onnx.ModelProto, OnnxExportInfo]:
    """The FP32 ONNX model (in memory, no metadata yet) and facts about how it was made."""
    import onnx

    check_opset(opset)
    data, exporter = _export_bytes(model, spec, opset)
    proto = onnx.load_from_string(data)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise RuntimeError("the exporter wrote external data; edgecls needs a single-file ONNX")
    _check_io(proto, spec)
    nodes_before = len(proto.graph.node)
    simplified = simplify(proto, spec) if simplify_graph else None
    if simplified is not None:
        proto = simplified
    onnx.checker.check_model(proto)
    counts: Dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    info = OnnxExportInfo(
        opset=_default_opset(proto),
        exporter=exporter,
        simplified=simplified is not None,
        nodes_before=nodes_before,
        nodes_after=len(proto.graph.node),
        op_counts=dict(sorted(counts.items())),
    )
    log.info(
        "exported ONNX opset %d with the %s exporter: %d nodes%s", info.opset, exporter, info.nodes_after,
        f" (simplified from {nodes_before})" if info.simplified and nodes_before != info.nodes_after else "",
    )
    return proto, info


def _check_io(proto: onnx.ModelProto, spec: ModelSpec) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [spec.input_name] or outputs != [spec.output_name]:
        raise RuntimeError(f"exported graph has inputs {inputs} / outputs {outputs}, expected "
                           f"[{spec.input_name!r}] / [{spec.output_name!r}]")
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise RuntimeError(f"exported input has a fixed batch size ({dim0.dim_value}); expected a dynamic axis")
