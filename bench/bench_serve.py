#!/usr/bin/env python
"""Load benchmark of ``edgecls serve`` on this machine (loopback only), against ``edgecls run`` on the same images.

1. ``edgecls serve MODEL --port 0`` in a subprocess; a real HTTP client (``http.client``, one keep-alive connection
   per thread) sends ``--requests`` image uploads, ``--concurrency`` at a time, cycling over the images, in
   ``--rounds`` rounds; before each round ``edgecls run MODEL IMAGES --batch B`` (the real command; its
   steady-state frames/s from ``--summary-json``, model load excluded) runs over the same images, so load drift on
   a shared machine hits both alike. Printed: errors, p50/p99 latency, images/s, the ratio to ``edgecls run``
   (the aim: >= 0.8), and whether every answer equals the record ``edgecls run`` printed for that image (label,
   decision, confidence within 1e-6).
3. ``--garbage`` bad uploads (random bytes, truncated JPEG, empty, JSON, too large, too many pixels, broken and
   multi-file multipart, ...): every one must get a 4xx, and the server must still be ready and still classify.
4. SIGTERM with ``--concurrency`` requests in flight: every one must be answered, then the server exits 143, the
   code ``edgecls run`` documents for a clean stop on SIGTERM (README "Exit codes").

    .venv/bin/python bench/bench_serve.py --model runs/serve/export/model.onnx
    .venv/bin/python bench/bench_serve.py --model M.onnx --images DIR --requests 500 --threads 2

Exit status 1 when an acceptance check fails. Every wait is bounded; the server is killed if it does not stop.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_VAL = REPO.parent / "shared" / "data" / "mobile" / "val"
CANDIDATES = ("runs/serve/export/model.onnx", "runs/export/model.onnx", "runs/demo/export/model.onnx")
START_TIMEOUT_S = 300.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help=f"exported model (default: the first of {', '.join(CANDIDATES)})")
    ap.add_argument("--images", default=None, help="image folder (default: ../shared/data/mobile/val)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--garbage", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8, help="edgecls run --batch and edgecls serve --max-batch")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads of both (default: its own)")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-bytes", type=int, default=4 * 2**20, help="serve --max-bytes (the garbage test sends more)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    ap.add_argument("--ratio", type=float, default=0.8, help="required images/s ratio serve / run")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of [edgecls run, requests/rounds uploads]")
    return ap.parse_args(argv)


def default_model() -> Path:
    for c in CANDIDATES:
        if (REPO / c).is_file():
            return REPO / c
    raise SystemExit("no model: pass --model (make one with `edgecls train` + `edgecls export`, see README)")


# ------------------------------------------------------------------------------------------------ edgecls run


def edgecls_run(model: Path, folder: Path, args: argparse.Namespace, tmp: Path) -> Tuple[float, Dict[str, dict]]:
    """frames/s of the real `edgecls run` (model load excluded) and its record per image path."""
    summary = tmp / "run_summary.json"
    cmd = [sys.executable, "-m", "edgecls", "run", str(model), str(folder), "--batch", str(args.batch),
           "--device", "cpu", "--summary-json", str(summary), "--no-summary"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        raise SystemExit(f"edgecls run failed with exit code {res.returncode}")
    records = {r["path"]: r for r in (json.loads(x) for x in res.stdout.splitlines() if x.startswith("{"))}
    return float(json.loads(summary.read_text())["frames_per_s"]), records


# ------------------------------------------------------------------------------------------------ the server


class Server:
    """`edgecls serve` in a subprocess; its stderr is collected on a thread (the URL line tells the port)."""

    def __init__(self, model: Path, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "edgecls", "serve", str(model), "--host", "127.0.0.1", "--port", "0",
               "--device", "cpu", "--max-batch", str(args.batch), "--max-wait-ms", str(args.max_wait_ms),
               "--max-bytes", str(args.max_bytes)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: List[str] = []
        self.url: Optional[str] = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        if self.url is None:
            self.kill()
            raise SystemExit("edgecls serve did not start:\n" + "".join(self.lines[-20:]))
        hostport = self.url.split("//", 1)[1]
        self.host, self.port = hostport.rsplit(":", 1)[0], int(hostport.rsplit(":", 1)[1])
        while time.monotonic() < deadline:
            if self.get("/v2/health/ready")[0] == 200:
                return
            time.sleep(0.2)
        self.kill()
        raise SystemExit("edgecls serve never became ready:\n" + "".join(self.lines[-20:]))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.url is None and line.startswith("edgecls serve: http://"):
                self.url = line.split()[2]

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str) -> Tuple[int, bytes]:
        conn = self.connection(5.0)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def post(conn: http.client.HTTPConnection, body: bytes, ctype: str = "application/octet-stream",
         path: str = "/predict") -> Tuple[int, bytes]:
    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
    r = conn.getresponse()
    return r.status, r.read()


def load(server: Server, bodies: List[Tuple[str, bytes]], n: int, concurrency: int, timeout: float,
         offset: int = 0):
    """Uploads ``offset .. offset + n - 1`` (cycling over ``bodies``) from ``concurrency`` threads:
    (latencies s, errors, answers {index: record}, wall s)."""
    lock = threading.Lock()
    nxt = [offset]
    n += offset
    lat: List[float] = []
    errors: List[str] = []
    answers: Dict[int, dict] = {}

    def worker() -> None:
        conn = server.connection(timeout)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n:
                break
            _, body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            try:
                status, data = post(conn, body)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = server.connection(timeout)
                status, data = 0, str(e).encode()
            dt = time.perf_counter() - t0
            with lock:
                if status == 200:
                    lat.append(dt)
                    answers[i] = json.loads(data)
                else:
                    errors.append(f"{status}: {data[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors, answers, time.perf_counter() - t0


def same_as_run(answers: Dict[int, dict], bodies: List[Tuple[str, bytes]], records: Dict[str, dict]) -> int:
    """How many answers differ from `edgecls run`'s record for the same image (label, decision, confidence)."""
    bad = 0
    for i, rec in answers.items():
        ref = records.get(bodies[i % len(bodies)][0])
        if ref is None or "error" in ref or ref["label"] != rec["label"] or ref["decision"] != rec["decision"] \
                or abs(ref["confidence"] - rec["confidence"]) > 1e-6:
            bad += 1
    return bad


# ------------------------------------------------------------------------------------------------ garbage


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def garbage_requests(jpeg: bytes, max_bytes: int, n: int, seed: int = 0) -> List[Tuple[str, bytes, str]]:
    """``n`` bad uploads (kind, body, content type), cycling over the kinds."""
    rnd = random.Random(seed)
    boundary = "edgeclsbench"

    def form(parts: List[Tuple[str, bytes]]) -> bytes:
        out = b""
        for name, data in parts:
            out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.jpg\"\r\n"
                    "Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
        return out + f"--{boundary}--\r\n".encode()

    multipart = f"multipart/form-data; boundary={boundary}"
    kinds = [
        ("random bytes", lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 4096))), "application/octet-stream"),
        ("truncated JPEG", lambda: jpeg[: rnd.randint(100, max(101, len(jpeg) // 2))], "image/jpeg"),
        ("empty body", lambda: b"", "application/octet-stream"),
        ("JSON", lambda: b'{"image": "not here"}', "application/json"),
        ("text", lambda: b"hello " * rnd.randint(1, 100), "text/plain"),
        ("over --max-bytes", lambda: b"\xff\xd8" + b"\0" * (max_bytes + 10), "image/jpeg"),
        ("60000x60000 PNG header", lambda: _png_header(60000, 60000), "image/png"),
        ("two files", lambda: form([("a", jpeg), ("b", jpeg)]), multipart),
        ("no file", lambda: f"--{boundary}--\r\n".encode(), multipart),
        ("broken multipart", lambda: b"--nope\r\n" + jpeg[:500], multipart),
        ("multipart no boundary", lambda: jpeg[:500], "multipart/form-data"),
        ("JPEG with random tail", lambda: jpeg[:200] + bytes(rnd.getrandbits(8) for _ in range(2000)), "image/jpeg"),
    ]
    out = []
    for i in range(n):
        kind, make, ctype = kinds[i % len(kinds)]
        out.append((kind, make(), ctype))
    return out


def send_garbage(server: Server, reqs: List[Tuple[str, bytes, str]], timeout: float) -> Dict[str, Dict[int, int]]:
    """{kind: {status: count}}; status 0 = no answer (connection reset)."""
    out: Dict[str, Dict[int, int]] = {}
    conn = server.connection(timeout)
    for kind, body, ctype in reqs:
        try:
            status, _ = post(conn, body, ctype)
        except (OSError, http.client.HTTPException):
            status = 0
        if status in (0, 413):  # a refused oversized body may close the connection
            conn.close()
            conn = server.connection(timeout)
        out.setdefault(kind, {}).setdefault(status, 0)
        out[kind][status] += 1
    conn.close()
    return out


def sigterm_in_flight(server: Server, body: bytes, n: int, timeout: float) -> Tuple[List[int], Optional[int]]:
    """Start ``n`` uploads, SIGTERM the server while they are in flight: their statuses and its exit code."""
    statuses: List[int] = []
    lock = threading.Lock()

    def one() -> None:
        conn = server.connection(timeout)
        try:
            status, _ = post(conn, body)
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            conn.close()
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the requests are queued or inferring
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout + 5)
    try:
        rc = server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        rc = None
    return statuses, rc


# ------------------------------------------------------------------------------------------------ main


def measure(model: Path, folder: Path, bodies: List[Tuple[str, bytes]], args: argparse.Namespace,
            tmp: Path) -> Dict:
    """Rounds of [`edgecls run` over the folder, then requests/rounds uploads to the server] (interleaved, so load
    drift on a shared machine hits both alike), then the garbage, the checks after it and SIGTERM."""
    m: Dict = {"run_fps": [], "serve": [], "lat": [], "errors": [], "answers": {}}
    server = Server(model, args)
    try:
        load(server, bodies, min(2 * args.concurrency, args.requests), args.concurrency, args.timeout)  # warm-up
        per_round = [args.requests // args.rounds + (r < args.requests % args.rounds) for r in range(args.rounds)]
        done = 0
        for r, n in enumerate(per_round):
            fps, records = edgecls_run(model, folder, args, tmp)
            m["run_fps"].append(fps)
            m.setdefault("records", records)
            lat, errors, answers, wall = load(server, bodies, n, args.concurrency, args.timeout, offset=done)
            done += n
            m["serve"].append((len(lat), wall))
            m["lat"] += lat
            m["errors"] += errors
            m["answers"].update(answers)
            print(f"round {r + 1}: edgecls run {fps:.1f} images/s, edgecls serve {len(lat) / wall:.1f} images/s "
                  f"(load {open('/proc/loadavg').read().split()[0]})", file=sys.stderr)
        m["garbage"] = send_garbage(server, garbage_requests(bodies[0][1], args.max_bytes, args.garbage), args.timeout)
        m["ready"] = server.get("/v2/health/ready")[0]
        m["after"] = post(server.connection(args.timeout), bodies[0][1])[0]
        m["metrics"] = server.get("/metrics")[1].decode()
        m["sigterm"] = sigterm_in_flight(server, bodies[0][1], args.concurrency, args.timeout)
    finally:
        server.kill()
    return m


def report(m: Dict, bodies: List[Tuple[str, bytes]], args: argparse.Namespace) -> List[str]:
    """Print the table; the failed acceptance checks."""
    served = sum(n for n, _ in m["serve"])
    ips = served / sum(w for _, w in m["serve"])
    run_mean = float(np.mean(m["run_fps"]))
    ratios = [(n / w) / f for (n, w), f in zip(m["serve"], m["run_fps"])]
    ms = np.asarray(m["lat"]) * 1e3
    p50, p99 = (float(np.percentile(ms, 50)), float(np.percentile(ms, 99))) if len(ms) else (float("nan"),) * 2
    mismatches = same_as_run(m["answers"], bodies, m["records"])
    garbage, (statuses, rc) = m["garbage"], m["sigterm"]
    g4xx = sum(c for k in garbage.values() for s, c in k.items() if 400 <= s < 500)
    rows = [
        ("requests answered 200 / sent", f"{served} / {args.requests}"),
        ("errors", f"{len(m['errors'])}"),
        ("latency p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}"),
        ("edgecls serve images/s", f"{ips:.1f}"),
        ("edgecls run images/s (mean of rounds)", f"{run_mean:.1f}"),
        ("ratio serve / run (per round)", " ".join(f"{r:.2f}" for r in ratios)),
        ("ratio serve / run (all rounds)", f"{ips / run_mean:.3f}"),
        ("answers differing from edgecls run", f"{mismatches}"),
        ("garbage uploads answered 4xx / sent", f"{g4xx} / {args.garbage}"),
        ("ready after garbage / a good upload after", f"{m['ready']} / {m['after']}"),
        ("SIGTERM: in-flight answered 200 / exit code", f"{statuses.count(200)}/{len(statuses)} / {rc}"),
    ]
    print(f"\n| {'what':<44} | {'value':>24} |")
    print(f"|{'-' * 46}|{'-' * 26}|")
    for k, v in rows:
        print(f"| {k:<44} | {v:>24} |")
    print("\ngarbage by kind: " + "; ".join(f"{k}: {dict(v)}" for k, v in garbage.items()))
    print("server batches: " + ", ".join(x for x in m["metrics"].splitlines()
                                         if x.startswith(("edgecls_batch_size_sum", "edgecls_batch_size_count"))))
    failures = []
    if m["errors"] or served != args.requests:
        failures.append(f"{len(m['errors'])} errors, e.g. {m['errors'][:3]}")
    if ips < args.ratio * run_mean:
        failures.append(f"throughput {ips:.1f} < {args.ratio} x edgecls run {run_mean:.1f}")
    if mismatches:
        failures.append(f"{mismatches} answers differ from edgecls run")
    bad = {k: v for k, v in garbage.items() if any(not 400 <= s < 500 for s in v)}
    if bad:
        failures.append(f"garbage not answered 4xx: {bad}")
    if m["ready"] != 200 or m["after"] != 200:
        failures.append(f"after the garbage: ready {m['ready']}, a good upload {m['after']}")
    if statuses.count(200) != len(statuses) or rc != 143:  # EXIT_TERMINATED, as `edgecls run`
        failures.append(f"SIGTERM: statuses {statuses}, exit code {rc}")
    return failures


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from edgecls.core.images import list_images

    model = Path(args.model) if args.model else default_model()
    folder = Path(args.images) if args.images else SHARED_VAL
    if not folder.is_dir():
        raise SystemExit(f"no images: {folder} is absent (pass --images DIR)")
    if not 1 <= args.rounds <= args.requests:
        raise SystemExit("--rounds must be in 1..--requests")
    bodies = [(str(p), p.read_bytes()) for p in list_images(folder)]
    print(f"model {model}; images {folder} ({len(bodies)}); {args.requests} requests, {args.concurrency} concurrent, "
          f"in {args.rounds} rounds interleaved with `edgecls run`; batch {args.batch}; threads "
          f"{args.threads or 'onnxruntime default'}; CPUs {os.cpu_count()}; load "
          f"{open('/proc/loadavg').read().split()[:3]}")
    with tempfile.TemporaryDirectory() as td:
        m = measure(model, folder, bodies, args, Path(td))
    failures = report(m, bodies, args)
    print(f"load after: {open('/proc/loadavg').read().split()[:3]}")
    print("\n" + ("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
