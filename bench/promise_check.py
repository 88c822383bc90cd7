#!/usr/bin/env python
"""Does the camera state training's promise? Training's summary line against ``edgecls run`` on each exported
artifact (its ``confidence: precision:`` line), side by side, with the export's record of why.

    .venv/bin/python bench/promise_check.py runs/train/exp runs/export/exp IMAGES...
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    run_dir, export_dir, images = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    summary = json.loads((run_dir / "summary.json").read_text())
    trained = (summary["calibration"].get("confidence") or {}).get("guarantee", {}).get("statement")
    print(f"deployed  epoch {summary['best_epoch']}: {summary['promise'].get('reason')}")
    print(f"training  {trained}")
    parity = json.loads((export_dir / "parity.json").read_text())["artifacts"]
    for art in sorted(export_dir.glob("model*.onnx")):
        p = subprocess.run([sys.executable, "-m", "edgecls", "run", str(art), *images, "--format", "csv"],
                           capture_output=True, text=True)
        said = [ln.split("confidence: precision: ", 1)[1] for ln in p.stderr.splitlines()
                if "confidence: precision: " in ln]
        stated = said[0] if said else None
        why = (parity.get(art.name) or {}).get("promise") or {}
        verdict = "SAME as training" if stated == trained else "DIFFERENT from training"
        print(f"{art.name:24s} {verdict} (exit {p.returncode}); export: kept={why.get('kept')} "
              f"margin={why.get('margin')} n={why.get('n')}\n    {stated}")


if __name__ == "__main__":
    main()
