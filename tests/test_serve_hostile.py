"""edgecls serve against hostile and careless clients (issue 20): every client mistake is a JSON 4xx (property-based:
mutated KServe JSON and binary requests never get a 5xx, the server is ready after), header and body timeouts,
the connection cap and the buffered-bytes budget (503 + Retry-After), compressed request bodies, version-qualified
KServe/Triton endpoints (with tritonclient), a bounded shutdown with a slow uploader, and exit 143 on SIGTERM.

Runs without torch (the model is built with the ``onnx`` helpers). ``EDGECLS_SERVE_FUZZ=5000`` runs the property
test with that many examples (the default keeps CI fast)."""
from __future__ import annotations

import gzip
import json
import logging
import os
import random
import signal
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from fuzz_helpers import tiny_onnx_classifier  # noqa: E402
from serve_helpers import (  # noqa: E402
    host_port,
    raw_request,
    read_response,
    request,
    served,
    start_serve_process,
    wait_ready,
)

from edgecls.runtime.serve.config import ServeConfig  # noqa: E402

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
INFER = "/v2/models/tiny/infer"
FUZZ_EXAMPLES = int(os.environ.get("EDGECLS_SERVE_FUZZ", "150"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx_classifier(tmp_path_factory.mktemp("hostile") / "tiny.onnx")


def make_app(model, **kw):
    from edgecls.runtime.serve.app import create_app

    kw.setdefault("device", "cpu")
    kw.setdefault("header_timeout_s", HEADER_TIMEOUT)
    kw.setdefault("body_timeout_s", BODY_TIMEOUT)
    kw.setdefault("max_bytes", 200_000)
    return create_app(ServeConfig(model=str(model), **kw))


class ErrorLogs(logging.Handler):
    """ERROR records of any logger (a traceback at default verbosity is a failure)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors():
    h = ErrorLogs()
    logging.getLogger().addHandler(h)
    yield h.records
    logging.getLogger().removeHandler(h)


@pytest.fixture(scope="module")
def server(model, errors):
    with served(make_app(model, max_wait_ms=1.0)) as (base, _):
        wait_ready(base)
        yield base


def tensor(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 32, 32)).astype(np.float32)


def json_doc(x: np.ndarray) -> dict:
    return {"id": "r", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}],
            "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}


def binary_body(x: np.ndarray, doc: dict = None):
    raw = x.astype("<f4").tobytes()
    doc = doc or {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                              "parameters": {"binary_data_size": len(raw)}}],
                  "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    head = json.dumps(doc).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}


def post(base, path, body, headers=None):
    status, hdrs, data = request("POST", base + path, body, dict(headers or {"Content-Type": "application/json"}))
    return status, {k.lower(): v for k, v in hdrs.items()}, data


def assert_json_error(status, headers, data, want):
    assert status == want, (status, data[:300])
    assert headers["content-type"] == "application/json" and json.loads(data)["error"]


# ------------------------------------------------------------------ the 500s of the issue, now JSON 400s
NESTED = b"[" * 99_000 + b"]" * 99_000
TEN = tensor()


def _bad_docs():
    x = TEN
    yield "deep nesting", b'{"inputs": ' + NESTED + b"}"
    yield "deep nesting of data", json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32],
                                                           "datatype": "FP32"}]})[:-3].encode() + b', "data": ' + \
        b"[" * 5000 + b"]" * 5000 + b"}]}"
    for where in ("request", "input", "output"):
        for bad in ("binary", [1, 2], 3):
            doc = json_doc(x)
            target = {"request": doc, "input": doc["inputs"][0], "output": doc["outputs"][0]}[where]
            target["parameters"] = bad
            yield f"parameters of the {where} as {type(bad).__name__}", json.dumps(doc).encode()
    doc = json_doc(x)
    doc["inputs"][0]["data"] = [str(v) for v in doc["inputs"][0]["data"]]
    yield "data as strings", json.dumps(doc).encode()
    doc = json_doc(x)
    doc["inputs"][0]["data"] = [True] * 3072
    yield "data as booleans", json.dumps(doc).encode()
    doc = json_doc(x)
    doc["id"] = {"a": [1]}
    yield "id as an object", json.dumps(doc).encode()
    doc = json_doc(x)
    doc["outputs"][0]["parameters"]["binary_data"] = "yes"
    yield "binary_data as a string", json.dumps(doc).encode()


@pytest.mark.parametrize("name,body", list(_bad_docs()), ids=[n for n, _ in _bad_docs()])
def test_malformed_kserve_json_is_a_json_400(server, errors, name, body):
    assert_json_error(*post(server, INFER, body), 400)
    assert not errors, [r.getMessage() for r in errors]


def test_binary_data_size_as_float_and_other_binary_mistakes_are_400(server, errors):
    x = TEN
    for size in (602112.0, 12288.0, "12288", -1, True, None):
        doc = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                           "parameters": {"binary_data_size": size}}]}
        body, headers = binary_body(x, doc)
        status, hdrs, data = post(server, INFER, body, headers)
        if size is None:  # no size: the JSON has no data either
            assert status == 400
            continue
        assert_json_error(status, hdrs, data, 400)
    body, headers = binary_body(x)
    for bad in ("-5", "abc", str(len(body) + 1), "0", "1e3"):
        assert_json_error(*post(server, INFER, body, {**headers, "Inference-Header-Content-Length": bad}), 400)
    assert post(server, INFER, body, headers)[0] == 200
    assert not errors, [r.getMessage() for r in errors]


# ------------------------------------------------------------------ property test: mutated requests, never a 5xx
def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):  # the first few items of `data`, not all 3072
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _delete(obj, path):
    if not path:
        return obj
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return obj


def _mutated(data, seed: int):
    """``(path, body, headers)``: a valid JSON or binary request damaged by a few random operations (values of
    the wrong type or size, deletions, byte flips, truncation, header lies, compression)."""
    from hypothesis import strategies as st

    rnd = random.Random(seed)
    binary = data.draw(st.booleans(), "binary")
    x = tensor(data.draw(st.integers(1, 2), "n"), seed)
    if binary:
        raw = x.astype("<f4").tobytes()
        doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                           "parameters": {"binary_data_size": len(raw)}}],
               "outputs": [{"name": "logits", "parameters": {"binary_data": True, "classification": 1}}],
               "parameters": {"binary_data_output": False}, "id": "x"}
    else:
        raw = b""
        doc = json_doc(x)
        doc["parameters"] = {"binary_data_output": False}
    values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12) | st.sampled_from(["FP32", "input", "logits", "INT8", "", "1", 602112.0, 12288,
                                                    -1, 0, 2**63, [1, 3, 32, 32], [0], {}]),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
    for _ in range(data.draw(st.integers(1, 4), "ops")):
        paths = list(_paths(doc))
        path = paths[data.draw(st.integers(0, len(paths) - 1), "path")]
        op = data.draw(st.sampled_from(["set", "set", "delete", "nest"]), "op")
        try:
            if op == "set":
                doc = _set(doc, path, data.draw(values, "value"))
            elif op == "delete":
                doc = _delete(doc, path)
            else:
                depth = data.draw(st.sampled_from([10, 900, 5000, 100_000]), "depth")
                doc = _set(doc, path, f"\0NEST{depth}\0")
        except (KeyError, IndexError, TypeError):
            pass
    try:
        text = json.dumps(doc, allow_nan=True)
    except (ValueError, RecursionError):
        text = "{}"
    for token in set(t for t in text.split('"') if t.startswith("\\u0000NEST")):
        depth = int(token[len("\\u0000NEST"):-len("\\u0000")])
        text = text.replace(f'"{token}"', "[" * depth + "]" * depth)
    head = text.encode()
    body = head + raw
    headers = {"Content-Type": data.draw(st.sampled_from(["application/json", "application/octet-stream",
                                                          "text/plain", ""]), "ctype")}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(head))
    byte_op = data.draw(st.sampled_from(["none", "none", "flip", "truncate", "insert", "hlen", "gzip", "deflate",
                                         "badgzip", "br"]), "byte_op")
    if byte_op == "flip" and body:
        i = rnd.randrange(len(body))
        body = body[:i] + bytes([body[i] ^ (1 << rnd.randrange(8))]) + body[i + 1:]
    elif byte_op == "truncate":
        body = body[: rnd.randrange(len(body) + 1)]
    elif byte_op == "insert":
        i = rnd.randrange(len(body) + 1)
        body = body[:i] + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9))) + body[i:]
    elif byte_op == "hlen":
        headers["Inference-Header-Content-Length"] = data.draw(st.sampled_from(
            ["0", "-1", "abc", str(len(head) - 1), str(len(body)), str(len(body) + 10), "99999999999999999999",
             " 12", "1_0"]), "hlen")
    elif byte_op == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif byte_op == "deflate":
        body, headers["Content-Encoding"] = zlib.compress(body), "deflate"
    elif byte_op == "badgzip":
        body, headers["Content-Encoding"] = gzip.compress(body)[: max(1, len(body) // 3)], "gzip"
    elif byte_op == "br":
        headers["Content-Encoding"] = "br"
    path = data.draw(st.sampled_from([INFER, INFER, INFER, "/v2/models/tiny/versions/1/infer",
                                      "/v2/models/tiny/versions/2/infer", "/v2/models/other/infer", "/predict"]),
                     "url")
    return path, body, headers


def test_mutated_kserve_requests_never_get_a_5xx(server, errors):
    hypothesis = pytest.importorskip("hypothesis")
    import http.client

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    host, port = host_port(server)
    statuses = {}
    conn = [http.client.HTTPConnection(host, port, timeout=30)]

    def send(path, body, headers):
        for attempt in range(2):
            try:
                conn[0].request("POST", path, body=body, headers=headers)
                r = conn[0].getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    conn[0].close()
                return r.status, r.getheader("content-type"), data
            except (http.client.HTTPException, OSError):
                conn[0].close()
                conn[0] = http.client.HTTPConnection(host, port, timeout=30)
                if attempt:
                    raise

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_EXAMPLES <= 150,
              suppress_health_check=list(HealthCheck))
    @given(st.data(), st.integers(0, 2**31))
    def fuzz(data, seed):
        path, body, headers = _mutated(data, seed)
        status, ctype, payload = send(path, body, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, payload[:300])
        if status >= 400:
            assert ctype == "application/json" and json.loads(payload)["error"]

    fuzz()
    conn[0].close()
    assert sum(statuses.values()) >= FUZZ_EXAMPLES
    assert request("GET", server + "/v2/health/ready")[0] == 200
    body, headers = binary_body(TEN)
    assert post(server, INFER, body, headers)[0] == 200
    assert not errors, [r.getMessage() for r in errors]
    print(f"fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    del hypothesis


# ------------------------------------------------------------------ compressed bodies, versions, tritonclient
def test_compressed_request_bodies(server, errors):
    body = json.dumps(json_doc(TEN)).encode()
    status, _, plain = post(server, INFER, body)
    assert status == 200
    for coding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)),
                           ("GZip", gzip.compress(body))):
        status, _, data = post(server, INFER, packed, {"Content-Type": "application/json", "Content-Encoding": coding})
        assert status == 200 and json.loads(data) == json.loads(plain), coding
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB of JSON whitespace in ~50 KB: stops at --max-bytes
    assert len(bomb) < 200_000
    assert_json_error(*post(server, INFER, bomb, {"Content-Encoding": "gzip"}), 413)
    status, hdrs, data = post(server, INFER, body, {"Content-Encoding": "br"})
    assert_json_error(status, hdrs, data, 415)
    assert "gzip" in json.loads(data)["error"] and "deflate" in json.loads(data)["error"]
    assert_json_error(*post(server, INFER, gzip.compress(body)[:500], {"Content-Encoding": "gzip"}), 400)
    assert_json_error(*post(server, INFER, b"not gzip at all", {"Content-Encoding": "gzip"}), 400)
    assert_json_error(*post(server, INFER, gzip.compress(body) + b"junk", {"Content-Encoding": "gzip"}), 400)
    assert not errors


def test_versions_and_config_over_http(server):
    for v, want in (("1", 200), ("2", 404), ("0", 404), ("latest", 404)):
        assert request("GET", f"{server}/v2/models/tiny/versions/{v}/ready")[0] == want, v
        assert request("GET", f"{server}/v2/models/tiny/versions/{v}")[0] == want, v
        assert request("GET", f"{server}/v2/models/tiny/versions/{v}/config")[0] == want, v
        assert post(server, f"/v2/models/tiny/versions/{v}/infer", json.dumps(json_doc(TEN)).encode())[0] == want
    status, _, data = request("GET", server + "/v2/models/tiny/config")
    cfg = json.loads(data)
    assert status == 200 and cfg["name"] == "tiny" and cfg["input"][0]["dims"] == [3, 32, 32]
    assert cfg["input"][0]["data_type"] == "TYPE_FP32" and cfg["output"][0]["dims"] == [2]
    assert request("GET", server + "/v2/models/other/config")[0] == 404


def test_tritonclient_versions_config_and_compression(server, model):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    from edgecls.runtime.classifier import Classifier

    clf = Classifier.load(model, device="cpu")
    x = tensor(3, 7)
    client = httpclient.InferenceServerClient(server.split("//", 1)[1])
    try:
        assert client.is_model_ready("tiny", "1") and not client.is_model_ready("tiny", "2")
        cfg = client.get_model_config("tiny")
        assert cfg["name"] == "tiny" and cfg["max_batch_size"] >= 1 and cfg["output"][0]["name"] == "logits"
        assert client.get_model_metadata("tiny", "1")["versions"] == ["1"]
        with pytest.raises(InferenceServerException) as e:
            client.get_model_metadata("tiny", "3")
        assert "404" in str(e.value.status())
        for binary in (True, False):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = httpclient.InferRequestedOutput("logits", binary_data=binary)
            for kw in ({"model_version": "1"}, {"request_compression_algorithm": "gzip"},
                       {"request_compression_algorithm": "deflate", "model_version": "1"}):
                res = client.infer("tiny", [inp], outputs=[out], **kw)
                assert np.abs(res.as_numpy("logits") - clf.infer(x)).max() < 1e-5, kw
            with pytest.raises(InferenceServerException) as e:
                client.infer("tiny", [inp], outputs=[out], model_version="2")
            assert "404" in str(e.value.status()) and "version" in str(e.value)
    finally:
        client.close()


# ------------------------------------------------------------------ timeouts, connection cap, buffer budget
def test_malformed_content_length_and_request_line_get_json_400(server, errors):
    for raw in (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nxyz",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n",
                b"GARBAGE\r\n\r\n", b"GET /v2 HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"):
        status, headers, body = raw_request(server, raw)
        assert status == 400 and headers["content-type"] == "application/json", raw[:60]
        assert json.loads(body)["error"]
    assert not errors


def test_header_and_body_timeouts(server):
    host, port = host_port(server)
    t0 = time.monotonic()
    with socket.create_connection((host, port)) as idle, socket.create_connection((host, port)) as slow, \
            socket.create_connection((host, port)) as short:
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest of its headers
        short.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"{" * 10)
        status, headers, body = read_response(slow, 10)
        assert status == 408 and "header" in json.loads(body)["error"]
        status, headers, body = read_response(short, 10)
        assert status == 408 and "body" in json.loads(body)["error"] and headers["connection"] == "close"
        idle.settimeout(10)
        assert idle.recv(10) == b""  # closed, no answer (it asked nothing)
        assert slow.recv(10) == b"" and short.recv(10) == b""
    took = time.monotonic() - t0
    assert took < HEADER_TIMEOUT + BODY_TIMEOUT + 2, took
    with socket.create_connection((host, port)) as trickle:  # 1 byte at a time: still bound by the header timeout
        t0 = time.monotonic()
        trickle.settimeout(0.2)
        closed = False
        for b in b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100:
            try:
                trickle.sendall(bytes([b]))
                if trickle.recv(4096, socket.MSG_PEEK):
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - t0 < HEADER_TIMEOUT + 1.5
    assert request("GET", server + "/v2/health/ready")[0] == 200


def test_connection_cap_answers_503_with_retry_after(model, errors):
    with served(make_app(model, max_connections=4)) as (base, _):
        wait_ready(base)
        host, port = host_port(base)
        held = [socket.create_connection((host, port)) for _ in range(4)]
        try:
            time.sleep(0.1)
            status, headers, body = raw_request(base, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503 and headers["retry-after"] and json.loads(body)["error"]
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        assert request("GET", base + "/v2/health/live")[0] == 200
    assert not errors


def test_buffer_budget_refuses_with_503_and_recovers(model, errors):
    with served(make_app(model, max_bytes=100_000, max_buffered_bytes=180_000, body_timeout_s=20)) as (base, srv):
        wait_ready(base)
        state = srv.config.app.state.edgecls
        host, port = host_port(base)
        with socket.create_connection((host, port)) as a:
            a.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            deadline = time.monotonic() + 5
            while state.budget.used < 100_000 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert state.budget.used == 100_000
            status, headers, body = post(base, INFER, b" " * 99_999 + b"x")  # would go over: refused, body unread
            assert status == 503 and headers["retry-after"] == "1" and "buffered" in json.loads(body)["error"]
            assert post(base, INFER, json.dumps(json_doc(TEN)).encode())[0] == 200  # a small one still fits
            a.sendall(b" " * 99_999)
            status, _, body = read_response(a, 10)
            assert status == 400  # "{" + spaces is not JSON
        assert state.budget.used == 0 and state.budget.peak <= 180_000
        assert post(base, INFER, b" " * 99_999 + b"x")[0] == 400
    assert not errors


def test_shutdown_with_a_slow_uploader_is_bounded_and_answers_json(model, errors):
    with served(make_app(model, body_timeout_s=60, shutdown_timeout_s=3)) as (base, srv):
        wait_ready(base)
        host, port = host_port(base)
        up = socket.create_connection((host, port))
        up.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{\"in")
        idle = socket.create_connection((host, port))
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.should_exit = True  # SIGTERM
        status, headers, body = read_response(up, 10)
        assert status == 503 and "shutting down" in json.loads(body)["error"] and headers["connection"] == "close"
        idle.settimeout(10)
        assert idle.recv(10) == b""
    took = time.monotonic() - t0
    assert took < 5, took
    up.close()
    idle.close()
    assert not errors, [r.getMessage() for r in errors]


def test_edgecls_serve_exits_143_on_sigterm_with_a_slow_uploader(model):
    """The real command: SIGTERM with a slow uploader connected exits within 5 s with the documented 143."""
    proc, base = start_serve_process(model, "--body-timeout", "60")
    try:
        err = []
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
        wait_ready(base)
        up = socket.create_connection(host_port(base))
        up.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n\xff\xd8")
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status, _, body = read_response(up, 10)
        assert status == 503 and json.loads(body)["error"]
        assert proc.wait(10) == 143
        assert time.monotonic() - t0 < 5
        time.sleep(0.1)
        text = "".join(err)
        assert "Traceback" not in text and "CancelledError" not in text, text
        assert "terminated (SIGTERM)" in text
        up.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_byte_budget_and_read_body_units():
    import asyncio

    from edgecls.runtime.serve.uploads import ByteBudget, Lease, UploadError, read_body

    b = ByteBudget(100)
    with Lease(b) as a:
        a.take(60)
        with pytest.raises(UploadError) as e, Lease(b) as c:
            c.take(50)
        assert e.value.status == 503 and e.value.headers["Retry-After"]
        assert b.used == 60
    assert b.used == 0 and b.peak == 60

    class Req:
        def __init__(self, chunks, headers):
            self.chunks, self.headers = chunks, headers

        async def stream(self):
            for c in self.chunks:
                yield c

    async def read(chunks, headers, limit=1000):
        return await read_body(Req(chunks, headers), limit, Lease(ByteBudget(10_000)))

    assert asyncio.run(read([b"ab", b"cd"], {"content-length": "4"})) == b"abcd"
    assert asyncio.run(read([b"ab", b"cd"], {})) == b"abcd"
    packed = gzip.compress(b"x" * 900)
    assert asyncio.run(read([packed[:10], packed[10:]], {"content-encoding": "gzip"})) == b"x" * 900
    for chunks, headers, status in (([b"ab"], {"content-length": "4"}, 400),
                                    ([b"a"], {"content-length": "4x"}, 400),
                                    ([b""], {"content-length": "2000"}, 413),
                                    ([gzip.compress(b"x" * 2000)], {"content-encoding": "gzip"}, 413),
                                    ([b"abc"], {"content-encoding": "zstd"}, 415),
                                    ([struct.pack("<I", 7)], {"content-encoding": "deflate"}, 400)):
        with pytest.raises(UploadError) as e:
            asyncio.run(read(chunks, headers))
        assert e.value.status == status, (chunks, headers)
