#!/usr/bin/env python
"""The field loop end to end on products28, printing each figure the user relies on:

deploy a model trained without three products (:data:`field_loop_data.MISSING`) → the camera sees them → the
photos come back labelled → ``edgecls train --add-classes`` → ``edgecls calibrate`` with photos labelled later →
``edgecls export`` (FP32, FP16, INT8) → ``edgecls run`` on photos never used for anything.

The three classes' photos (train + val of products28, by whole photo, seeded) are dealt into *field* (45 %: what
the camera sees; they come back labelled and are learnt from — ``--add-classes`` holds 30 % of them out to
calibrate), *later* (15 %: labelled after learning, for ``calibrate``) and *unseen* (40 %: judged only). Known
classes are judged on products28's val (the base model's val: the grown head never fitted on it).

Collection: the base model exported (FP32) runs over a folder of the field photos of the three products mixed with
``known_seen`` photos of known products (from its own train split, so nothing judged is seen) with ``--collect``
(default rules and caps). Labelling: ``edgecls label`` on the collection, driven through its HTTP API as a person
would: every kept photo of a missing product assigned its class, the others discarded. Learning reads the
labelled folders of the new classes only.

    /work/bin/quiet .venv/bin/python bench/bench_field_loop.py --work runs/bench_field
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from field_loop_data import MISSING, prepare, write_flat, write_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EDGECLS = [sys.executable, "-m", "edgecls"]


def sh(args: Sequence[str], what: str, ok: Sequence[int] = (0, 6)) -> Tuple[float, str]:
    """Run an edgecls command; ``(wall seconds, stdout + stderr)``; exit on failure with its output."""
    t = time.monotonic()
    p = subprocess.run([*EDGECLS, *args], capture_output=True, text=True)
    secs = time.monotonic() - t
    if p.returncode not in ok:
        sys.exit(f"{what} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return secs, p.stdout + p.stderr


def load() -> str:
    return os.getloadavg().__repr__()


def predict(ckpt_path: Path, items: Sequence[Tuple[str, int]]) -> np.ndarray:
    """The checkpoint's top-1 class index per image (PyTorch reference, the runtime's preprocessing)."""
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.reference.torch_backend import TorchBackend
    from edgecls.runtime.preprocess import load_image, preprocess

    ck = load_checkpoint(ckpt_path)
    out = []
    with TorchBackend(ck) as be:
        for i in range(0, len(items), 32):
            x = preprocess([load_image(p) for p, _ in items[i:i + 32]], ck.spec.preprocess)
            out.append(np.asarray(be.infer(x)).argmax(1))
    return np.concatenate(out)


def interval(k: int, n: int) -> str:
    from edgecls.runtime.confidence.bounds import cp_lower, cp_upper

    return f"{k}/{n} = {k / max(n, 1):.3f} (95 % CI {cp_lower(k, n, 0.025):.3f}-{cp_upper(k, n, 0.025):.3f})"


def confidence_lines(text: str) -> List[str]:
    """What ``edgecls run``'s summary states about its confidence (its ``confidence:`` lines)."""
    head = "confidence: "
    return [ln.strip()[len(head):] for ln in text.splitlines() if ln.strip().startswith(head)]


def collect_and_label(work: Path, base: Path, data) -> Path:
    """``run --collect`` over the field, then the label page's HTTP API; the new classes' labelled folder."""
    import urllib.request

    exp = work / "base_export"
    if not (exp / "model.onnx").is_file():
        secs, _ = sh(["export", str(base / "best.pt"), "--out", str(exp)], "export the base model")
    src = work / "field_src"
    shutil.rmtree(src, ignore_errors=True)
    missing = {os.path.realpath(p): c for c, ps in data.field.items() for p in ps}
    seen = sorted(missing) + list(data.known_seen)
    write_flat(src, seen)
    col = work / "collected"
    shutil.rmtree(col, ignore_errors=True)
    secs, out = sh(["run", str(exp / "model.onnx"), str(src), "--collect", str(col), "--format", "csv"],
                   "run --collect")
    kept = [json.loads(ln) for ln in (col / "manifest.jsonl").read_text().splitlines() if ln.strip()]
    kept = [k for k in kept if k.get("event") == "kept"]
    got = {os.path.realpath(k["path"]) for k in kept if k.get("path")}
    hit = {p for p in got if p in missing}
    summary = [ln for ln in out.splitlines() if ln.startswith("collect")]
    print(f"collect    {secs:.1f}s over {len(seen)} photos ({len(missing)} of the missing products): kept "
          f"{len(kept)}; distinct photos of the missing products kept {interval(len(hit), len(missing))}; "
          f"{' '.join(summary)}")
    proc = subprocess.Popen([*EDGECLS, "label", str(col), "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        t0 = time.monotonic()
        while url is None and time.monotonic() - t0 < 60:
            line = proc.stderr.readline()
            if "page on " in line:
                url = line.split("page on ", 1)[1].split()[0].rstrip("/")
        if url is None:
            sys.exit("edgecls label did not announce its page")

        def call(path: str, body=None):
            req = urllib.request.Request(url + path, method="POST" if body is not None else "GET",
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)

        items = call("/api/state")["items"]
        by_class: Dict[str, List[str]] = {}
        other = []
        for it in items:
            c = missing.get(os.path.realpath(it.get("path") or ""))
            (by_class.setdefault(c, []) if c else other).append(it["id"])
        for c, ids in sorted(by_class.items()):
            call("/api/assign", {"ids": ids, "class": c})
        if other:
            call("/api/discard", {"ids": other})
        counts = call("/api/state")["counts"]
        print(f"label      through the page's HTTP API: {counts} "
              f"({', '.join(f'{c} {len(v)}' for c, v in sorted(by_class.items()))})")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    learn = work / "labelled"
    shutil.rmtree(learn, ignore_errors=True)
    for c in by_class:
        shutil.copytree(col / "labelled" / c, learn / c, symlinks=True)
    return learn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_field")
    ap.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs of the deployed model (0: head phase)")
    ap.add_argument("--no-export", action="store_true", help="stop after calibrate")
    ap.add_argument("--int8", action="store_true", help="export INT8 too (minutes on 2 cores)")
    a = ap.parse_args()
    work = a.work.resolve()
    data = prepare(SHARED / "data" / "products28", work)
    print(f"missing products: {', '.join(MISSING)}; photos field/later/unseen: "
          + ", ".join(f"{c} {len(data.field[c])}/{len(data.later[c])}/{len(data.unseen[c])}" for c in MISSING))

    base = work / "base"
    if not (base / "best.pt").is_file():
        secs, _ = sh(["train", "--data", str(data.base), "--arch", "mobilenet_v2", "--weights",
                      str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"), "--epochs", str(a.epochs),
                      "--out", str(base), "--exist-ok", "--no-progress"], "deploy (train without 3 classes)")
        print(f"deploy     trained on 25 classes in {secs:.0f}s (load {load()})")

    labelled = collect_and_label(work, base, data)

    added = work / "added"
    secs, out = sh(["train", "--add-classes", str(labelled), "--from", str(base / "best.pt"), "--out", str(added),
                    "--exist-ok"], "learn (--add-classes)")
    summary = json.loads((added / "summary.json").read_text())
    print(f"learn      {secs:.1f}s wall for the command (in-process {summary['seconds']['total']:.1f}s: features "
          f"{summary['seconds']['features']:.1f}s, head {summary['seconds']['head']:.1f}s), "
          f"{sum(1 for _ in labelled.glob('*/*'))} labelled photos; load {load()}")

    from edgecls.reference.checkpoint import load_checkpoint

    classes = load_checkpoint(added / "best.pt").spec.classes
    unseen = [(p, classes.index(c)) for c in MISSING for p in data.unseen[c]]
    pred = predict(added / "best.pt", unseen)
    y = np.array([t for _, t in unseen])
    print(f"new        recall on {len(unseen)} unseen photos: {interval(int(np.sum(pred == y)), len(y))}")
    for c in MISSING:
        m = y == classes.index(c)
        print(f"             {c}: {interval(int(np.sum(pred[m] == y[m])), int(m.sum()))}")
    old_classes = load_checkpoint(base / "best.pt").spec.classes
    known = [(str(p), old_classes.index(p.parent.name)) for p in sorted(data.known_val.glob("*/*"))]
    yk = np.array([t for _, t in known])
    before = predict(base / "best.pt", known) == yk
    after = predict(added / "best.pt", known) == yk
    print(f"known      accuracy on {len(known)} val photos of the 25 known products: before "
          f"{interval(int(before.sum()), len(yk))}, after {interval(int(after.sum()), len(yk))}; change "
          f"{100 * (after.mean() - before.mean()):+.2f} points ({int(np.sum(before & ~after))} lost, "
          f"{int(np.sum(~before & after))} gained)")

    later = write_folder(work / "later", data.later)
    cal = work / "calibrated.pt"
    shutil.copy(added / "best.pt", cal)
    secs, out = sh(["calibrate", str(cal), "--data", str(later)], "calibrate")
    print(f"calibrate  {secs:.1f}s:\n  " + "\n  ".join(ln for ln in out.splitlines() if ln.strip()))

    if a.no_export:
        return
    exp = work / "export"
    args = ["export", str(cal), "--fp16", "--out", str(exp)] + (["--int8"] if a.int8 else [])
    secs, out = sh(args, "export", ok=(0, 3))  # 3: an artifact failed its parity gates (kept as .failed)
    failed = [ln.strip() for ln in out.splitlines() if ln.startswith("error: parity failed")]
    print(f"export     {secs:.0f}s" + (f"; {failed[0]}" if failed else ""))
    from edgecls.runtime.confidence.rule import ConfidenceRule

    spec = load_checkpoint(cal).spec
    ck_lines = ConfidenceRule(spec).describe(spec.threshold)
    print("checkpoint " + " | ".join(ck_lines))
    unseen_dir = write_folder(work / "unseen", data.unseen)
    parity = json.loads((exp / "parity.json").read_text())["artifacts"]
    for art in sorted(exp.glob("model*.onnx")):
        secs, out = sh(["run", str(art), str(unseen_dir), "--format", "csv"], f"run {art.name}")
        lines = confidence_lines(out)
        same = "same as the checkpoint" if lines == ck_lines else "differs from the checkpoint"
        why = (parity.get(art.name) or {}).get("promise") or {}
        print(f"run        {art.name}: {same} (probability margin {why.get('margin', float('nan')):.3g} on "
              f"{why.get('n')} parity images): " + " | ".join(lines))


if __name__ == "__main__":
    main()
