"""A practical FP32 peak of this CPU: the best GFLOP/s of a large float32 matrix product, per thread count."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from edgecls.evaluation.timing import time_calls

log = logging.getLogger(__name__)


def _matmul_onnx_bytes(n: int) -> Optional[bytes]:
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _best_gflops(fn: Callable[[], Any], flops: float, reps: int) -> float:
    fn()
    return flops / (min(time_calls(fn, reps)) / 1000.0) / 1e9


_NUMPY_PEAK_SCRIPT = """
import sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32); b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(2.0 * n ** 3 / best / 1e9)
"""


def _numpy_peak(threads: int, n: int, reps: int) -> Optional[float]:
    """numpy's BLAS in a subprocess, its thread count pinned by the usual environment variables."""
    import subprocess
    import sys

    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    try:
        out = subprocess.run([sys.executable, "-c", _NUMPY_PEAK_SCRIPT, str(n), str(reps)], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
        return float(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log.info("numpy peak measurement failed: %s", e)
        return None


def _onnxruntime_peak(a: np.ndarray, b: np.ndarray, threads: Sequence[int], flops: float, reps: int
                      ) -> Optional[Dict[str, float]]:
    data = _matmul_onnx_bytes(a.shape[0])
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if data is None:
        return None
    res = {}
    for t in threads:
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(t)
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
        feed = {"a": a, "b": b}
        res[str(t)] = _best_gflops(lambda sess=sess, feed=feed: sess.run(None, feed), flops, reps)
        del sess
    return res


def _torch_peak(a: np.ndarray, b: np.ndarray, threads: Sequence[int], flops: float, reps: int
                ) -> Optional[Dict[str, float]]:
    try:
        import torch
    except ImportError:
        return None
    saved = torch.get_num_threads()
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    res = {}
    try:
        for t in threads:
            torch.set_num_threads(int(t))
            res[str(t)] = _best_gflops(lambda: torch.mm(ta, tb), flops, reps)
    finally:
        torch.set_num_threads(saved)
    return res


def measure_fp32_peak(threads: Sequence[int], n: int = 2048, reps: int = 5) -> Dict[str, Any]:
    """A practical FP32 FMA peak per thread count: the best GFLOP/s of an ``n``³ float32 matrix product.

    Measured with every library at hand, each pinned to the thread count: onnxruntime's MatMul (MLAS, the kernels
    behind its Conv), ``torch.mm`` (oneDNN/MKL, when torch is installed) and numpy's BLAS (in a subprocess with
    ``OMP/OPENBLAS/MKL_NUM_THREADS``). The peak is the best of them, so "% of peak" is not flattered by a slow
    GEMM; every measurement is kept in ``by_method``.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    by_method: Dict[str, Dict[str, float]] = {}
    res = _onnxruntime_peak(a, b, threads, flops, reps)
    if res is not None:
        by_method["onnxruntime MatMul (MLAS)"] = res
    res = _torch_peak(a, b, threads, flops, reps)
    if res is not None:
        by_method["torch.mm"] = res
    res = {}
    for t in threads:
        g = _numpy_peak(int(t), n, reps)
        if g is not None:
            res[str(t)] = g
    if res:
        by_method["numpy matmul (BLAS)"] = res
    best: Dict[str, float] = {}
    source: Dict[str, str] = {}
    for method, values in by_method.items():
        for t, g in values.items():
            if g > best.get(t, 0.0):
                best[t], source[t] = g, method
    method = (f"best of {', '.join(by_method) or 'nothing'}: {n}x{n}x{n} float32 product, best of {reps} runs "
              f"per library and thread count")
    return {"method": method, "gflops": best, "source": source, "by_method": by_method}
