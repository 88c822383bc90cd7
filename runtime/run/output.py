"""Annotated frames for ``--save`` and ``--show``: the overlay, a per-source FPS estimate, the channel order each
consumer needs (the saver takes RGB images and BGR video frames, the viewer BGR)."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.decision import Prediction
from edgecls.runtime.run.annotate import DECISION_COLORS, annotate, overlay_text
from edgecls.runtime.run.saver import Saver
from edgecls.runtime.run.stats import RunStats
from edgecls.runtime.run.viewer import Viewer
from edgecls.runtime.sources.frame import Frame

log = logging.getLogger(__name__)


class AnnotatedOutput:
    """Draws each prediction on its frame and hands the result to the saver and/or the viewer."""

    def __init__(self, saver: Optional[Saver], viewer: Optional[Viewer], stats: RunStats, web: Any = None) -> None:
        self.saver = saver
        self.viewer = viewer
        self.web = web  # --view (a WebView): gets a reference to each frame, draws only for a watching browser
        self.stats = stats
        self.sources: Dict[str, Any] = {}  # source name → source object (for its fps when saving video)
        self._fps: Dict[str, Tuple[float, float]] = {}  # source → (last time, ema of the interval)

    @property
    def active(self) -> bool:
        """Whether frames must keep their decoded image until their prediction is out."""
        return self.saver is not None or self.viewer is not None or self.web is not None

    def _fps_of(self, source: str) -> Optional[float]:
        now = time.perf_counter()
        last = self._fps.get(source)
        if last is None:
            self._fps[source] = (now, 0.0)
            return None
        dt = now - last[0]  # the mean interval, inverted (a mean of 1/dt overstates a loop that emits in bursts)
        ema = dt if last[1] == 0 else 0.9 * last[1] + 0.1 * dt
        self._fps[source] = (now, ema)
        return 1.0 / ema if ema > 0 else 0.0

    def emit(self, frame: Frame, pred: Prediction) -> bool:
        """Save and/or show ``frame`` annotated with ``pred``, then drop its image; False when the viewer quits."""
        sequence = frame.frame is not None
        fps = self._fps_of(frame.source) if sequence else None
        if self.web is not None:
            self.web.publish(frame, pred, fps)
            if self.saver is None and self.viewer is None:
                frame.image = None
                return True
        if not isinstance(frame.image, np.ndarray):  # a decoded PIL image (RGB) from an image file
            frame.image = np.asarray(frame.image)
        color = DECISION_COLORS.get(pred.decision, (255, 255, 255))
        lines = overlay_text(pred, fps)
        keep_going = True
        if self.saver is not None:
            self._save(frame, lines, color, sequence)
        if self.viewer is not None:
            img = annotate(frame.image, lines, bgr=frame.bgr, color=color)
            if not frame.bgr:
                img = np.ascontiguousarray(img[:, :, ::-1])
            keep_going = self.viewer.show(frame.source, img)
        frame.image = None
        return keep_going

    def _save(self, frame: Frame, lines: Sequence[str], color: Tuple[int, int, int], sequence: bool) -> None:
        if sequence:
            img = annotate(frame.image, lines, bgr=frame.bgr, color=color)
            if not frame.bgr:
                img = img[:, :, ::-1]
            src_fps = getattr(self.sources.get(frame.source), "fps", None)
            self.saver.save_video_frame(frame, np.ascontiguousarray(img), src_fps)
        else:
            rgb = frame.image[:, :, ::-1] if frame.bgr else frame.image
            err = self.saver.save_image(frame, annotate(rgb, lines, color=color))
            if err:
                log.error(err)
                self.stats.notes.append(err)
