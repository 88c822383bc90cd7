"""INT8 building blocks on tiny hand-made graphs (fast): float outputs, per-layer SQNR, the fewest-layers search,
the confidence re-fit, the confidence gate, the select/report split, one-pass calibration of every method."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgecls.core.errors import InputError  # noqa: E402
from edgecls.runtime.spec import ModelSpec, PreprocessSpec  # noqa: E402

CROP = 8


def _graph(outlier: bool = False, seed: int = 0):
    """input → Conv(3→8) → Relu → Conv(8→8, "hard") → Relu → GAP → Flatten → Gemm(8→3) = logits.

    ``outlier``: one input channel of the second conv is 1000× larger than the rest (and unused by it), so a
    per-tensor INT8 scale for that conv's input crushes the channels it uses (its SQNR collapses)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    b1 = np.zeros(8, np.float32)
    if outlier:
        w1[0] *= 1000.0
    w2 = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    if outlier:
        w2[:, 0] = 0.0  # ... and conv2 does not even use that channel: only the crushed ones reach its output
    w3 = rng.normal(0, 0.5, (3, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"),
                                                          (np.zeros(3, np.float32), "b3"))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, CROP, CROP])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _images(n: int = 48, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, CROP, CROP)).astype(np.float32)


def _calibration(model, x, method="minmax"):
    from edgecls.export.calib_cache import Calibration
    from edgecls.export.calib_ranges import CalibConfig, compute_ranges_multi

    class Images:  # the CalibrationImages interface compute_ranges needs
        data = x

        def batches(self, b):
            for i in range(0, len(x), b):
                yield x[i:i + b]

    ranges = compute_ranges_multi(model, Images(), [CalibConfig(method=m) for m in ("minmax", "percentile", "entropy")])
    return Calibration(ranges[method], method, None, False, len(x), "", ""), ranges


def _run(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


# ------------------------------------------------------------------------------------------- float outputs


@pytest.mark.parametrize("form", ["int8-qdq", "int8-cpu"])
def test_logits_are_not_quantized_and_probabilities_take_many_values(form):
    from edgecls.export.quantize import quantize, quantized_tail
    from edgecls.runtime.metrics import softmax

    model, x = _graph(), _images()
    cal, _ = _calibration(model, x)
    q, info = quantize(model, cal, form)
    assert info.float_outputs in (0, 1)  # a Q/DQ pair after the Gemm, where quantize_static put one, is removed
    assert quantized_tail(q) == [] and q.graph.output[0].name == "logits"
    producer = {o: n for n in q.graph.node for o in n.output}
    assert producer["logits"].op_type == "Gemm"  # the logits come straight out of the last layer
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)  # ... and the rest is INT8
    x = _images(300, seed=7)
    probs = softmax(_run(q, x), 1.0)[:, 0]
    assert len(np.unique(probs)) >= 0.95 * len(x)  # every image its own probability, not a handful of levels


def test_float_outputs_keeps_the_output_name_and_values():
    from edgecls.export.quantize import float_outputs, quantize

    model, x = _graph(), _images(8)
    cal, _ = _calibration(model, x)
    q, _ = quantize(model, cal, "int8-cpu")
    assert float_outputs(q) == 0  # idempotent
    assert not [t.name for t in q.graph.initializer if t.name.startswith("logits_")]  # its scale/zp went too


# ---------------------------------------------------------------------------------------------- sensitivity


def test_sqnr_finds_the_layer_that_quantization_hurts():
    from edgecls.export.quantize import quantize
    from edgecls.export.sensitivity import layer_sensitivity

    model, x = _graph(outlier=True), _images()
    cal, _ = _calibration(model, x)
    qa, _ = quantize(model, cal, "int8-cpu", keep_activations=True)
    ranking = layer_sensitivity(model, qa, x, CROP)
    assert [r.name for r in ranking][0] == "conv2", ranking
    by = {r.name: r for r in ranking}
    assert by["conv2"].sqnr_db < by["conv1"].sqnr_db - 10
    assert by["conv2"].macs == 8 * 8 * 9 * CROP * CROP and by["fc"].macs == 3 * 8 and by["fc"].weight_params == 24
    # keeping conv2 in FP32 removes its error: the model's logits get closer to FP32
    ref = _run(model, x)
    full, _ = quantize(model, cal, "int8-cpu")
    kept, _ = quantize(model, cal, "int8-cpu", ("conv2",))
    assert np.abs(_run(kept, x) - ref).mean() < np.abs(_run(full, x) - ref).mean()


def test_fewest_passing_search_finds_the_smallest_k_and_tries_few():
    from edgecls.export.sensitivity import fewest_passing

    for need in (0, 1, 3, 5, 13, 16):
        calls = []
        res = fewest_passing(lambda k, calls=calls, need=need: calls.append(k) or k >= need, 16)
        assert res.keep == need and len(calls) == len(set(calls)) <= 9, (need, calls)
    res = fewest_passing(lambda k: False, 5)
    assert res.keep is None and max(res.tried) == 5


def test_fixed_keep_sets():
    from edgecls.export.quantize import fixed_keep_set

    model = _graph()
    assert fixed_keep_set(model, "none") == ("full INT8", ())
    assert fixed_keep_set(model, "ends")[1] == ("conv1", "fc")
    assert fixed_keep_set(model, "depthwise")[1] == ()
    with pytest.raises(InputError, match="--int8-keep-fp32"):
        fixed_keep_set(model, "everything")


# -------------------------------------------------------------------------------------------- calibration


def test_one_pass_calibrates_every_method_as_each_would_alone():
    from edgecls.export.calib_ranges import CalibConfig, compute_ranges

    model, x = _graph(), _images(16)
    _, multi = _calibration(model, x)

    class Images:
        data = x

        def batches(self, b):
            for i in range(0, len(x), b):
                yield x[i:i + b]

    for m in ("minmax", "percentile", "entropy"):
        assert compute_ranges(model, Images(), CalibConfig(method=m)) == multi[m]
    assert multi["minmax"] != multi["entropy"]


# ------------------------------------------------------------------------------------------------- re-fit


def _spec(**kw):
    kw.setdefault("preprocess", PreprocessSpec.for_image_size(CROP))
    return ModelSpec(arch="resnet18", classes=kw.pop("classes", ("a", "b", "c")), **kw)


def test_refit_moves_the_temperature_only_when_held_out_nll_falls():
    """An artifact whose logits came out 40 % smaller is re-fitted (its cross-fitted NLL falls, T moves by ~0.6×);
    an artifact equal to the model keeps the checkpoint's temperature (a re-fit would only add noise); with the
    re-fit switched off the temperature never moves. The record says which, with both held-out NLLs."""
    from edgecls.export.refit import fit_temperature, refit_with_record

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (200, 3))
    y = ref.argmax(1)
    y[:30] = (y[:30] + 1) % 3  # not perfectly separated: the NLL fit has an optimum
    t0 = fit_temperature(ref, y)
    spec = _spec(temperature=t0)
    shrunk = 0.6 * ref + rng.normal(0, 0.01, ref.shape)
    new, rec = refit_with_record(spec, shrunk, y, "test")
    assert rec.refitted and rec.nll_heldout_refit < rec.nll_heldout_kept
    assert new.temperature == pytest.approx(0.6 * t0, rel=0.05)
    assert new.confidence is not None and new.confidence.temperature == new.temperature
    assert "re-fitted" in rec.describe()
    same, rec2 = refit_with_record(spec, ref, y, "test")  # a faithful artifact keeps the checkpoint's
    assert not rec2.refitted and same.temperature == t0 and "kept" in rec2.describe()
    off, rec3 = refit_with_record(spec, shrunk, y, "test", refit_temperature=False)
    assert not rec3.refitted and off.temperature == t0


# ----------------------------------------------------------------------------------- the confidence gate


def test_the_confidence_gate_fails_loudly_on_a_confident_liar(tmp_path):
    """Same top-1 everywhere (agreement 100 %, accuracy unchanged) but probabilities pushed to 0/1 by a model whose
    own probabilities are calibrated: the ECE gate fails, with its n and interval; p99 |Δprob| is a warning
    unless asked for (--strict); a harmless copy passes."""
    from edgecls.export.parity import ParityData, Tolerances, compare, reference_from
    from edgecls.runtime.metrics import softmax

    rng = np.random.default_rng(0)
    n = 400
    ref_logits = rng.normal(0, 2, (n, 3)).astype(np.float32)
    p = softmax(ref_logits, 1.0)
    y = np.array([rng.choice(3, p=row) for row in p])  # labels drawn from the model: it is calibrated
    data = ParityData(np.zeros((n, 3, CROP, CROP), np.float32), y, tuple(f"{i}.jpg" for i in range(n)), "test")
    spec = _spec()

    class Backend:
        def infer(self, x):
            return ref_logits

    ref = reference_from(Backend(), data, spec)
    assert ref.ece < 0.06
    (tmp_path / "m.onnx").write_bytes(b"x")
    ok = compare("m.onnx", tmp_path / "m.onnx", "int8-cpu", ref_logits + 1e-4, ref, data, spec, Tolerances())
    assert ok.passed and ok.p99_abs_prob < 1e-3 and not ok.warnings and not ok.low_evidence
    liar = compare("m.onnx", tmp_path / "m.onnx", "int8-cpu", ref_logits * 30, ref, data, spec, Tolerances())
    assert liar.agreement == 1.0 and liar.accuracy == ref.accuracy
    assert not liar.passed and liar.ece > 0.15
    text = " | ".join(liar.failures)
    assert "ECE" in text and "95% CI" in text and "n=400" in text
    assert "p99 |Δprob|" not in text and any("p99 |Δprob|" in w for w in liar.warnings)
    strict = compare("m.onnx", tmp_path / "m.onnx", "int8-cpu", ref_logits * 30, ref, data, spec,
                     Tolerances(gate_p99_prob=True))
    assert any("p99 |Δprob|" in f for f in strict.failures)


def test_int8_gates_are_about_harm_not_temperature(tmp_path):
    """The issue-18 gates: an artifact that differs only in its temperature passes (fidelity is compared at the
    same temperature); two classes swapped fail the accuracy gate with exit-worthy failures; the decision gate
    counts yes/no/uncertain; fewer than 100 images say 'low evidence'."""
    import dataclasses

    from edgecls.export.parity import ParityData, Tolerances, compare, reference_from
    from edgecls.runtime.metrics import softmax

    rng = np.random.default_rng(1)
    n = 300
    z = rng.normal(0, 3, (n, 3)).astype(np.float32)
    y = np.array([rng.choice(3, p=row) for row in softmax(z, 1.0)])
    data = ParityData(np.zeros((n, 3, CROP, CROP), np.float32), y, tuple(f"{i}.jpg" for i in range(n)), "test")
    spec = dataclasses.replace(_spec(), positive="a")

    class Backend:
        def infer(self, x):
            return z

    ref = reference_from(Backend(), data, spec)
    art = tmp_path / "m.onnx"
    art.write_bytes(b"x")
    # the same logits, the artifact states them at another temperature (a re-fit): not a harm
    warm = compare("m.onnx", art, "int8-qdq", z, ref, data, spec.replace(temperature=1.1), Tolerances())
    assert warm.passed and warm.p99_abs_prob == 0.0 and warm.decision_agreement is not None
    swapped = z[:, [1, 0, 2]]  # classes 0 and 1 swapped: a truly worse model
    bad = compare("m.onnx", art, "int8-qdq", swapped, ref, data, spec, Tolerances())
    assert not bad.passed
    names = {c.name.split(" (")[0] for c in bad.checks if c.gated and not c.ok}
    assert {"accuracy drop", "decision agreement"} <= names
    # two hurting flips of 300 and none helping: 0.67 pt over a 0.5-pt limit, McNemar p = 0.25: said, not failed
    flipped = z.copy()
    right = np.nonzero(np.argmax(z, 1) == y)[0][:2]
    flipped[right] = np.roll(z[right], 1, axis=1)
    assert np.all(np.argmax(flipped[right], 1) != y[right])
    noisy = compare("m.onnx", tmp_path / "m.onnx", "int8-qdq", flipped, ref, data, spec,
                    Tolerances(int8_accuracy_drop=0.005, int8_decision_agreement=0.9))
    assert noisy.passed and any("accuracy drop (McNemar p=0.25)" in w for w in noisy.warnings)
    strict = compare("m.onnx", tmp_path / "m.onnx", "int8-qdq", flipped, ref, data, spec,
                     Tolerances(int8_accuracy_drop=0.005, int8_decision_agreement=0.9, gate_accuracy_point=True))
    assert not strict.passed
    few = ParityData(data.x[:60], y[:60], data.paths[:60], "test")
    ref60 = reference_from(type("B", (), {"infer": lambda self, x: z[:60]})(), few, spec)
    low = compare("m.onnx", art, "int8-qdq", z[:60], ref60, few, spec, Tolerances())
    assert low.passed and low.low_evidence and low.status == "pass (low evidence)"


# --------------------------------------------------------------------------------------- select / report


def test_select_and_report_are_disjoint_stratified_and_deterministic():
    from edgecls.export.parity import ParityData, Reference
    from edgecls.export.select_split import split_select_report

    n = 31
    y = np.array([i % 3 for i in range(n)])
    paths = tuple(f"/d/val/c{y[i]}/img{i:03d}.jpg" for i in range(n))
    data = ParityData(np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 3, 2, 2), np.float32), y,
                      paths, "checkpoint val split (31 images)")
    logits = np.eye(3, dtype=np.float32)[y]
    ref = Reference(logits, 1.0, None, {}, 0.0, 1.0, 0.0)
    spec = _spec()
    a = split_select_report(data, ref, spec, {})
    b = split_select_report(data, ref, spec, {})
    assert a.select.paths == b.select.paths  # deterministic
    assert not set(a.select.paths) & set(a.report.paths)
    assert set(a.select.paths) | set(a.report.paths) == set(paths)
    assert a.report.n == 16 and a.select.n == 15  # report takes the odd one per class
    for c in range(3):
        assert abs(int((a.select.y == c).sum()) - int((a.report.y == c).sum())) <= 1
    # the rows travel together: images, labels and reference logits
    idx = [paths.index(p) for p in a.report.paths]
    assert np.array_equal(a.report_reference.logits, logits[idx]) and np.array_equal(a.report.y, y[idx])
    assert np.array_equal(a.report.x[:, 0, 0, 0], np.array(idx, np.float32))
    assert a.report.source.startswith("checkpoint val") and "report split: 16 of 31" in a.report.source
    # a checkpoint that recorded its calibration split of val: that split is the selection half
    calib = list(paths[::4])
    c = split_select_report(data, ref, spec, {"calib": calib})
    assert set(c.select.paths) == set(calib) and "calibration split" in c.rule
    with pytest.raises(InputError, match="at least 2 parity images"):
        split_select_report(ParityData(data.x[:1], y[:1], paths[:1], "x"), ref, spec, {})


# ------------------------------------------------------------------------------------------- cost of kept layers


def test_a_cpu_form_slower_than_fp32_is_said_loudly(monkeypatch):
    """Layers kept in FP32 can make the CPU form slower than FP32: the printed line and the record say so."""
    from types import SimpleNamespace

    import edgecls.export.int8_cost as cost

    model = _graph()
    conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    ex = SimpleNamespace(spec=SimpleNamespace(preprocess=SimpleNamespace(crop=8)),
                         cfg=SimpleNamespace(threads=2, int8_settings=SimpleNamespace(latency=True)),
                         split=SimpleNamespace(report=SimpleNamespace(x=_images(2))),
                         timed=lambda _name, f, *a: f(*a))
    chosen, full = SimpleNamespace(exclude=(conv,), model=model), SimpleNamespace(exclude=(), model=model)
    for ms, slower in (({"fp32": 10.0, "chosen": 12.0, "full_int8": 6.0}, True),
                       ({"fp32": 10.0, "chosen": 7.0, "full_int8": 6.0}, False)):
        monkeypatch.setattr(cost, "interleaved_latency", lambda models, x, threads, ms=ms: ms)
        out = cost.kept_cost(ex, "int8-cpu", chosen, full, model, [])
        assert out["ratio_vs_fp32"] == ms["chosen"] / ms["fp32"]
        assert ("SLOWER THAN FP32" in out["line"]) is slower and out.get("slower_than_fp32", False) is slower


# --------------------------------------------------------------------------------------- bottleneck fusion


def _pointwise_chain(bias_b: float = 0.0, second_reader: bool = False):
    """input → 1×1 Conv A (8→4, linear) → 1×1 Conv B (4→6) → Relu → output (optionally A also read by a Relu)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    wa, ba = rng.normal(0, 1, (4, 8, 1, 1)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)
    wb, bb = rng.normal(0, 1, (6, 4, 1, 1)).astype(np.float32), np.full(6, bias_b, np.float32)
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="A", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wb", "bb"], ["b"], name="B", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["b"], ["y"], name="R")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5, 5])]
    if second_reader:
        nodes.append(helper.make_node("Relu", ["a"], ["y2"], name="R2"))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 4, 5, 5]))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                          outputs, [numpy_helper.from_array(v, k) for k, v in
                                    (("wa", wa), ("ba", ba), ("wb", wb), ("bb", bb))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_bottleneck_fusion_is_exact_and_only_where_allowed():
    """Conv(1×1) → Conv(1×1) with nothing between is one linear map: the fused model gives the same outputs
    (a large cancelling bias included); a projection read twice, a MAC limit or a name filter leaves it alone."""
    import onnx
    import onnxruntime as ort

    from edgecls.export.fuse_linear import fuse_pointwise_pairs

    x = np.random.default_rng(1).normal(0, 1, (1, 8, 5, 5)).astype(np.float32)

    def run(m):
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(["y"], {"x": x})[0]

    model = _pointwise_chain(bias_b=500.0)
    fused, pairs = fuse_pointwise_pairs(model, max_growth=9.0)
    onnx.checker.check_model(fused)
    assert pairs == ["A+B"] and [n.op_type for n in fused.graph.node] == ["Conv", "Relu"]
    assert np.allclose(run(fused), run(model), atol=1e-3)
    assert fuse_pointwise_pairs(model, max_growth=0.5)[1] == []  # 8·6 > 0.5 · (8·4 + 4·6) multiply-adds
    assert fuse_pointwise_pairs(model, max_growth=9.0, only={"other"})[1] == []
    assert fuse_pointwise_pairs(_pointwise_chain(second_reader=True), max_growth=9.0)[1] == []
    assert [n.op_type for n in model.graph.node] == ["Conv", "Conv", "Relu"]  # the input model is not changed
