"""Multiply-accumulates per image: counted from an ONNX model's Conv/Gemm/MatMul layers or a torch model's
Conv2d/Linear layers, else torchvision's documented figure for the architecture."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgecls.evaluation.models import PathLike, model_kind

log = logging.getLogger(__name__)

# torchvision's documented multiply-accumulates per 224x224 image (its "GFLOPS" column counts MACs); used only
# when the layers cannot be counted (no onnx package for an ONNX file)
ARCH_GMACS_224 = {
    "resnet18": 1.81, "resnet50": 4.09, "mobilenet_v2": 0.30, "mobilenet_v3_small": 0.06,
    "mobilenet_v3_large": 0.22, "efficientnet_b0": 0.39,
}


def _static(dims: Sequence[Any]) -> List[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in dims]


def count_macs_onnx(path: PathLike) -> Optional[float]:
    """Multiply-accumulates per image of an ONNX model's Conv/Gemm/MatMul layers (any Q/DQ or QLinear form)."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load(os.fspath(path), load_external_data=False)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as e:  # a model shape inference cannot follow: give up counting, don't fail the bench
        log.info("cannot infer shapes of %s (%s); MACs from the arch table", path, e)
        return None
    shapes: Dict[str, List[int]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = _static([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim])
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    # a DequantizeLinear's output has its input's shape (for Q/DQ weights whose value_info may be missing)
    for node in model.graph.node:
        if node.op_type in ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity") and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    weight_input = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
    macs = 0.0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type in weight_input:
            w = shapes.get(node.input[weight_input[node.op_type]])
            if out is None or w is None:
                return None
            macs += float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a = shapes.get(node.input[0])
            if out is None or a is None:
                return None
            k = a[0] if node.op_type == "Gemm" and any(
                at.name == "transA" and at.i for at in node.attribute) else a[-1]
            macs += float(np.prod(out)) * float(k)
    return macs / 1e9


def count_macs_torch(model: Any, crop: int) -> float:
    """GMACs per image of a torch model's Conv2d/Linear layers, by one forward pass with hooks."""
    import torch

    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop, crop))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0] / 1e9


def gmacs_of(path: str, arch: str, crop: int) -> Optional[float]:
    kind = model_kind(path)
    g = None
    if kind == "onnx":
        g = count_macs_onnx(path)
    elif kind == "checkpoint":
        from edgecls.reference.checkpoint import load_checkpoint

        g = count_macs_torch(load_checkpoint(path).build_model(), crop)
    if g is None and arch in ARCH_GMACS_224:
        g = ARCH_GMACS_224[arch] * (crop / 224.0) ** 2
    return g
