"""``edgecls run MODEL SOURCE...``: the runtime's command. Only typer/stdlib at import time (fast ``--help``)."""
from __future__ import annotations

from typing import List, Optional

import typer

from edgecls.core.errors import EXIT_INTERRUPTED


def run_command(
    model: str = typer.Argument(..., help="Exported model: .onnx (with its metadata) or TensorRT .engine/.plan (with sidecar)."),
    sources: Optional[List[str]] = typer.Argument(
        None,
        help="Image files, folders (recursive), globs, video files, csi://N, v4l2:///dev/videoN, rtsp://…, http(s)://…",
        show_default=False,
    ),
    camera: Optional[List[int]] = typer.Option(None, "--camera", help="V4L2 camera index (repeatable)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | tensorrt (cuda:N / tensorrt:N pick a GPU)."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads (default: onnxruntime's)."),
    batch: int = typer.Option(1, help="Images per inference call for files and videos (live sources: 1)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence threshold (default: the model's)."),
    topk: int = typer.Option(3, help="How many classes to list per result."),
    smooth: int = typer.Option(1, help="Average probabilities over the last N frames of a video/live source."),
    fmt: str = typer.Option("jsonl", "--format", help="Output on stdout: jsonl | csv | table."),
    show: bool = typer.Option(False, "--show", help="Show frames with label, confidence and FPS in a window."),
    save: Optional[str] = typer.Option(None, "--save", help="Write annotated images / videos to this folder."),
    allow_fallback: bool = typer.Option(
        False, "--allow-fallback", help="Run on the CPU (with a loud warning) if the requested provider is missing."
    ),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop each source after N frames."),
    workers: Optional[int] = typer.Option(None, help="Decode/preprocess threads (default: half the CPUs, 1 to 4)."),
    retries: int = typer.Option(5, help="Reopen attempts (exponential backoff) when a stream drops."),
    probs: bool = typer.Option(False, "--probs", help="Add every class probability to each record."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="Print the run summary to stderr."),
    summary_json: Optional[str] = typer.Option(None, "--summary-json", help="Also write the summary as JSON here."),
) -> None:
    """Classify images, videos, cameras and streams with an exported model (no torch needed).

    Prints one JSON line per image/frame on stdout (or --format csv|table) and a summary on stderr.
    Exit codes: 2 bad model/input, 4 missing capability (GPU provider, TensorRT, OpenCV), 5 camera/stream
    cannot open, 130 interrupted (the summary is still printed).
    """
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.run.stats import write_summary_json

    cfg = RunConfig(
        model=model,
        sources=tuple(sources or ()),
        cameras=tuple(camera or ()),
        device=device,
        threads=threads,
        batch=batch,
        threshold=threshold,
        topk=topk,
        smooth=smooth,
        fmt=fmt,
        show=show,
        save=save,
        allow_fallback=allow_fallback,
        max_frames=max_frames,
        workers=workers,
        retries=retries,
        probs=probs,
        summary=summary,
    )
    stats = run(cfg)
    if summary_json:
        write_summary_json(stats, summary_json)
    if stats.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
