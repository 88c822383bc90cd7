"""``edgecls doctor [MODEL] [--device D] [--json]``: a thin typer command over :mod:`edgecls.runtime.doctor`."""
from __future__ import annotations

from typing import Optional

import typer


def doctor_command(
    model: Optional[str] = typer.Argument(None, help="Check readiness for this model (.onnx or TensorRT .engine)."),
    device: str = typer.Option("auto", "--device", help="The --device the model will run with: auto | cpu | cuda | "
                               "tensorrt (cuda:N / tensorrt:N)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON (same findings)."),
    no_load: bool = typer.Option(False, "--no-load", help="Check the model's spec and build record without loading "
                                 "it (no GPU memory used)."),
) -> None:
    """Is this machine ready to run a model? Platform (L4T → JetPack → expected CUDA/TensorRT), what really imports
    (tensorrt, cv2 and GStreamer, numpy, onnxruntime and the providers that really attach), NumPy-ABI mismatches,
    cameras, power mode; each problem with its fix. Exit 0 when ready (for MODEL, or for ONNX models without one),
    4 when not."""
    import json

    from edgecls import __version__
    from edgecls.runtime.doctor.checks import diagnose
    from edgecls.runtime.doctor.model import check_model, model_needs
    from edgecls.runtime.doctor.probes import gather
    from edgecls.runtime.doctor.report import Report, render_text

    facts = gather()
    findings = diagnose(facts, model_needs(model))
    model_info = None
    if model is not None:
        more, model_info = check_model(facts, model, device, load=not no_load)
        findings += more
    report = Report(facts, findings, model_info, __version__)
    typer.echo(json.dumps(report.to_dict(), indent=2, default=str) if json_out else render_text(report), nl=False)
    if json_out:
        typer.echo("")
    raise typer.Exit(report.exit_code)
