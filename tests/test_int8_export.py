"""``edgecls export --int8`` end to end on the tiny checkpoint: kept layers, the select/report split in
parity.json, each artifact's own confidence, float outputs, and the confidence gate failing loudly (exit 3)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cli_helpers import run_cli, run_cli_captured  # noqa: E402
from models_helpers import make_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_data, tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tiny_data, tmp_path_factory.mktemp("ckpt8") / "best.pt")


@pytest.fixture(scope="module")
def kept_export(tiny_ckpt, tmp_path_factory):
    """The ends kept in FP32, one calibration method: the kept-layer INT8 path in one export."""
    out = tmp_path_factory.mktemp("int8") / "tiny"
    code = run_cli(["export", tiny_ckpt, "--out", out, "--int8", "--calib-count", "16", "--calib-method", "minmax",
                    "--int8-keep-fp32", "ends"])
    return code, out


@pytest.mark.slow
def test_kept_export_records_the_recipe_split_and_confidence(kept_export, tiny_ckpt):
    from edgecls.export.quantize import quantized_tail
    from edgecls.runtime.model_io import load_model_spec

    code, out = kept_export
    assert code == 0
    parity = json.loads((out / "parity.json").read_text())
    sel = parity["selection"]
    assert sel["select_images"] + sel["report_images"] == 10 and parity["data"]["n"] == sel["report_images"]
    assert not set(sel["select_files"]) & set(sel["report_files"])
    for name in ("model_int8_qdq.onnx", "model_int8_cpu.onnx"):
        e = parity["artifacts"][name]
        assert e["status"] == "passed" and e["n"] == sel["report_images"]
        assert e["kept_fp32"] == ["/conv1/Conv", "/fc/Gemm"] or len(e["kept_fp32"]) == 2
        # the output Q/DQ pair quantize_static put after the Gemm is removed (none when the Gemm itself is kept)
        gemm_kept = any("Gemm" in k for k in e["kept_fp32"])
        assert e["float_outputs"]["qdq_pairs_removed_after_last_layer"] == (0 if gemm_kept else 1)
        assert e["selection"]["images"] == sel["select_images"] and e["selection"]["tried"]
        assert isinstance(e["refit"]["refitted"], bool) and e["refit"]["n"] == sel["select_images"]
        spec = load_model_spec(out / name)  # the artifact carries its own temperature
        assert spec.temperature == pytest.approx(e["refit"]["temperature"]) == pytest.approx(e["temperature"])
        m = onnx.load(str(out / name))
        assert quantized_tail(m) == []
        producer = {o: n for n in m.graph.node for o in n.output}
        assert producer[m.graph.output[0].name].op_type == "Gemm"
        for kept in e["kept_fp32"]:  # kept layers read float activations and float weights
            node = next(n for n in m.graph.node if n.name == kept)
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input)
    assert parity["artifacts"]["model_int8_cpu.onnx"]["cost"]["latency_ms_b1"]["fp32"] > 0


@pytest.mark.slow
def test_confidence_gate_fails_loudly(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "strict"
    code, stdout, stderr = run_cli_captured(["export", tiny_ckpt, "--out", out, "--int8", "--int8-forms", "int8-cpu",
                                 "--calib-count", "16", "--calib-method", "minmax",
                                 "--tol-int8-p99-prob", "0.000001"], capsys)
    assert code == 3
    assert "p99 |Δprob|" in stderr and "must be <= 1e-06" in stderr and "model_int8_cpu.onnx.failed" in stderr
    assert "FAIL" in stdout and "ECE" in stdout and "p99|Δprob|" in stdout
    assert (out / "model_int8_cpu.onnx.failed").is_file() and not (out / "model_int8_cpu.onnx").exists()
    entry = json.loads((out / "parity.json").read_text())["artifacts"]["model_int8_cpu.onnx"]
    assert entry["status"] == "failed" and any(c["name"].startswith("p99 |Δprob|") and not c["ok"] and c["gated"]
                                           for c in entry["checks"])


def _swap_classes(model):
    """The model with its two output classes swapped (a Gather after the logits): a truly worse artifact."""
    import onnx
    from onnx import helper, numpy_helper

    out = model.graph.output[0].name
    for n in model.graph.node:
        for j, name in enumerate(n.output):
            if name == out:
                n.output[j] = out + "/before_swap"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), "swap_idx"))
    model.graph.node.append(helper.make_node("Gather", [out + "/before_swap", "swap_idx"], [out], axis=1))
    onnx.checker.check_model(model)
    return model


@pytest.mark.slow
def test_harm_fails_with_exit_3_and_a_temperature_alone_passes(tiny_ckpt, tiny_data, tmp_path, capsys,
                                                               monkeypatch):
    """Issue 18's harm test: an INT8 artifact with two classes swapped fails the accuracy / decision gates (exit 3,
    kept as .failed, an earlier good file untouched); one whose temperature alone differs (the re-fit forced to
    move it by 1.5x) passes — fidelity is compared at the same temperature."""
    import edgecls.export.quantize as Q
    import edgecls.export.refit as R

    out = tmp_path / "harm"
    args = ["export", tiny_ckpt, "--out", out, "--int8", "--int8-forms", "int8-cpu", "--calib-count", "8",
            "--calib", tiny_data / "train",
            "--calib-method", "minmax", "--int8-keep-fp32", "none"]
    real_crossfit = R.crossfit_temperature

    def warmer(z, y, t_keep, folds=5):
        _, keep, cv = real_crossfit(z, y, t_keep, folds)
        return 1.5 * t_keep, keep, keep - 1.0

    monkeypatch.setattr(R, "crossfit_temperature", warmer)
    code, stdout, _ = run_cli_captured(args, capsys)
    assert code == 0, stdout
    entry = json.loads((out / "parity.json").read_text())["artifacts"]["model_int8_cpu.onnx"]
    assert entry["refit"]["refitted"] and entry["temperature"] != pytest.approx(entry["refit"]["temperature_before"])
    assert "re-fitted" in stdout
    # the calibration folder's images not sampled for the ranges: unlabelled agreement, with its n
    unl = entry["unlabelled_agreement"]
    assert unl["n"] > 0 and 0.0 <= unl["agreement"] <= 1.0 and "unlabelled calibration-folder images" in stdout
    good = (out / "model_int8_cpu.onnx").read_bytes()
    monkeypatch.setattr(R, "crossfit_temperature", real_crossfit)
    real_quantize = Q.quantize
    monkeypatch.setattr(Q, "quantize", lambda *a, **k: (lambda m, i: (_swap_classes(m), i))(*real_quantize(*a, **k)))
    code, stdout, stderr = run_cli_captured(args, capsys)
    assert code == 3, stderr[-2000:]
    assert "accuracy drop" in stderr and "model_int8_cpu.onnx.failed" in stderr
    assert (out / "model_int8_cpu.onnx.failed").is_file()
    assert (out / "model_int8_cpu.onnx").read_bytes() == good  # the earlier good artifact is left as it was


@pytest.mark.slow
def test_gate_data_joins_the_report_split_and_never_a_parity_image(tiny_ckpt, tiny_data, tmp_path, capsys):
    """--gate-data: its labelled images are added to the images the gates judge (n grows, selection unchanged);
    images the export already uses are refused (exit 2) before anything is written."""
    from edgecls.core.images import list_images

    args = ["export", tiny_ckpt, "--int8", "--int8-forms", "int8-cpu", "--calib-count", "8",
            "--calib-method", "minmax", "--int8-keep-fp32", "none"]
    code, _, stderr = run_cli_captured(args + ["--out", tmp_path / "bad", "--gate-data", tiny_data / "val"], capsys)
    assert code == 2 and "--gate-data holds" in stderr and not (tmp_path / "bad" / "model.onnx").exists()
    code, stdout, _ = run_cli_captured(args + ["--out", tmp_path / "ok", "--gate-data", tiny_data / "train"], capsys)
    assert code == 0, stdout
    parity = json.loads((tmp_path / "ok" / "parity.json").read_text())
    extra = len(list_images(tiny_data / "train"))
    assert parity["data"]["n"] == parity["selection"]["report_images"] + extra
    assert parity["artifacts"]["model_int8_cpu.onnx"]["n"] == parity["data"]["n"]
