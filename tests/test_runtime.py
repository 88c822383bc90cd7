"""Runtime core: decision rules, model spec loading/refusal, the onnxruntime backend and the Classifier API."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from runtime_helpers import export_tiny_onnx, tiny_spec, torch_logits, write_images

from edgecls.core.devices import parse_device
from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends import load_backend
from edgecls.runtime.backends.onnxruntime import OrtBackend
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.decision import NO, UNCERTAIN, YES, Decider, Smoother, positive_decision
from edgecls.runtime.model_io import load_model_spec
from edgecls.runtime.preprocess import load_image, preprocess
from edgecls.runtime.spec import METADATA_KEY, SpecError, sidecar_path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt_model")
    torch_model = export_tiny_onnx(d / "model.onnx")
    images = write_images(d / "images", n=6)
    return d, torch_model, images


# ------------------------------------------------------------------------------------------ decision


def test_positive_decision_bands():
    # threshold 0.8: yes >= 0.8, no < 0.2, uncertain in between
    assert positive_decision(0.8, 0.8) == YES
    assert positive_decision(0.79, 0.8) == UNCERTAIN
    assert positive_decision(0.2, 0.8) == UNCERTAIN
    assert positive_decision(0.19, 0.8) == NO
    # threshold 0.5: no uncertain band
    assert positive_decision(0.5, 0.5) == YES
    assert positive_decision(0.4999, 0.5) == NO
    # threshold 0.3 (recall-oriented): yes >= 0.3, no below; min(thr, 1-thr) = 0.3
    assert positive_decision(0.3, 0.3) == YES
    assert positive_decision(0.29, 0.3) == NO


def test_decider_temperature_topk_threshold_and_uncertain():
    spec = tiny_spec(classes=("mobile", "other", "cat"), temperature=2.0, threshold=0.6)
    d = Decider(spec, topk=2)
    logits = np.array([[4.0, 0.0, 0.0], [1.0, 1.2, 0.0]], dtype=np.float32)
    probs = d.probabilities(logits)
    z = logits / 2.0
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, want, rtol=1e-6)
    p0, p1 = d.decide(logits)
    assert p0.label == "mobile" and p0.decision == YES and p0.confidence == pytest.approx(want[0, 0])
    assert [c for c, _ in p0.topk] == ["mobile", "other"] and len(p0.topk) == 2
    assert p1.label == UNCERTAIN and p1.class_name == "other"  # top prob ~0.41 < 0.6
    assert want[1, 0] < 0.4 and p1.decision == NO  # P(mobile) ~0.35 < min(0.6, 0.4)
    p2 = d.from_probs([0.5, 0.3, 0.2])  # 0.4 <= P(mobile) < 0.6: neither yes nor no
    assert p2.decision == UNCERTAIN and p2.label == UNCERTAIN
    # an explicit threshold overrides the model's
    assert Decider(spec, threshold=0.3).decide(logits)[1].label == "other"
    with pytest.raises(InputError):
        Decider(spec, threshold=1.5)


def test_decider_without_positive_uses_label_as_decision():
    spec = tiny_spec(positive=None, threshold=0.9)
    d = Decider(spec)
    p = d.decide(np.array([[3.0, 0.0]]))[0]
    assert p.positive is None and p.decision == p.label == "mobile"
    p = d.decide(np.array([[0.1, 0.0]]))[0]
    assert p.decision == p.label == UNCERTAIN
    assert d.decision_names() == ("mobile", "other", UNCERTAIN)


def test_decider_refuses_class_named_uncertain_and_bad_logits():
    with pytest.raises(InputError, match="uncertain"):
        Decider(tiny_spec(classes=("uncertain", "other"), positive=None))
    d = Decider(tiny_spec())
    with pytest.raises(ValueError):
        d.probabilities(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="expected"):
        d.probabilities(np.zeros((1, 3)))


def test_smoother_averages_last_n_per_key():
    s = Smoother(3)
    outs = [s.update("cam", np.array([v, 1 - v]))[0][0] for v in (1.0, 0.0, 0.0, 0.0)]
    assert outs == pytest.approx([1.0, 0.5, 1 / 3, 0.0])
    avg, n = s.update("other", np.array([0.2, 0.8]))
    assert n == 1 and avg[0] == pytest.approx(0.2)
    with pytest.raises(InputError):
        Smoother(0)


# ------------------------------------------------------------------------------------------ model spec


def test_load_model_spec_from_metadata_and_sidecar(tmp_path, model_dir):
    d, _, _ = model_dir
    spec = load_model_spec(d / "model.onnx")
    assert spec == tiny_spec()
    # metadata only (no sidecar)
    export_tiny_onnx(tmp_path / "meta_only.onnx", sidecar=False)
    assert load_model_spec(tmp_path / "meta_only.onnx") == tiny_spec()
    # sidecar only (no metadata)
    export_tiny_onnx(tmp_path / "side_only.onnx", metadata=False)
    assert load_model_spec(tmp_path / "side_only.onnx") == tiny_spec()


def test_model_without_metadata_is_refused_with_what_is_missing(tmp_path):
    export_tiny_onnx(tmp_path / "bare.onnx", metadata=False, sidecar=False)
    with pytest.raises(SpecError) as e:
        load_model_spec(tmp_path / "bare.onnx")
    msg = str(e.value)
    assert METADATA_KEY in msg and "bare.json" in msg and "edgecls export" in msg
    with pytest.raises(SpecError):
        Classifier.load(tmp_path / "bare.onnx", device="cpu")


def test_engine_needs_sidecar_and_bad_paths(tmp_path):
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\x00" * 16)
    with pytest.raises(SpecError, match="sidecar"):
        load_model_spec(eng)
    with pytest.raises(InputError, match="does not exist"):
        load_model_spec(tmp_path / "missing.onnx")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="suffix"):
        load_model_spec(tmp_path / "m.pt")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(InputError, match="cannot load"):
        load_model_spec(tmp_path / "junk.onnx")


def test_invalid_sidecar_is_refused(tmp_path):
    export_tiny_onnx(tmp_path / "m.onnx", metadata=False)
    sidecar_path(tmp_path / "m.onnx").write_text("{not json", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_model_spec(tmp_path / "m.onnx")
    d = tiny_spec().to_dict()
    d["classes"] = ["only_one"]
    sidecar_path(tmp_path / "m.onnx").write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(SpecError, match="at least 2 classes"):
        load_model_spec(tmp_path / "m.onnx")


def test_input_shape_mismatch_is_refused(tmp_path):
    # exported at 48 px but the metadata says crop 32
    export_tiny_onnx(tmp_path / "m.onnx", spec=tiny_spec(), export_hw=48, batch=1)
    with pytest.raises(SpecError) as e:
        Classifier.load(tmp_path / "m.onnx", device="cpu")
    assert "48" in str(e.value) and "32" in str(e.value) and "edgecls export" in str(e.value)
    # classes disagree: the model outputs 2, the spec lists 3
    spec3 = tiny_spec(classes=("a", "b", "c"), positive=None)
    export_tiny_onnx(tmp_path / "c.onnx", spec=tiny_spec())
    with pytest.raises(SpecError, match="2 classes"):
        OrtBackend(tmp_path / "c.onnx", device="cpu", spec=spec3)
    # input name disagrees
    export_tiny_onnx(tmp_path / "n.onnx", input_name="pixels")
    with pytest.raises(SpecError, match="pixels"):
        Classifier.load(tmp_path / "n.onnx", device="cpu")


# ------------------------------------------------------------------------------------------ backend


def test_parse_device():
    assert parse_device("auto") == ("auto", 0)
    assert parse_device("cuda:1") == ("cuda", 1)
    assert parse_device("TensorRT") == ("tensorrt", 0)
    for bad in ("gpu", "cpu:1", "cuda:x"):
        with pytest.raises(InputError):
            parse_device(bad)


def test_ort_backend_matches_torch_any_batch_and_threads(model_dir):
    d, torch_model, _ = model_dir
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 32, 32)).astype(np.float32)
    with OrtBackend(d / "model.onnx", device="cpu", threads=1, spec=tiny_spec()) as b:
        assert b.providers == ("CPUExecutionProvider",)
        assert b.input_shape == (None, 3, 32, 32) and b.output_shape == (None, 2)
        np.testing.assert_allclose(b.infer(x), torch_logits(torch_model, x), atol=1e-4)
        np.testing.assert_allclose(b.infer(x[:1]), torch_logits(torch_model, x[:1]), atol=1e-4)
        with pytest.raises(ValueError, match="does not fit"):
            b.infer(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match="threads"):
        OrtBackend(d / "model.onnx", device="cpu", threads=0)
    cfg = {"session.intra_op.allow_spinning": "0"}
    with Classifier.load(d / "model.onnx", device="cpu", threads=2, session_config=cfg) as clf:
        np.testing.assert_allclose(clf.infer(x), torch_logits(torch_model, x), atol=1e-4)


def test_fixed_batch_model_is_chunked_and_padded(tmp_path):
    torch_model = export_tiny_onnx(tmp_path / "b2.onnx", batch=2)
    x = np.random.default_rng(1).normal(size=(5, 3, 32, 32)).astype(np.float32)
    with OrtBackend(tmp_path / "b2.onnx", device="cpu", spec=tiny_spec()) as b:
        assert b.input_shape[0] == 2
        np.testing.assert_allclose(b.infer(x), torch_logits(torch_model, x), atol=1e-4)


def test_provider_check_raises_when_cuda_requested_but_only_cpu_attached(model_dir, monkeypatch, caplog):
    """onnxruntime-gpu lists CUDA even without a GPU; the session then attaches only the CPU provider."""
    import onnxruntime as ort

    d, _, _ = model_dir
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(CapabilityError) as e:
        OrtBackend(d / "model.onnx", device="cuda")
    assert "CUDAExecutionProvider" in str(e.value) and "attached only" in str(e.value)
    assert e.value.exit_code == 4
    # --allow-fallback: runs on the CPU, says so loudly, and records it
    with caplog.at_level("WARNING"):
        b = OrtBackend(d / "model.onnx", device="cuda", allow_fallback=True)
    assert b.providers == ("CPUExecutionProvider",) and "did not attach" in b.fallback
    assert any("FALLBACK" in r.message for r in caplog.records)
    # auto tries CUDA when listed, and reports that it fell back
    b = OrtBackend(d / "model.onnx", device="auto")
    assert b.fallback is not None


def test_provider_not_installed_raises_before_session(model_dir):
    d, _, _ = model_dir  # the test env has the CPU onnxruntime: no CUDA provider listed at all
    with pytest.raises(CapabilityError, match="onnxruntime-gpu"):
        OrtBackend(d / "model.onnx", device="cuda")
    with pytest.raises(CapabilityError):
        load_backend(d / "model.onnx", device="tensorrt")
    b = OrtBackend(d / "model.onnx", device="auto")
    assert b.providers == ("CPUExecutionProvider",) and b.fallback is None


def test_tensorrt_provider_options_follow_precision(tmp_path):
    from pathlib import Path

    for precision, flags in (("fp32", set()), ("fp16", {"trt_fp16_enable"}), ("int8-qdq", {"trt_int8_enable", "trt_fp16_enable"})):
        providers, required = OrtBackend._providers_for(
            "tensorrt", 0, [], tiny_spec(precision=precision), str(tmp_path), Path(tmp_path / "m.onnx")
        )
        assert required == "TensorrtExecutionProvider"
        name, opts = providers[0]
        assert name == "TensorrtExecutionProvider" and opts["trt_engine_cache_enable"]
        assert {k for k in opts if k.endswith("_enable") and k != "trt_engine_cache_enable"} == flags
        assert [p if isinstance(p, str) else p[0] for p in providers[1:]] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


# ------------------------------------------------------------------------------------------ Classifier API


def test_classifier_predict_path_array_pil_bgr_and_batch(model_dir):
    d, torch_model, images = model_dir
    spec = tiny_spec()
    with Classifier.load(d / "model.onnx", device="cpu", threads=1) as clf:
        assert clf.classes == ("mobile", "other") and clf.threshold == 0.5
        arrays = [load_image(p) for p in images]
        ref_logits = torch_logits(torch_model, preprocess(arrays, spec.preprocess))
        ref = Decider(spec).decide(ref_logits)
        by_path = [clf.predict(p) for p in images]
        by_str = clf.predict(str(images[0]))
        by_array = [clf.predict(a) for a in arrays]
        by_pil = clf.predict(Image.open(images[1]))
        by_bgr = clf.predict(np.ascontiguousarray(arrays[2][:, :, ::-1]), bgr=True)
        batch = clf.predict_batch(images)
        assert clf.predict_batch([]) == []
        for got in (by_path, by_array, batch):
            assert [p.label for p in got] == [p.label for p in ref]
            np.testing.assert_allclose([p.confidence for p in got], [p.confidence for p in ref], atol=1e-5)
        assert by_str.label == ref[0].label
        assert by_pil.probs == pytest.approx(ref[1].probs, abs=1e-5)
        assert by_bgr.probs == pytest.approx(ref[2].probs, abs=1e-5)
        p = batch[0]
        assert p.positive == "mobile" and p.p_positive == pytest.approx(p.probs[0])
        d_ = p.to_dict(probs=True)
        assert set(d_) >= {"label", "confidence", "topk", "decision", "positive", "p_positive", "probs"}
        assert "Classifier(tinynet" in repr(clf)
    with Classifier.load(d / "model.onnx", device="cpu", threshold=0.99) as clf:
        assert all(p.label == UNCERTAIN for p in clf.predict_batch(images))
