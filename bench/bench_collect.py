#!/usr/bin/env python
"""``edgecls run --collect``, measured as a user would meet it: a products28 model trained without 3 products runs
over ~360 unseen photos (~120 of the missing products), with the default collection rules and caps.

Prints, with n and a 95 % Wilson interval: the share of distinct missing-product photos kept (the goal: >= 75 %), the
share of known-product photos kept, what each rule flags, near-duplicates among distinct photos; then the caps:
100 copies of one photo kept once, the disk cap (``--collect-max-mb 1``), the rate cap on a live source (a
``--realtime`` video of distinct missing-product photos, ``--collect-rate 3``); and frames/s without and with
``--collect``, alternated.

    /work/bin/cpu .venv/bin/python bench/bench_collect.py --work /tmp/collect_bench        # trains + exports first
    /work/bin/cpu .venv/bin/python bench/bench_collect.py --work W --model W/export/model.onnx

Training (when no --model): ``edgecls train`` (default recipe) with MobileNetV2 ImageNet weights on
products28/train without the missing classes (split into train/val by --val-fraction), then ``edgecls export``.
The photos run over are never seen by that model: products28/val of the 25 known classes, and train + val of the
3 missing ones.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data" / "products28"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
EDGECLS = [sys.executable, "-m", "edgecls"]
RULES = ("unknown", "empty-set", "multi-set", "uncertain", "low-margin")


def wilson(k: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def share(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / max(n, 1):5.1f} %  (95 % CI {100 * lo:.1f}–{100 * hi:.1f})"


def sh(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def train_and_export(work: Path, missing: Sequence[str]) -> Path:
    tree = work / "known_train"
    tree.mkdir(parents=True, exist_ok=True)
    for d in sorted((DATA / "train").iterdir()):
        if d.name not in missing and not (tree / d.name).exists():
            (tree / d.name).symlink_to(d)
    t0 = time.perf_counter()
    r = sh([*EDGECLS, "train", "--data", tree, "--arch", "mobilenet_v2", "--weights", WEIGHTS,
            "--out", work / "train", "--exist-ok", "--no-progress"])
    if r.returncode:
        sys.exit(f"training failed:\n{r.stderr[-3000:]}")
    print(f"trained in {time.perf_counter() - t0:.0f} s (without {', '.join(missing)})")
    r = sh([*EDGECLS, "export", work / "train" / "best.pt", "--out", work / "export"])
    if r.returncode:
        sys.exit(f"export failed:\n{r.stderr[-3000:]}")
    return work / "export" / "model.onnx"


def photo_folder(work: Path, missing: Sequence[str]) -> Dict[str, str]:
    """work/photos/<class>__<split>__<name> links; returns file name → class."""
    out = work / "photos"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    truth = {}
    for split in ("train", "val"):
        for d in sorted((DATA / split).iterdir()):
            if split == "train" and d.name not in missing:
                continue  # the model trained on these
            for f in sorted(d.iterdir()):
                name = f"{d.name}__{split}__{f.name}"
                (out / name).symlink_to(f)
                truth[name] = d.name
    return truth


def run(model: Path, sources: Sequence[Path], col: Optional[Path], *extra: str,
        summary: Path) -> Tuple[List[dict], dict, str]:
    """``edgecls run`` (with ``--collect col`` unless None): its records, summary JSON and stderr."""
    cmd = [*EDGECLS, "run", model, *sources, "--summary-json", summary, *extra]
    if col is not None:
        shutil.rmtree(col, ignore_errors=True)
        cmd += ["--collect", col]
    r = sh(cmd)
    if r.returncode not in (0,):
        sys.exit(f"run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    recs = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    return recs, json.loads(Path(summary).read_text()), r.stderr


def kept(col: Path) -> List[dict]:
    return [json.loads(x) for x in (col / "manifest.jsonl").read_text().splitlines()
            if json.loads(x).get("event") == "kept"]


def flags(rec: dict, margin: float = 0.1) -> List[str]:
    """The rules a record meets (the same rules as the collector, from the record's fields)."""
    topk = rec.get("topk") or []
    m = topk[0]["p"] - topk[1]["p"] if len(topk) > 1 else 1.0
    hit = {"unknown": bool(rec.get("unknown")), "empty-set": rec.get("set") == [],
           "multi-set": len(rec.get("set") or []) > 1,
           "uncertain": rec.get("decision") == "uncertain" or rec.get("label") == "uncertain",
           "low-margin": m < margin}
    return [r for r in RULES if hit[r]]


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgecls_bench_collect"))
    ap.add_argument("--model", type=Path, help="exported model trained without --missing (else trained here)")
    ap.add_argument("--missing", default="camera,cup,scissors")
    ap.add_argument("--rounds", type=int, default=2, help="frames/s rounds without/with --collect")
    a = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent")
    missing = a.missing.split(",")
    a.work.mkdir(parents=True, exist_ok=True)
    model = a.model or train_and_export(a.work, missing)
    truth = photo_folder(a.work, missing)
    photos = a.work / "photos"
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"model {model} · photos {len(truth)}: {sum(c in missing for c in truth.values())} of the missing "
          f"{', '.join(missing)}, {sum(c not in missing for c in truth.values())} of the known classes (unseen)")

    # 1. default rules and caps over the folder
    col = a.work / "col_default"
    S = a.work / "summary.json"
    recs, summ, err = run(model, [photos], col, summary=S)
    got = kept(col)
    kept_names = Counter(Path(d["path"]).name for d in got)
    miss_names = [n for n, c in truth.items() if c in missing]
    known_names = [n for n, c in truth.items() if c not in missing]
    print("\n== default rules and caps (" + ",".join(summ["collect"].get("kept_by_rule", {})) + ")")
    print(f"missing-product photos kept : {share(sum(n in kept_names for n in miss_names), len(miss_names))}")
    print(f"known-product photos kept   : {share(sum(n in kept_names for n in known_names), len(known_names))}")
    print(f"each kept photo saved once  : {max(kept_names.values(), default=0) <= 1} ({len(got)} images)")
    by = {Path(r["path"]).name: flags(r) for r in recs if "path" in r}
    print(f"{'rule':<12}{'missing flagged':>26}{'known flagged':>26}")
    for rule in (*RULES, "any"):
        fm = sum((rule in by[n]) if rule != "any" else bool(by[n]) for n in miss_names)
        fk = sum((rule in by[n]) if rule != "any" else bool(by[n]) for n in known_names)
        print(f"{rule:<12}{fm:>14}/{len(miss_names)} ({100 * fm / len(miss_names):4.1f} %)"
              f"{fk:>14}/{len(known_names)} ({100 * fk / len(known_names):4.1f} %)")
    print("the low-margin threshold (the default rules otherwise), from the same records:")
    for m in (0.1, 0.2, 0.3, 0.4, 0.5):
        fl = {Path(r["path"]).name: flags(r, m) for r in recs if "path" in r}
        fm = sum(bool(fl[n]) for n in miss_names)
        fk = sum(bool(fl[n]) for n in known_names)
        print(f"  low-margin:{m:<4} missing flagged {share(fm, len(miss_names))} · known {share(fk, len(known_names))}")
    flagged = [n for n in truth if by.get(n)]
    dups = [n for n in flagged if n not in kept_names]
    print(f"distinct photos flagged but not kept (near-duplicate of another photo): {len(dups)} of {len(flagged)}"
          f"{' e.g. ' + ', '.join(dups[:3]) if dups else ''}")
    print("summary: " + next((x for x in err.splitlines() if x.startswith("collect:")), "?"))

    # 2. 100 copies of one flagged photo
    one = next(n for n in miss_names if n in kept_names)
    copies = a.work / "copies"
    shutil.rmtree(copies, ignore_errors=True)
    copies.mkdir()
    for i in range(100):
        shutil.copyfile(photos / one, copies / f"copy{i:03d}.jpg")
    col2 = a.work / "col_copies"
    _, summ2, _ = run(model, [copies], col2, summary=S)
    print(f"\n== 100 copies of {one}: kept {len(kept(col2))}, near-duplicates {summ2['collect']['duplicate']}")

    # 3. the disk cap
    col3 = a.work / "col_cap"
    _, summ3, err3 = run(model, [photos], col3, "--collect-max-mb", "1", summary=S)
    size = sum(p.stat().st_size for p in col3.rglob("*") if p.is_file())
    print(f"\n== --collect-max-mb 1: folder {size / 2**20:.3f} MB (cap 1.000), kept {summ3['collect']['kept']}, "
          f"frames classified {summ3['frames']}/{len(truth)}, stopped: {summ3['collect']['stopped']}")
    print(f"   warnings: {sum('collection stopped' in x for x in err3.splitlines())}")

    # 4. the rate cap on a live source: a video of distinct missing-product photos played in real time
    import cv2
    import numpy as np

    video = a.work / "missing.mp4"
    fps, names = 10.0, miss_names[:80]
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for n in names:
        img = cv2.imread(str(photos / n))
        h0, w0 = img.shape[:2]
        s = min(320 / w0, 240 / h0)
        canvas = np.full((240, 320, 3), 255, np.uint8)
        small = cv2.resize(img, (int(w0 * s), int(h0 * s)))
        canvas[: small.shape[0], : small.shape[1]] = small
        w.write(canvas)
    w.release()
    col4 = a.work / "col_live"
    _, summ4, _ = run(model, [video], col4, "--realtime", "--collect-rate", "3", summary=S)
    got4 = kept(col4)
    first = Counter(d["reasons"][0] for d in got4)
    span = max(d["time"] for d in got4) - min(d["time"] for d in got4) if got4 else 0.0
    c4 = summ4["collect"]
    print(f"\n== live (--realtime video, {len(names)} distinct frames at {fps:g} fps), --collect-rate 3: "
          f"kept {c4['kept']} of {c4['flagged']} flagged within {span:.1f} s; per first rule {dict(first)} "
          f"(cap 3 each); rate-capped {c4['rate_capped']}, near-duplicates {c4['duplicate']}")

    # 5. frames/s without and with --collect (alternated)
    fpsd: Dict[str, List[float]] = {"off": [], "collect": []}
    for _ in range(a.rounds):
        for cond in ("off", "collect"):
            _, s, _ = run(model, [photos], a.work / "col_fps" if cond == "collect" else None, summary=S)
            fpsd[cond].append(s["frames_per_s"])
    print(f"\n== frames/s over the {len(truth)} photos, {a.rounds} alternated rounds: off {fpsd['off']} · "
          f"collect {fpsd['collect']} · ratio of medians "
          f"{np.median(fpsd['collect']) / np.median(fpsd['off']):.3f}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
