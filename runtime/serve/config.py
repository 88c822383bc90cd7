"""What ``edgecls serve`` was asked to do, validated once."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgecls.core.errors import InputError
from edgecls.runtime.decision import check_threshold
from edgecls.runtime.preprocess import DEFAULT_MAX_PIXELS  # the loader's own bound (50 MP)
from edgecls.runtime.slot.config import SlotConfig

DEFAULT_MAX_BYTES = 20 * 2**20  # 20 MiB per upload
DEFAULT_MAX_BATCH = 8  # models with a dynamic batch; an engine's profile maximum wins
DEFAULT_HEADER_TIMEOUT_S = 10.0  # a request line + headers must arrive within this, from the first byte
DEFAULT_BODY_TIMEOUT_S = 10.0  # a body gets this long, plus 1 s per --min-upload-rate bytes received
DEFAULT_MIN_UPLOAD_RATE = 16 * 1024  # bytes/s (a 20 MiB upload may take up to ~22 minutes)
DEFAULT_MAX_CONNECTIONS = 2048  # open connections; more are answered 503 and closed
DEFAULT_SHUTDOWN_TIMEOUT_S = 3.0  # SIGTERM: in-flight requests get this long, then the rest are closed
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``edgecls serve`` was asked to do."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    threads: Optional[int] = None  # onnxruntime intra-op threads (None: runtime.run.plan decides, as for `run`)
    streams: Optional[int] = None  # batches in flight at once (None: on the CPU one per core, 1 thread each)
    allow_fallback: bool = False
    max_batch: Optional[int] = None  # None: the model's profile maximum, else DEFAULT_MAX_BATCH
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: Optional[int] = None  # decode/preprocess threads (None: half the CPUs, 1 to 4, as `edgecls run`)
    threshold: Optional[float] = None
    topk: int = 3
    name: Optional[str] = None  # KServe model name (default: the model file's stem)
    backend: Optional[str] = None  # triton://host:port/name: preprocessing here, inference on a Triton server
    # hostile and careless clients (see docs/serving.md, "edgecls serve against slow, careless and hostile clients")
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_buffered_bytes: Optional[int] = None  # bodies held at once, all requests together (None: 8 x --max-bytes)
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    slot: SlotConfig = SlotConfig()  # new models: --allow-new-classes, --golden, --watch (runtime.slot)

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InputError(f"--port must be in 0..65535 (0: any free port), got {self.port!r}")
        if not self.host:
            raise InputError("--host is empty; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
        for name in ("max_bytes", "max_pixels", "topk"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        for name in ("min_upload_rate", "max_connections"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        for name in ("header_timeout_s", "body_timeout_s", "shutdown_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 < float(v) <= 3600.0:
                raise InputError(f"--{name[:-2].replace('_', '-')} must be in (0, 3600] seconds, got {v!r}")
        if self.max_buffered_bytes is not None and (not isinstance(self.max_buffered_bytes, int)
                                                    or self.max_buffered_bytes < self.max_bytes):
            raise InputError(f"--max-buffered-bytes must be an integer >= --max-bytes ({self.max_bytes}), "
                             f"got {self.max_buffered_bytes!r}")
        for name in ("threads", "streams", "workers", "max_batch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if not 0.0 <= float(self.max_wait_ms) <= 1000.0:
            raise InputError(f"--max-wait-ms must be in [0, 1000], got {self.max_wait_ms!r}")
        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")
        if self.name is not None and not NAME_RE.match(self.name):
            raise InputError(f"--name {self.name!r}: use letters, digits, '_', '.', '-' (it is part of the URL)")

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        from edgecls.runtime.slot.identity import resolve_model

        try:  # a model folder or <name>/<version>/model.onnx: the folder's name
            named = resolve_model(self.model)[1]
        except InputError:
            named = Path(self.model).name
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", named) or "model"
        return stem if NAME_RE.match(stem) else f"m_{stem}"

    @property
    def buffer_budget(self) -> int:
        """Bytes of request bodies held at once across all requests (503 + Retry-After above)."""
        return self.max_buffered_bytes if self.max_buffered_bytes is not None else 8 * self.max_bytes

    @property
    def public(self) -> bool:
        """True when the server listens beyond this machine."""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"
