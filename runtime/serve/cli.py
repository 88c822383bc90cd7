"""``edgecls serve MODEL``: the HTTP server. Only typer and the standard library at import time (fast ``--help``).

The model's spec is checked before the server starts (a bad model exits 2 at once); the backend loads after
startup (``/v2/health/ready`` is 503 until then; a backend that cannot load stops the server with its exit code).
SIGTERM or Ctrl-C: uvicorn stops accepting connections, in-flight requests and queued batches finish, the model
is closed.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, List, Optional

import typer

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 30


def run_server(cfg: Any, announce: Optional[Callable[[str], None]] = None, access_log: bool = False) -> None:
    """Serve ``cfg`` (a ServeConfig) until SIGTERM/SIGINT; raises the load error if the model could not load."""
    from edgecls.runtime.model_io import load_model_spec
    from edgecls.runtime.serve.app import create_app, import_fastapi

    import_fastapi()
    try:
        import uvicorn
    except ImportError as e:
        from edgecls.core.errors import CapabilityError

        raise CapabilityError("edgecls serve needs uvicorn: pip install 'edgecls[serve]'") from e
    load_model_spec(cfg.model)  # a model without a valid spec: exit 2 before anything listens
    failures: List[BaseException] = []
    holder: List[Any] = []

    def on_load_error(e: BaseException) -> None:
        failures.append(e)
        if holder:
            holder[0].should_exit = True

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and announce is not None:
                port = self.servers[0].sockets[0].getsockname()[1]
                host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
                announce(f"http://{host}:{port}")

    app = create_app(cfg, on_load_error=on_load_error)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False)
    server = Server(config)
    holder.append(server)
    server.run()
    if failures:
        raise failures[0]
    if not server.started:
        from edgecls.core.errors import CapabilityError

        raise CapabilityError(f"edgecls serve could not listen on {cfg.host}:{cfg.port} (see the error above)")


def serve_command(
    model: str = typer.Argument(..., help="Exported model: .onnx (with its metadata) or TensorRT .engine/.plan."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, printed at startup)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | tensorrt (cuda:N / tensorrt:N pick a GPU)."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads (default: onnxruntime's)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Most images per inference call "
                                            "[default: the engine's batch profile maximum, else 8]."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="How long a request may wait for others to "
                                      "share its inference call."),
    max_bytes: int = typer.Option(20 * 2**20, "--max-bytes", help="Largest upload accepted (413 above)."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", help="Largest decoded image, width x height "
                                   "(413 above)."),
    workers: Optional[int] = typer.Option(None, help="Decode/preprocess threads (default: half the CPUs, 1 to 4)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence threshold (default: the model's)."),
    topk: int = typer.Option(3, help="How many classes to list per result."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the KServe v2 URLs "
                                       "[default: the model file's stem]."),
    backend: Optional[str] = typer.Option(None, "--backend", help="triton://host:port/model: preprocess here, "
                                          "infer on a Triton server."),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="Run on the CPU (with a loud warning) "
                                        "if the requested provider is missing."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
) -> None:
    """Serve a model over HTTP: POST /predict (image bytes or a multipart file → the record `edgecls run`
    prints), KServe v2 (/v2/health/live, /v2/health/ready, /v2/models/<name>/infer), Prometheus /metrics.

    Concurrent requests are micro-batched; bad uploads get a 4xx JSON error; SIGTERM finishes in-flight work.
    Needs the serve extra (FastAPI, uvicorn, prometheus-client). Exit codes: 2 bad model, 4 missing capability."""
    from edgecls.runtime.serve.config import ServeConfig

    cfg = ServeConfig(model=model, host=host, port=port, device=device, threads=threads,
                      allow_fallback=allow_fallback, max_batch=max_batch, max_wait_ms=max_wait_ms,
                      max_bytes=max_bytes, max_pixels=max_pixels, workers=workers, threshold=threshold, topk=topk,
                      name=name, backend=backend)
    if cfg.public:
        typer.echo(f"warning: listening on {host}: reachable from other machines, with no authentication or TLS "
                   "(put it behind a reverse proxy)", err=True)

    def announce(url: str) -> None:
        typer.echo(f"edgecls serve: {url}  (model {cfg.model_name}: POST {url}/predict, "
                   f"{url}/v2/models/{cfg.model_name}/infer, {url}/metrics)", err=True)
        sys.stderr.flush()

    run_server(cfg, announce=announce, access_log=access_log)
