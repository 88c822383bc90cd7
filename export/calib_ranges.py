"""INT8 calibration ranges, measured with THE runtime preprocessing: ``minmax``, ``percentile`` and ``entropy``.

``minmax`` is the observed range, ``percentile`` the ``percentile`` of |x| (default 99.99) and ``entropy`` the
threshold minimising the KL divergence between the 2048-bin |x| histogram and its 128-level quantization
(TensorRT's classic entropy calibration); each gives different ranges — onnxruntime's own Entropy calibrator in
``quantize_static`` silently equals MinMax because it is built with num_bins == num_quantized_bins. So edgecls
measures the ranges itself (two passes: min/max, then fixed-range histograms — exact and memory-bounded); they are
cached by :mod:`edgecls.export.calib_cache` and handed to ``quantize_static`` by :mod:`edgecls.export.quantize`.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.spec import PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
CALIB_METHODS = ("minmax", "percentile", "entropy")
CALIB_CHOICES = CALIB_METHODS


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
    """``{tensor: (low, high)}`` for every float activation, by ``config.method``."""
    return compute_ranges_multi(model, images, [config], progress)[config.method]


def compute_ranges_multi(
    model: onnx.ModelProto, images: CalibrationImages, configs: Sequence[CalibConfig],
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """``{method: {tensor: (low, high)}}`` for each config (one method each), from the same two passes.

    Pass 1 records min/max; percentile and entropy add pass 2: |x| histograms over the fixed range [0, amax]
    (so batches add up exactly, with no rebinning), without exact zeros (a ReLU's zeros are exact at any scale,
    and their spike would drag the entropy threshold far down). NaN/inf in an activation is an error.
    """
    if len({c.method for c in configs}) != len(configs) or not configs:
        raise ValueError("compute_ranges_multi: one config per method")
    binned = [c for c in configs if c.method != "minmax"]
    if len({c.num_bins for c in binned}) > 1:
        raise ValueError("compute_ranges_multi: percentile and entropy must share num_bins")
    batch_size = configs[0].batch_size
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
        for batch in images.batches(batch_size):
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
        if not binned:
            return {"minmax": ranges}
        num_bins = binned[0].num_bins
        amax = {n: max(abs(a), abs(b)) for n, (a, b) in ranges.items()}
        hists = {n: np.zeros(num_bins, dtype=np.int64) for n in ranges if amax[n] > 0}
        for batch in images.batches(batch_size):
            outs = dict(zip(out_names, sess.run(None, {input_name: batch})))
            outs.setdefault(input_name, batch)
            for n, h in hists.items():
                a = np.array(outs[n], dtype=np.float32).ravel()  # a copy: the in-place steps below are ours
                zeros = a.size - np.count_nonzero(a)
                np.abs(a, out=a)
                np.multiply(a, np.float32(num_bins / amax[n]), out=a)
                idx = a.astype(np.int32)
                np.minimum(idx, num_bins - 1, out=idx)
                h += np.bincount(idx, minlength=num_bins)
                h[0] -= zeros  # exact zeros (ReLU) are representable at any scale: they must not pull it down
            if progress:
                progress(len(batch))
    out: Dict[str, Dict[str, Tuple[float, float]]] = {"minmax": ranges} if len(binned) < len(configs) else {}
    for config in binned:
        result = {}
        for n, (a, b) in ranges.items():
            if n not in hists:
                result[n] = (a, b)
                continue
            edges = np.linspace(0.0, amax[n], num_bins + 1)
            if config.method == "percentile":
                t = percentile_threshold(hists[n], edges, config.percentile)
            else:
                t = float(edges[entropy_threshold_bin(hists[n], config.num_quantized_bins)])
            result[n] = (max(a, -t), min(b, t))
        out[config.method] = result
    return out
