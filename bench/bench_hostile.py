#!/usr/bin/env python
"""Hostile-client bench of ``edgecls serve`` (loopback only; every count and wait is bounded).

``edgecls serve MODEL --port 0`` runs in a subprocess with its default limits (header/body timeouts 10 s, 2048
connections, 8 x --max-bytes of buffered bodies, 3 s shutdown); one "normal" client sends image uploads to
``/predict`` one after another on a keep-alive connection. Phases:

1. baseline: the normal client alone (p50/p99 latency);
2. ``--slow`` slow clients (half trickle their headers, half their body, 1 byte/s) and ``--idle`` idle connections
   beside the normal client: its p50/p99 against the baseline (accept: p99 <= 2x), how long the server kept the
   idle connections (accept: all closed within --header-timeout + 1 s), what the slow ones got (408), descriptors;
3. ``--concurrency`` concurrent normal clients: statuses and latency;
4. ``--uploads`` concurrent ~19.8 MB KServe JSON requests (8 x 3x224x224 floats): statuses at first try (503 +
   Retry-After past the buffer budget) and after retrying as told, peak RSS (accept: <= 600 MB) and RSS settled
   afterwards (accept: within 10 % of its pre-load value, measured after one such request: onnxruntime's memory
   arena grows once to the biggest batch and keeps it; the RSS before any is printed too);
5. SIGTERM with a slow uploader and normal requests in flight: the exit time (accept: < 5 s), the exit code (143),
   what every client got, and no traceback on stderr.

    .venv/bin/python bench/bench_hostile.py                    # a tiny 224x224 ONNX model built on the spot
    .venv/bin/python bench/bench_hostile.py --model runs/export/model.onnx --idle 1000 --slow 20

Exit status 1 when an acceptance check fails. Needs Linux (/proc for RSS and descriptors).
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model (default: a tiny 224x224 ONNX built here)")
    ap.add_argument("--requests", type=int, default=200, help="normal-client requests per measurement")
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--uploads", type=int, default=32)
    ap.add_argument("--header-timeout", type=float, default=10.0, help="serve --header-timeout (its default)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `edgecls serve` argument (repeat)")
    return ap.parse_args(argv)


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from fuzz_helpers import tiny_onnx_classifier

    return tiny_onnx_classifier(folder / "tiny224.onnx", crop=224, resize=256)


def jpeg(seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


class Server:
    def __init__(self, model: Path, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "edgecls", "serve", str(model), "--host", "127.0.0.1", "--port", "0",
               "--device", "cpu", "--header-timeout", str(args.header_timeout), *args.serve_arg]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: List[str] = []
        self.url: Optional[str] = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        if self.url is None:
            self.kill()
            raise SystemExit("edgecls serve did not start:\n" + "".join(self.lines[-20:]))
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        self.addr = (host, int(port))
        while time.monotonic() < deadline:
            if self.get("/v2/health/ready")[0] == 200:
                return
            time.sleep(0.2)
        self.kill()
        raise SystemExit("edgecls serve never became ready")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.url is None and line.startswith("edgecls serve: http://"):
                self.url = line.split()[2]

    def get(self, path: str) -> Tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.addr, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def rss_mb(self) -> float:
        return _status_kb(self.proc.pid, "VmRSS") / 1024

    def hwm_mb(self) -> float:
        return _status_kb(self.proc.pid, "VmHWM") / 1024

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return -1

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pct(xs: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else float("nan")


def normal_client(server: Server, body: bytes, n: int) -> Tuple[List[float], Dict[int, int]]:
    """``n`` uploads one after another on one keep-alive connection: latencies (s) and statuses."""
    lat, statuses = [], {}
    conn = http.client.HTTPConnection(*server.addr, timeout=60)
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
            r = conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(*server.addr, timeout=60)
            status = 0
        lat.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
    conn.close()
    return lat, statuses


def read_status(sock: socket.socket, timeout: float) -> int:
    """The status of the response on ``sock`` (0: closed without one; -1: none within ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return 0
            data += chunk
    except socket.timeout:
        return -1
    except OSError:
        return 0
    return int(data.split()[1])


def slow_client(server: Server, kind: str, out: List, stop: threading.Event) -> None:
    """Trickles its headers (``kind == "headers"``) or its body at 1 byte/s until the server answers or closes."""
    t0 = time.monotonic()
    s = socket.create_connection(server.addr, timeout=5)
    if kind == "headers":
        data = b"POST /predict HTTP/1.1\r\nHost: bench\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    else:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
        data = b"\xff" * 1000
    status = -1
    for b in data:
        if stop.is_set():
            break
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        with selectors.DefaultSelector() as sel:  # epoll: descriptors past 1024 are fine
            sel.register(s, selectors.EVENT_READ)
            if sel.select(1.0):
                break
    status = read_status(s, 2.0)
    out.append((kind, status, time.monotonic() - t0))
    s.close()


def phase_slow_idle(server: Server, body: bytes, args: argparse.Namespace, base_lat: List[float]) -> Dict:
    stop = threading.Event()
    slow_out: List = []
    threads = [threading.Thread(target=slow_client, args=(server, "headers" if i % 2 == 0 else "body", slow_out,
                                                          stop), daemon=True) for i in range(args.slow)]
    for t in threads:
        t.start()
    t_idle = time.monotonic()
    idle = []
    for _ in range(args.idle):
        try:
            idle.append(socket.create_connection(server.addr, timeout=5))
        except OSError:
            break
    time.sleep(0.5)
    fds_peak = server.fds()
    lat, statuses = normal_client(server, body, args.requests)
    fds_peak = max(fds_peak, server.fds())
    # how long did the server keep each idle connection? (it closes them: recv gives b"")
    closed_at: Dict[int, float] = {}
    deadline = t_idle + args.header_timeout + 15
    sel = selectors.DefaultSelector()
    for s in idle:
        sel.register(s, selectors.EVENT_READ)
    while len(closed_at) < len(idle) and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            try:
                s.recv(4096)
            except OSError:
                pass
            closed_at[s.fileno()] = time.monotonic() - t_idle
            sel.unregister(s)
    sel.close()
    for s in idle:
        s.close()
    for t in threads:
        t.join(args.header_timeout + 15)
    stop.set()
    time.sleep(0.5)
    return {"lat": lat, "statuses": statuses, "idle_opened": len(idle), "idle_closed": len(closed_at),
            "idle_close_max_s": max(closed_at.values()) if closed_at else float("nan"),
            "slow": slow_out, "fds_peak": fds_peak, "fds_after": server.fds(), "base_lat": base_lat}


def phase_concurrent(server: Server, body: bytes, n_clients: int, per_client: int) -> Dict:
    lat: List[float] = []
    statuses: Dict[int, int] = {}
    lock = threading.Lock()

    def one():
        la, st = normal_client(server, body, per_client)
        with lock:
            lat.extend(la)
            for k, v in st.items():
                statuses[k] = statuses.get(k, 0) + v

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return {"lat": lat, "statuses": statuses, "wall": time.monotonic() - t0}


def big_json(target: float = 19.8e6, images: int = 8) -> bytes:
    """A KServe JSON request of ``images`` 3x224x224 tensors, its numbers' precision chosen to be ~``target`` bytes."""
    x = np.random.default_rng(1).normal(0, 1, (images, 3, 224, 224)).astype(np.float64)
    best = b""
    for decimals in range(4, 17):
        doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                           "data": np.round(x, decimals).reshape(-1).tolist()}]}
        body = json.dumps(doc).encode()
        if len(body) > target:
            break
        best = body
    return best + b" " * max(0, int(target) - len(best))  # JSON whitespace up to the target size


def phase_uploads(server: Server, body: bytes, n: int, model_name: str) -> Dict:
    first: Dict[int, int] = {}
    final: Dict[int, int] = {}
    tries: List[int] = []
    lock = threading.Lock()
    path = f"/v2/models/{model_name}/infer"

    def one():
        status, k = 0, 0
        for k in range(1, 61):
            conn = http.client.HTTPConnection(*server.addr, timeout=120)
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status, retry = r.status, float(r.getheader("Retry-After") or 0)
            except (OSError, http.client.HTTPException):
                status, retry = 0, 1.0
            finally:
                conn.close()
            with lock:
                if k == 1:
                    first[status] = first.get(status, 0) + 1
            if status != 503:
                break
            time.sleep(retry)
        with lock:
            final[status] = final.get(status, 0) + 1
            tries.append(k)

    rss: List[float] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss.append(server.rss_mb())
            time.sleep(0.02)

    cold = server.rss_mb()
    one()  # one big request first: onnxruntime's arena and the pools grow once to the 8-image batch, for good
    first.clear()
    final.clear()
    tries.clear()
    time.sleep(1.0)
    pre = server.rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    wall = time.monotonic() - t0
    time.sleep(3.0)
    done.set()
    sampler.join(5)
    return {"size_mb": len(body) / 1e6, "first": first, "final": final, "tries_max": max(tries) if tries else 0,
            "wall": wall, "rss_cold": cold, "rss_pre": pre, "rss_peak": max(rss) if rss else float("nan"),
            "rss_after": server.rss_mb(), "hwm": server.hwm_mb()}


def phase_sigterm(server: Server, body: bytes, n_normal: int = 8) -> Dict:
    slow_status: List[int] = []

    def slow():
        s = socket.create_connection(server.addr, timeout=5)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n\xff\xd8")
        slow_status.append(read_status(s, 15))
        s.close()

    normal: List[Dict[int, int]] = []
    st = threading.Thread(target=slow, daemon=True)
    st.start()
    threads = [threading.Thread(target=lambda: normal.append(normal_client(server, body, 3)[1]), daemon=True)
               for _ in range(n_normal)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t0
    st.join(15)
    for t in threads:
        t.join(15)
    merged: Dict[int, int] = {}
    for d in normal:
        for k, v in d.items():
            merged[k] = merged.get(k, 0) + v
    time.sleep(0.2)
    text = "".join(server.lines)
    return {"exit": code, "took": took, "slow": slow_status, "normal": merged,
            "traceback": "Traceback" in text or "CancelledError" in text}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as td:
        model = Path(args.model) if args.model else tiny_model(Path(td))
        name = model.stem
        img = jpeg()
        print(f"model {model}; normal client: {len(img)} B JPEG to /predict; {args.slow} slow, {args.idle} idle, "
              f"{args.concurrency} concurrent, {args.uploads} x big JSON")
        server = Server(model, args)
        try:
            print(f"server pid {server.proc.pid}: RSS {server.rss_mb():.0f} MB, {server.fds()} fds at start")
            normal_client(server, img, 20)  # warm-up
            base_lat, base_st = normal_client(server, img, args.requests)
            print(f"[1] baseline: p50 {pct(base_lat, 50):.1f} ms, p99 {pct(base_lat, 99):.1f} ms, statuses {base_st}")

            m = phase_slow_idle(server, img, args, base_lat)
            ratio = pct(m["lat"], 99) / pct(base_lat, 99)
            slow_st: Dict[str, Dict[int, int]] = {}
            for kind, status, _ in m["slow"]:
                slow_st.setdefault(kind, {})
                slow_st[kind][status] = slow_st[kind].get(status, 0) + 1
            slow_max = max((t for _, _, t in m["slow"]), default=float("nan"))
            print(f"[2] {args.slow} slow + {m['idle_opened']} idle: normal p50 {pct(m['lat'], 50):.1f} ms, "
                  f"p99 {pct(m['lat'], 99):.1f} ms ({ratio:.2f}x baseline p99), statuses {m['statuses']}; "
                  f"idle closed by the server {m['idle_closed']}/{m['idle_opened']}, the last after "
                  f"{m['idle_close_max_s']:.1f} s; slow clients got {slow_st} (longest {slow_max:.1f} s); "
                  f"server fds peak {m['fds_peak']}, after {m['fds_after']}")
            ok &= ratio <= 2.0 and m["idle_closed"] == m["idle_opened"]
            ok &= m["idle_close_max_s"] <= args.header_timeout + 1.0
            ok &= all(s == 408 for _, s, _ in m["slow"]) and set(m["statuses"]) == {200}

            c = phase_concurrent(server, img, args.concurrency, 5)
            print(f"[3] {args.concurrency} concurrent x 5: p50 {pct(c['lat'], 50):.1f} ms, p99 "
                  f"{pct(c['lat'], 99):.1f} ms, {len(c['lat']) / c['wall']:.1f} req/s, statuses {c['statuses']}")
            ok &= set(c["statuses"]) == {200}

            big = big_json()
            u = phase_uploads(server, big, args.uploads, name)
            settled = abs(u["rss_after"] - u["rss_pre"]) / u["rss_pre"]
            print(f"[4] {args.uploads} concurrent {u['size_mb']:.1f} MB JSON: first try {u['first']}, after retrying "
                  f"(Retry-After) {u['final']} (at most {u['tries_max']} tries, {u['wall']:.1f} s); RSS before any big request "
                  f"{u['rss_cold']:.0f} MB, pre-load (after one) {u['rss_pre']:.0f} MB, peak {u['rss_peak']:.0f} MB (VmHWM {u['hwm']:.0f} MB), settled "
                  f"{u['rss_after']:.0f} MB ({settled * 100:+.1f} %)")
            ok &= u["rss_peak"] <= 600 and u["hwm"] <= 600 and settled <= 0.10
            ok &= set(u["final"]) == {200} and set(u["first"]) <= {200, 503}

            s = phase_sigterm(server, img)
            print(f"[5] SIGTERM with a slow uploader + 8 normal clients in flight: exit {s['exit']} after "
                  f"{s['took']:.2f} s; slow uploader got {s['slow']}; normal clients {s['normal']}; "
                  f"traceback on stderr: {s['traceback']}")
            ok &= s["exit"] == 143 and s["took"] < 5 and s["slow"] == [503] and not s["traceback"]
            ok &= set(s["normal"]) <= {200, 503, 0}
        finally:
            server.kill()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
