#!/usr/bin/env python
"""INT8 benchmark (issue 8): per artifact size, latency vs FP32, accuracy, ECE — ResNet18 and MobileNetV2 on both
shared datasets, in one run.

For each (arch, dataset): the cached checkpoint (``--cache``/<dataset>_<arch>/best.pt, trained with ``edgecls
train`` when missing), then ``edgecls export best.pt --int8`` with default options (wall time and exit code
recorded), then the numbers from its ``parity.json`` (report split: the images that chose nothing) and the
latency of model.onnx / model_int8_cpu.onnx / model_int8_qdq.onnx with onnxruntime CPU at batch 1 and
``--threads`` threads, interleaved in the same process (rounds rotate the starting model; median over rounds).
``--modelopt`` adds NVIDIA ModelOpt's INT8 (``mtq.quantize`` with ``INT8_DEFAULT_CFG``, max calibration on the
same calibration images, Q/DQ ONNX export) as a row beside edgecls's TensorRT form, judged the same way (its
temperature matched on the selection split, numbers on the report split).

The machine may be shared: ``/proc/loadavg`` is recorded beside every timing, and ratios come from one run.

    .venv/bin/python bench/bench_int8.py                  # → bench/INT8_RESULTS.md, bench/int8_results.json
    .venv/bin/python bench/bench_int8.py --modelopt --archs mobilenet_v2 --datasets products28
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MBV2_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
ARTIFACTS = ("model.onnx", "model_int8_cpu.onnx", "model_int8_qdq.onnx")
SHORT = {"mobilenet_v2": "mnv2"}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="/work/bench_cache/int8", help="checkpoints and exports (reused)")
    ap.add_argument("--archs", default="resnet18,mobilenet_v2")
    ap.add_argument("--datasets", default="products28,mobile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--export-args", default="", help="extra `edgecls export` arguments")
    ap.add_argument("--reexport", action="store_true", help="export again even when the export folder exists")
    ap.add_argument("--modelopt", action="store_true", help="add NVIDIA ModelOpt's INT8 as a row (needs the "
                    "modelopt extra)")
    ap.add_argument("--out", default="bench/INT8_RESULTS.md")
    ap.add_argument("--json", default="bench/int8_results.json")
    return ap.parse_args(argv)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(cmd: List[str], log: Path) -> Dict[str, Any]:
    t0, load0 = time.perf_counter(), loadavg()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t0, 1), "load_before": load0,
            "load_after": loadavg(), "log": str(log)}


def train_cmd(arch: str, dataset: str, out: Path) -> List[str]:
    cmd = [sys.executable, "-m", "edgecls", "train", "--data", str(SHARED / "data" / dataset), "--arch", arch,
           "--out", str(out), "--no-progress"]
    if arch == "mobilenet_v2":
        cmd += ["--weights", str(MBV2_WEIGHTS)]
    else:  # no ImageNet ResNet18 weights offline: one epoch from random init (INT8 fidelity and
        cmd += ["--weights", "none", "--epochs", "1"]  # speed are still measured; its accuracy is not the point)
    if dataset == "mobile":
        cmd += ["--positive", "mobile"]
    return cmd


def latency(paths: Dict[str, Path], threads: int, rounds: int, iters: int) -> Dict[str, float]:
    import numpy as np

    from edgecls.export.int8_cost import interleaved_latency

    x = np.random.default_rng(0).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    return interleaved_latency({k: p.read_bytes() for k, p in paths.items()}, x, threads, rounds, iters)


def modelopt_rows(ckpt_path: Path, out: Path, work: Path) -> Dict[str, Dict[str, Any]]:
    """NVIDIA ModelOpt's ONNX PTQ (``modelopt.onnx.quantization.quantize``, INT8, ``max`` and ``entropy``
    calibration on the same calibration images, FP32 high-precision dtype: its FP16 default collapses under
    onnxruntime's CPU optimizer) on a *copy* of edgecls's model.onnx (it rewrites its input in place), judged like
    edgecls's artifacts: same report split, same gates, temperature kept unless the cross-fitted NLL falls."""
    import shutil

    import numpy as np
    from modelopt.onnx.quantization import quantize as mo_quantize

    from edgecls.export.calib import calib_from_checkpoint
    from edgecls.export.calib_ranges import CalibrationImages
    from edgecls.export.parity import Tolerances, compare, reference_from
    from edgecls.export.parity_data import parity_data_from_checkpoint
    from edgecls.export.refit import refit_with_record
    from edgecls.export.select_split import split_select_report
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.reference.torch_backend import TorchBackend
    from edgecls.runtime.backends import load_backend

    ck = load_checkpoint(ckpt_path)
    calib = CalibrationImages(calib_from_checkpoint(ck.data, ck.spec.classes, 256).paths, ck.spec.preprocess)
    x_cal = np.concatenate(list(calib.batches(32)))
    data = parity_data_from_checkpoint(ck)
    with TorchBackend(ck.build_model(), spec=ck.spec) as be:
        ref = reference_from(be, data, ck.spec)
    split = split_select_report(data, ref, ck.spec, ck.data)
    rows = {}
    for method in ("max", "entropy"):
        src = work / f"modelopt_src_{method}.onnx"
        shutil.copyfile(out / "model.onnx", src)
        path = work / f"modelopt_int8_{method}.onnx"
        t0 = time.perf_counter()
        mo_quantize(str(src), quantize_mode="int8", calibration_data=x_cal, calibration_method=method,
                    calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=str(path))
        seconds = time.perf_counter() - t0
        spec = ck.spec.replace(precision="int8-qdq")
        with load_backend(path, device="cpu", spec=spec) as be:
            sel = np.asarray(be.infer(split.select.x), np.float32)
            rep = np.asarray(be.infer(split.report.x), np.float32)
        spec, _ = refit_with_record(spec, sel, split.select.y, f"selection split; modelopt {method} logits")
        report = compare(path.name, path, "int8-qdq", rep, split.report_reference, split.report, spec, Tolerances())
        rows[path.name] = {"report": report.to_dict(), "seconds": round(seconds, 1), "path": str(path),
                           "method": method}
    return rows


def one(arch: str, dataset: str, args: argparse.Namespace) -> Dict[str, Any]:
    folder = Path(args.cache) / f"{dataset}_{SHORT.get(arch, arch)}"
    ckpt = folder / "best.pt"
    row: Dict[str, Any] = {"arch": arch, "dataset": dataset, "checkpoint": str(ckpt)}
    folder.mkdir(parents=True, exist_ok=True)
    if not ckpt.is_file():
        log = folder.with_name(folder.name + ".train.log")  # beside, not inside: train refuses a non-empty --out
        row["train"] = run(train_cmd(arch, dataset, folder), log)
        if row["train"]["rc"] != 0:
            return row
    out = folder / "export"
    if args.reexport or not (out / "parity.json").is_file():
        cmd = [sys.executable, "-m", "edgecls", "export", str(ckpt), "--int8", "--out", str(out)]
        row["export"] = run(cmd + args.export_args.split(), folder / "export.log")
    parity = json.loads((out / "parity.json").read_text())
    row["parity"] = {"data": parity["data"], "selection": parity.get("selection"), "reference": parity["reference"],
                     "passed": parity["passed"], "timings_s": parity.get("timings_s", {})}
    row["artifacts"] = {k: v for k, v in parity["artifacts"].items() if k in ARTIFACTS}
    paths = {}  # an artifact that failed its gate is still timed (kept as NAME.failed; the table says FAIL)
    for k in ARTIFACTS:
        for cand in (out / k, out / f"{k}.failed"):
            if cand.is_file():
                paths[k] = cand
                break
    if args.modelopt:
        try:
            row["modelopt"] = modelopt_rows(ckpt, out, folder)
            paths.update({k: Path(v["path"]) for k, v in row["modelopt"].items()})
        except ImportError as e:
            row["modelopt_error"] = f"modelopt not installed ({e}): pip install 'edgecls[modelopt]'"
    load0 = loadavg()
    row["latency_ms"] = latency(paths, args.threads, args.rounds, args.iters)
    row["latency_load"] = [load0, loadavg()]
    return row


def _f(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def table(rows: List[Dict[str, Any]], threads: int) -> str:
    head = ("| model | data | artifact | size MB | latency b1 ms | ×FP32 | accuracy | Δacc pt | agree | ECE | "
            "p99 \\|Δp\\| | decisions | T | kept FP32 | calib | status (n) |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        if "parity" not in r:
            lines.append(f"| {r['arch']} | {r['dataset']} | (training failed, see {r['train']['log']}) |" + " |" * 13)
            continue
        lat = r.get("latency_ms", {})
        fp32 = lat.get("model.onnx")
        ref = r["parity"]["reference"]
        items = list(r["artifacts"].items())
        for name, m in r.get("modelopt", {}).items():
            items.append((name, dict(m["report"], calib_method=f"{m['method']} (ModelOpt ONNX PTQ)")))
        lines.append(f"| {r['arch']} | {r['dataset']} | pytorch (reference) | - | - | - | "
                     f"{100 * ref['accuracy']:.2f}% | - | - | {ref.get('ece') or 0:.3f} | - | "
                     f"- | {ref.get('temperature') or 0:.3f} | - | - | - |")
        for name, a in items:
            ms = lat.get(name)
            size = a.get("size_bytes", 0) / 2**20
            acc = a.get("accuracy")
            dacc = None if acc is None or ref["accuracy"] is None else 100 * (ref["accuracy"] - acc)
            kept = a.get("kept_fp32")
            cells = [r["arch"], r["dataset"], name, f"{size:.2f}", _f(ms, "{:.2f}"),
                     _f(None if ms is None or not fp32 else ms / fp32, "{:.2f}"), _f(acc, "{:.2%}"),
                     _f(dacc, "{:+.2f}"), _f(a.get("agreement"), "{:.2%}"), _f(a.get("ece"), "{:.3f}"),
                     _f(a.get("p99_abs_prob"), "{:.3f}"), _f(a.get("decision_agreement"), "{:.2%}"),
                     _f(a.get("temperature"), "{:.3f}"), "-" if kept is None else str(len(kept)),
                     a.get("calib_method", "-"), f"{a.get('status', '-')} ({a.get('n', '-')})"
                     + (" low evidence" if a.get("low_evidence") else "")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nlatency: onnxruntime CPU, batch 1, {threads} threads, interleaved in one process."


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rows = []
    for dataset in args.datasets.split(","):
        for arch in args.archs.split(","):
            print(f"== {arch} on {dataset} (load {loadavg()})", flush=True)
            rows.append(one(arch, dataset, args))
    now = dt.datetime.now().isoformat(timespec="seconds")
    text = [f"# INT8 benchmark ({now})", "", f"`{' '.join(['bench/bench_int8.py'] + list(argv or sys.argv[1:]))}` "
            f"on {os.cpu_count()} CPUs; numbers on each export's report split (see parity.json `selection`).", "",
            table(rows, args.threads), "", "## exports", ""]
    for r in rows:
        e = r.get("export")
        if e:
            text.append(f"- {r['arch']} / {r['dataset']}: exit {e['rc']} in {e['seconds']} s "
                        f"(loadavg {e['load_before']} → {e['load_after']})")
        text.append(f"  - latency loadavg {r.get('latency_load')}")
    Path(args.out).write_text("\n".join(text) + "\n")
    Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
