"""Helpers for the serve / Triton tests: a real uvicorn server on 127.0.0.1 (port 0) in a thread, and a tiny HTTP
client on urllib (no extra dependency)."""
from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from typing import Any, Dict, Iterator, Optional, Tuple


@contextlib.contextmanager
def served(app: Any, timeout: float = 60.0) -> Iterator[Tuple[str, Any]]:
    """Run ``app`` (from ``create_app``) on 127.0.0.1 (a free port) in a thread, with the server ``edgecls serve``
    builds (its timeouts and limits): yields ``(base url, uvicorn server)``; on exit asks it to stop as SIGTERM
    would (``should_exit``, plus the draining flag its shutdown sets) and waits for the thread."""
    import dataclasses

    from edgecls.runtime.serve.server import build_server

    cfg = dataclasses.replace(app.state.edgecls.cfg, host="127.0.0.1", port=0)
    server = build_server(app, cfg)
    thread = threading.Thread(target=server.run, daemon=True, name="test-uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "uvicorn did not stop"


def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request("GET", base + "/v2/health/ready")[0] == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"{base} never became ready")


def request(method: str, url: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
            timeout: float = 60.0) -> Tuple[int, Dict[str, str], bytes]:
    """``(status, headers, body)``; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, obj: Any) -> Tuple[int, Any]:
    status, _, data = request("POST", url, json.dumps(obj).encode(), {"Content-Type": "application/json"})
    return status, json.loads(data)


def multipart(files: Dict[str, bytes], boundary: str = "testboundary") -> Tuple[bytes, str]:
    body = b""
    for name, data in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.jpg\"\r\n"
                 "Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` pixels (a few bytes: the size check must happen before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def host_port(base: str) -> Tuple[str, int]:
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def read_response(sock: Any, timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP response off a raw socket: ``(status, lower-cased headers, body)``; ``(0, {}, b"")`` when the server
    closed the connection without answering."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return (0, {}, b"") if not data else (-1, {}, data)
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw_request(base: str, data: bytes, timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    """Send ``data`` as is (any bytes, malformed or not) on a new connection; the response."""
    import socket

    with socket.create_connection(host_port(base), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s, timeout)


def start_serve_process(model: Any, *args: str, timeout: float = 120.0) -> Tuple[Any, str]:
    """``edgecls serve MODEL --port 0 --device cpu ARGS`` in a subprocess (stderr piped): the process and the URL
    it announced. The caller reads or drains ``proc.stderr`` and kills the process when done."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "edgecls", "serve", str(model), "--port", "0", "--device", "cpu",
                             *args], stderr=subprocess.PIPE, text=True)
    base = None
    deadline = time.monotonic() + timeout
    while base is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("edgecls serve: http://"):
            base = line.split()[2]
        elif not line and proc.poll() is not None:
            break
    if base is None:
        proc.kill()
        proc.wait(10)
        raise AssertionError("edgecls serve announced no URL")
    return proc, base
