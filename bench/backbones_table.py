"""bench/backbones.md's measured table from the JSON lines bench/recipe_search.py appends (one line per run).

    .venv/bin/python bench/backbones_table.py /work/runs21/search.jsonl > table.md
"""
from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| run | backbone | teacher | recipe changes | seed | probe (epoch 0) | val acc per fine-tuning epoch | "
          "last − probe | wall s | load |")
    print("|---|---|---|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        accs = [h["val_acc"] for h in r["history"][1:]]
        ch = ", ".join(f"{k} {v}" for k, v in r["set"].items())
        t = (r.get("teacher") or "-").replace("timm:", "")
        print(f"| {r['tag']} | {r['arch'].replace('timm:', '')} | {t} | {ch} | {r['seed']} | {r['probe']:.4f} | "
              f"{' '.join(f'{a:.3f}' for a in accs)} | {r['last'] - r['probe']:+.4f} | {r['seconds']:.0f} | "
              f"{r['load1']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "/work/runs21/search.jsonl"))
