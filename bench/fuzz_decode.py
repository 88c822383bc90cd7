"""Fuzz the image loader: mutated JPEG, PNG, GIF, TIFF, WebP and BMP bytes through decode → preprocess and
``Classifier.predict`` (a path, and a lazily opened PIL image). The documented outcome of a bad file is
:class:`~edgecls.runtime.preprocess.ImageReadError`; anything else escaping is *unexpected*; a case that runs over
``--timeout`` seconds is a *hang* (its worker process is killed and replaced).

Cases run in worker processes (``--jobs``), each case a pure function of (case number, ``--seed``), so any finding
replays alone with ``--case N``. Prints counts per seed image and the totals; exits 1 on any unexpected error or
hang. Seeds and mutations: ``tests/fuzz_helpers.py``.

    python bench/fuzz_decode.py                 # 10,000 cases
    python bench/fuzz_decode.py --cases 500 --jobs 1
    python bench/fuzz_decode.py --case 1234     # replay one case, with its traceback
"""
from __future__ import annotations

import argparse
import collections
import io
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
import warnings
from multiprocessing.connection import wait
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fuzz_helpers as F  # noqa: E402


class _Case:
    """Everything one worker needs: the seeds, a tiny classifier, a scratch file."""

    def __init__(self, seed: int) -> None:
        from edgecls.runtime.classifier import Classifier
        from edgecls.runtime.spec import PreprocessSpec

        warnings.simplefilter("ignore")  # Pillow warns on many broken files; the outcome is what counts
        self.seed = seed
        self.seeds = F.seed_images()
        self.dir = Path(tempfile.mkdtemp(prefix="edgecls-fuzz-"))
        self.clf = Classifier.load(F.tiny_onnx_classifier(self.dir / "m.onnx"), device="cpu", threads=1)
        self.spec = PreprocessSpec(resize=36, crop=32)

    def run(self, case: int):
        """(seed name, outcome, detail): outcome ok | refused | unexpected:<Type>."""
        from PIL import Image

        from edgecls.runtime.preprocess import ImageReadError, open_rgb, preprocess_one

        name, ops, fix, data = F.random_case(self.seeds, case, self.seed)
        path = self.dir / f"case{os.getpid()}.img"
        path.write_bytes(data)
        refused = False
        steps = (
            ("open_rgb+preprocess", lambda: preprocess_one(open_rgb(io.BytesIO(data)), self.spec)),
            ("predict(path)", lambda: self.clf.predict(path)),
            ("predict(PIL)", lambda: self.clf.predict(_lazy(data))),
        )
        for step, fn in steps:
            try:
                fn()
            except ImageReadError:
                refused = True
            except _NotOpened:
                pass  # Image.open itself refused the bytes: the caller's code, before edgecls is involved
            except Exception as e:  # what must never happen
                return name, f"unexpected:{type(e).__name__}", f"{step}: {e}"[:200]
        del Image
        return name, "refused" if refused else "ok", ""


class _NotOpened(Exception):
    pass


def _lazy(data: bytes):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))  # lazy: decoding happens inside predict
    except Exception as e:
        raise _NotOpened(str(e)) from e


def _worker(conn, seed: int) -> None:
    runner = _Case(seed)
    conn.send(("ready", None))
    while True:
        case = conn.recv()
        if case is None:
            return
        t0 = time.perf_counter()
        name, outcome, detail = runner.run(case)
        conn.send(("done", (case, name, outcome, detail, time.perf_counter() - t0)))


class _Pool:
    """Worker processes with a per-case deadline: a worker past it is killed and replaced (the case is a hang)."""

    def __init__(self, jobs: int, seed: int, timeout: float) -> None:
        self.ctx = mp.get_context("fork")
        self.seed, self.timeout = seed, timeout
        self.workers = [self._start() for _ in range(jobs)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, self.seed), daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "case": None, "t0": 0.0, "ready": False}

    def run(self, cases, on_result) -> None:
        todo = collections.deque(cases)
        while todo or any(w["case"] is not None for w in self.workers):
            for w in self.workers:
                if w["ready"] and w["case"] is None and todo:
                    w["case"], w["t0"] = todo.popleft(), time.perf_counter()
                    w["conn"].send(w["case"])
            for conn in wait([w["conn"] for w in self.workers], timeout=0.2):
                w = next(w for w in self.workers if w["conn"] is conn)
                try:
                    kind, payload = conn.recv()
                except EOFError:  # the worker died (a crash in a C decoder)
                    self._replace(w, on_result, "crash")
                    continue
                if kind == "ready":
                    w["ready"] = True
                else:
                    w["case"] = None
                    on_result(*payload)
            now = time.perf_counter()
            for w in self.workers:
                if w["case"] is not None and now - w["t0"] > self.timeout:
                    self._replace(w, on_result, "hang")

    def _replace(self, w, on_result, outcome: str) -> None:
        case, elapsed = w["case"], time.perf_counter() - w["t0"]
        w["proc"].kill()
        w["proc"].join()
        if case is not None:
            on_result(case, "?", outcome, f"worker {'killed after' if outcome == 'hang' else 'died at'} "
                      f"{elapsed:.1f} s", elapsed)
        w.update(self._start())

    def close(self) -> None:
        for w in self.workers:
            try:
                w["conn"].send(None)
            except OSError:
                pass
            w["proc"].join(timeout=5)
            if w["proc"].is_alive():
                w["proc"].kill()


def replay(case: int, seed: int) -> None:
    runner = _Case(seed)
    name, ops, fix, data = F.random_case(runner.seeds, case, seed)
    print(f"case {case}: seed image {name}, {len(data)} bytes, ops {ops}, fix_crc {fix}")
    warnings.simplefilter("default")
    try:
        print(runner.run(case))
    except Exception:
        traceback.print_exc()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--case", type=int, default=None, help="replay one case in this process")
    args = ap.parse_args()
    if args.case is not None:
        replay(args.case, args.seed)
        return 0
    per_seed: dict = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    examples: dict = {}
    slowest = [0.0, None]

    def on_result(case, name, outcome, detail, seconds):
        kind = outcome.split(":")[0]
        totals[kind] += 1
        per_seed[name][kind] += 1
        if kind not in ("ok", "refused"):
            examples.setdefault(outcome, (case, detail))
        if seconds > slowest[0]:
            slowest[:] = [seconds, case]
        n = sum(totals.values())
        if n % 1000 == 0:
            print(f"  ... {n} cases", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    pool = _Pool(args.jobs, args.seed, args.timeout)
    try:
        pool.run(range(args.cases), on_result)
    finally:
        pool.close()
    wall = time.perf_counter() - t0
    print(f"fuzz_decode: {args.cases} cases, seed {args.seed}, {args.jobs} worker(s), timeout {args.timeout:g} s, "
          f"{wall:.1f} s wall, load average {os.getloadavg()[0]:.2f}")
    print(f"{'seed image':<18}{'cases':>7}{'ok':>7}{'refused':>9}{'unexpected':>12}{'hangs':>7}{'crashes':>9}")
    for name in sorted(per_seed):
        c = per_seed[name]
        print(f"{name:<18}{sum(c.values()):>7}{c['ok']:>7}{c['refused']:>9}{c['unexpected']:>12}{c['hang']:>7}"
              f"{c['crash']:>9}")
    print(f"{'total':<18}{sum(totals.values()):>7}{totals['ok']:>7}{totals['refused']:>9}{totals['unexpected']:>12}"
          f"{totals['hang']:>7}{totals['crash']:>9}")
    print(f"slowest case: {slowest[0] * 1e3:.0f} ms (case {slowest[1]})")
    for outcome, (case, detail) in sorted(examples.items()):
        print(f"  {outcome}: e.g. case {case} ({detail}) — replay: python bench/fuzz_decode.py --case {case}")
    bad = totals["unexpected"] + totals["hang"] + totals["crash"]
    print(f"unexpected {totals['unexpected']}, hangs over {args.timeout:g} s {totals['hang']}, crashes "
          f"{totals['crash']}: {'PASS' if not bad else 'FAIL'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
