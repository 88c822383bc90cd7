"""Triton: the exported model repository parsed with tritonclient's ModelConfig protobuf; `edgecls run --backend
triton://` against a KServe v2 server (edgecls serve, and a fake that misbehaves) gives the local records."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("tritonclient.http")

from deploy_helpers import deployed  # noqa: E402
from runtime_helpers import read_jsonl  # noqa: E402

from edgecls.core.errors import CapabilityError, InputError  # noqa: E402
from edgecls.export.triton import config_text, default_model_name, write_repository  # noqa: E402
from edgecls.runtime.backends.triton import parse_triton_url  # noqa: E402


@pytest.fixture(scope="module")
def dep(tmp_path_factory, tiny_data):
    return deployed(tmp_path_factory, tiny_data)


def parse_config(text: str):
    mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, mc.ModelConfig()), mc


def test_repository_config_parses_with_tritons_protobuf(dep):
    folder = dep["triton"] / "tiny"
    cfg, mc = parse_config((folder / "config.pbtxt").read_text())
    spec = dep["result"].spec
    c = spec.preprocess.crop
    assert cfg.name == "tiny" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    (inp,), (out,) = cfg.input, cfg.output
    assert inp.name == "input" and inp.data_type == mc.TYPE_FP32 and list(inp.dims) == [3, c, c]
    assert inp.format == mc.ModelInput.FORMAT_NCHW
    assert out.name == "probs" and out.data_type == mc.TYPE_FP32 and list(out.dims) == [spec.num_classes]
    assert out.label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().splitlines() == list(spec.classes)
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    model = folder / "1" / "model.onnx"
    assert model.is_file() and (folder / "1" / "model.json").is_file()
    from edgecls.runtime.model_io import load_model_spec

    ms = load_model_spec(model)
    assert ms.output == "probs" and ms.output_name == out.name


def test_repository_model_answers_like_the_export(dep, tiny_data):
    from edgecls.core.images import list_images
    from edgecls.runtime.classifier import Classifier

    files = list_images(tiny_data / "val")[:6]
    a = Classifier.load(dep["out"] / "model.onnx", device="cpu").predict_batch(files)
    b = Classifier.load(dep["triton"] / "tiny" / "1" / "model.onnx", device="cpu").predict_batch(files)
    assert [p.label for p in a] == [p.label for p in b]
    assert max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p.probs, q.probs)) < 1e-6


def test_plan_config_and_refusals(dep, tmp_path):
    spec = dep["result"].spec
    from edgecls.export.variants import variant_spec

    pspec = variant_spec(spec, "probs")
    cfg, mc = parse_config(config_text("m", pspec, "tensorrt_plan", 16, "gpu", preferred_batch=4))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4]
    cfg, mc = parse_config(config_text("m", pspec, "onnxruntime_onnx", 4, "cpu"))
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    with pytest.raises(InputError, match="GPU"):
        config_text("m", pspec, "tensorrt_plan", 8, "cpu")
    with pytest.raises(InputError, match="not valid"):
        config_text("../m", pspec, "onnxruntime_onnx", 8)
    with pytest.raises(InputError, match="probs variant"):
        write_repository(tmp_path / "repo", "m", dep["out"] / "model.onnx", spec, 8)
    assert default_model_name(tmp_path / "my export!") == "my_export_"


def test_parse_triton_url():
    assert parse_triton_url("triton://127.0.0.1:8001/mobile") == ("127.0.0.1:8001", "mobile", "")
    assert parse_triton_url("triton://host/m/3") == ("host:8000", "m", "3")
    for bad in ("http://h:1/m", "triton://h:1", "triton://h:1/a/b/c", "triton://h:notaport/m"):
        with pytest.raises(InputError):
            parse_triton_url(bad)


def test_run_with_triton_backend_against_edgecls_serve(dep, tiny_data):
    pytest.importorskip("fastapi")
    from serve_helpers import served, wait_ready

    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.serve.app import create_app
    from edgecls.runtime.serve.config import ServeConfig

    model = dep["triton"] / "tiny" / "1" / "model.onnx"
    folder = tiny_data / "val"
    local = io.StringIO()
    run(RunConfig(model=str(model), sources=(str(folder),), device="cpu", batch=4, probs=True, summary=False),
        out=local, err=io.StringIO())
    with served(create_app(ServeConfig(model=str(model), device="cpu", name="tiny"))) as (base, _):
        wait_ready(base)
        remote = io.StringIO()
        stats = run(RunConfig(model=str(model), sources=(str(folder),), batch=4, probs=True, summary=False,
                              backend=f"triton://{base.split('//', 1)[1]}/tiny"), out=remote, err=io.StringIO())
    assert "triton" in stats.backend_desc
    a, b = read_jsonl(local.getvalue()), read_jsonl(remote.getvalue())
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["path"] == y["path"] and x["label"] == y["label"] and x["decision"] == y["decision"]
        assert np.abs(np.asarray(x["probs"]) - np.asarray(y["probs"])).max() < 1e-6


class _Fake(BaseHTTPRequestHandler):
    """A KServe v2 server that lies: its model has 5 classes, or is not ready."""

    ready = True
    classes = 5

    def log_message(self, *a):
        pass

    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v2/health/live":
            self._json(200, {"live": True})
        elif self.path.endswith("/ready"):
            self._json(200 if self.ready else 400, {"ready": self.ready})
        elif self.path.startswith("/v2/models/"):
            self._json(200, {"name": "m", "versions": ["1"], "platform": "fake",
                             "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
                             "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, self.classes]}]})
        else:
            self._json(404, {"error": "no"})


@pytest.fixture()
def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    _Fake.ready, _Fake.classes = True, 5


def test_triton_backend_refuses_a_mismatched_or_unready_model(dep, fake_server):
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.spec import SpecError

    model = dep["out"] / "model.onnx"
    spec = dep["result"].spec.replace(preprocess=dep["result"].spec.preprocess)
    url = f"triton://127.0.0.1:{fake_server.server_address[1]}/m"
    with pytest.raises(SpecError, match="classes"):
        load_backend(model, remote=url, spec=spec)
    _Fake.ready = False
    with pytest.raises(CapabilityError, match="not ready"):
        load_backend(model, remote=url, spec=spec)
    with pytest.raises(CapabilityError):
        load_backend(model, remote="triton://127.0.0.1:1/m", spec=spec)
    with pytest.raises(InputError, match="triton://"):
        load_backend(model, remote="grpc://h:1/m", spec=spec)


def test_engines_put_a_parity_checked_plan_in_the_repository(dep, tmp_path, monkeypatch):
    """The wiring of --triton with --engine fp16 (TensorRT itself is faked: no GPU here)."""
    import shutil
    from types import SimpleNamespace

    import edgecls.export.tensorrt as trt_mod
    import edgecls.export.variants as var_mod
    from edgecls.export import triton as triton_mod
    from edgecls.export.deploy import DeployConfig
    from edgecls.export.metadata import read_sidecar, write_sidecar
    from edgecls.export.tensorrt import BatchProfile

    probs_onnx = dep["out"] / "model_probs.onnx"
    built = []

    def fake_build(onnx_path, precision, out, profile, *rest):
        engine = tmp_path / f"model_{precision}_fake.engine"
        shutil.copyfile(onnx_path, engine)
        write_sidecar(engine, read_sidecar(onnx_path).replace(precision=precision))
        built.append((onnx_path, precision))
        return SimpleNamespace(path=engine)

    verdict = {"ok": True}
    monkeypatch.setattr(trt_mod, "build_engine", fake_build)
    monkeypatch.setattr(var_mod, "check_variant", lambda *a, **k: _Verdict(verdict["ok"]))
    res = dep["result"]
    exporter = SimpleNamespace(
        cfg=SimpleNamespace(deploy=DeployConfig(triton=tmp_path / "repo", triton_name="m"), batch=BatchProfile(1, 4, 8),
                            workspace_mib=256, timing_cache=None, force_engine=False, tolerances=None),
        out=tmp_path, spec=res.spec, sha="0" * 64, base_logits=res.reference.logits, reference=res.reference,
        data=res.data, reports=[], extra={}, warnings=[], timed=lambda key, fn, *a: fn(*a))
    exporter.cfg.tolerances = SimpleNamespace(fp16_agreement=0.995)
    folder = triton_mod.triton_step(exporter, probs_onnx, [SimpleNamespace(precision="int8"),
                                                            SimpleNamespace(precision="fp16")])
    assert built == [(probs_onnx, "fp16")]
    cfg, mc = parse_config((folder / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4]
    assert (folder / "1" / "model.plan").is_file() and read_sidecar(folder / "1" / "model.plan").precision == "fp16"
    verdict["ok"] = False
    folder = triton_mod.triton_step(exporter, probs_onnx, [SimpleNamespace(precision="fp16")])
    assert (folder / "1" / "model.onnx").is_file() and not (folder / "1" / "model.plan").exists()
    assert parse_config((folder / "config.pbtxt").read_text())[0].platform == "onnxruntime_onnx"
    assert any("failed parity" in w for w in exporter.warnings)


class _Verdict:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def __bool__(self) -> bool:
        return self.ok
