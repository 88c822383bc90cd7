"""The overlay drawn on saved and shown frames: decision, label, confidence and FPS, top-left on a dark box."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgecls.runtime.decision import NO, UNCERTAIN, UNKNOWN, YES, Prediction

DECISION_COLORS = {YES: (40, 200, 60), NO: (200, 200, 200), UNCERTAIN: (255, 165, 0), UNKNOWN: (230, 60, 60)}


def overlay_text(pred: Optional[Prediction], fps: Optional[float] = None) -> List[str]:
    lines = []
    if pred is not None:
        if pred.positive is not None:
            lines.append(f"{pred.positive}: {pred.decision} ({pred.p_positive:.2f})")
        lines.append(f"{pred.label} {pred.confidence:.2f}" if pred.label != UNCERTAIN else
                     f"uncertain ({pred.class_name} {pred.confidence:.2f})")
        if pred.unknown:
            lines.append(f"unknown product (OOD score {pred.ood_score:.2f})")
        elif pred.set is not None and len(pred.set) != 1:
            lines.append("set: " + (", ".join(pred.set[:4]) + (" ..." if len(pred.set) > 4 else "") or "(empty)"))
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    return lines


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def annotate(image: np.ndarray, lines: Sequence[str], bgr: bool = False, color: Tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A copy of ``image`` with ``lines`` drawn top-left on a dark box (same channel order as the input)."""
    from PIL import Image, ImageDraw

    rgb = image[:, :, ::-1] if bgr else image
    pil = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(pil)
    h = pil.height
    size = max(10, min(48, h // 18))
    font = _font(size)
    pad = max(2, size // 4)
    y = pad
    for i, line in enumerate(lines):
        box = draw.textbbox((pad, y), line, font=font)
        draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=(0, 0, 0))
        draw.text((pad, y), line, fill=color if i == 0 else (255, 255, 255), font=font)
        y = box[3] + 2 * pad
    out = np.asarray(pil)
    return np.ascontiguousarray(out[:, :, ::-1]) if bgr else out
