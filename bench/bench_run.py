#!/usr/bin/env python
"""End-to-end ``edgecls run`` throughput on a folder vs model-only inference on the same images, in one run.

- **model only**: every image decoded and preprocessed beforehand (not timed); ``backend.infer`` on batches.
- **edgecls run (loop)**: the run loop over the folder (decode + preprocess on the worker pool overlapping
  inference, decision, JSONL to /dev/null), model load excluded: what the pipeline costs on top of the model.
- **edgecls run (process)**: the real command in a subprocess, wall clock including interpreter start and model
  load (what a user waits for).

Rounds are interleaved (model-only, loop, model-only, loop, ...) and the best of each is reported, with the ratio
loop / model-only (the aim is >= 0.9).

    .venv/bin/python bench/bench_run.py                         # ../shared val images, an export if found
    .venv/bin/python bench/bench_run.py --model runs/export/model_int8_cpu.onnx --batch 8 --threads 2
    .venv/bin/python bench/bench_run.py --images some/folder --workers 2 --rounds 5

With ``--agree CHECKPOINT MODEL...`` it instead checks that ``edgecls run`` (the real command, one subprocess per
model) gives every image the same top-1 class as the PyTorch checkpoint (and the same thresholded label):

    .venv/bin/python bench/bench_run.py --agree runs/train/exp/best.pt runs/export/model.onnx \
        runs/export/model_int8_cpu.onnx --images ../shared/data/mobile/val

Without ``--model`` it uses the first of runs/export/model.onnx, runs/bench/export/model.onnx, else exports a
ResNet18 with random weights (torch needed, the bench only). Without ../shared it generates 200 JPEGs.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_VAL = REPO.parent / "shared" / "data" / "mobile" / "val"
CANDIDATES = ("runs/export/model.onnx", "runs/bench/export/model.onnx", "runs/demo/export/model.onnx")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: an export found under runs/, else ResNet18)")
    ap.add_argument("--images", default=None, help="image folder (default: ../shared/data/mobile/val, else generated)")
    ap.add_argument("--batch", type=int, default=1, help="batch of the model-only timing (the bound's t_model)")
    ap.add_argument("--threads", type=int, default=None,
                    help="onnxruntime intra-op threads of the model-only timing (default: its own = the cores)")
    ap.add_argument("--workers", type=int, default=None, help="decode/preprocess threads of the run loop")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threshold", type=float, default=None, help="--agree: threshold (default: the model's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loop-threads", type=int, default=None,
                    help="--threads of the run loop (default: edgecls run's own plan, runtime/run/plan.py)")
    ap.add_argument("--streams", type=int, default=None, help="--streams of the run loop (default: its plan)")
    ap.add_argument("--loop-batch", default=None, help="--batch of the run loop, e.g. auto (default: --batch)")
    ap.add_argument("--ort-config", action="append", default=[], metavar="KEY=VALUE",
                    help="onnxruntime session config entry (e.g. session.intra_op.allow_spinning=0), repeatable")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--passes", type=int, default=1, help="go over the images N times per timing (fast machines)")
    ap.add_argument("--no-process", action="store_true", help="skip the subprocess `edgecls run` timing")
    ap.add_argument("--agree", nargs="+", metavar=("CHECKPOINT", "MODEL"), default=None,
                    help="label agreement of `edgecls run` with a PyTorch checkpoint instead of throughput")
    return ap.parse_args(argv)


def default_model(tmp: Path) -> Path:
    for c in CANDIDATES:
        if (REPO / c).is_file():
            return REPO / c
    import torch
    import torchvision

    from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec, sidecar_path

    print("no export found under runs/: exporting a ResNet18 with random weights (2 classes)", file=sys.stderr)
    model = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    path = tmp / "resnet18.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    spec = ModelSpec(arch="resnet18", classes=("mobile", "other"), preprocess=PreprocessSpec(), positive="mobile")
    import onnx

    m = onnx.load(str(path))
    e = m.metadata_props.add()
    e.key, e.value = METADATA_KEY, spec.to_json()
    onnx.save(m, str(path))
    sidecar_path(path).write_text(spec.to_json())
    return path


def default_images(tmp: Path) -> Path:
    if SHARED_VAL.is_dir():
        return SHARED_VAL
    from edgecls.synthetic import make_image_folder

    print("../shared absent: generating 200 JPEGs", file=sys.stderr)
    return make_image_folder(tmp / "gen", counts={"mobile": 70, "other": 130}, splits=(), size=320)


def model_only(clf, files: List[Path], batch: int, passes: int) -> float:
    """images/s of backend.infer on batches preprocessed beforehand."""
    from edgecls.runtime.preprocess import ImageReadError, load_image, preprocess

    spec = clf.spec.preprocess
    images = []
    for p in files:
        try:
            images.append(load_image(p))
        except ImageReadError:  # the run loop writes an error record for it; nothing to infer here
            pass
    batches = [preprocess(images[i : i + batch], spec) for i in range(0, len(images), batch)]
    clf.infer(batches[0])  # warm-up
    t0 = time.perf_counter()
    for _ in range(passes):
        for b in batches:
            clf.infer(b)
    return passes * len(images) / (time.perf_counter() - t0)


def decode_prep_ms(clf, files: List[Path]) -> float:
    """ms per image of what the run loop's pool does per file (read, decode, preprocess), on this one thread."""
    from edgecls.runtime.sources.files import read_image

    t0 = time.perf_counter()
    for i, p in enumerate(files):
        f = read_image("bench", i, p, p.name)
        if f.image is not None:
            clf.prepare(f.image, bgr=f.bgr)
    return (time.perf_counter() - t0) * 1e3 / len(files)


def run_loop(model: Path, folder: Path, args, limit: Optional[int]) -> float:
    """images/s of the run loop as `edgecls run` sets it up (its own model load, outside the timing)."""
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run

    batch = args.batch if args.loop_batch is None else args.loop_batch
    cfg = RunConfig(model=str(model), sources=(str(folder),) * args.passes, batch=batch, workers=args.workers,
                    threads=args.loop_threads, streams=args.streams, device=args.device, summary=False,
                    max_frames=limit)
    with open(os.devnull, "w") as devnull:
        stats = run(cfg, out=devnull, err=io.StringIO())
    run_loop.last = stats  # type: ignore[attr-defined]
    return (stats.frames + stats.errors) / stats.elapsed


def agreement(args: argparse.Namespace) -> None:
    """Per image: the top-1 class and the thresholded label of `edgecls run` vs the PyTorch checkpoint."""
    import json

    from edgecls.core.images import list_images
    from edgecls.reference.torch_backend import TorchBackend
    from edgecls.runtime.decision import Decider
    from edgecls.runtime.preprocess import load_image, preprocess

    ckpt, models = args.agree[0], args.agree[1:]
    if not models:
        raise SystemExit("--agree needs a checkpoint and at least one exported model")
    folder = Path(args.images) if args.images else SHARED_VAL
    files = list_images(folder)
    ref = TorchBackend(ckpt, device="cpu")
    spec = ref.spec if hasattr(ref, "spec") and ref.spec is not None else None
    logits = []
    for i in range(0, len(files), 32):
        batch = preprocess([load_image(p) for p in files[i : i + 32]], (spec or _spec_of(models[0])).preprocess)
        logits.append(ref.infer(batch))
    logits = np.concatenate(logits)
    print(f"reference: {ckpt} (PyTorch) on {len(files)} images of {folder}")
    print(f"| {'model':<34} | {'precision':<9} | {'images':>6} | {'top-1 = torch':>13} | {'label = torch':>13} | "
          f"{'accuracy':>8} | {'torch acc':>9} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 8}|{'-' * 15}|{'-' * 15}|{'-' * 10}|{'-' * 11}|")
    for model in models:
        mspec = _spec_of(model)
        tpreds = Decider(mspec, threshold=args.threshold).decide(logits)
        cmd = [sys.executable, "-m", "edgecls", "run", model, str(folder), "--batch", str(args.batch),
               "--device", args.device, "--no-summary", "--topk", "1"]
        if args.threshold is not None:
            cmd += ["--threshold", str(args.threshold)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            raise SystemExit(f"edgecls run {model} failed with exit code {res.returncode}")
        recs = {r["path"]: r for r in (json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{"))}
        same_top = same_label = correct = tcorrect = n = 0
        for p, tp in zip(files, tpreds):
            r = recs.get(str(p))
            if r is None or "error" in r:
                continue
            n += 1
            same_top += r["topk"][0]["label"] == tp.class_name
            same_label += r["label"] == tp.label
            truth = p.parent.name
            correct += r["topk"][0]["label"] == truth
            tcorrect += tp.class_name == truth
        print(f"| {Path(model).name:<34} | {mspec.precision:<9} | {n:>6} | {100 * same_top / n:>12.2f}% | "
              f"{100 * same_label / n:>12.2f}% | {100 * correct / n:>7.2f}% | {100 * tcorrect / n:>8.2f}% |")


def _spec_of(model: str):
    from edgecls.runtime.model_io import load_model_spec

    return load_model_spec(model)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.agree:
        agreement(args)
        return
    if args.loop_batch is not None and args.loop_batch != "auto":
        args.loop_batch = int(args.loop_batch)
    from edgecls.core.images import list_images
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.loop import usable_cpus

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        model = Path(args.model) if args.model else default_model(tmp)
        folder = Path(args.images) if args.images else default_images(tmp)
        files = list_images(folder)[: args.limit] if args.limit else list_images(folder)
        cfg = dict(kv.split("=", 1) for kv in args.ort_config)
        clf = Classifier.load(model, device=args.device, threads=args.threads, session_config=cfg or None)
        cpus = usable_cpus()
        if cfg:
            print(f"onnxruntime session config (model-only): {cfg}")
        print(f"model {model} ({clf.spec.arch}, {clf.spec.precision}, {clf.backend.describe()})")
        print(f"images {folder}: {len(files)} x {args.passes} passes; model-only batch {args.batch}, threads "
              f"{args.threads or 'ort default'}; CPUs {cpus}; load average {os.getloadavg()[0]:.2f}")
        mo, dp, lo = [], [], []
        for r in range(args.rounds):  # interleaved: each round measures the three side by side
            mo.append(model_only(clf, files, args.batch, args.passes))
            dp.append(decode_prep_ms(clf, files))
            lo.append(run_loop(model, folder, args, args.limit))
            bound = 1e3 / (1e3 / mo[-1] + dp[-1] / cpus)
            print(f"  round {r + 1}: model-only {mo[-1]:6.1f} img/s  decode+pre {dp[-1]:.3f} ms  bound {bound:6.1f} "
                  f"img/s  run loop {lo[-1]:6.1f} img/s = {lo[-1] / bound:.3f} of the bound", file=sys.stderr)
        clf.close()
        st = run_loop.last  # type: ignore[attr-defined]
        proc = None
        if not args.no_process:
            cmd = [sys.executable, "-m", "edgecls", "run", str(model), str(folder), "--device", args.device,
                   "--no-summary", "--batch", str(args.loop_batch or args.batch)]
            for flag, v in (("--threads", args.loop_threads), ("--streams", args.streams),
                            ("--workers", args.workers), ("--max-frames", args.limit)):
                if v:
                    cmd += [flag, str(v)]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                raise SystemExit(f"edgecls run failed with exit code {res.returncode}")
            proc = (sum(1 for ln in res.stdout.splitlines() if ln.startswith("{")), wall)
        bounds = [1e3 / (1e3 / m + d / cpus) for m, d in zip(mo, dp)]
        ratios = [lp / b for lp, b in zip(lo, bounds)]
        med = float(np.median(ratios))
        print()
        print(f"run loop: batch {st.batch} x {st.streams} stream(s), {st.backend_desc}")
        print(f"| {'what (median of ' + str(args.rounds) + ' interleaved rounds)':<46} | {'value':>10} |")
        print(f"|{'-' * 48}|{'-' * 12}|")
        rows = [
            ("t_model: model only, ms/image", 1e3 / np.median(mo)),
            ("t_decode+pre: one thread, ms/image", np.median(dp)),
            (f"bound 1/(t_model + t_decode+pre/{cpus}), img/s", np.median(bounds)),
            ("edgecls run loop, img/s", np.median(lo)),
            ("run loop / bound", med),
        ]
        if proc:
            n, wall = proc
            rows.append(("edgecls run process (incl. start + load), img/s", n / wall))
        for name, v in rows:
            print(f"| {name:<46} | {v:>10.3f} |")
        lo_r, hi_r = min(ratios), max(ratios)
        print(f"\nrun loop / bound = {med:.3f} (median; rounds {lo_r:.3f}..{hi_r:.3f}; aim >= 0.9); "
              f"decode+pre {np.median(dp):.3f} ms/image (aim <= 0.6)")


if __name__ == "__main__":
    main()
