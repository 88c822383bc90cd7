"""``--show``: one OpenCV window per source; q or Esc quits."""
from __future__ import annotations

import os
import sys

import numpy as np

from edgecls.core.errors import CapabilityError
from edgecls.runtime.sources.opencv import import_cv2


class Viewer:
    """``--show``: one OpenCV window per source; q or Esc quits."""

    def __init__(self) -> None:
        cv2 = import_cv2("--show")
        gui = ""
        for line in cv2.getBuildInformation().splitlines():
            if line.strip().startswith("GUI:"):
                gui = line.split(":", 1)[1].strip()
        if gui.upper().startswith("NONE"):
            raise CapabilityError(
                f"--show needs an OpenCV with a GUI, but this cv2 {cv2.__version__} has none (GUI: NONE, e.g. "
                "opencv-python-headless). Use --save DIR instead, or an OpenCV with GUI (JetPack's, or opencv-python)"
            )
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise CapabilityError("--show needs a display (DISPLAY is not set); use --save DIR instead")
        self.cv2 = cv2

    def show(self, name: str, image_bgr: np.ndarray) -> bool:
        self.cv2.imshow(f"edgecls: {name}", image_bgr)
        key = self.cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            self.cv2.destroyAllWindows()
        except Exception:
            pass
