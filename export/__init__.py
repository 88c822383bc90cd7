"""edgecls.export — turn a ``best.pt`` into deployable artifacts, each proven equal to the PyTorch model.

Artifacts (in an export folder, default ``runs/export/<name>``):

- ``model.onnx`` FP32 (one file, dynamic batch, opset 17 by default for TensorRT 8.5 / JetPack 5),
- ``model_fp16.onnx`` FP16 weights and compute with FP32 inputs/outputs (``--fp16``),
- ``model_int8_qdq.onnx`` symmetric INT8 Q/DQ, the form TensorRT builds from, and ``model_int8_cpu.onnx``
  uint8-activation Q/DQ, fast on onnxruntime's CPU provider (``--int8``, calibrated on images),
- each with its ``<stem>.json`` :class:`~edgecls.runtime.spec.ModelSpec` sidecar (also embedded in the ONNX
  ``metadata_props``), a ``parity.json`` and optionally TensorRT engines.

Every artifact is checked against PyTorch on held-out images before it is given its final name (see
:mod:`edgecls.export.parity`). Importing this package is cheap: torch, onnx and onnxruntime are imported lazily
by the submodules that need them.
"""
from __future__ import annotations

ARTIFACT_NAMES = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "int8-qdq": "model_int8_qdq.onnx",
    "int8-cpu": "model_int8_cpu.onnx",
}

__all__ = ["ARTIFACT_NAMES"]
