"""``edgecls eval`` and ``edgecls bench``: thin typer commands over :mod:`edgecls.evaluation.evaluate` /
:mod:`edgecls.evaluation.bench`.

Only typer and the standard library at module top, so ``edgecls --help`` stays fast.
"""
from __future__ import annotations

import shlex
import sys
from typing import List, Optional

import typer


def eval_command(
    model: str = typer.Argument(..., help="Checkpoint (.pt), ONNX model (.onnx) or TensorRT engine (.engine/.plan)."),
    data: str = typer.Option(..., "--data", help="Labeled ImageFolder: DIR/<class>/*.jpg (class names as the model's)."),
    batch: int = typer.Option(32, "--batch", help="Images per inference call."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (onnxruntime intra-op / torch)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (engines need a GPU)."),
    out: Optional[str] = typer.Option(
        None, "--out", help="Folder for eval.json, predictions.csv, confusion.csv/.png, reliability.png, "
        "pr_curve.png, risk_coverage.png "
        "(default: runs/eval/<model name>, a new numbered folder if it exists)."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Also write the result JSON here."),
    no_files: bool = typer.Option(False, "--no-files", help="Write nothing but --json (if given)."),
    workers: int = typer.Option(2, "--workers", help="Image decoding threads."),
    coverage: Optional[float] = typer.Option(
        None, "--coverage", help="Conformal sets at this coverage (default: the model's own): measured coverage and "
        "average set size."),
    ood_data: Optional[str] = typer.Option(
        None, "--ood-data", help="Folder of images of products the model does not know: AUROC of its unknown score "
        "and the share flagged at its threshold."),
    preprocess: str = typer.Option("standard", "--preprocess", help="standard: the model's resize + centre crop; "
                                   "deepstream: the whole image scaled to the input size, as DeepStream's nvinfer "
                                   "does (what the missing crop costs)."),
    rotations: bool = typer.Option(
        False, "--rotations", help="Also score every image turned 90, 180 and 270 degrees (counter-clockwise, "
        "after decoding, before preprocessing): accuracy per angle."),
) -> None:
    """Accuracy, balanced accuracy, per-class P/R/F1, confusion matrix, calibration (ECE) and the positive class's
    precision/recall at the model's threshold, through the same runtime path a deployment uses; with the confidence
    the model carries: conformal coverage and set size, risk-coverage (AURC, PNG), unknown-product AUROC."""
    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    if out is None and not no_files:
        out = _default_out(model)
    cfg = EvalConfig(
        model=model, data=data, batch=batch, threads=threads, device=device, out=None if no_files else out,
        json_path=json_path, workers=workers, progress=sys.stderr.isatty(), preprocess=preprocess, coverage=coverage,
        ood_data=ood_data, rotations=rotations,
    )
    result = evaluate(cfg)
    typer.echo(result.table())


def _default_out(model: str) -> str:
    """``runs/eval/<folder>-<model stem>``, numbered like train's runs when it exists (the one scheme)."""
    from pathlib import Path

    from edgecls.train.rundir import free_run_dir

    p = Path(model)
    return str(free_run_dir(Path("runs") / "eval", f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem))


def _command_line(name: str) -> str:
    """``edgecls <name> ...`` as typed (from sys.argv), for the record in the outputs."""
    argv = sys.argv[1:]
    if name not in argv:
        return ""
    return "edgecls " + " ".join(shlex.quote(a) for a in argv[argv.index(name):])


def bench_command(
    models: List[str] = typer.Argument(..., help="Artifacts to compare: .pt (PyTorch eager), .onnx, .engine."),
    batch: str = typer.Option("1,8", "--batch", help="Comma-separated batch sizes."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Comma-separated thread counts (default: 1,<cores>)."),
    warmup: int = typer.Option(5, "--warmup", help="Warm-up inferences per artifact and cell."),
    iters: int = typer.Option(20, "--iters", help="Timed inferences per artifact per round."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds; medians over rounds are reported."),
    reference: Optional[str] = typer.Option(None, "--reference", help="PyTorch checkpoint for the reference row."),
    images: Optional[str] = typer.Option(None, "--images", help="Folder of images for inputs and the end-to-end loop."),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda."),
    json_path: Optional[str] = typer.Option(None, "--json", help="Write the full result as JSON."),
    markdown: Optional[str] = typer.Option(None, "--markdown", help="Write the Markdown tables here."),
    no_preprocess: bool = typer.Option(False, "--no-preprocess", help="Skip the preprocessing benchmark."),
    no_end_to_end: bool = typer.Option(False, "--no-end-to-end", help="Skip the end-to-end loop."),
    no_peak: bool = typer.Option(False, "--no-peak", help="Skip measuring the FP32 MatMul peak."),
) -> None:
    """Latency p50/p90/p99 and throughput per artifact × batch × threads beside the PyTorch reference, model size,
    preprocessing cost and the machine, as a table (stdout), Markdown and JSON."""
    from edgecls.evaluation.bench import BenchConfig, parse_int_list, run_bench
    from edgecls.runtime.run.loop import usable_cpus

    if threads is None:
        threads = ",".join(str(t) for t in dict.fromkeys((1, usable_cpus())))
    cfg = BenchConfig(
        models=tuple(models), batches=parse_int_list(batch, "--batch"), threads=parse_int_list(threads, "--threads"),
        warmup=warmup, iters=iters, rounds=rounds, reference=reference, images=images, device=device,
        preprocess=not no_preprocess, end_to_end=not no_end_to_end, peak=not no_peak, json_path=json_path,
        markdown_path=markdown, command=_command_line("bench"),
    )
    result = run_bench(cfg, progress=sys.stderr.isatty())
    typer.echo(result.markdown())
