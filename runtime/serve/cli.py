"""``edgecls serve MODEL``: the HTTP server. Only typer and the standard library at import time (fast ``--help``).

The model's spec is checked before the server starts (a bad model exits 2 at once); the backend loads after
startup (``/v2/health/ready`` is 503 until then; a backend that cannot load stops the server with its exit code).
SIGTERM or Ctrl-C: uvicorn stops accepting connections, in-flight requests and queued batches finish (within
``--shutdown-timeout``; requests still uploading get a 503), the model is closed, and the command exits 143
(SIGTERM) or 130 (Ctrl-C), the codes ``edgecls run`` uses. The limits against slow and hostile clients are in
:mod:`edgecls.runtime.serve.server`.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, List, Optional

import typer

from edgecls.runtime.slot.options import ALLOW_NEW_CLASSES, GOLDEN, GOLDEN_TOLERANCE

log = logging.getLogger(__name__)

def run_server(cfg: Any, announce: Optional[Callable[[str], None]] = None, access_log: bool = False) -> int:
    """Serve ``cfg`` (a ServeConfig) until SIGTERM/SIGINT; raises the load error if the model could not load.
    Returns the exit code of the clean stop: ``EXIT_TERMINATED`` (143) after SIGTERM, ``EXIT_INTERRUPTED`` (130)
    after Ctrl-C, 0 otherwise (the codes ``edgecls run`` uses)."""
    import signal

    from edgecls.core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED
    from edgecls.runtime.model_io import load_model_spec
    from edgecls.runtime.serve.app import create_app, import_fastapi
    from edgecls.runtime.serve.server import build_server

    import_fastapi()
    try:
        import uvicorn  # noqa: F401
    except ImportError as e:
        from edgecls.core.errors import CapabilityError

        raise CapabilityError("edgecls serve needs uvicorn: pip install 'edgecls[serve]'") from e
    from edgecls.runtime.slot.identity import resolve_model
    from edgecls.runtime.slot.watch import sighup_reloads

    load_model_spec(resolve_model(cfg.model)[0])  # a model without a valid spec: exit 2 before anything listens
    failures: List[BaseException] = []
    holder: List[Any] = []

    def on_load_error(e: BaseException) -> None:
        failures.append(e)
        if holder:
            holder[0].should_exit = True

    app = create_app(cfg, on_load_error=on_load_error)
    server = build_server(app, cfg, announce=announce, access_log=access_log)
    holder.append(server)
    with sighup_reloads(lambda: app.state.edgecls.watcher):  # SIGHUP: load the model again (uvicorn leaves it)
        server.run()
    if failures:
        raise failures[0]
    if not server.started:
        from edgecls.core.errors import CapabilityError

        raise CapabilityError(f"edgecls serve could not listen on {cfg.host}:{cfg.port} (see the error above)")
    if signal.SIGTERM in server.signals:
        return EXIT_TERMINATED
    if signal.SIGINT in server.signals:
        return EXIT_INTERRUPTED
    return EXIT_OK


def serve_command(
    model: str = typer.Argument(..., help="Exported model: .onnx (with its metadata) or TensorRT .engine/.plan, or a "
                                "model folder <repo>/<name>/ with version folders <version>/model.onnx (the newest "
                                "is served)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, printed at startup)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | tensorrt (cuda:N / tensorrt:N pick a GPU)."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads per call (default: on the CPU 1, "
                                          "with one batch in flight per core; else onnxruntime's)."),
    streams: Optional[int] = typer.Option(None, "--streams", help="Batches in flight at once (default: on the CPU "
                                          "one per core with 1 thread each, as `edgecls run`; GPU/TensorRT 1)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Most images per inference call "
                                            "(default: the engine's batch profile maximum, else 8)."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="How long a request may wait for others to "
                                      "share its inference call."),
    max_bytes: int = typer.Option(20 * 2**20, "--max-bytes", help="Largest upload accepted (413 above)."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", help="Largest decoded image, width x height "
                                   "(413 above)."),
    workers: Optional[int] = typer.Option(None, help="Decode/preprocess threads (default: half the CPUs, 1 to 4)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence threshold (default: the model's)."),
    topk: int = typer.Option(3, help="How many classes to list per result."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the KServe v2 URLs "
                                       "(default: the model file's stem)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="triton://host:port/model: preprocess here, "
                                          "infer on a Triton server."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Run on the CPU (with a loud warning) "
                                        "if the requested provider is missing."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds a request's line and headers may "
                                         "take (408 and closed after)."),
    body_timeout: float = typer.Option(10.0, "--body-timeout", help="Seconds a request body may take, plus 1 s "
                                       "per --min-upload-rate bytes received (408 after)."),
    min_upload_rate: int = typer.Option(16 * 1024, "--min-upload-rate", help="Bytes/s an upload must average "
                                        "beyond --body-timeout."),
    max_connections: int = typer.Option(2048, "--max-connections", help="Open connections (more: 503 + "
                                        "Retry-After, closed)."),
    max_buffered_bytes: Optional[int] = typer.Option(None, "--max-buffered-bytes", help="Request bodies held at "
                                                     "once, all requests together; 503 + Retry-After above "
                                                     "(default: 8 x --max-bytes)."),
    shutdown_timeout: float = typer.Option(3.0, "--shutdown-timeout", help="SIGTERM: seconds in-flight requests "
                                           "get before the rest are answered 503 and closed."),
    allow_new_classes: bool = ALLOW_NEW_CLASSES,
    golden: Optional[str] = GOLDEN,
    golden_tolerance: float = GOLDEN_TOLERANCE,
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Swap in a new model when the model file (or a "
                               "newer version folder) appears (SIGHUP and the repository API reload either way)."),
) -> None:
    """Serve a model over HTTP: POST /predict (image bytes or a multipart file → the record `edgecls run`
    prints), KServe v2 (/v2/health/live, /v2/health/ready, /v2/models/<name>/infer), Prometheus /metrics.

    Concurrent requests are micro-batched; bad uploads get a 4xx JSON error; slow clients time out; SIGTERM
    finishes in-flight work. A new model (SIGHUP, a replaced file, POST /v2/repository/models/<name>/load) is
    checked and swapped in between two batches, with no failed request. Needs the serve extra (FastAPI, uvicorn,
    prometheus-client). Exit codes: 2 bad
    model, 4 missing capability, 143 stopped by SIGTERM, 130 by Ctrl-C."""
    from edgecls.runtime.serve.config import ServeConfig
    from edgecls.runtime.slot.config import SlotConfig

    cfg = ServeConfig(model=model, host=host, port=port, device=device, threads=threads, streams=streams,
                      allow_fallback=allow_fallback, max_batch=max_batch, max_wait_ms=max_wait_ms,
                      max_bytes=max_bytes, max_pixels=max_pixels, workers=workers, threshold=threshold, topk=topk,
                      name=name, backend=backend, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                      min_upload_rate=min_upload_rate, max_connections=max_connections,
                      max_buffered_bytes=max_buffered_bytes, shutdown_timeout_s=shutdown_timeout,
                      slot=SlotConfig(allow_new_classes=allow_new_classes, golden=golden,
                                      golden_tolerance=golden_tolerance, watch=watch))
    if cfg.public:
        from edgecls.runtime.run.access import env_token

        auth = "the EDGECLS_TOKEN token but no TLS" if env_token() else "no authentication (set EDGECLS_TOKEN) or TLS"
        typer.echo(f"warning: listening on {host}: reachable from other machines, with {auth} "
                   "(put it behind a reverse proxy)", err=True)

    def announce(url: str) -> None:
        typer.echo(f"edgecls serve: {url}  (model {cfg.model_name}: POST {url}/predict, "
                   f"{url}/v2/models/{cfg.model_name}/infer, {url}/metrics)", err=True)
        sys.stderr.flush()

    code = run_server(cfg, announce=announce, access_log=access_log)
    if code:
        from edgecls.core.errors import EXIT_TERMINATED

        typer.echo("terminated (SIGTERM)" if code == EXIT_TERMINATED else "interrupted", err=True)
        raise typer.Exit(code)
