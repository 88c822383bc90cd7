"""edgecls serve: /predict gives the record `edgecls run` prints, micro-batching, KServe v2 (JSON and binary,
through tritonclient too), readiness while loading, bad uploads → 4xx JSON with the server still serving,
Prometheus metrics per app, graceful shutdown of in-flight work, and `edgecls run --metrics-port`."""
from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("onnxruntime")

from runtime_helpers import export_tiny_onnx, read_jsonl, tiny_spec, write_images  # noqa: E402
from serve_helpers import multipart, png_header, post_json, request, served, start_serve_process, wait_ready  # noqa: E402

from edgecls.runtime.serve.config import ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("serve_model") / "tiny.onnx"
    export_tiny_onnx(path, tiny_spec(threshold=0.55))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("serve_images"), n=6)


@pytest.fixture(scope="module")
def run_records(model, images):
    """What `edgecls run` prints for each image (the reference)."""
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run

    out = io.StringIO()
    run(RunConfig(model=str(model), sources=tuple(str(p) for p in images), device="cpu", probs=True, summary=False),
        out=out, err=io.StringIO())
    return {r["path"]: r for r in read_jsonl(out.getvalue())}


def make_app(model, **kw):
    from edgecls.runtime.serve.app import create_app

    kw.setdefault("device", "cpu")
    return create_app(ServeConfig(model=str(model), **kw))


@pytest.fixture(scope="module")
def server(model):
    with served(make_app(model, max_wait_ms=20.0, max_bytes=200_000, max_pixels=1_000_000)) as (base, srv):
        wait_ready(base)
        yield base


def _same(rec, ref):
    for k in ("label", "decision", "positive", "class_name"):
        assert rec.get(k) == ref.get(k), k
    assert rec["confidence"] == pytest.approx(ref["confidence"], abs=1e-6)
    assert [t["label"] for t in rec["topk"]] == [t["label"] for t in ref["topk"]]
    assert rec["probs"] == pytest.approx(ref["probs"], abs=1e-6)


def test_predict_bytes_and_multipart_give_the_run_record(server, images, run_records):
    for p in images:
        data = Path(p).read_bytes()
        status, headers, body = request("POST", server + "/predict?probs=true", data)
        assert status == 200 and headers["content-type"] == "application/json"
        rec = json.loads(body)
        _same(rec, run_records[str(p)])
        assert rec["source"] == "http" and set(rec["timings_ms"]) >= {"decode", "preprocess", "infer", "queue"}
        form, ctype = multipart({"file": data})
        status, _, body = request("POST", server + "/predict?probs=true", form, {"Content-Type": ctype})
        rec = json.loads(body)
        assert status == 200 and rec["path"] == "file.jpg"
        _same(rec, run_records[str(p)])


def test_concurrent_requests_share_batches(model, images, run_records):
    with served(make_app(model, max_wait_ms=200.0, max_batch=8)) as (base, _):
        wait_ready(base)
        results = {}

        def one(i):
            p = images[i % len(images)]
            results[i] = (p, json.loads(request("POST", base + "/predict?probs=true", Path(p).read_bytes())[2]))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 12
        for p, rec in results.values():
            _same(rec, run_records[str(p)])
        assert max(rec["timings_ms"].get("batch", 1) for _, rec in results.values()) > 1
        metrics = request("GET", base + "/metrics")[2].decode()
        count = float(next(x for x in metrics.splitlines() if x.startswith("edgecls_batch_size_count")).split()[1])
        assert count < 12  # fewer inference calls than requests


BAD = [
    ("random bytes", b"\x00\x01garbage" * 50, "application/octet-stream", 400),
    ("empty", b"", "application/octet-stream", 400),
    ("json", b'{"a": 1}', "application/json", 415),
    ("too many bytes", b"\xff\xd8" + b"\0" * 300_000, "image/jpeg", 413),
    ("too many pixels", png_header(5000, 5000), "image/png", 413),
    ("pillow bomb", png_header(60000, 60000), "image/png", 413),
    ("no boundary", b"abc", "multipart/form-data", 400),
    ("broken multipart", b"--x\r\nnonsense", "multipart/form-data; boundary=x", 400),
]


@pytest.mark.parametrize("name,body,ctype,status", BAD, ids=[b[0] for b in BAD])
def test_bad_upload_gets_4xx_json_and_server_keeps_serving(server, images, name, body, ctype, status):
    got, headers, data = request("POST", server + "/predict", body, {"Content-Type": ctype})
    assert got == status, data
    assert headers["content-type"] == "application/json" and json.loads(data)["error"]
    assert request("GET", server + "/v2/health/ready")[0] == 200
    assert request("POST", server + "/predict", Path(images[0]).read_bytes())[0] == 200


def test_multipart_needs_exactly_one_file_and_truncated_jpeg_is_400(server, images):
    data = Path(images[0]).read_bytes()
    form, ctype = multipart({"a": data, "b": data})
    status, _, body = request("POST", server + "/predict", form, {"Content-Type": ctype})
    assert status == 400 and "file" in json.loads(body)["error"]
    form, ctype = multipart({})
    assert request("POST", server + "/predict", form, {"Content-Type": ctype})[0] == 400
    status, _, body = request("POST", server + "/predict", data[: len(data) // 2])
    assert status == 400, body


def test_kserve_json_infer_metadata_and_errors(server, model, images):
    from edgecls.runtime.classifier import Classifier

    clf = Classifier.load(model, device="cpu")
    x = np.stack([clf.prepare(str(p)) for p in images[:2]])
    want = clf.infer(x)
    status, meta = request("GET", server + "/v2/models/tiny")[0], json.loads(request("GET", server + "/v2/models/tiny")[2])
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 3, 32, 32] and meta["outputs"][0]["name"] == "logits"
    url = server + "/v2/models/tiny/infer"
    body = {"id": "r1", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "data": x.reshape(-1).tolist()}]}
    status, res = post_json(url, body)
    assert status == 200 and res["id"] == "r1" and res["model_name"] == "tiny"
    out = np.asarray(res["outputs"][0]["data"], dtype=np.float32).reshape(res["outputs"][0]["shape"])
    assert np.abs(out - want).max() < 1e-5
    body["outputs"] = [{"name": "logits", "parameters": {"classification": 1}}]
    status, res = post_json(url, body)
    probs = clf.decider.probabilities(want)
    top = res["outputs"][0]["data"][0].split(":")
    assert res["outputs"][0]["datatype"] == "BYTES" and int(top[1]) == int(np.argmax(probs[0]))
    assert float(top[0]) == pytest.approx(probs[0].max(), abs=1e-5) and top[2] == clf.spec.classes[int(top[1])]
    for bad in ({"inputs": []}, {"inputs": [{"name": "nope", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": []}]},
                {"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0] * 192}]},
                {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "INT8", "data": [0] * 3072}]},
                {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0] * 5}]}):
        status, res = post_json(url, bad)
        assert status == 400 and res["error"], bad
    assert request("POST", url, b"not json")[0] == 400
    assert post_json(server + "/v2/models/other/infer", body)[0] == 404


def test_tritonclient_binary_tensors_against_serve(server, model, images):
    httpclient = pytest.importorskip("tritonclient.http")
    from edgecls.runtime.classifier import Classifier

    clf = Classifier.load(model, device="cpu")
    x = np.stack([clf.prepare(str(p)) for p in images[:3]])
    client = httpclient.InferenceServerClient(server.split("//", 1)[1])
    assert client.is_server_live() and client.is_model_ready("tiny")
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    res = client.infer("tiny", [inp], outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)])
    assert np.abs(res.as_numpy("logits") - clf.infer(x)).max() < 1e-5
    res = client.infer("tiny", [inp], outputs=[httpclient.InferRequestedOutput("logits", class_count=2)])
    assert res.as_numpy("logits").shape == (3, 2)
    client.close()


def test_not_ready_until_loaded_and_load_errors_are_reported(model, images):
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.serve import app as app_mod

    gate = threading.Event()
    real = Classifier.load(model, device="cpu")

    def slow_loader(cfg):
        def load(path):
            assert gate.wait(30)
            return real
        return load

    orig = app_mod.default_loader
    app_mod.default_loader = slow_loader
    try:
        app = make_app(model)
    finally:
        app_mod.default_loader = orig
    with served(app) as (base, _):
        assert request("GET", base + "/v2/health/live")[0] == 200
        status, _, body = request("GET", base + "/v2/health/ready")
        assert status == 503 and "loading" in json.loads(body)["error"]
        assert request("POST", base + "/predict", Path(images[0]).read_bytes())[0] == 503
        gate.set()
        wait_ready(base)
        assert request("POST", base + "/predict", Path(images[0]).read_bytes())[0] == 200

    errors = []
    from edgecls.runtime.serve.app import create_app

    app = create_app(ServeConfig(model=str(model) + ".missing.onnx"), on_load_error=errors.append)
    with served(app) as (base, _):
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        status, _, body = request("GET", base + "/v2/health/ready")
        assert errors and status == 503 and "could not be loaded" in json.loads(body)["error"]


def test_metrics_per_app_registry(server, model, images):
    request("POST", server + "/predict", Path(images[0]).read_bytes())
    assert request("POST", server + "/predict", b"not an image")[0] == 400  # the errors counter gets a sample
    text = request("GET", server + "/metrics")[2].decode()
    for needle in ('edgecls_requests_total{endpoint="/predict",status="200"}', 'edgecls_request_seconds_bucket{',
                   'stage="infer"', 'stage="decode"', "edgecls_decisions_total{", "edgecls_errors_total{",
                   "edgecls_ready 1.0", "edgecls_model_info{"):
        assert needle in text, needle
    from edgecls.core.fileio import file_sha256

    assert f'sha256="{file_sha256(model)}"' in text
    with served(make_app(model)) as (base, _):  # a second app: its own counters, no duplicate registration
        wait_ready(base)
        other = request("GET", base + "/metrics")[2].decode()
        assert 'endpoint="/predict",status="200"' not in other


def test_shutdown_finishes_in_flight_requests(model, images):
    with served(make_app(model, max_wait_ms=300.0)) as (base, srv):
        wait_ready(base)
        statuses = []

        def one():
            statuses.append(request("POST", base + "/predict", Path(images[0]).read_bytes())[0])

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.1)  # queued, waiting for their batch
        srv.should_exit = True  # what uvicorn's SIGTERM handler does
        for t in threads:
            t.join(60)
    assert statuses == [200] * 6


def test_batcher_batches_propagates_errors_and_drains_on_close():
    from edgecls.runtime.serve.batching import BatcherClosed, MicroBatcher

    calls = []

    def infer(batch):
        calls.append(batch.shape[0])
        if batch[0, 0, 0, 0] < 0:
            raise ValueError("boom")
        return batch.reshape(batch.shape[0], -1)[:, :2] * 2

    async def main():
        b = MicroBatcher(infer, max_batch=4, max_wait_ms=50)
        b.start()
        xs = [np.full((3, 2, 2), i, np.float32) for i in range(6)]
        res = await asyncio.gather(*(b.submit(x) for x in xs))
        assert [r.output[0] for r in res] == [2.0 * i for i in range(6)]
        assert calls[0] == 4 and sum(calls) == 6
        with pytest.raises(ValueError, match="boom"):
            await b.submit(np.full((3, 2, 2), -1, np.float32))
        pending = [asyncio.ensure_future(b.submit(np.ones((3, 2, 2), np.float32))) for _ in range(3)]
        await asyncio.sleep(0)
        await b.close()
        assert all(p.result().output[0] == 2.0 for p in pending)
        with pytest.raises(BatcherClosed):
            await b.submit(np.ones((3, 2, 2), np.float32))

    asyncio.run(main())


def test_serve_config_validation():
    from edgecls.core.errors import InputError

    for kw in ({"port": 70000}, {"max_bytes": 0}, {"max_pixels": -1}, {"max_wait_ms": 5000}, {"name": "a/b"},
               {"threshold": 2.0}, {"max_batch": 0}):
        with pytest.raises(InputError):
            ServeConfig(model="m.onnx", **kw)
    assert ServeConfig(model="dir/my model.onnx").model_name == "my_model"
    assert not ServeConfig(model="m.onnx").public and ServeConfig(model="m.onnx", host="0.0.0.0").public


def test_serve_cli_refuses_a_model_without_spec_before_listening(tmp_path, capsys):
    pytest.importorskip("torch")
    from cli_helpers import run_cli as cli

    path = tmp_path / "nospec.onnx"
    export_tiny_onnx(path, metadata=False, sidecar=False)
    assert cli(["serve", path, "--port", "0"]) == 2
    assert "carries no edgecls spec" in capsys.readouterr().err


def test_run_metrics_port_serves_frames_errors_and_age(model, images, tmp_path):
    import urllib.request

    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.run.prometheus import MetricsServer
    from edgecls.runtime.run.stats import RunStats

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    err = io.StringIO()
    stats = run(RunConfig(model=str(model), sources=(str(images[0]), str(bad)), device="cpu", metrics_port=0,
                          summary=False), out=io.StringIO(), err=err)
    assert "metrics on http://127.0.0.1:" in err.getvalue() and stats.frames == 1 and stats.errors == 1
    srv = MetricsServer(stats, [], 0)
    try:
        text = urllib.request.urlopen(srv.url, timeout=10).read().decode()
    finally:
        srv.close()
    assert "edgecls_run_frames_total 1.0" in text and "edgecls_run_errors_total 1.0" in text
    age = float(next(x for x in text.splitlines() if x.startswith("edgecls_run_last_frame_age_seconds")).split()[1])
    assert 0 <= age < 600
    fresh = RunStats(stats_decider(model), "x", 1, 0.0)
    srv = MetricsServer(fresh, [], 0)
    try:
        text = urllib.request.urlopen(srv.url, timeout=10).read().decode()
    finally:
        srv.close()
    assert "edgecls_run_last_frame_age_seconds NaN" in text


def stats_decider(model):
    from edgecls.runtime.decision import Decider
    from edgecls.runtime.model_io import load_model_spec

    return Decider(load_model_spec(model))


@pytest.mark.slow
def test_edgecls_serve_process_answers_in_flight_requests_on_sigterm(model, images):
    """The real command: port 0 announced on stderr, ready, then SIGTERM with requests in flight."""
    import signal

    proc, base = start_serve_process(model, "--max-wait-ms", "1000")
    try:
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
        wait_ready(base)
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            request("POST", base + "/predict", Path(images[0]).read_bytes())[0])) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # connected, waiting up to 1 s for their batch
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc.wait(60) == 143  # the documented exit code of a clean stop on SIGTERM, as `edgecls run`
        assert statuses == [200] * 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
