"""``edgecls calibrate``: typer options → :func:`edgecls.export.recalibrate.calibrate_command` → a summary.

Only typer/stdlib at module top (``edgecls --help`` stays fast).
"""
from __future__ import annotations

from typing import List, Optional

import typer


def calibrate_cli(
    models: List[str] = typer.Argument(..., help="best.pt / model.onnx / model_int8.onnx / model.engine (several: "
                                       "each fitted on its own outputs)."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled folder DIR/<class>/*.jpg the model never trained "
                             "on (e.g. phones labelled after training)."),
    target_precision: Optional[float] = typer.Option(
        None, "--target-precision", help="Precision to promise (default: the model's own setting)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="The promise may fail with this probability "
                                          "(default: the model's own)."),
    coverage: Optional[float] = typer.Option(None, "--coverage", help="Default coverage of the sets (default: the "
                                             "model's own)."),
    best_promise: bool = typer.Option(False, "--best-promise", help="Deploy the highest target (up to "
                                      "--target-precision) these images certify (each ladder target at delta/m)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write a copy here instead of in place (one MODEL)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N (engines: cuda)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for inference."),
) -> None:
    """Re-fit a model's confidence (temperature, threshold guarantee, sets, unknown) from a labelled folder,
    without retraining and without touching its weights; written atomically (metadata and sidecar)."""
    from edgecls.export.recalibrate import calibrate_command
    from edgecls.runtime.confidence.recalibrate import describe

    results = calibrate_command(models, data, target_precision, delta, coverage, best_promise, out, device, threads)
    for m, r in zip(models, results):
        typer.echo("\n".join(describe(r, out or m)))
