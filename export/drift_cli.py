"""``edgecls drift-reference``: (re)build the drift reference beside exported models.

Only typer/stdlib at module top (``edgecls --help`` stays fast).
"""
from __future__ import annotations

from typing import List, Optional

import typer


def drift_reference_cli(
    models: List[str] = typer.Argument(..., help="model.onnx / model_int8_cpu.onnx / model.engine (each run on the "
                                       "images itself)."),
    images: Optional[str] = typer.Option(None, "--images", help="The images the model's confidence was calibrated "
                                         "on (a folder, searched recursively)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="best.pt: scores on the calibration "
                                             "split it recorded, image statistics on its training images too."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N (engines: cuda)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for inference."),
) -> None:
    """Write MODEL's .drift.json: the calibration images' statistics and the model's scores on them, which
    `edgecls run` compares each camera with (export writes one for every artifact)."""
    import os

    from edgecls.core.errors import InputError
    from edgecls.export.drift_reference import (
        build_reference,
        calibration_images,
        folder_reference,
        learned_images,
    )
    from edgecls.runtime.drift.reference import reference_path

    if (images is None) == (checkpoint is None):
        raise InputError("give the calibration images: --images DIR or --checkpoint best.pt (one of them)")
    for m in models:
        if not os.path.isfile(m):
            raise InputError(f"model {m!r} does not exist")
        if images is not None:
            ref = folder_reference(m, images, device, threads)
        else:
            from edgecls.reference.checkpoint import load_checkpoint

            data = load_checkpoint(checkpoint).data or {}
            paths, source = calibration_images(data)
            stats_paths, stats_source = learned_images(data, paths)
            ref = build_reference(m, paths, source, device, threads, stats_paths, stats_source)
            ref.save(m)
        typer.echo(f"{reference_path(m)}: scores on {ref.n_scores} images ({ref.source}), image statistics on "
                   f"{ref.n} ({ref.stats_source})")
