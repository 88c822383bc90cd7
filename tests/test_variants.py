"""Deployment variants: probabilities in the graph and raw-pixel input, parity-checked against model.onnx, with specs
the runtime follows (same predictions from every variant), and failures that are reported, not hidden."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cli_helpers import run_cli as cli  # noqa: E402
from deploy_helpers import deployed  # noqa: E402

from edgecls.core.errors import InputError  # noqa: E402
from edgecls.export.variants import (  # noqa: E402
    PROBS_TOLERANCE,
    VARIANT_NAMES,
    build_variant,
    compare_variant,
    is_raw_input,
    normalization_constants,
    parse_variants,
    raw_pixels,
    variant_spec,
)


@pytest.fixture(scope="module")
def dep(tmp_path_factory, tiny_data):
    return deployed(tmp_path_factory, tiny_data)


def test_every_variant_passes_parity_and_is_recorded(dep):
    result = dep["result"]
    assert result.passed, result.table()
    names = {r.artifact: r for r in result.reports}
    for name in VARIANT_NAMES.values():
        r = names[name]
        assert r and (dep["out"] / name).is_file() and (dep["out"] / name).with_suffix(".json").is_file()
        assert r.agreement == 1.0
    assert names["model_probs.onnx"].max_abs_prob <= PROBS_TOLERANCE
    assert names["model_raw_probs.onnx"].max_abs_prob <= PROBS_TOLERANCE
    assert names["model_raw.onnx"].max_abs_logit <= 1e-5
    doc = json.loads((dep["out"] / "parity.json").read_text())
    assert doc["artifacts"]["model_raw.onnx"]["variant"] == "raw" and doc["artifacts"]["model_raw.onnx"]["status"] == "passed"
    assert "variant" in result.table() or "Δ against model.onnx" in result.table()


def test_variant_specs_and_graphs(dep):
    from edgecls.export.metadata import spec_of_model

    base = onnx.load(str(dep["out"] / "model.onnx"))
    spec = spec_of_model(base)
    probs = onnx.load(str(dep["out"] / "model_probs.onnx"))
    ps = spec_of_model(probs)
    assert ps.output == "probs" and ps.output_name == "probs" and [o.name for o in probs.graph.output] == ["probs"]
    assert probs.graph.node[-1].op_type == "Softmax" and probs.graph.node[-2].op_type == "Div"
    raw = onnx.load(str(dep["out"] / "model_raw.onnx"))
    rs = spec_of_model(raw)
    assert rs.output == "logits" and is_raw_input(rs.preprocess) and not is_raw_input(spec.preprocess)
    assert rs.preprocess.resize == spec.preprocess.resize and rs.preprocess.crop == spec.preprocess.crop
    assert [n.op_type for n in raw.graph.node[:2]] == ["Mul", "Add"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in raw.graph.initializer}
    scale, bias = normalization_constants(spec.preprocess)
    assert np.array_equal(inits["input_scale_per_channel"].reshape(3), scale)
    assert np.array_equal(inits["input_bias_per_channel"].reshape(3), bias)
    assert "output" not in spec.to_dict()  # plain exports keep the spec JSON they always had
    assert ps.to_dict()["output"] == "probs"


def test_runtime_gives_the_same_predictions_with_every_variant(dep, tiny_data):
    from edgecls.core.images import list_images
    from edgecls.runtime.classifier import Classifier

    files = list_images(tiny_data / "val")[:8]
    ref = Classifier.load(dep["out"] / "model.onnx", device="cpu").predict_batch(files)
    for name in VARIANT_NAMES.values():
        got = Classifier.load(dep["out"] / name, device="cpu").predict_batch(files)
        for a, b in zip(ref, got):
            assert a.label == b.label and a.decision == b.decision
            assert np.abs(np.asarray(a.probs) - np.asarray(b.probs)).max() < 1e-5, name


def test_eval_of_the_probs_variant_reads_like_model_onnx(dep, tiny_data):
    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    a = evaluate(EvalConfig(model=str(dep["out"] / "model.onnx"), data=str(tiny_data / "val"), device="cpu"))
    b = evaluate(EvalConfig(model=str(dep["out"] / "model_raw_probs.onnx"), data=str(tiny_data / "val"), device="cpu"))
    assert a.report.accuracy == b.report.accuracy
    assert np.abs(a.probs - b.probs).max() < 1e-5


def test_raw_pixels_inverts_normalization_exactly(dep):
    from edgecls.runtime.preprocess import preprocess_one

    spec = dep["result"].spec
    img = (np.arange(40 * 48 * 3) % 256).astype(np.uint8).reshape(40, 48, 3)
    x = preprocess_one(img, spec.preprocess)[None]
    raw = raw_pixels(x, spec.preprocess)
    assert np.array_equal(raw, preprocess_one(img, variant_spec(spec, "raw").preprocess)[None])
    assert raw.min() >= 0 and raw.max() <= 255 and np.array_equal(raw, np.rint(raw))


def test_a_wrong_variant_fails_parity_with_the_reason(dep):
    from edgecls.export.parity import Reference

    res = dep["result"]
    spec = variant_spec(res.spec, "probs")
    base = res.reference.logits
    probs = np.exp(base / spec.temperature)
    probs /= probs.sum(1, keepdims=True)
    ref = Reference(base, None, None, {}, 0.0)
    ok = compare_variant("p.onnx", "p.onnx", "probs", "fp32", probs, base, ref, res.data, spec)
    assert ok and ok.max_abs_prob < 1e-6
    bad = compare_variant("p.onnx", "p.onnx", "probs", "fp32", probs + 1e-4, base, ref, res.data, spec)
    assert not bad and "max |Δprob| vs model.onnx" in bad.failures[0]
    nan = compare_variant("p.onnx", "p.onnx", "probs", "fp32", probs * np.nan, base, ref, res.data, spec)
    assert not nan and "NaN" in nan.failures[0]
    raw = compare_variant("r.onnx", "r.onnx", "raw", "fp32", base + 0.1, base, ref, res.data, res.spec)
    assert not raw and "Δlogit" in raw.failures[0]


def test_variant_building_refuses_what_it_cannot_do(dep):
    spec = dep["result"].spec
    base = onnx.load(str(dep["out"] / "model.onnx"))
    with pytest.raises(InputError, match="valid"):
        build_variant(base, spec, "bgr")
    with pytest.raises(InputError, match="no input"):
        build_variant(base, spec.replace(input_name="pixels"), "raw")
    with pytest.raises(InputError, match="no output"):
        build_variant(base, spec.replace(output_name="scores"), "probs")
    with pytest.raises(InputError, match="valid variants"):
        parse_variants("probs,fp8")
    assert parse_variants(" probs, raw,probs ") == ("probs", "raw")


def test_export_cli_rejects_bad_deploy_options(dep, capsys):
    for extra in (["--variants", "nope"], ["--triton-device", "tpu", "--triton", "x"],
                  ["--deepstream-precision", "int4", "--deepstream", "x"], ["--triton-name", "bad/name", "--triton", "x"]):
        assert cli(["export", dep["ckpt"], *extra]) == 2, extra
        assert "error:" in capsys.readouterr().err
