"""``edgecls ray MODEL INPUT --out DIR``: ``edgecls run``'s records for a catalog, on a Ray cluster. Only
typer/stdlib at import time (Ray is imported when the command runs)."""
from __future__ import annotations

from typing import Optional

import typer

from edgecls.runtime.cli import MAX_PIXELS, parse_batch


def ray_command(
    model: str = typer.Argument(..., help="Exported model: .onnx (with its metadata) or TensorRT .engine/.plan "
                                "(with sidecar), at a path every Ray node can read."),
    input: str = typer.Argument(..., help="A folder (recursive), a glob, a URI prefix (s3://, gs://), or a manifest "
                                ".csv/.parquet with columns id and path (or uri); relative paths are relative to it."),
    out: str = typer.Option(..., "--out", help="Output folder: records.jsonl (or .parquet), summary.json, shards/. "
                            "The same command again continues a job that was stopped."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join: auto (this node's cluster), "
                                          "ray://HOST:10001 (default: a local Ray on this machine)."),
    fmt: str = typer.Option("jsonl", "--format", help="Records as jsonl (exactly `edgecls run`'s, plus id) or "
                            "parquet (flat columns and the JSON record)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Photos per committed shard: a stopped job redoes at "
                                   "most the shards in flight."),
    actors: Optional[int] = typer.Option(None, "--actors", help="Model actors (default: as many as the cluster's "
                                         "CPUs allow, each loading the model once)."),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="CPUs each actor reserves; its inference "
                                         "plan (threads, streams) uses that many cores."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="GPUs each actor reserves (with --device "
                                         "cuda or tensorrt on GPU nodes)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | tensorrt, on each actor's node."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads per call (default: the plan's)."),
    batch: str = typer.Option("1", help="Images per inference call, or auto (measured by each actor at start)."),
    streams: Optional[int] = typer.Option(None, "--streams", help="Inference calls in flight per actor (default: "
                                          "one per reserved CPU on the CPU)."),
    workers: Optional[int] = typer.Option(None, help="Decode/preprocess threads per actor (default: half its CPUs)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence threshold (default: the model's)."),
    coverage: Optional[float] = typer.Option(None, "--coverage", help="Conformal sets' coverage (default: the "
                                             "model's own)."),
    topk: int = typer.Option(3, help="How many classes to list per result."),
    probs: bool = typer.Option(False, "--probs", help="Add every class probability to each record."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this, "
                                   "read from the header before decoding (0: no bound)."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Run on the CPU (with a loud warning) if "
                                        "the requested provider is missing."),
    show_progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar on stderr."),
) -> None:
    """Classify a catalog of photos on a Ray cluster: the same records as `edgecls run`, exactly once, resumable.

    Writes OUT/records.jsonl (each record is `edgecls run`'s for that photo, plus its id), OUT/summary.json and
    a summary on stderr. Work is committed in shards: stopped or crashed, the same command continues where it
    stopped. Exit codes as `edgecls run`: 0 every input classified, 2 bad model/input/--out, 4 Ray or a
    provider missing, 6 some inputs failed (error records), 7 nothing classified, 130/143 interrupted.
    """
    from edgecls.runtime.run.signals import sigterm_as_interrupt
    from edgecls.runtime.scale.config import ScaleConfig
    from edgecls.runtime.scale.job import run_job

    cfg = ScaleConfig(
        model=model, input=input, out=out, address=address, fmt=fmt, shard_size=shard_size, actors=actors,
        cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, device=device, threads=threads,
        batch=parse_batch(batch), streams=streams, workers=workers, threshold=threshold, coverage=coverage,
        topk=topk, probs=probs, max_pixels=max_pixels, allow_fallback=allow_fallback, progress=show_progress,
    )
    with sigterm_as_interrupt():
        result = run_job(cfg)
    code = result.exit_code()
    if code:
        raise typer.Exit(code)
