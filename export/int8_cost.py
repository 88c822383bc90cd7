"""What the layers kept in FP32 cost: their share of the compute and weights, and (CPU form) the latency of
FP32, full INT8 and the chosen INT8 model, measured interleaved at batch 1 in the same run."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def loadavg() -> Optional[str]:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def interleaved_latency(models: Dict[str, bytes], x: np.ndarray, threads: int, rounds: int = 7,
                        iters: int = 5) -> Dict[str, float]:
    """``{name: median ms}`` of ``models`` (serialized ONNX) at ``x``'s batch, onnxruntime CPU, ``threads`` intra-op
    threads; each round times ``iters`` runs of every model in turn (starting model rotating), median over rounds."""
    import onnxruntime as ort

    sessions = {}
    for k, blob in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sessions[k] = ort.InferenceSession(blob, sess_options=so, providers=["CPUExecutionProvider"])
    names = list(sessions)
    feed = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k in names:
        sessions[k].run(None, feed[k])
        sessions[k].run(None, feed[k])
    times: Dict[str, list] = {k: [] for k in names}
    for r in range(rounds):
        for j in range(len(names)):
            k = names[(r + j) % len(names)]
            t0 = time.perf_counter()
            for _ in range(iters):
                sessions[k].run(None, feed[k])
            times[k].append((time.perf_counter() - t0) / iters * 1000.0)
    return {k: float(np.median(v)) for k, v in times.items()}


def kept_cost(ex, form: str, chosen, full, fp32, ranking: Sequence[Any]) -> Dict[str, Any]:
    """``{"line": printable, ...numbers}`` — share of MACs/weights of the kept layers; latency for the CPU form."""
    from edgecls.export.sensitivity import describe_kept, layer_costs

    costs = layer_costs(fp32, ex.spec.preprocess.crop)
    total_macs = sum(m for m, _ in costs.values())
    total_params = sum(p for _, p in costs.values())
    by_name = {r.name: r for r in ranking}
    kept = [by_name[n] for n in chosen.exclude if n in by_name]
    if len(kept) < len(chosen.exclude):  # a fixed --int8-keep-fp32 choice: no SQNR measured
        from edgecls.export.sensitivity import LayerSensitivity

        kept = [by_name.get(n) or LayerSensitivity(n, "?", float("nan"), *costs.get(n, (0, 0)))
                for n in chosen.exclude]
    out: Dict[str, Any] = {
        "line": describe_kept(kept, total_macs, total_params),
        "kept_macs": int(sum(k.macs for k in kept)), "total_macs": int(total_macs),
        "kept_weight_params": int(sum(k.weight_params for k in kept)), "total_weight_params": int(total_params),
    }
    settings = ex.cfg.int8_settings
    if form != "int8-cpu" or not settings.latency:
        return out
    threads = ex.cfg.threads or 2
    x = np.ascontiguousarray(ex.split.report.x[:1])
    models = {"fp32": fp32.SerializeToString(), "chosen": chosen.model.SerializeToString()}
    if full is not None and full is not chosen:
        models["full_int8"] = full.model.SerializeToString()
    ms = ex.timed("int8 latency", interleaved_latency, models, x, threads)
    load = loadavg()
    out.update({"latency_ms_b1": {k: round(v, 3) for k, v in ms.items()}, "threads": threads, "loadavg": load,
                "ratio_vs_fp32": round(ms["chosen"] / ms["fp32"], 3)})
    lat = f"latency b1 {threads} threads: FP32 {ms['fp32']:.2f} ms, chosen INT8 {ms['chosen']:.2f} ms " \
          f"({ms['chosen'] / ms['fp32']:.2f}x)"
    if "full_int8" in ms:
        lat += f", full INT8 {ms['full_int8']:.2f} ms (kept layers cost {ms['chosen'] - ms['full_int8']:+.2f} ms)"
    out["line"] += f"; {lat} (loadavg {load})"
    if ms["chosen"] >= ms["fp32"]:  # not a gate (timings are noisy), but never a quiet one
        out["slower_than_fp32"] = True
        out["line"] += ("; SLOWER THAN FP32 on this CPU: the layers kept in FP32 break onnxruntime's int8 layout "
                        "(deploy model.onnx here, or --int8-keep-fp32 none to trade fidelity for speed)")
    return out
