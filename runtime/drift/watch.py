"""The run's drift watch: one :class:`~.monitor.SourceMonitor` per source, the alarms raised, and a hook.

``observe(source, chw, pred, frame)`` is called once per classified frame (from the loop's emitting thread) and
returns what the frame's record carries as ``drift``: ``False``, or the list of kinds firing on that source. An
alarm is a kind starting to fire; each is kept (source, kind, frame, Unix time, up to :data:`MAX_ALARMS`) and
counted per source and kind. ``on_alarm(source, kinds, active)`` is called whenever a source's set of firing kinds
changes (``active``: something fires now), e.g. to collect that source's frames while it lasts.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgecls.runtime.drift.image_checks import grey_thumbnail
from edgecls.runtime.drift.monitor import DriftConfig, SourceMonitor, Thresholds
from edgecls.runtime.drift.reference import DriftReference

log = logging.getLogger(__name__)

MAX_ALARMS = 1000
OnAlarm = Callable[[str, Tuple[str, ...], bool], None]


class DriftWatch:
    def __init__(self, reference: DriftReference, mean: Sequence[float], std: Sequence[float],
                 config: Optional[DriftConfig] = None, on_alarm: Optional[OnAlarm] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.reference = reference
        self.config = config or DriftConfig()
        self.thresholds = Thresholds.from_reference(reference, self.config)
        self.mean, self.std = tuple(mean), tuple(std)
        self.on_alarm = on_alarm
        self.clock = clock
        self.monitors: Dict[str, SourceMonitor] = {}
        self.firing: Dict[str, Tuple[str, ...]] = {}
        self.alarms: List[Dict[str, Any]] = []
        self.alarms_not_kept = 0
        self.counts: Counter = Counter()  # (source, kind) -> alarms

    def monitor(self, source: str) -> SourceMonitor:
        m = self.monitors.get(source)
        if m is None:
            m = self.monitors[source] = SourceMonitor(self.thresholds, self.config, seed=len(self.monitors))
            self.firing[source] = ()
        return m

    def observe(self, source: str, chw: np.ndarray, pred: Any, frame: Optional[int] = None) -> Union[bool, List[str]]:
        m = self.monitor(source)
        kinds = m.observe(grey_thumbnail(chw, self.mean, self.std), pred)
        before = self.firing[source]
        if kinds != before:
            self._changed(source, before, kinds, m.frames if frame is None else frame)
        return list(kinds) if kinds else False

    def _changed(self, source: str, before: Tuple[str, ...], kinds: Tuple[str, ...], frame: int) -> None:
        self.firing[source] = kinds
        for k in kinds:
            if k in before:
                continue
            self.counts[(source, k)] += 1
            event = {"source": source, "kind": k, "frame": int(frame), "time": round(self.clock(), 3)}
            if len(self.alarms) < MAX_ALARMS:
                self.alarms.append(event)
            else:
                self.alarms_not_kept += 1
            log.warning("drift on %s: %s from frame %d", source, k, frame)
        ended = [k for k in before if k not in kinds]
        if ended:
            log.info("drift on %s ended: %s at frame %d", source, ", ".join(ended), frame)
        if self.on_alarm is not None:
            try:
                self.on_alarm(source, kinds or tuple(ended), bool(kinds))
            except Exception:  # a failing hook must not stop the cameras
                log.exception("drift on_alarm hook failed for %s", source)

    def statistic(self, source: str) -> float:
        return self.monitors[source].statistic

    def summary_lines(self) -> List[str]:
        lines = []
        for a in self.alarms:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["time"]))
            lines.append(f"drift: {a['source']}: {a['kind']} from frame {a['frame']} ({stamp})")
        if self.alarms_not_kept:
            lines.append(f"drift: ... and {self.alarms_not_kept} more alarms")
        firing = [f"{s} ({', '.join(k)})" for s, k in self.firing.items() if k]
        if firing:
            lines.append("drift still firing at the end: " + "; ".join(firing))
        return lines

    def to_dict(self) -> Dict[str, Any]:
        return {"alarms": list(self.alarms), "alarms_not_kept": self.alarms_not_kept,
                "firing": {s: list(k) for s, k in self.firing.items() if k},
                "scenes": {s: m.scenes for s, m in self.monitors.items()}}
