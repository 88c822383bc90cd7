"""INT8 with calibration images: ranges measured with THE runtime preprocessing, cached, two Q/DQ forms.

Forms (both ``QuantFormat.QDQ``, per-channel INT8 weights):

- ``int8-qdq`` — for TensorRT 8.5 … 11 (explicit quantization, no calibrator): INT8 activations and weights,
  symmetric (every zero-point 0), FP32 weights kept with Q→DQ pairs (TensorRT quantizes them at build time;
  TensorRT 8.x does not take INT8 weight initializers) and FP32 bias (TensorRT has no INT32 bias dequantize).
- ``int8-cpu`` — fast on onnxruntime's CPU provider: uint8 activations (asymmetric), int8 weights, int32 bias.

Calibration: ``minmax`` (the observed range), ``percentile`` (the ``percentile`` of |x|, default 99.99) and
``entropy`` (the threshold minimising the KL divergence between the 2048-bin |x| histogram and its 128-level
quantization, TensorRT's classic entropy calibration) each give different ranges — onnxruntime's own Entropy
calibrator in ``quantize_static`` silently equals MinMax because it is built with num_bins == num_quantized_bins.
So edgecls measures the ranges itself (two passes: min/max, then fixed-range histograms — exact and
memory-bounded), caches them as JSON keyed by model hash + image-set hash + method + options, and hands them to
``quantize_static`` through its calibration cache.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgecls.errors import CapabilityError, InputError
from edgecls.runtime.spec import PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
CALIB_METHODS = ("minmax", "percentile", "entropy")
INT8_FORMS = ("int8-qdq", "int8-cpu")
KEEP_FP32_CHOICES = ("auto", "none", "ends", "depthwise", "depthwise+ends")
CACHE_FORMAT = "edgecls.calib/1"


@dataclass(frozen=True)
class CalibConfig:
    method: str = "entropy"
    percentile: float = 99.99
    num_bins: int = 2048
    num_quantized_bins: int = 128
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.method not in CALIB_METHODS:
            raise InputError(f"--calib-method {self.method!r} is not one of {', '.join(CALIB_METHODS)}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise InputError(f"--calib-percentile must be in (50, 100], got {self.percentile}")
        if self.num_bins < self.num_quantized_bins or self.num_quantized_bins < 2:
            raise InputError(
                f"calibration needs num_bins ({self.num_bins}) >= num_quantized_bins ({self.num_quantized_bins}) >= 2"
            )
        if self.batch_size < 1:
            raise InputError(f"calibration batch size must be >= 1, got {self.batch_size}")

    def options(self) -> Dict[str, object]:
        """What, besides the method, changes the ranges (part of the cache key)."""
        if self.method == "minmax":
            return {}
        if self.method == "percentile":
            return {"percentile": float(self.percentile), "num_bins": self.num_bins}
        return {"num_bins": self.num_bins, "num_quantized_bins": self.num_quantized_bins}


# ---------------------------------------------------------------------------------------------- data


class CalibrationImages:
    """Calibration images preprocessed ONCE with THE runtime preprocessing, served in batches."""

    def __init__(self, paths: Sequence[PathLike], spec: PreprocessSpec, images_sha256: Optional[str] = None) -> None:
        from edgecls.runtime.preprocess import ImageReadError, load_image, preprocess_one

        if not paths:
            raise InputError("no calibration images")
        self.paths = [Path(p) for p in paths]
        self.spec = spec
        self._sha = images_sha256
        self.data = np.empty((len(self.paths), 3, spec.crop, spec.crop), dtype=np.float32)
        for i, p in enumerate(self.paths):
            try:
                preprocess_one(load_image(p), spec, out=self.data[i])
            except ImageReadError as e:
                raise InputError(f"calibration image cannot be read: {e}") from e

    @property
    def sha256(self) -> str:
        if self._sha is None:
            from edgecls.export.calib import image_set_sha256

            self._sha = image_set_sha256(self.paths)
        return self._sha

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(0, len(self.data), batch_size):
            yield self.data[i : i + batch_size]


# ------------------------------------------------------------------------------------ range computation


def tensors_to_calibrate(model: onnx.ModelProto) -> List[str]:
    """Every float activation that is a node input or output (not an initializer), in graph order."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {t.name for t in inferred.graph.initializer}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    seen, out = set(), []
    for node in inferred.graph.node:
        for name in list(node.input) + list(node.output):
            if not name or name in seen or name in inits or name not in vi:
                continue
            if vi[name].type.tensor_type.elem_type in floats:
                seen.add(name)
                out.append(name)
    return out


def _augmented_session(model: onnx.ModelProto, names: Sequence[str], workdir: Path):
    import onnx
    import onnxruntime as ort

    aug = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(aug)
    vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    existing = {o.name for o in aug.graph.output}
    for n in names:
        if n not in existing:
            aug.graph.output.append(vi[n])
    path = workdir / "augmented.onnx"
    onnx.save(aug, os.fspath(path))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # observe the graph as written
    sess = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
    return sess


def _smooth(counts: np.ndarray, eps: float = 1e-4) -> Optional[np.ndarray]:
    """Give empty bins a little mass (taken from the others) so KL stays finite; returns a distribution."""
    zeros = counts == 0
    n_zero = int(zeros.sum())
    n_nonzero = counts.size - n_zero
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    if eps1 >= 1.0:
        return None
    out = counts.astype(np.float64) + np.where(zeros, eps, -eps1)
    np.maximum(out, eps * 1e-3, out=out)
    return out / out.sum()


def _kl_for(hist: np.ndarray, tail: np.ndarray, i: int, num_quantized_bins: int) -> float:
    """KL(P || Q) of keeping the first ``i`` bins (see :func:`entropy_threshold_bin`)."""
    sliced = hist[:i]
    p = sliced.copy()
    p[-1] += tail[i]
    nonzero = sliced != 0
    # merge i bins into num_quantized_bins chunks (the last chunk takes the remainder, as TensorRT does)
    step = i // num_quantized_bins
    starts = np.arange(num_quantized_bins) * step
    chunk_sum = np.add.reduceat(sliced, starts)
    chunk_nz = np.add.reduceat(nonzero.astype(np.float64), starts)
    chunk_id = np.minimum(np.arange(i) // step, num_quantized_bins - 1)
    per_bin = np.divide(chunk_sum, chunk_nz, out=np.zeros_like(chunk_sum), where=chunk_nz > 0)
    q = np.where(nonzero, per_bin[chunk_id], 0.0)
    p_s, q_s = _smooth(p), _smooth(q)
    if p_s is None or q_s is None:
        return float("inf")
    return float(np.sum(p_s * np.log(p_s / q_s)))


def entropy_threshold_bin(hist: np.ndarray, num_quantized_bins: int = 128, stride: int = 4) -> int:
    """The number of |x|-histogram bins to keep (threshold = its upper edge) minimising KL(P || Q).

    P: the first ``i`` bins with everything above folded into the last one; Q: those ``i`` bins merged into
    ``num_quantized_bins`` levels and spread back evenly over the bins that were non-empty. TensorRT's entropy
    calibration (GTC 2017, "8-bit inference with TensorRT"). Candidates are scanned every ``stride`` bins, then
    the best one is refined bin by bin (as pytorch-quantization's ``stride`` does), to keep it fast.
    """
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    if n <= num_quantized_bins or hist.sum() == 0:
        return n
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    stride = max(1, int(stride))
    coarse = list(range(num_quantized_bins, n + 1, stride))
    if coarse[-1] != n:
        coarse.append(n)
    kls = {i: _kl_for(hist, tail, i, num_quantized_bins) for i in coarse}
    best = min(kls, key=lambda i: (kls[i], i))
    for i in range(max(num_quantized_bins, best - stride + 1), min(n, best + stride - 1) + 1):
        if i not in kls:
            kls[i] = _kl_for(hist, tail, i, num_quantized_bins)
    best = min(kls, key=lambda i: (kls[i], i))
    return best if np.isfinite(kls[best]) else n


def percentile_threshold(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    total = hist.sum()
    if total == 0:
        return float(edges[-1])
    cdf = np.cumsum(hist) / total
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(idx + 1, len(edges) - 1)])


def compute_ranges(
    model: onnx.ModelProto, images: CalibrationImages, config: CalibConfig,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, Tuple[float, float]]:
    """``{tensor: (low, high)}`` for every float activation, by ``config.method``.

    Pass 1 records min/max; percentile and entropy add pass 2: |x| histograms over the fixed range [0, amax]
    (so batches add up exactly, with no rebinning), without exact zeros (a ReLU's zeros are exact at any scale,
    and their spike would drag the entropy threshold far down). NaN/inf in an activation is an error.
    """
    names = tensors_to_calibrate(model)
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edgecls-calib-") as tmp:
        sess = _augmented_session(model, names, Path(tmp))
        out_names = [o.name for o in sess.get_outputs()]
        wanted = [n for n in out_names if n in set(names)]
        lo = {n: np.inf for n in names}
        hi = {n: -np.inf for n in names}
        if input_name in lo:
            lo[input_name], hi[input_name] = float(images.data.min()), float(images.data.max())
        for batch in images.batches(config.batch_size):
            outs = dict(zip(out_names, sess.run(None, {input_name: batch})))
            for n in wanted:
                a = outs[n]
                if a.size == 0:
                    continue
                if not np.all(np.isfinite(a)):
                    raise RuntimeError(f"calibration: tensor {n!r} has NaN or infinite values on the calibration images")
                lo[n] = min(lo[n], float(a.min()))
                hi[n] = max(hi[n], float(a.max()))
            if progress:
                progress(len(batch))
        ranges = {n: (float(lo[n]), float(hi[n])) for n in names if np.isfinite(lo[n]) and np.isfinite(hi[n])}
        if config.method == "minmax":
            return ranges
        amax = {n: max(abs(a), abs(b)) for n, (a, b) in ranges.items()}
        hists = {n: np.zeros(config.num_bins, dtype=np.int64) for n in ranges if amax[n] > 0}
        for batch in images.batches(config.batch_size):
            outs = dict(zip(out_names, sess.run(None, {input_name: batch})))
            outs.setdefault(input_name, batch)
            for n, h in hists.items():
                a = np.abs(np.asarray(outs[n], dtype=np.float32)).ravel()
                a = a[a != 0]  # exact zeros (ReLU) are representable at any scale: they must not pull it down
                idx = np.minimum((a * (config.num_bins / amax[n])).astype(np.int64), config.num_bins - 1)
                h += np.bincount(idx, minlength=config.num_bins)
            if progress:
                progress(len(batch))
    result = {}
    for n, (a, b) in ranges.items():
        if n not in hists:
            result[n] = (a, b)
            continue
        edges = np.linspace(0.0, amax[n], config.num_bins + 1)
        if config.method == "percentile":
            t = percentile_threshold(hists[n], edges, config.percentile)
        else:
            t = float(edges[entropy_threshold_bin(hists[n], config.num_quantized_bins)])
        result[n] = (max(a, -t), min(b, t))
    return result


# ------------------------------------------------------------------------------------------------ cache


def model_sha256(model: onnx.ModelProto) -> str:
    """Hash of the graph (weights included), not of metadata: the same network gives the same hash."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def cache_key(model_hash: str, images_hash: str, preprocess: PreprocessSpec, config: CalibConfig) -> str:
    blob = json.dumps(
        {"format": CACHE_FORMAT, "model": model_hash, "images": images_hash, "method": config.method,
         "options": config.options(), "preprocess": preprocess.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_file(cache_dir: PathLike, method: str, key: str) -> Path:
    return Path(cache_dir) / f"calib-{method}-{key[:16]}.json"


def load_cache(path: Path, key: str, names: Sequence[str]) -> Optional[Dict[str, Tuple[float, float]]]:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != CACHE_FORMAT or d.get("key") != key:
            log.warning("calibration cache %s does not match (format/key); recomputing", path)
            return None
        ranges = {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("calibration cache %s is unreadable (%s); recomputing", path, e)
        return None
    if set(ranges) != set(names):
        log.warning("calibration cache %s covers other tensors than the model; recomputing", path)
        return None
    return ranges


def save_cache(path: Path, key: str, ranges: Dict[str, Tuple[float, float]], meta: Dict[str, object]) -> None:
    from edgecls import fileio as atomic

    atomic.write_json(path, {"format": CACHE_FORMAT, "key": key, **meta,
                             "ranges": {k: [float(a), float(b)] for k, (a, b) in sorted(ranges.items())}})


@dataclass(frozen=True)
class Calibration:
    ranges: Dict[str, Tuple[float, float]]
    method: str
    cache_path: Path
    cache_hit: bool
    images: int
    images_sha256: str
    model_sha256: str


def calibrate(
    model: onnx.ModelProto, images: CalibrationImages, config: CalibConfig, cache_dir: PathLike,
    progress: Optional[Callable[[int], None]] = None,
) -> Calibration:
    """Ranges from the cache when model, image set, preprocessing, method and options are unchanged; else
    measured and saved (atomically)."""
    mh, ih = model_sha256(model), images.sha256
    key = cache_key(mh, ih, images.spec, config)
    path = cache_file(cache_dir, config.method, key)
    names = tensors_to_calibrate(model)
    ranges = load_cache(path, key, names)
    if ranges is not None:
        log.info("calibration (%s): reusing cached ranges %s", config.method, path)
        return Calibration(ranges, config.method, path, True, len(images), ih, mh)
    log.info("calibration (%s) on %d images ...", config.method, len(images))
    ranges = compute_ranges(model, images, config, progress)
    save_cache(path, key, ranges, {"method": config.method, "options": config.options(), "model_sha256": mh,
                                   "images_sha256": ih, "images": len(images)})
    return Calibration(ranges, config.method, path, False, len(images), ih, mh)


# --------------------------------------------------------------------------------------------- quantize


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
    weighted = ("Conv", "Gemm", "MatMul")
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


def keep_fp32_ladder(model: onnx.ModelProto, choice: str) -> List[Tuple[str, Tuple[str, ...]]]:
    """The exclusion sets to try, in order: ``[(label, node names kept FP32), ...]``.

    ``auto`` tries full INT8 first, then the first/last layer, then depthwise convolutions, then both; the first
    that passes parity is kept (and reported). The other choices give exactly one attempt.
    """
    ends = tuple(sensitive_nodes(model))
    dw = tuple(depthwise_convs(model))
    options = {
        "none": ("full INT8", ()),
        "ends": ("first/last layer in FP32", ends),
        "depthwise": (f"{len(dw)} depthwise convs in FP32", dw),
        "depthwise+ends": (f"{len(dw)} depthwise convs and the first/last layer in FP32",
                           tuple(dict.fromkeys(dw + ends))),
    }
    if choice != "auto":
        if choice not in options:
            raise InputError(f"--int8-keep-fp32 {choice!r} is not one of {', '.join(KEEP_FP32_CHOICES)}")
        return [options[choice]]
    ladder, seen = [], set()
    for key in ("none", "ends", "depthwise", "depthwise+ends"):
        label, nodes = options[key]
        if nodes in seen or (key != "none" and not nodes):
            continue
        seen.add(nodes)
        ladder.append((label, nodes))
    return ladder


def _form_options(form: str):
    from onnxruntime.quantization import QuantType

    if form == "int8-qdq":
        return dict(
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "AddQDQPairToWeight": True},
        )
    if form == "int8-cpu":
        return dict(
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
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


def quantize(
    model: onnx.ModelProto, calibration: Calibration, form: str, exclude: Sequence[str] = (),
) -> tuple[onnx.ModelProto, QuantizeInfo]:
    """``model`` (already through :func:`preprocess_for_quantization`) → the INT8 Q/DQ model of ``form``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    quantize_static = _require_cache_support()
    opts = _form_options(form)
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
    opset_after = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    if opset_after != opset_before:
        raise RuntimeError(f"quantization changed the opset from {opset_before} to {opset_after}")
    counts: Dict[str, int] = {}
    for n in out.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    if not counts.get("QuantizeLinear"):
        raise RuntimeError(f"{form}: quantization inserted no QuantizeLinear node; the model is not INT8")
    onnx.checker.check_model(out)
    return out, QuantizeInfo(form, calibration.method, tuple(exclude), dict(sorted(counts.items())))


def zero_points(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    """``{Q/DQ node name: zero-point array}`` — for checking that the TensorRT form is symmetric."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            out[n.name or n.output[0]] = numpy_helper.to_array(inits[n.input[2]])
    return out
