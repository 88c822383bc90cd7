"""What ``edgecls run`` was asked to do, validated once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

from edgecls.core.errors import InputError
from edgecls.runtime.decision import check_threshold
from edgecls.runtime.preprocess import DEFAULT_MAX_PIXELS
from edgecls.runtime.slot.config import SlotConfig
from edgecls.runtime.sources.live import RetryPolicy
from edgecls.runtime.sources.options import SourceOptions

FORMATS = ("jsonl", "csv", "table")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``edgecls run`` was asked to do."""

    model: str
    sources: Tuple[str, ...] = ()
    cameras: Tuple[int, ...] = ()
    device: str = "auto"
    threads: Optional[int] = None  # onnxruntime intra-op threads (None: onnxruntime's default)
    batch: Union[int, str] = 1  # images per inference call for files/videos (live: 1); "auto": measured at start
    streams: Optional[int] = None  # inference calls in flight (None: plan.py decides from the sources and CPUs)
    threshold: Optional[float] = None  # None: the model's
    coverage: Optional[float] = None  # conformal sets' coverage; None: the model's (when it carries calibration)
    topk: int = 3
    smooth: int = 1  # average probabilities over the last N frames of a video/live source
    fmt: str = "jsonl"
    show: bool = False
    save: Optional[str] = None
    allow_fallback: bool = False
    max_frames: Optional[int] = None  # per source
    workers: Optional[int] = None  # decode/preprocess threads (None: half the CPUs, 1 to 4)
    retries: int = 5  # reopen attempts for a dropped stream
    open_timeout: Optional[float] = 20.0  # s an open (and a live source's first frame) may take; None: no bound
    rtsp_latency: int = 200  # ms, rtspsrc latency of the hardware-decode RTSP pipeline
    rtsp_codec: str = "h264"  # what rtsp:// cameras send (h264 | h265), for the hardware-decode pipeline
    loop: bool = False  # replay video files / image folders from the start when they end
    realtime: bool = False  # video files as live sources at their own frame rate (drops counted, latency)
    probs: bool = False  # add every class probability to the records
    summary: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image, from its header before decoding (0: no bound)
    backend: Optional[str] = None  # triton://host:port/model: inference on a Triton server (preprocessing here)
    metrics_port: Optional[int] = None  # Prometheus metrics of the run on this port (0: any free port)
    metrics_host: str = "127.0.0.1"
    view: Optional[str] = None  # --view [HOST:]PORT: the run in a browser (webview.py)
    view_token: Optional[str] = field(default=None, repr=False)  # $EDGECLS_TOKEN: needed beyond 127.0.0.1
    slot: SlotConfig = SlotConfig()  # new models: --allow-new-classes, --golden, --watch (runtime.slot)
    drift: bool = True  # watch drift against the artifact's reference (runtime/drift), when it has one
    drift_reference: Optional[str] = None  # another path for the reference (default: MODEL's .drift.json)
    fps_cap: Optional[float] = None  # classify at most this many frames/s of each live source
    sources_file: Optional[str] = None  # live sources, one a line, re-read when it changes (sources_control.py)
    collect: Optional[Any] = None  # --collect DIR: a runtime.collect.config.CollectConfig
    on_drift: Optional[str] = None  # --on-drift collect: keep every frame of a source while its drift alarm lasts

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in (self.sources or ())))
        object.__setattr__(self, "cameras", tuple(int(c) for c in (self.cameras or ())))
        if self.fmt not in FORMATS:
            raise InputError(f"--format {self.fmt!r} is not one of {', '.join(FORMATS)}")
        if self.batch != "auto" and not (isinstance(self.batch, int) and self.batch >= 1):
            raise InputError(f"--batch must be an integer >= 1 or 'auto' (measured at start), got {self.batch!r}")
        for name in ("topk", "smooth"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"--{name} must be an integer >= 1, got {v!r}")
        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")
        if self.coverage is not None and not 0.0 < float(self.coverage) < 1.0:
            raise InputError(f"--coverage must be in (0, 1), e.g. 0.9, got {self.coverage!r}")
        for name in ("threads", "streams", "workers", "max_frames"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise InputError(f"--retries must be an integer >= 0, got {self.retries!r}")
        if self.on_drift not in (None, "collect"):
            raise InputError(f"--on-drift {self.on_drift!r} is not valid: the one action is 'collect'")
        if self.on_drift == "collect" and (self.collect is None or not self.drift):
            raise InputError("--on-drift collect needs --collect DIR (where the frames go) and the drift watch "
                             "(not --no-drift)")
        if not isinstance(self.max_pixels, int) or self.max_pixels < 0:
            raise InputError(f"--max-pixels must be an integer >= 0 (0: no bound), got {self.max_pixels!r}")
        if self.metrics_port is not None and not (isinstance(self.metrics_port, int) and 0 <= self.metrics_port <= 65535):
            raise InputError(f"--metrics-port must be in 0..65535 (0: any free port), got {self.metrics_port!r}")
        if self.view is not None:
            from edgecls.runtime.run.access import check_exposure, parse_address

            check_exposure(parse_address(self.view)[0], self.view_token)
        self.source_options()  # validates --open-timeout, --rtsp-latency, --rtsp-codec
        if not self.sources and not self.cameras and not self.sources_file:
            raise InputError("no source: give image files, folders, globs, videos, streams, csi://N, --camera N or "
                             "--sources-file PATH")

    def source_options(self) -> SourceOptions:
        return SourceOptions(RetryPolicy(retries=self.retries), self.open_timeout, self.rtsp_latency, self.rtsp_codec,
                             self.loop, self.realtime, self.fps_cap)
