"""INT8 Q/DQ models from calibrated ranges (:mod:`edgecls.export.calib_cache`), in two forms, with float outputs.

Forms (both ``QuantFormat.QDQ``, per-channel INT8 weights):

- ``int8-qdq`` — for TensorRT 8.5 … 11 (explicit quantization, no calibrator): INT8 activations and weights,
  symmetric (every zero-point 0), FP32 weights kept with Q→DQ pairs (TensorRT quantizes them at build time;
  TensorRT 8.x does not take INT8 weight initializers) and FP32 bias (TensorRT has no INT32 bias dequantize).
- ``int8-cpu`` — fast on onnxruntime's CPU provider: uint8 activations (asymmetric), int8 weights with 7-bit range
  (``reduce_range``: x86 CPUs without VNNI saturate full-range u8s8 products), int32 bias.

Float outputs (:func:`float_outputs`): nothing after the last Conv/Gemm/MatMul is quantized in either form, so
the logits — and the probabilities a user is told — are not confined to 256 levels. Layers kept in higher
precision (FP32 in the ONNX; TensorRT may run them in FP16) are chosen by :mod:`edgecls.export.sensitivity`
(``--int8-keep-fp32 auto``) or given by :func:`fixed_keep_set`. The ranges reach ``quantize_static`` through its
calibration cache (no calibration data reader).
"""
from __future__ import annotations

import inspect
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np

from edgecls.core.errors import CapabilityError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgecls.export.calib_cache import Calibration

INT8_FORMS = ("int8-qdq", "int8-cpu")
KEEP_FP32_CHOICES = ("auto", "none", "ends", "depthwise", "depthwise+ends")
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")

def preprocess_for_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's quant_pre_process (optimization + shape inference), unused opset imports pruned."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgecls-qpre-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, os.fspath(src))
        quant_pre_process(os.fspath(src), os.fspath(dst), skip_symbolic_shape=True)
        out = onnx.load(os.fspath(dst))
    prune_opset_imports(out)
    return out


def prune_opset_imports(model: onnx.ModelProto) -> None:
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def sensitive_nodes(model: onnx.ModelProto) -> List[str]:
    """The first layer (the Conv/Gemm/MatMul fed by the graph input) and the last (the one the output comes
    from, through Reshape/Flatten-like nodes): the usual INT8 accuracy suspects."""
    weighted = WEIGHTED_OPS
    nodes = list(model.graph.node)
    inp = model.graph.input[0].name
    first = next((n for n in nodes if n.op_type in weighted and inp in n.input), None)
    producer = {o: n for n in nodes for o in n.output}
    last, name = None, model.graph.output[0].name
    while name in producer:
        n = producer[name]
        if n.op_type in weighted:
            last = n
            break
        name = n.input[0] if n.input else ""
    return [n.name for n in (first, last) if n is not None and n.name]


def depthwise_convs(model: onnx.ModelProto) -> List[str]:
    """Conv nodes with group > 1 (depthwise): little compute, but per-tensor INT8 hurts them most (MobileNets)."""
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv" and next((a.i for a in n.attribute if a.name == "group"), 1) > 1 and n.name:
            out.append(n.name)
    return out


def weighted_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the Conv/Gemm/MatMul nodes (the layers INT8 is about), in graph order."""
    return [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.name]


def fixed_keep_set(model: onnx.ModelProto, choice: str) -> Tuple[str, Tuple[str, ...]]:
    """``(label, node names kept in higher precision)`` for a fixed ``--int8-keep-fp32`` choice (not ``auto``,
    which :mod:`edgecls.export.sensitivity` decides on measurements)."""
    ends = tuple(sensitive_nodes(model))
    dw = tuple(depthwise_convs(model))
    options = {
        "none": ("full INT8", ()),
        "ends": ("first/last layer in FP32", ends),
        "depthwise": (f"{len(dw)} depthwise convs in FP32", dw),
        "depthwise+ends": (f"{len(dw)} depthwise convs and the first/last layer in FP32",
                           tuple(dict.fromkeys(dw + ends))),
    }
    if choice not in options:
        raise InputError(f"--int8-keep-fp32 {choice!r} is not one of {', '.join(KEEP_FP32_CHOICES)}")
    return options[choice]


# ----------------------------------------------------------------------------------------- float outputs


def _tail_nodes(model: onnx.ModelProto) -> List[int]:
    """Indices of the nodes after the last weighted node on every path to a graph output."""
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    stack, seen, tail = [o.name for o in model.graph.output], set(), set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        i = producer[t]
        if nodes[i].op_type in WEIGHTED_OPS:
            continue
        tail.add(i)
        stack.extend(x for x in nodes[i].input if x)
    return sorted(tail)


def float_outputs(model: onnx.ModelProto) -> int:
    """Remove every Q→DQ pair after the last weighted layer (in place); returns how many were removed.

    quantize_static quantizes the Gemm's output too, which puts the logits through a QuantizeLinear: with
    8 bits over the logit range, probabilities take a handful of values and near-ties become exact ties.
    """
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    outputs = {o.name for o in model.graph.output}
    drop, removed = set(), 0
    for i in _tail_nodes(model):
        dq = nodes[i]
        q = producer.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        x, y = q.input[0], dq.output[0]
        if y in outputs:  # keep the output's name: the float tensor takes it
            _rename(model, x, y, skip=(id(q),))
            x = y
        for n in model.graph.node:
            for j, name in enumerate(n.input):
                if name == y and n is not dq:
                    n.input[j] = x
        drop.add(id(dq))
        if not any(q.output[0] in n.input for n in model.graph.node if id(n) not in drop and n is not q):
            drop.add(id(q))
        removed += 1
    keep = [n for n in model.graph.node if id(n) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    prune_unused_initializers(model)
    return removed


def prune_unused_initializers(model: onnx.ModelProto) -> None:
    """Drop the initializers no node reads (in place)."""
    used = {x for n in model.graph.node for x in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def _rename(model: onnx.ModelProto, old: str, new: str, skip: Tuple[int, ...] = ()) -> None:
    for n in model.graph.node:
        for j, name in enumerate(n.output):
            if name == old:
                n.output[j] = new
        if id(n) in skip:
            continue
        for j, name in enumerate(n.input):
            if name == old:
                n.input[j] = new
    for v in model.graph.value_info:
        if v.name == old:
            v.name = new


def float_inputs(model: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Sequence[str]) -> int:
    """Feed the kept-in-FP32 ``nodes`` their activations unquantized (in place); returns the inputs changed.

    quantize_static's ``nodes_to_exclude`` keeps a node's weights and output float, but its input still goes
    through the Q/DQ pair its producer put on its own output — so the input's quantization error, often the
    larger part, stays. Each such input is rewired to the float tensor before the QuantizeLinear; where the
    uint8 QuantizeLinear had absorbed a Relu/Clip (the CPU form drops them), that activation is put back for the
    float consumer. Q/DQ pairs left without consumers are removed.
    """
    import onnx

    wanted = set(nodes)
    producer = {o: n for n in model.graph.node for o in n.output}
    fp_producer = {o: n for n in fp32.graph.node for o in n.output}
    fp_inits = {t.name: t for t in fp32.graph.initializer}
    inits = {t.name for t in model.graph.initializer}
    changed, made = 0, {}
    for node in list(model.graph.node):
        if node.name not in wanted:
            continue
        for j, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
                continue
            t = q.input[0]
            act = fp_producer.get(t)
            if act is not None and act.op_type in ("Relu", "Clip") and producer.get(t) is not None \
                    and producer[t].op_type != act.op_type:  # the activation went into the QuantizeLinear
                if t not in made:
                    clone = onnx.NodeProto()
                    clone.CopyFrom(act)
                    clone.name = f"{act.name}/edgecls_float"
                    clone.input[0] = t
                    del clone.output[:]
                    clone.output.append(f"{t}/edgecls_float")
                    for extra in clone.input[1:]:
                        if extra and extra not in inits and extra in fp_inits:
                            model.graph.initializer.append(fp_inits[extra])
                            inits.add(extra)
                    model.graph.node.append(clone)
                    made[t] = clone.output[0]
                t = made[t]
            node.input[j] = t
            changed += 1
    if changed:
        _prune_dead_qdq(model)
        _toposort(model)
    return changed


def _prune_dead_qdq(model: onnx.ModelProto) -> None:
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {x for n in model.graph.node for x in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        gone = {id(n) for n in dead}
        keep = [n for n in model.graph.node if id(n) not in gone]
        del model.graph.node[:]
        model.graph.node.extend(keep)
    prune_unused_initializers(model)


def _toposort(model: onnx.ModelProto) -> None:
    """Nodes in an order where every input is produced before it is used (ONNX requires it)."""
    nodes = list(model.graph.node)
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    out, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(x in ready for x in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"graph has a cycle or a missing input at {rest[0].name or rest[0].op_type}")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(out)


def quantized_tail(model: onnx.ModelProto) -> List[str]:
    """QuantizeLinear nodes after the last weighted layer (empty for edgecls's INT8 models)."""
    nodes = list(model.graph.node)
    return [nodes[i].name or nodes[i].output[0] for i in _tail_nodes(model) if nodes[i].op_type == "QuantizeLinear"]


def _form_options(form: str):
    from onnxruntime.quantization import QuantType

    if form == "int8-qdq":
        return dict(
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "AddQDQPairToWeight": True,
                           # TensorRT's placement: Q/DQ where a layer reads, not between Conv and its activation
                           # (a symmetric range over the pre-ReLU6 output wastes most of its 8 bits)
                           "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS)},
        )
    if form == "int8-cpu":
        # reduce_range: 7-bit weights. onnxruntime's x86 u8s8 kernels multiply-add pairs into int16
        # (VPMADDUBSW) and saturate without VNNI: with full 8-bit weights a MobileNetV2 on an AVX2 CPU lost 13
        # points of agreement with PyTorch that the Q/DQ graph itself does not lose
        return dict(
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
            extra_options={"WeightSymmetric": True},
        )
    raise InputError(f"INT8 form {form!r} is not one of {', '.join(INT8_FORMS)}")


_ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def _require_cache_support():
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise CapabilityError(
            f"INT8 export needs an onnxruntime whose quantize_static takes calibration_cache_path "
            f"(installed: {onnxruntime.__version__}); pip install -U onnxruntime"
        )
    return quantize_static


@dataclass(frozen=True)
class QuantizeInfo:
    form: str
    method: str
    excluded: Tuple[str, ...]
    op_counts: Dict[str, int] = field(default_factory=dict)
    float_outputs: int = 0  # Q/DQ pairs removed after the last weighted layer


def quantize(
    model: onnx.ModelProto, calibration: Calibration, form: str, exclude: Sequence[str] = (),
    keep_activations: bool = False,
) -> tuple[onnx.ModelProto, QuantizeInfo]:
    """``model`` (already through :func:`preprocess_for_quantization`) → the INT8 Q/DQ model of ``form``.

    ``keep_activations``: keep the Relu/Clip that a uint8 QuantizeLinear makes redundant (the deployed CPU form
    drops them; :mod:`edgecls.export.sensitivity` needs them to see each layer's true float input)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    quantize_static = _require_cache_support()
    opts = _form_options(form)
    if keep_activations:
        opts["extra_options"] = dict(opts["extra_options"], QDQKeepRemovableActivations=True)
    method = getattr(CalibrationMethod, _ORT_METHODS[calibration.method])
    data = {
        n: TensorData(lowest=np.array(a, dtype=np.float32), highest=np.array(b, dtype=np.float32))
        for n, (a, b) in calibration.ranges.items()
    }
    opset_before = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    with tempfile.TemporaryDirectory(prefix="edgecls-quant-") as tmp:
        src, dst, cache = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx", Path(tmp) / "ranges.json"
        onnx.save(model, os.fspath(src))
        save_tensors_data(TensorsData(method, data), cache)
        quantize_static(
            os.fspath(src), os.fspath(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            calibrate_method=method, calibration_cache_path=os.fspath(cache), nodes_to_exclude=list(exclude),
            **opts,
        )
        out = onnx.load(os.fspath(dst))
    prune_opset_imports(out)
    removed = float_outputs(out)
    if exclude:
        float_inputs(out, model, exclude)
    opset_after = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    if opset_after != opset_before:
        raise RuntimeError(f"quantization changed the opset from {opset_before} to {opset_after}")
    counts: Dict[str, int] = {}
    for n in out.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    if not counts.get("QuantizeLinear"):
        raise RuntimeError(f"{form}: quantization inserted no QuantizeLinear node; the model is not INT8")
    onnx.checker.check_model(out)
    return out, QuantizeInfo(form, calibration.method, tuple(exclude), dict(sorted(counts.items())), removed)


def zero_points(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    """``{Q/DQ node name: zero-point array}`` — for checking that the TensorRT form is symmetric."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            out[n.name or n.output[0]] = numpy_helper.to_array(inits[n.input[2]])
    return out
