"""edgecls serve swaps models under load: a model folder with versions, Triton's repository API through
tritonclient (index, load_model, unload_model), 8 concurrent clients with 0 failed requests, each response's
output that of the version it names; a refused version leaves the served one; /predict records and /metrics
name the model."""
from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
httpclient = pytest.importorskip("tritonclient.http")

from serve_helpers import request, served, wait_ready  # noqa: E402
from slot_helpers import model_versions  # noqa: E402

from edgecls.core.fileio import file_sha256  # noqa: E402
from edgecls.runtime.classifier import Classifier  # noqa: E402
from edgecls.runtime.serve.config import ServeConfig  # noqa: E402
from edgecls.runtime.slot.config import SlotConfig  # noqa: E402
from edgecls.runtime.spec import sidecar_path  # noqa: E402

CLIENTS = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return model_versions(tmp_path_factory.mktemp("models"))


def put_version(models, repo, kind: str, version: int) -> None:
    d = repo / "tiny" / str(version)
    d.mkdir(parents=True)
    shutil.copyfile(sidecar_path(models[kind]), d / "model.json")
    shutil.copyfile(models[kind], d / "model.onnx.tmp")
    (d / "model.onnx.tmp").rename(d / "model.onnx")


class Clients:
    """``CLIENTS`` threads, each with its own tritonclient, sending one of four inputs per request and checking the
    output against the version the response names."""

    def __init__(self, url: str, inputs: np.ndarray, expected: dict) -> None:
        self.url, self.inputs, self.expected = url, inputs, expected
        self.stop = threading.Event()
        self.failures: list = []
        self.mismatches: list = []
        self.versions: list = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def _run(self, seed: int) -> None:
        client = httpclient.InferenceServerClient(self.url)
        rng = np.random.default_rng(seed)
        try:
            while not self.stop.is_set():
                k = int(rng.integers(len(self.inputs)))
                x = self.inputs[k:k + 1]
                inp = httpclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=True)
                try:
                    res = client.infer("tiny", [inp], outputs=[httpclient.InferRequestedOutput("logits")])
                except Exception as e:  # any failed request fails the test
                    self.failures.append(repr(e))
                    continue
                doc = res.get_response()
                v = doc["model_version"]
                self.versions.append((v, doc["parameters"]["model_sha256"]))
                if not np.allclose(res.as_numpy("logits"), self.expected[v][k:k + 1], atol=1e-5):
                    self.mismatches.append(v)
        finally:
            client.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_serve_swaps_versions_under_load_with_tritonclient(models, tmp_path):
    from edgecls.runtime.serve.app import create_app

    repo = tmp_path / "repo"
    put_version(models, repo, "a", 1)
    a, b = Classifier.load(models["a"], device="cpu"), Classifier.load(models["b"], device="cpu")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    expected = {"1": a.infer(x), "2": b.infer(x)}
    app = create_app(ServeConfig(model=str(repo / "tiny"), device="cpu", slot=SlotConfig(watch=False)))
    with served(app) as (base, _):
        wait_ready(base)
        url = base.split("//", 1)[1]
        admin = httpclient.InferenceServerClient(url)
        assert [(m["version"], m["state"]) for m in admin.get_model_repository_index()] == [("1", "READY")]
        with Clients(url, x, expected) as clients:
            time.sleep(0.5)
            put_version(models, repo, "b", 2)
            admin.load_model("tiny")  # returns once version 2 answers
            n_at_swap = len(clients.versions)
            time.sleep(0.5)
        assert clients.failures == [] and clients.mismatches == []
        seen = [v for v, _ in clients.versions]
        assert seen[0] == "1" and seen[-1] == "2" and len(seen) > n_at_swap > 8
        shas = {v: s for v, s in clients.versions}
        assert shas == {"1": file_sha256(models["a"])[:12], "2": file_sha256(models["b"])[:12]}
        index = {m["version"]: m["state"] for m in admin.get_model_repository_index()}
        assert index == {"1": "UNAVAILABLE", "2": "READY"}
        assert admin.is_model_ready("tiny", "2") and not admin.is_model_ready("tiny", "1")

        # a refused version (another input size) leaves version 2 answering, with the reason
        from tritonclient.utils import InferenceServerException

        put_version(models, repo, "wide", 3)
        with pytest.raises(InferenceServerException) as e:
            admin.load_model("tiny")
        assert "refused" in str(e.value) and "input" in str(e.value)
        assert admin.is_model_ready("tiny", "2")
        shutil.rmtree(repo / "tiny" / "3")

        # unload: inference is a 503 until the next load
        admin.unload_model("tiny")
        assert not admin.is_model_ready("tiny")
        inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x[:1])
        with pytest.raises(InferenceServerException) as e:
            admin.infer("tiny", [inp])
        assert "503" in str(e.value.status())
        admin.load_model("tiny")
        assert admin.is_model_ready("tiny")

        # /predict records and /metrics name the model
        from runtime_helpers import write_images

        img = write_images(tmp_path / "img", n=1)[0].read_bytes()
        status, _, body = request("POST", base + "/predict", img, {"Content-Type": "image/jpeg"})
        assert status == 200
        assert json.loads(body)["model"] == {"name": "tiny", "version": "2", "sha256": file_sha256(models["b"])[:12]}
        text = request("GET", base + "/metrics")[2].decode()
        assert 'version="2"' in [ln for ln in text.splitlines() if ln.startswith("edgecls_model_info{")][0]
        assert 'edgecls_model_swaps_total 2.0' in text  # 1 -> 2, then (after the unload) 2 again
        assert 'edgecls_model_swap_refusals_total{reason="input"} 1.0' in text
        admin.close()
