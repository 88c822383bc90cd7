"""What one ``edgecls run`` opened (servers, live sources, the loop's pools, the saver, the window), closed in
order at its end whatever happened."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from edgecls.runtime.run.saver import Saver
from edgecls.runtime.run.stats import RunStats
from edgecls.runtime.run.viewer import Viewer


@dataclass
class Opened:
    """What a run opened, closed in order at its end whatever happened."""

    started: List[Any] = field(default_factory=list)  # live sources
    loop: Optional[Any] = None  # the run loop (its pools)
    saver: Optional[Saver] = None
    viewer: Optional[Viewer] = None
    stats: Optional[RunStats] = None
    metrics: Optional[Any] = None  # --metrics-port server
    web: Optional[Any] = None  # --view server
    collector: Optional[Any] = None  # --collect sink (its writer finishes what is queued)

    def close(self) -> None:
        for server in (self.metrics, self.web):
            if server is not None:
                server.close()
        for s in self.started:
            s.close()
        if self.loop is not None:
            self.loop.close()
        if self.collector is not None:
            self.collector.close()
        if self.saver is not None:
            saved = self.saver.close()
            if self.stats is not None:
                self.stats.saved.extend(os.fspath(p) for p in saved)
                if self.saver.images:
                    self.stats.saved.append(f"{self.saver.images} annotated images under {self.saver.root}")
        if self.viewer is not None:
            self.viewer.close()
