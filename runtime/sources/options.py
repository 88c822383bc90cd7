"""How sources are opened: reconnects, the open timeout, the RTSP pipeline's latency and codec, looping files."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from edgecls.core.errors import InputError
from edgecls.runtime.sources.live import RetryPolicy

RTSP_CODECS = ("h264", "h265")


@dataclass(frozen=True)
class SourceOptions:
    """``retry``: reopening a dropped stream; ``open_timeout``: seconds an open (and the first frame) may take
    (None: wait as long as OpenCV does); ``rtsp_latency``: ms of jitter buffer in the hardware-decode RTSP pipeline
    (``rtspsrc latency``); ``rtsp_codec``: what the RTSP camera sends (h264 | h265); ``loop``: replay video files
    and image folders from the start when they end; ``realtime``: video files as live sources at their own frame
    rate; ``fps_cap``: classify at most this many frames/s of each live source."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    open_timeout: Optional[float] = None
    rtsp_latency: int = 200
    rtsp_codec: str = "h264"
    loop: bool = False
    realtime: bool = False  # video files played at their frame rate as live sources (newest frame, drops counted)
    fps_cap: Optional[float] = None  # classify at most this many frames/s of each live source


    def __post_init__(self) -> None:
        if self.open_timeout is not None and not (isinstance(self.open_timeout, (int, float)) and self.open_timeout > 0):
            raise InputError(f"--open-timeout must be a number of seconds > 0, got {self.open_timeout!r}")
        if not isinstance(self.rtsp_latency, int) or self.rtsp_latency < 0:
            raise InputError(f"--rtsp-latency must be an integer number of milliseconds >= 0, got {self.rtsp_latency!r}")
        if self.fps_cap is not None and not (isinstance(self.fps_cap, (int, float)) and self.fps_cap > 0):
            raise InputError(f"--fps-cap must be a number of frames per second > 0, got {self.fps_cap!r}")
        if self.rtsp_codec not in RTSP_CODECS:
            raise InputError(f"--rtsp-codec {self.rtsp_codec!r} is not one of {', '.join(RTSP_CODECS)}")
