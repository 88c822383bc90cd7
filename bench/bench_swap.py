#!/usr/bin/env python
"""Models swapped without stopping: ``edgecls run`` on 4 live cameras and ``edgecls serve`` under 8 clients.

run: 4 synthetic cameras at 30 frames/s (real photos from ../shared, 640x480 BGR, through the same LiveSource as
``--camera``). Two runs: one swapped by SIGHUP (file watch off), one by replacing the model file atomically (watch
on). Each run alternates a steady 2 s window and a 2 s window right after a trigger (A, B, A, B, ...), so both see
the same machine: frames dropped per window (newest-frame policy), the time from trigger to the first record of
the new model, and afterwards every record is checked: it names one of the two models, the model changes only at
the swaps, and a sample of records is recomputed with the model it names (|Δprob| max).
serve: a model folder with versions; 8 tritonclient clients; ``load_model`` after each new version folder; failed
requests, 5xx, responses whose logits differ from the version they name, and requests/s in the 2 s before and
after each swap. memory: RSS after the first and after 20 swaps of one slot (two models alternating).

    .venv/bin/python bench/bench_swap.py [--model M.onnx] [--swaps 3] [--memory-swaps 20]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_live import SyntheticCamera, frames_from_photos  # noqa: E402

WINDOW_S = 2.0


def make_models(tmp: Path, given: Optional[str]) -> Dict[str, Path]:
    """Model a (given, or a MobileNetV2 with random weights) and b: a with its last layer's weights perturbed."""
    import onnx
    from onnx import numpy_helper

    from edgecls.runtime.spec import sidecar_path

    if given:
        a = Path(given)
    else:
        import torch
        import torchvision

        from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec

        torch.manual_seed(0)
        net = torchvision.models.mobilenet_v2(weights=None, num_classes=2).eval()
        a = tmp / "a.onnx"
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(a), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
        spec = ModelSpec(arch="mobilenet_v2", classes=("mobile", "other"), preprocess=PreprocessSpec(),
                         positive="mobile")
        m = onnx.load(str(a))
        e = m.metadata_props.add()
        e.key, e.value = METADATA_KEY, spec.to_json()
        onnx.save(m, str(a))
        sidecar_path(a).write_text(spec.to_json())
    m = onnx.load(str(a))
    last = [i for i in m.graph.initializer if len(i.dims) == 2][-1]  # the classifier's weight matrix
    w = numpy_helper.to_array(last)
    rng = np.random.default_rng(1)
    last.CopyFrom(numpy_helper.from_array((w + rng.normal(0, 3 * float(w.std()) + 1e-3, w.shape)).astype(w.dtype),
                                          last.name))
    b = tmp / "b.onnx"
    onnx.save(m, str(b))
    if sidecar_path(a).is_file():
        shutil.copyfile(sidecar_path(a), sidecar_path(b))
    return {"a": a, "b": b}


def replace(src: Path, dst: Path) -> None:
    from edgecls.core.fileio import copy_file

    copy_file(src, dst)


class Records(io.TextIOBase):
    """The run's stdout: each record with the time it was written."""

    def __init__(self) -> None:
        self.rows: List[tuple] = []
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        t = time.perf_counter()
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.strip():
                self.rows.append((t, json.loads(line)))
        return len(s)

    def first_of(self, sha: str, after: float) -> Optional[float]:
        for t, r in self.rows:
            if t >= after and r.get("model", {}).get("sha256") == sha:
                return t
        return None


def run_session(models: Dict[str, Path], trigger: str, swaps: int, cameras: int, fps: float,
                frames: List[np.ndarray], tmp: Path) -> Dict[str, Any]:
    from edgecls.core.fileio import file_sha256
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.slot.config import SlotConfig
    from edgecls.runtime.sources.live import LiveSource, RetryPolicy

    path = tmp / f"live-{trigger}" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    replace(models["a"], path)
    sha = {k: file_sha256(p)[:12] for k, p in models.items()}
    seconds = 3.0 + swaps * 2 * (WINDOW_S + 1.0) + 30.0
    cams = [SyntheticCamera(frames, fps, seconds) for _ in range(cameras)]
    sources = [LiveSource(f"cam{i}", (lambda c=c: c), retry=RetryPolicy(retries=0)) for i, c in enumerate(cams)]
    out = Records()
    res: Dict[str, Any] = {"steady": [], "after": [], "first": [], "frames_steady": [], "frames_after": []}
    dropped = lambda: sum(s.dropped for s in sources)  # noqa: E731

    def driver() -> None:
        time.sleep(3.0)
        cur = "a"
        for _ in range(swaps):
            d0, n0 = dropped(), len(out.rows)
            time.sleep(WINDOW_S)
            res["steady"].append(dropped() - d0)
            res["frames_steady"].append(len(out.rows) - n0)
            new = "b" if cur == "a" else "a"
            d0, n0 = dropped(), len(out.rows)
            t0 = time.perf_counter()
            replace(models[new], path)
            if trigger == "SIGHUP":
                os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(WINDOW_S)
            res["after"].append(dropped() - d0)
            res["frames_after"].append(len(out.rows) - n0)
            first = out.first_of(sha[new], t0)
            res["first"].append(None if first is None else first - t0)
            cur = new
            time.sleep(1.0)
        for c in cams:
            c.release()

    cfg = RunConfig(model=str(path), sources=tuple(s.name for s in sources), device="cpu", probs=True,
                    summary=False, slot=SlotConfig(watch=(trigger == "file")))
    th = threading.Thread(target=driver, daemon=True)
    th.start()
    stats = run(cfg, out=out, err=io.StringIO(), sources=sources)
    th.join()
    res["records"] = [r for _, r in out.rows]
    res["frames"], res["errors"] = stats.frames, stats.errors
    res["sha"] = sha
    return res


def check_records(res: Dict[str, Any], models: Dict[str, Path], frames: List[np.ndarray],
                  sample: int = 150) -> Dict[str, Any]:
    """Every record names a or b; the model changes only at the swaps; a sample recomputed with its model."""
    from edgecls.runtime.classifier import Classifier

    recs = res["records"]
    by_sha = {v: k for k, v in res["sha"].items()}
    names = [by_sha.get(r.get("model", {}).get("sha256")) for r in recs]
    changes = sum(1 for x, y in zip(names, names[1:]) if x != y)
    clfs = {k: Classifier.load(p, device="cpu") for k, p in models.items()}
    rng = np.random.default_rng(0)
    worst = 0.0
    for i in rng.choice(len(recs), size=min(sample, len(recs)), replace=False):
        r = recs[int(i)]
        want = clfs[by_sha[r["model"]["sha256"]]].predict(frames[r["frame"] % len(frames)], bgr=True)
        got = [r["probs"][c] for c in want.classes] if isinstance(r["probs"], dict) else r["probs"]
        worst = max(worst, float(np.max(np.abs(np.asarray(got) - np.asarray(want.probs)))))
    for c in clfs.values():
        c.close()
    return {"unnamed": names.count(None), "changes": changes, "max_dprob": worst, "n_checked": min(sample, len(recs))}


def fmt_stats(xs: Sequence[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n=0"
    return f"median {statistics.median(xs):.1f} [{min(xs):.1f}, {max(xs):.1f}] n={len(xs)}"


def serve_session(models: Dict[str, Path], swaps: int, clients: int, tmp: Path) -> Dict[str, Any]:
    import tritonclient.http as httpclient

    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.serve.app import create_app
    from edgecls.runtime.serve.config import ServeConfig
    from edgecls.runtime.serve.server import build_server
    from edgecls.runtime.slot.config import SlotConfig
    from edgecls.runtime.spec import sidecar_path

    repo = tmp / "repo"

    def put(kind: str, v: int) -> None:
        d = repo / "m" / str(v)
        d.mkdir(parents=True)
        if sidecar_path(models[kind]).is_file():
            shutil.copyfile(sidecar_path(models[kind]), d / "model.json")
        replace(models[kind], d / "model.onnx")

    put("a", 1)
    crop = Classifier.load(models["a"], device="cpu").spec.preprocess.crop
    x = np.random.default_rng(0).standard_normal((4, 3, crop, crop)).astype(np.float32)
    expected = {}
    for k in ("a", "b"):
        with Classifier.load(models[k], device="cpu") as c:
            expected[k] = c.infer(x)
    cfg = ServeConfig(model=str(repo / "m"), host="127.0.0.1", port=0, device="cpu", slot=SlotConfig(watch=False))
    app = create_app(cfg)
    server = build_server(app, cfg)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.02)
    url = f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    admin = httpclient.InferenceServerClient(url)
    while not admin.is_server_ready():
        time.sleep(0.05)
    version_kind = {"1": "a"}
    stop = threading.Event()
    log: List[tuple] = []  # (t, ok, version or error)

    def client(seed: int) -> None:
        c = httpclient.InferenceServerClient(url)
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            k = int(rng.integers(4))
            inp = httpclient.InferInput("input", [1, 3, crop, crop], "FP32")
            inp.set_data_from_numpy(x[k:k + 1], binary_data=True)
            try:
                r = c.infer("m", [inp], outputs=[httpclient.InferRequestedOutput("logits")])
                v = r.get_response()["model_version"]
                ok = np.allclose(r.as_numpy("logits"), expected[version_kind[v]][k:k + 1], atol=1e-4)
                log.append((time.perf_counter(), "ok" if ok else "mismatch", v))
            except Exception as e:
                log.append((time.perf_counter(), "failed", repr(e)[:200]))
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    before, after, load_s = [], [], []
    for i in range(swaps):
        v = i + 2
        kind = "b" if v % 2 == 0 else "a"
        version_kind[str(v)] = kind
        put(kind, v)
        t0 = time.perf_counter()
        admin.load_model("m")
        t1 = time.perf_counter()
        load_s.append(t1 - t0)
        time.sleep(WINDOW_S)
        before.append(sum(1 for t, *_ in log if t0 - WINDOW_S <= t < t0) / WINDOW_S)
        after.append(sum(1 for t, *_ in log if t0 <= t < t0 + WINDOW_S) / WINDOW_S)
    stop.set()
    for t in threads:
        t.join(30)
    server.should_exit = True
    th.join(30)
    kinds = [k for _, k, _ in log]
    return {"requests": len(log), "failed": kinds.count("failed"), "mismatch": kinds.count("mismatch"),
            "errors": sorted({v for _, k, v in log if k == "failed"})[:3], "before": before, "after": after,
            "load_s": load_s, "versions": sorted({v for _, k, v in log if k != "failed"}, key=int)}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_session(models: Dict[str, Path], swaps: int, tmp: Path) -> Dict[str, float]:
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.slot import ModelSlot

    path = tmp / "mem" / "model.onnx"
    path.parent.mkdir(parents=True)
    replace(models["a"], path)
    if (models["a"].with_suffix(".json")).is_file():
        shutil.copyfile(models["a"].with_suffix(".json"), path.with_suffix(".json"))
    slot = ModelSlot(lambda p: Classifier.load(p, device="cpu"), path)
    slot.start()
    crop = slot.spec.preprocess.crop
    x = np.random.default_rng(0).standard_normal((4, 3, crop, crop)).astype(np.float32)
    rss = []
    for i in range(swaps):
        replace(models["b" if i % 2 == 0 else "a"], path)
        assert slot.reload("bench").status == "swapped"
        for _ in range(10):  # past the probation: the old model is closed
            slot.infer(x)
        time.sleep(0.05)
        rss.append(rss_mib())
    slot.close()
    return {"first": rss[0], "last": rss[-1], "max": max(rss)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: Optional[Sequence[str]] = None) -> None:
    import logging

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported .onnx (default: a MobileNetV2 with random weights)")
    ap.add_argument("--swaps", type=int, default=3, help="swaps per trigger (each with a steady window before)")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--memory-swaps", type=int, default=20)
    ap.add_argument("--memory-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        a, b, n = args.memory_child
        with tempfile.TemporaryDirectory() as td:
            print(json.dumps(memory_session({"a": Path(a), "b": Path(b)}, int(n), Path(td))))
        return
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("edgecls.runtime.sources.live").setLevel(logging.ERROR)
    print(f"start: {uptime()}")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        models = make_models(tmp, args.model)
        frames = frames_from_photos()
        print(f"models: {models['a'].name} / {models['b'].name} ({models['a'].stat().st_size / 2**20:.1f} MiB); "
              f"{args.cameras} cameras x {args.fps:g} fps; CPUs {len(os.sched_getaffinity(0))}")
        print(f"\n| run, trigger | dropped, steady {WINDOW_S:g} s | dropped, {WINDOW_S:g} s after trigger | "
              "first record of new model, s | frames classified steady / after | records | named | "
              "model changes (swaps) | max |dprob| (n) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for trigger in ("SIGHUP", "file"):
            r = run_session(models, trigger, args.swaps, args.cameras, args.fps, frames, tmp)
            c = check_records(r, models, frames)
            print(f"| {trigger} | {fmt_stats(r['steady'])} | {fmt_stats(r['after'])} | "
                  f"{fmt_stats(r['first'])} | {sum(r['frames_steady'])} / {sum(r['frames_after'])} | "
                  f"{len(r['records'])} ({r['errors']} errors) | {len(r['records']) - c['unnamed']} | "
                  f"{c['changes']} ({args.swaps}) | {c['max_dprob']:.1e} ({c['n_checked']}) |")
        s = serve_session(models, args.swaps, args.clients, tmp)
        print(f"\nserve, {args.clients} tritonclient clients, {args.swaps} load_model swaps: {s['requests']} requests, "
              f"{s['failed']} failed {s['errors']}, {s['mismatch']} with logits not those of the version named; "
              f"versions seen {s['versions']}; load_model {fmt_stats(s['load_s'])} s; requests/s "
              f"{WINDOW_S:g} s before a swap {fmt_stats(s['before'])}, after {fmt_stats(s['after'])}")
        m = json.loads(subprocess.run([sys.executable, __file__, "--memory-child", str(models["a"]), str(models["b"]),
                                       str(args.memory_swaps)], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1])  # a fresh process: its RSS is the slot's
        print(f"\nmemory: RSS after swap 1 {m['first']:.1f} MiB, after swap {args.memory_swaps} {m['last']:.1f} MiB "
              f"({100 * (m['last'] / m['first'] - 1):+.1f} %), max {m['max']:.1f} MiB")
    print(f"end: {uptime()}")


if __name__ == "__main__":
    main()
