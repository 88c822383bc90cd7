#!/usr/bin/env python
"""Rebuild the README's performance table: train → export (FP32, FP16, INT8) → eval each → bench.

Runs the ``edgecls`` CLI (``python -m edgecls``) as a user would, one step after the other, and writes one
Markdown report (date, machine, every command, accuracy per artifact, latency/throughput beside the PyTorch
reference, preprocessing cost) to ``--out`` and stdout. Every step's JSON stays in ``--work``.

    .venv/bin/python bench/bench_models.py                      # ../shared/data/mobile, MobileNetV2
    .venv/bin/python bench/bench_models.py --reuse              # keep finished steps, redo the rest
    .venv/bin/python bench/bench_models.py --checkpoint runs/train/exp/best.pt   # skip training

See bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# the artifacts `edgecls export --fp16 --int8` writes, in table order
EXPORTS = (
    ("model.onnx", "ONNX FP32"),
    ("model_fp16.onnx", "ONNX FP16"),
    ("model_int8_cpu.onnx", "ONNX INT8 (CPU form: uint8-activation QDQ)"),
    ("model_int8_qdq.onnx", "ONNX INT8 (TensorRT form: symmetric QDQ)"),
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "data" / "mobile"), help="ImageFolder root with train/ and val/")
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"),
                    help="backbone weights for training (imagenet | none | PATH)")
    ap.add_argument("--positive", default="mobile")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs [the train recipe's default]")
    ap.add_argument("--train-args", default="", help="extra `edgecls train` arguments, quoted")
    ap.add_argument("--export-args", default="", help="extra `edgecls export` arguments, quoted")
    ap.add_argument("--checkpoint", default=None, help="use this best.pt instead of training")
    ap.add_argument("--work", default="runs/bench", help="folder for the run, exports, eval and bench JSON")
    ap.add_argument("--threads", default="1,2", help="bench thread counts")
    ap.add_argument("--batch", default="1,8", help="bench batch sizes")
    ap.add_argument("--iters", type=int, default=20, help="bench timed inferences per artifact per round")
    ap.add_argument("--rounds", type=int, default=5, help="bench interleaved rounds")
    ap.add_argument("--out", default="bench/RESULTS.md", help="the Markdown report")
    ap.add_argument("--reuse", action="store_true", help="skip steps whose outputs already exist")
    return ap.parse_args(argv)


class StepFailed(RuntimeError):
    pass


def edgecls(args: List[str], log: List[Tuple[str, Optional[float]]], reuse: bool = False, ok_codes=(0,)) -> int:
    """Run ``python -m edgecls ARGS`` from the repo root, streaming its output; record the command and time.

    ``reuse``: the step's outputs exist and --reuse was given: record the command, run nothing.
    """
    cmd = [sys.executable, "-m", "edgecls"] + args
    shown = "edgecls " + " ".join(shlex.quote(a) for a in args)
    if reuse:
        log.append((shown, None))
        print(f"\n(reused) {shown}", file=sys.stderr, flush=True)
        return 0
    print(f"\n$ {shown}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    seconds = time.perf_counter() - t0
    log.append((shown, seconds))
    if rc not in ok_codes:
        raise StepFailed(f"`{shown}` failed with exit code {rc}")
    return rc


def parity_failures(export: Path) -> Dict[str, str]:
    """``{artifact: reason}`` of the artifacts whose parity check failed, from the export's parity.json."""
    try:
        report = json.loads((export / "parity.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for name, r in (report.get("artifacts") or {}).items():
        if isinstance(r, dict) and r.get("status") not in (None, "passed"):
            out[name] = "; ".join(str(f) for f in r.get("failures") or []) or str(r.get("status"))
    return out


def parity_accuracy(export: Path, ckpt: str) -> Dict[str, float]:
    """Accuracy each artifact (and the checkpoint, as reference) had in the export's parity check."""
    try:
        report = json.loads((export / "parity.json").read_text())
    except (OSError, ValueError):
        return {}
    out: Dict[str, float] = {}
    for name, r in (report.get("artifacts") or {}).items():
        if isinstance(r, dict) and r.get("accuracy") is not None:
            out[str(export / name)] = float(r["accuracy"])
            if r.get("reference_accuracy") is not None:
                out[ckpt] = float(r["reference_accuracy"])
    return out


def have_commands() -> Dict[str, bool]:
    """Which edgecls subcommands this checkout provides (train/export are written by other parts)."""
    out = {}
    for name in ("train", "export", "eval", "bench"):
        r = subprocess.run([sys.executable, "-m", "edgecls", name, "--help"], cwd=REPO, capture_output=True, text=True)
        out[name] = r.returncode == 0
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def summary_table(
    evals: Dict[str, dict], bench: dict, labels: Dict[str, str], reference: str, parity_acc: Dict[str, float]
) -> str:
    """One row per artifact: size, accuracy, positive P/R, ECE, latency b1 and throughput at max batch."""
    threads = max(int(t) for t in bench["config"]["threads"])
    batches = sorted(int(b) for b in bench["config"]["batches"])
    b_lo, b_hi = batches[0], batches[-1]
    rows = {(r["model"], r["batch"], r["threads"]): r for r in bench["latency"]}
    sizes = {a["path"]: a["size_bytes"] for a in bench["artifacts"]}
    ref_acc = evals.get(reference, {}).get("metrics", {}).get("accuracy")
    head = (f"| artifact | size MB | accuracy | Δ acc. vs PyTorch (points) | balanced acc. | P / R ({{pos}}) at threshold | ECE | "
            f"p50 ms b{b_lo} ({threads} thr) | ×PyTorch | img/s b{b_hi} ({threads} thr) | ×PyTorch | "
            f"export parity acc. |")
    pos = next((e["spec"]["positive"] for e in evals.values() if e["spec"].get("positive")), "positive")
    lines = [head.replace("{pos}", pos), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path, label in labels.items():
        e = evals.get(path, {})
        m = e.get("metrics", {})
        pm = m.get("positive_metrics") or {}
        lo, hi = rows.get((path, b_lo, threads), {}), rows.get((path, b_hi, threads), {})
        acc = m.get("accuracy")
        delta = None if acc is None or ref_acc is None else 100 * (acc - ref_acc)
        lines.append(
            f"| {label} | {fmt(sizes.get(path, 0) / 1e6, '.1f')} | {fmt(acc, '.4f')} | {fmt(delta, '+.2f')} | "
            f"{fmt(m.get('balanced_accuracy'), '.4f')} | {fmt(pm.get('precision'))} / {fmt(pm.get('recall'))} | "
            f"{fmt(m.get('ece'), '.4f')} | {fmt(lo.get('p50_ms'), '.2f')} | {fmt(lo.get('ratio_p50'), '.2f')} | "
            f"{fmt(hi.get('images_per_s'), '.1f')} | {fmt(hi.get('ratio_throughput'), '.2f')} | "
            f"{fmt(parity_acc.get(path), '.4f')} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    data = Path(a.data).resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        print(f"error: --data {data} needs train/ and val/ ImageFolders", file=sys.stderr)
        return 2
    work = Path(a.work)
    if not work.is_absolute():
        work = REPO / work
    cmds = have_commands()
    needed = ["eval", "bench"] + ([] if a.checkpoint else ["train"]) + ["export"]
    missing = [c for c in needed if not cmds[c]]
    if missing:
        print(f"error: this checkout has no `edgecls {'`, `edgecls '.join(missing)}` yet", file=sys.stderr)
        return 2
    log: List[Tuple[str, Optional[float]]] = []
    try:
        # 1. train
        if a.checkpoint:
            ckpt = Path(a.checkpoint).resolve()
        else:
            ckpt = work / "train" / "best.pt"
            args = ["train", "--data", str(data), "--arch", a.arch, "--weights", a.weights,
                    "--positive", a.positive, "--out", str(work / "train"), "--exist-ok", "--no-progress"]
            if a.epochs:
                args += ["--epochs", str(a.epochs)]
            edgecls(args + shlex.split(a.train_args), log, reuse=a.reuse and ckpt.is_file())
        # 2. export FP32 + FP16 + both INT8 forms, calibrated on train images, parity on val
        export = work / "export"
        # exit 3 = an artifact failed its parity check: it is kept as *.failed and left out of the table, and the
        # report says so (the other artifacts are still measured)
        edgecls(["export", str(ckpt), "--out", str(export), "--fp16", "--int8", "--calib", str(data / "train"),
                 "--parity-data", str(data / "val")] + shlex.split(a.export_args), log,
                reuse=a.reuse and (export / "parity.json").is_file(), ok_codes=(0, 3))
        failed = parity_failures(export)
        artifacts = [str(ckpt)] + [str(export / f) for f, _ in EXPORTS if (export / f).is_file()]
        labels = {str(ckpt): "PyTorch eager (checkpoint)"}
        labels.update({str(export / f): lab for f, lab in EXPORTS if (export / f).is_file()})
        # 3. eval each on val, through the runtime path
        evals = {}
        max_threads = str(max(int(t) for t in a.threads.split(",")))
        for path in artifacts:
            stem = Path(path).stem
            out_json = work / "eval" / f"{stem}.json"
            edgecls(["eval", path, "--data", str(data / "val"), "--threads", max_threads, "--device", "cpu",
                     "--out", str(work / "eval" / stem), "--json", str(out_json)], log,
                    reuse=a.reuse and out_json.is_file())
            evals[path] = json.loads(out_json.read_text())
        # 4. bench, interleaved, PyTorch as the reference
        bench_json, bench_md = work / "bench.json", work / "bench.md"
        edgecls(["bench"] + artifacts + ["--batch", a.batch, "--threads", a.threads, "--iters", str(a.iters),
                                         "--rounds", str(a.rounds), "--images", str(data / "val"), "--device", "cpu",
                                         "--json", str(bench_json), "--markdown", str(bench_md)], log,
                reuse=a.reuse and bench_json.is_file())
        bench = json.loads(bench_json.read_text())
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    from edgecls.evaluation.machine import machine_summary

    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        f"## Performance ({data.name}, {a.arch})",
        "",
        f"- date: {date}; machine: {machine_summary(bench['machine'])}",
        f"- reproduce: `.venv/bin/python bench/bench_models.py {' '.join(shlex.quote(x) for x in (argv or sys.argv[1:]))}`"
        .rstrip() + " (see bench/README.md)",
        f"- accuracy on `{data.name}/val` ({next(iter(evals.values()))['metrics']['n']} images) through the runtime "
        "preprocessing; speed from `edgecls bench` (interleaved rounds, medians)",
        "",
        summary_table(evals, bench, labels, str(ckpt), parity_accuracy(work / "export", str(ckpt))),
        "",
        "<details><summary>all bench numbers</summary>",
        "",
        Path(bench_md).read_text().strip() if Path(bench_md).is_file() else "(bench.md missing)",
        "",
        "</details>",
        "",
    ]
    if failed:
        text += ["Left out (failed the export's parity check, kept as `*.failed` by `edgecls export`):", ""]
        text += [f"- `{name}`: {reason}" for name, reason in sorted(failed.items())] + [""]
    text += [
        "Commands (wall time):",
        "",
        "```",
    ] + [f"{c}    # {'reused from an earlier run' if s is None else f'{s:.0f} s'}" for c, s in log] + ["```", ""]
    report = "\n".join(text)
    out = Path(a.out)
    if not out.is_absolute():
        out = REPO / out
    write_atomic(out, report)
    print(report)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
