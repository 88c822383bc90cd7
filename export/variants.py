"""Deployment variants of the FP32 ONNX: probabilities in the graph, raw-pixel input, or both.

Servers and video pipelines apply none of edgecls's own pre/post-processing:

- ``probs`` (``model_probs.onnx``): the graph ends in ``softmax(logits / T)`` with the model's temperature, so
  Triton's classification extension ranks calibrated probabilities and DeepStream's ``classifier-threshold``
  compares with the probability the runtime reports. Output ``probs``.
- ``raw`` (``model_raw.onnx``): input ``input`` takes 0–255 RGB floats (NCHW, resized and cropped); the
  per-channel normalization ``x · 1/(255·std) − mean/std`` is two nodes at the head of the graph, with the same
  float32 constants the runtime uses. DeepStream's nvinfer has one scale factor for all channels, so this is what
  lets it run the model exactly (``net-scale-factor=1``, ``offsets=0;0;0``).
- ``raw-probs`` (``model_raw_probs.onnx``): both (what ``export --deepstream`` ships).

Each variant carries a spec that tells the runtime what it is (``output="probs"``; raw input as ``mean 0,
std 1/255``, which makes the runtime's own normalization the identity on 0–255), so ``edgecls run``/``serve`` give
the same results with any of them. Parity: each is compared with the FP32 ``model.onnx`` it is derived from, on
the export's parity images, through the runtime backend: probabilities within 1e-6 of ``softmax(logits / T)``,
raw-input logits within 1e-5 · max(1, max |logit|); top-1 agreement and accuracy are against PyTorch as usual.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec, PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgecls.export.parity import ParityData, ParityReport, Reference

VARIANT_NAMES: Dict[str, str] = {
    "probs": "model_probs.onnx",
    "raw": "model_raw.onnx",
    "raw-probs": "model_raw_probs.onnx",
}
PROBS_TOLERANCE = 1e-6  # max |Δprob| against softmax(model.onnx logits / T)
RAW_LOGIT_TOLERANCE = 1e-5  # max |Δlogit| against model.onnx, times max(1, max |logit|)
PROBS_OUTPUT = "probs"
RAW_STD = 1.0 / 255.0  # a spec with mean 0, std 1/255 makes the runtime's normalization the identity on 0..255


def parse_variants(text: Optional[str]) -> Tuple[str, ...]:
    """``"probs,raw"`` → ("probs", "raw"); InputError naming the valid variants."""
    names = tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    bad = [n for n in names if n not in VARIANT_NAMES]
    if bad:
        raise InputError(f"--variants {','.join(bad)!r}: valid variants are {', '.join(VARIANT_NAMES)}")
    return names


def has_probs(variant: str) -> bool:
    return variant in ("probs", "raw-probs")


def has_raw_input(variant: str) -> bool:
    return variant in ("raw", "raw-probs")


def raw_preprocess(pre: PreprocessSpec) -> PreprocessSpec:
    """The same resize and crop, with a normalization that leaves 0..255 pixel values as they are."""
    return dataclasses.replace(pre, mean=(0.0, 0.0, 0.0), std=(RAW_STD,) * 3)


def is_raw_input(pre: PreprocessSpec) -> bool:
    """True for a spec whose model takes 0..255 pixels (:func:`raw_preprocess`)."""
    return all(m == 0.0 for m in pre.mean) and all(abs(s - RAW_STD) < 1e-12 for s in pre.std)


def variant_spec(spec: ModelSpec, variant: str) -> ModelSpec:
    """What the runtime must know about a variant of a model with ``spec``."""
    changes = {}
    if has_probs(variant):
        changes.update(output="probs", output_name=PROBS_OUTPUT)
    if has_raw_input(variant):
        changes["preprocess"] = raw_preprocess(spec.preprocess)
    return spec.replace(**changes)


def normalization_constants(pre: PreprocessSpec) -> Tuple[np.ndarray, np.ndarray]:
    """``(scale, bias)`` float32 per channel, computed as the runtime's preprocessing computes them."""
    std = np.asarray(pre.std, dtype=np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


# ------------------------------------------------------------------------------------------- graph edits


def _rename_uses(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _add_raw_input(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Prepend ``Mul(scale) → Add(bias)`` so the graph input takes 0..255 pixels (same name, same shape)."""
    from onnx import helper, numpy_helper

    g = model.graph
    inp = next((i for i in g.input if i.name == spec.input_name), None)
    if inp is None:
        raise InputError(f"the ONNX graph has no input {spec.input_name!r} (inputs: {[i.name for i in g.input]})")
    scale, bias = normalization_constants(spec.preprocess)
    name = spec.input_name
    normalized, scaled = f"{name}_normalized", f"{name}_scaled"
    _rename_uses(g, name, normalized)
    g.initializer.extend([
        numpy_helper.from_array(scale.reshape(1, 3, 1, 1), f"{name}_scale_per_channel"),
        numpy_helper.from_array(bias.reshape(1, 3, 1, 1), f"{name}_bias_per_channel"),
    ])
    nodes = [
        helper.make_node("Mul", [name, f"{name}_scale_per_channel"], [scaled], name="edgecls_raw_scale"),
        helper.make_node("Add", [scaled, f"{name}_bias_per_channel"], [normalized], name="edgecls_raw_bias"),
    ]
    for n in reversed(nodes):
        g.node.insert(0, n)


def _add_softmax(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Append ``Div(T) → Softmax(axis=1)``; the graph output becomes ``probs`` (same shape as the logits)."""
    from onnx import helper, numpy_helper

    g = model.graph
    out = next((o for o in g.output if o.name == spec.output_name), None)
    if out is None:
        raise InputError(f"the ONNX graph has no output {spec.output_name!r} (outputs: {[o.name for o in g.output]})")
    logits = out.name
    g.initializer.append(numpy_helper.from_array(np.asarray(spec.temperature, dtype=np.float32), "edgecls_temperature"))
    g.node.extend([
        helper.make_node("Div", [logits, "edgecls_temperature"], ["logits_tempered"], name="edgecls_temperature_div"),
        helper.make_node("Softmax", ["logits_tempered"], [PROBS_OUTPUT], name="edgecls_softmax", axis=1),
    ])
    new_out = type(out)()
    new_out.CopyFrom(out)
    new_out.name = PROBS_OUTPUT
    g.output.remove(out)
    g.output.append(new_out)


def build_variant(fp32: onnx.ModelProto, spec: ModelSpec, variant: str) -> onnx.ModelProto:
    """A new ModelProto: ``fp32`` (the exported model.onnx, untouched) with the variant's nodes added."""
    import onnx

    if variant not in VARIANT_NAMES:
        raise InputError(f"variant {variant!r}: valid {', '.join(VARIANT_NAMES)}")
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    if has_raw_input(variant):
        _add_raw_input(model, spec)
    if has_probs(variant):
        _add_softmax(model, spec)
    onnx.checker.check_model(model)
    return model


# ------------------------------------------------------------------------------------------------ parity


def raw_pixels(x: np.ndarray, pre: PreprocessSpec) -> np.ndarray:
    """Normalized parity images back to their 0..255 pixel values (exact: they were integers)."""
    scale, bias = normalization_constants(pre)
    raw = (x.astype(np.float64) - bias[None, :, None, None]) / scale[None, :, None, None]
    rounded = np.rint(raw)
    if raw.size and float(np.abs(raw - rounded).max()) > 1e-2:
        raise RuntimeError("parity images do not invert to integer pixel values; are they normalized with this spec?")
    return np.clip(rounded, 0, 255).astype(np.float32)


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    from edgecls.runtime.metrics import softmax

    return np.asarray(softmax(np.asarray(logits, dtype=np.float32), temperature), dtype=np.float64)


def _label_metrics(y: Optional[np.ndarray], probs: np.ndarray, spec: ModelSpec):
    if y is None or probs.shape[0] == 0:
        return None, None, {}
    from edgecls.runtime.metrics import classification_report

    rep = classification_report(y, probs, spec.classes, positive=spec.positive,
                                threshold=spec.threshold if spec.positive is not None else None)
    pos = float(rep.positive_metrics["recall"]) if rep.positive_metrics is not None else None
    return float(rep.accuracy), pos, {c.name: float(c.recall) for c in rep.per_class}


def compare_variant(
    artifact: str, path: os.PathLike, variant: str, precision: str, outputs: np.ndarray, base_logits: np.ndarray,
    reference: Reference, data: ParityData, spec: ModelSpec, providers: Sequence[str] = (), seconds: float = 0.0,
    agreement_min: Optional[float] = None,
) -> ParityReport:
    """A variant's :class:`ParityReport`: the checks against ``base_logits`` (model.onnx on the same images), top-1
    agreement, accuracy and recall against the PyTorch reference. ``agreement_min`` replaces the Δ checks for
    reduced-precision builds (an FP16 engine of the variant)."""
    from edgecls.export.parity import Check, ParityReport

    size = Path(path).stat().st_size if Path(path).is_file() else 0
    outputs = np.asarray(outputs)
    scale = max(float(np.abs(base_logits).max()) if base_logits.size else 0.0, 1.0)
    common = dict(artifact=artifact, path=os.fspath(path), precision=precision, size_bytes=size, n=data.n,
                  providers=tuple(providers), logit_scale=scale, reference_accuracy=reference.accuracy,
                  positive=spec.positive, seconds=seconds, notes=(f"{variant} variant: Δ against model.onnx",))
    if outputs.shape != base_logits.shape or not np.all(np.isfinite(outputs)):
        why = (f"output shape {outputs.shape} differs from model.onnx's {base_logits.shape}"
               if outputs.shape != base_logits.shape else f"{int((~np.isfinite(outputs)).sum())} NaN/inf outputs")
        return ParityReport(max_abs_logit=None, max_abs_prob=None, agreement=None, accuracy=None,
                            positive_recall=None, per_class_recall={}, nonfinite=int((~np.isfinite(outputs)).sum())
                            if outputs.shape == base_logits.shape else 0, checks=(), failures=(why,), **common)
    base_probs = _probs(base_logits, spec.temperature)
    probs = outputs.astype(np.float64) if has_probs(variant) else _probs(outputs, spec.temperature)
    max_prob = float(np.abs(probs - base_probs).max()) if probs.size else 0.0
    max_logit = None if has_probs(variant) else (float(np.abs(outputs - base_logits).max()) if outputs.size else 0.0)
    agreement = float(np.mean(np.argmax(probs, 1) == np.argmax(reference.logits, 1))) if probs.size else 1.0
    checks = []
    if agreement_min is not None:
        checks.append(Check("top-1 agreement", agreement, agreement_min, ">=", agreement >= agreement_min))
    elif max_logit is not None:
        limit = RAW_LOGIT_TOLERANCE * scale
        checks.append(Check("max |Δlogit| vs model.onnx", max_logit, limit, "<=", max_logit <= limit))
    else:
        checks.append(Check("max |Δprob| vs model.onnx", max_prob, PROBS_TOLERANCE, "<=", max_prob <= PROBS_TOLERANCE))
    acc, pos, per = _label_metrics(data.y, probs, spec)
    decisions = None
    if spec.positive_index is not None and probs.size:
        k = spec.positive_index
        decisions = float(np.mean((probs[:, k] >= spec.threshold) == (base_probs[:, k] >= spec.threshold)))
    return ParityReport(max_abs_logit=max_logit, max_abs_prob=max_prob, agreement=agreement, accuracy=acc,
                        positive_recall=pos, per_class_recall=per, nonfinite=0, checks=tuple(checks),
                        failures=tuple(c.describe() for c in checks if not c.ok), decision_agreement=decisions,
                        **common)


def check_variant(
    artifact: str, path: os.PathLike, variant: str, precision: str, base_logits: np.ndarray, reference: Reference,
    data: ParityData, spec: ModelSpec, parity_preprocess: PreprocessSpec, device: str = "cpu",
    threads: Optional[int] = None, agreement_min: Optional[float] = None,
) -> ParityReport:
    """Run the variant through the runtime backend, then compare. ``parity_preprocess`` is what ``data.x`` was
    normalized with (the checkpoint's spec): raw-input variants get those images back as 0..255 pixels."""
    from edgecls.core.errors import CapabilityError
    from edgecls.export.parity import ParityReport
    from edgecls.runtime.backends import load_backend

    t0 = time.perf_counter()
    x = raw_pixels(data.x, parity_preprocess) if has_raw_input(variant) else data.x
    try:
        with load_backend(path, device=device, threads=threads, allow_fallback=False, spec=spec) as be:
            providers = tuple(be.providers)
            outputs = be.infer(x)
    except CapabilityError:
        raise
    except Exception as e:  # a broken artifact is a failed parity with the reason, not a crash
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        return ParityReport(artifact, os.fspath(path), precision, size, data.n, (), None, 1.0, None, None, None,
                            reference.accuracy, spec.positive, None, {}, 0, (),
                            (f"could not run: {type(e).__name__}: {e}",), time.perf_counter() - t0)
    return compare_variant(artifact, path, variant, precision, outputs, base_logits, reference, data, spec,
                           providers, time.perf_counter() - t0, agreement_min)

