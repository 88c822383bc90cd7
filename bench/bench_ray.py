"""``edgecls ray`` (a local Ray on this machine) vs ``edgecls run`` on the same photos and model, side by side.

Each round runs both as the user would (subprocesses, alternating run / ray, a fresh ``--out`` each time):

- **edgecls run**: photos/s from its ``--summary-json`` (model load excluded: its clock starts after the load);
- **edgecls ray**: photos/s from its ``summary.json`` after start-up (the clock starts when the first actor has
  loaded the model and stops when the last batch is done: Ray's start, the actors' start and the model load are
  start-up, reported apart; the merge and summary after the last batch are in the wall clock only).

The last round's records are compared, joined by path: label, decision, set and unknown equal, probabilities
within 1e-5, none missing, none twice (the acceptance check of ``edgecls ray``). Then the cluster arithmetic:
photos/s per core → hours for 10 million photos on N cores.

    .venv/bin/python bench/bench_ray.py                      # ../shared photos (~2,860), MobileNetV2 (random weights)
    .venv/bin/python bench/bench_ray.py --n 10000 --rounds 1 # the photos repeated under distinct names (copies)
    .venv/bin/python bench/bench_ray.py --model runs/export/model_int8_cpu.onnx

Without ``--model`` it exports a torchvision MobileNetV2 with random weights (torch needed, the bench only):
throughput does not depend on the weights.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = str(REPO.parent / "shared" / "data" / "*" / "*" / "*" / "*.jpg")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: MobileNetV2, random weights)")
    ap.add_argument("--photos", default=DEFAULT_PHOTOS, help="glob of photos (default: ../shared/data/*/*/*/*.jpg)")
    ap.add_argument("--n", type=int, default=None, help="photos per job: the glob's, cut or repeated to N")
    ap.add_argument("--rounds", type=int, default=2, help="alternating run/ray rounds")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--cpus-per-actor", type=float, default=None, help="default: every CPU (one actor)")
    ap.add_argument("--actors", type=int, default=None)
    return ap.parse_args(argv)


def export_mobilenet(tmp: Path) -> Path:
    import onnx
    import torch
    import torchvision

    from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec, sidecar_path

    model = torchvision.models.mobilenet_v2(weights=None, num_classes=2).eval()
    path = tmp / "mobilenet_v2.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    spec = ModelSpec(arch="mobilenet_v2", classes=("mobile", "other"), preprocess=PreprocessSpec(), positive="mobile")
    m = onnx.load(str(path))
    e = m.metadata_props.add()
    e.key, e.value = METADATA_KEY, spec.to_json()
    onnx.save(m, str(path))
    sidecar_path(path).write_text(spec.to_json())
    return path


def photo_folder(tmp: Path, pattern: str, n: Optional[int]) -> Path:
    """Copies of the photos under distinct names (repeated to reach ``n``): one folder both commands list.
    Copies, not links: the image lister reads a file reached twice (the same inode) once."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no photos match {pattern}")
    n = n or len(files)
    folder = tmp / "photos"
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[i % len(files)], sub / f"{i:06d}_{Path(files[i % len(files)]).name}")
    return folder


def edgecls(*args: str, out: Optional[Path] = None) -> float:
    """Run ``edgecls ARGS`` (stdout to ``out`` or /dev/null); wall seconds. Exit 0/6 are results, others fail."""
    t0 = time.perf_counter()
    with open(out or os.devnull, "w") as f:
        r = subprocess.run([sys.executable, "-m", "edgecls", "-q", *args], stdout=f, stderr=subprocess.PIPE,
                           text=True, cwd=REPO)
    if r.returncode not in (0, 6):
        raise SystemExit(f"edgecls {' '.join(args[:1])} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def compare(ray_recs: List[Dict], run_recs: List[Dict]) -> str:
    by_path: Dict[str, Dict] = {}
    dup = 0
    for r in ray_recs:
        dup += r["path"] in by_path
        by_path[r["path"]] = r
    missing = sum(r["path"] not in by_path for r in run_recs)
    diff, dp = 0, 0.0
    for w in run_recs:
        g = by_path.get(w["path"])
        if g is None:
            continue
        keys = ("label", "decision", "set", "unknown", "error")
        diff += any(g.get(k) != w.get(k) for k in keys)
        if "error" not in w:
            dp = max(dp, abs(g["confidence"] - w["confidence"]), *(abs(a["p"] - b["p"]) for a, b in
                                                                    zip(g["topk"], w["topk"])))
    return (f"{len(run_recs)} records joined by path: {diff} differ (label/decision/set/unknown/error), "
            f"max |dp| {dp:.2e}, {missing} missing, {dup} twice")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from edgecls.runtime.run.loop import usable_cpus

    cpus = usable_cpus()
    cpa = args.cpus_per_actor or float(cpus)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        model = Path(args.model) if args.model else export_mobilenet(tmp)
        folder = photo_folder(tmp, args.photos, args.n)
        n = sum(1 for _ in folder.rglob("*.jpg"))
        print(f"model {model.name}; {n} photos ({args.photos}{', repeated' if args.n and args.n > n else ''}); "
              f"{cpus} CPUs; load average before {os.getloadavg()[0]:.2f}")
        run_rate, ray_rate, startup, ray_wall, run_wall = [], [], [], [], []
        for r in range(args.rounds):
            sj, rec_run = tmp / f"run{r}.json", tmp / f"run{r}.jsonl"
            run_wall.append(edgecls("run", str(model), str(folder), "--summary-json", str(sj), out=rec_run))
            run_rate.append(json.loads(sj.read_text())["frames_per_s"])
            out = tmp / f"ray{r}"
            cmd = ["ray", str(model), str(folder), "--out", str(out), "--shard-size", str(args.shard_size),
                   "--cpus-per-actor", str(cpa), "--no-progress"]
            ray_wall.append(edgecls(*cmd + (["--actors", str(args.actors)] if args.actors else [])))
            s = json.loads((out / "summary.json").read_text())
            ray_rate.append(s["photos_per_s"])
            startup.append(s["startup_s"])
            print(f"  round {r + 1}: run {run_rate[-1]:7.1f} photos/s (wall {run_wall[-1]:.1f} s) | ray "
                  f"{ray_rate[-1]:7.1f} photos/s after {startup[-1]:.1f} s start-up (wall {ray_wall[-1]:.1f} s) "
                  f"= {ray_rate[-1] / run_rate[-1]:.3f}x   [{s['backend']}]", flush=True)
        run_recs = [json.loads(x) for x in rec_run.read_text().splitlines()]
        ray_recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
        ratios = [b / a for a, b in zip(run_rate, ray_rate)]
        print(f"\nray / run throughput (start-up excluded): median {np.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f}..{max(ratios):.3f}, n={len(ratios)} rounds of {n} photos; aim >= 0.6)")
        print(f"ray start-up (Ray, actors, model load): median {np.median(startup):.1f} s; "
              f"wall clock run {np.median(run_wall):.1f} s vs ray {np.median(ray_wall):.1f} s")
        print("agreement, last round: " + compare(ray_recs, run_recs))
        per_core = float(np.median(ray_rate)) / cpus
        print(f"\ncluster arithmetic: {per_core:.1f} photos/s per core (this machine, {cpus} cores, start-up "
              "excluded; assumes the photos are read as fast as here)")
        for cores in (16, 64, 256, 1024):
            print(f"  {cores:5d} cores: 10 M photos in {1e7 / (per_core * cores) / 3600:6.2f} h")
        print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
