"""edgecls export on a tiny model: every artifact passes parity, metadata round trip, calibration cache reuse,
calibration methods that really differ, symmetric Q/DQ, loud failures that leave earlier exports intact,
calib-sample, and the TensorRT-less paths of --engine / build-engine."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cli_helpers import run_cli_captured as run_cli  # noqa: E402
from models_helpers import CROP, make_tiny_checkpoint  # noqa: E402

from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec, sidecar_path  # noqa: E402


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_data, tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tiny_data, tmp_path_factory.mktemp("ckpt") / "best.pt")


# One calibration method other than the default keeps a single, named cache file; fidelity (p99 |Δprob|) is reported,
# not gated, by default. tests/test_int8*.py cover the INT8 recipe and the gates themselves.
TINY_INT8 = ["--calib-method", "entropy"]


def _tiny_int8_config(**kw):
    from edgecls.export.int8_flow import Int8Settings
    from edgecls.export.parity import Tolerances

    return dict(calib_method=kw.pop("calib_method", "entropy"), tolerances=Tolerances(),
                int8_settings=Int8Settings(), **kw)


@pytest.fixture(scope="module")
def full_export(tiny_ckpt, tmp_path_factory, monkeypatch_module):
    """One export with every artifact, through the CLI."""
    from cli_helpers import run_cli as cli_exit_code

    out = tmp_path_factory.mktemp("export") / "tiny"
    monkeypatch_module.chdir(tmp_path_factory.mktemp("cwd"))  # no repo calib_images/: checkpoint fallback
    argv = ["export", tiny_ckpt, "--out", out, "--fp16", "--int8", "--calib-count", "24"] + TINY_INT8
    assert cli_exit_code(argv) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# ------------------------------------------------------------------------------------------- artifacts


def _independent_parity(artifact: Path, ckpt_path: Path, only=None):
    """The export's verdict recomputed here, without edgecls's parity code or runtime backend: the artifact run by
    a bare onnxruntime session against the checkpoint's PyTorch model, on the checkpoint's val images (``only``:
    those of these paths).
    Returns (n, max |Δlogit|, reference logit scale, top-1 agreement, artifact accuracy, reference accuracy)."""
    import onnxruntime as ort

    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.runtime.preprocess import load_image, preprocess

    ck = load_checkpoint(ckpt_path)
    val = [(p, y) for p, y in ck.data["val"] if only is None or p in set(only)]
    x = preprocess([load_image(p) for p, _ in val], ck.spec.preprocess)
    y = np.array([lab for _, lab in val])
    with torch.no_grad():
        ref = ck.build_model()(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float32)
    assert got.shape == ref.shape and np.all(np.isfinite(got))
    agreement = float(np.mean(got.argmax(1) == ref.argmax(1)))
    return (len(val), float(np.abs(got - ref).max()), max(1.0, float(np.abs(ref).max())), agreement,
            float(np.mean(got.argmax(1) == y)), float(np.mean(ref.argmax(1) == y)))


@pytest.mark.slow
def test_every_artifact_exists_and_passed_parity(full_export, tiny_ckpt):
    from edgecls.core.fileio import file_sha256

    parity = json.loads((full_export / "parity.json").read_text())
    # with --int8, the numbers are on the report split (the other val images chose the INT8 recipe)
    report = parity["selection"]["report_files"]
    assert parity["selection"]["select_images"] + len(report) == 10 and parity["data"]["n"] == len(report)
    # the oracle: each artifact against PyTorch, recomputed here with the default tolerances
    # (FP32 max |Δlogit| <= 1e-4·scale; FP16 agreement >= 99.5%; INT8 agreement >= 99% and accuracy drop <= 0.5 pt)
    for name in ["model.onnx", "model_fp16.onnx", "model_int8_qdq.onnx", "model_int8_cpu.onnx"]:
        assert (full_export / name).is_file() and not (full_export / (name + ".failed")).exists()
        n, max_abs, scale, agreement, acc, ref_acc = _independent_parity(full_export / name, tiny_ckpt, report)
        assert n == len(report)
        if name == "model.onnx":
            assert max_abs <= 1e-4 * scale, (name, max_abs, scale)
        elif name == "model_fp16.onnx":
            assert agreement >= 0.995, (name, agreement)
        else:
            assert agreement >= 0.99 and ref_acc - acc <= 0.005, (name, agreement, acc, ref_acc)
        # ... and the record the export wrote says the same
        entry = parity["artifacts"][name]
        assert entry["status"] == "passed" and entry["n"] == n and entry["agreement"] == pytest.approx(agreement)
        assert entry["source_sha256"] == file_sha256(tiny_ckpt)
    assert parity["passed"] is True
    assert parity["calibration"]["method"] == "entropy" and parity["calibration"]["images"] == 24
    assert parity["calibration"]["groups"] == {"mobile": 9, "other": 15}  # stratified: 12:20 of the train items
    # no temp files left behind
    assert not [p for p in full_export.iterdir() if p.name.startswith(".")]


def test_fp32_is_one_file_opset17_dynamic_batch(full_export):
    from edgecls.runtime.backends.onnxruntime import OrtBackend

    m = onnx.load(str(full_export / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    assert [p for p in full_export.iterdir() if p.suffix == ".data"] == []
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    with OrtBackend(full_export / "model.onnx", device="cpu") as be:
        for n in (1, 3):
            assert be.infer(np.zeros((n, 3, CROP, CROP), np.float32)).shape == (n, 2)


def test_fp16_has_fp16_weights_and_fp32_io(full_export):
    m = onnx.load(str(full_export / "model_fp16.onnx"))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == f32 for v in list(m.graph.input) + list(m.graph.output))
    assert sum(t.data_type == f16 for t in m.graph.initializer) > 10
    assert (full_export / "model_fp16.onnx").stat().st_size < 0.6 * (full_export / "model.onnx").stat().st_size


def test_int8_qdq_is_symmetric_and_int8_cpu_uses_uint8(full_export):
    from edgecls.export.quantize import zero_points

    qdq = onnx.load(str(full_export / "model_int8_qdq.onnx"))
    zps = zero_points(qdq)
    assert len(zps) > 20
    assert all(z.dtype == np.int8 and not np.any(z) for z in zps.values()), "TensorRT form must be symmetric int8"
    ops = {n.op_type for n in qdq.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # TensorRT 8.5: no INT32 bias dequantization, weights kept FP32 behind Q→DQ
    inits = {t.name: t for t in qdq.graph.initializer}
    for n in qdq.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].data_type != onnx.TensorProto.INT32
    cpu = onnx.load(str(full_export / "model_int8_cpu.onnx"))
    dtypes = {z.dtype for z in zero_points(cpu).values()}
    assert np.dtype(np.uint8) in dtypes
    assert (full_export / "model_int8_cpu.onnx").stat().st_size < 0.4 * (full_export / "model.onnx").stat().st_size


def test_metadata_round_trip(full_export, tiny_ckpt):
    from edgecls.core.fileio import file_sha256
    from edgecls.export.metadata import read_sidecar, spec_of_model
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.runtime.model_io import load_model_spec

    base = load_checkpoint(tiny_ckpt).spec
    precisions = {"model.onnx": "fp32", "model_fp16.onnx": "fp16", "model_int8_qdq.onnx": "int8-qdq",
                  "model_int8_cpu.onnx": "int8-cpu"}
    for name, precision in precisions.items():
        path = full_export / name
        embedded = spec_of_model(onnx.load(str(path)))
        side = read_sidecar(path)
        assert embedded == side == load_model_spec(path)
        assert embedded.precision == precision
        assert embedded.source_sha256 == file_sha256(tiny_ckpt)
        # each artifact carries its own confidence (and threshold), fitted on its own outputs (issue 13)
        assert embedded.confidence is not None and f"outputs of {name}" in embedded.confidence.source
        assert embedded.replace(precision="fp32", source_sha256=None, confidence=None,
                                threshold=base.threshold, temperature=base.temperature) == base
        assert sidecar_path(path).name == name.replace(".onnx", ".json")
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert ModelSpec.from_json(props[METADATA_KEY]) == embedded


def test_runtime_refuses_model_without_spec(full_export, tmp_path):
    from edgecls.runtime.model_io import load_model_spec
    from edgecls.runtime.spec import SpecError

    m = onnx.load(str(full_export / "model.onnx"))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(SpecError, match="edgecls.spec"):
        load_model_spec(bare)


# ---------------------------------------------------------------------------------------- calibration


@pytest.mark.slow
def test_calibration_cache_is_reused_and_keyed(full_export, tiny_ckpt, tmp_path):
    from edgecls.export.pipeline import ExportConfig, export_checkpoint

    out = tmp_path / "again"
    shutil.copytree(full_export, out)
    cache_files = sorted((out / "calib_cache").glob("*.json"))
    assert len(cache_files) == 1
    before = _sha(cache_files[0])
    res = export_checkpoint(ExportConfig(tiny_ckpt, out=out, int8=True, int8_forms=("int8-cpu",), calib_count=24,
                                         **_tiny_int8_config()))
    assert res.passed and res.calibration is not None and res.calibration.cache_hit
    assert res.calibration.cache_path == cache_files[0] and _sha(cache_files[0]) == before
    assert _sha(out / "model_int8_cpu.onnx") == _sha(full_export / "model_int8_cpu.onnx")
    parity = json.loads((out / "parity.json").read_text())
    assert parity["calibration"]["cache_hit"] is True
    assert parity["artifacts"]["model_fp16.onnx"]["from_previous_export"] is True  # not re-exported: carried over
    # another image set (fewer images) or method → another key, computed afresh
    res2 = export_checkpoint(ExportConfig(tiny_ckpt, out=out, int8=True, int8_forms=("int8-cpu",), calib_count=16,
                                          **_tiny_int8_config(calib_method="minmax")))
    assert not res2.calibration.cache_hit
    assert len(list((out / "calib_cache").glob("*.json"))) == 2


@pytest.mark.slow
def test_calibration_methods_really_differ(tiny_ckpt, tmp_path):
    from edgecls.export.calib import calib_from_checkpoint
    from edgecls.export.calib_ranges import CalibConfig, CalibrationImages, compute_ranges
    from edgecls.export.onnx_export import export_onnx
    from edgecls.export.quantize import preprocess_for_quantization
    from edgecls.reference.checkpoint import load_checkpoint

    ck = load_checkpoint(tiny_ckpt)
    pre = preprocess_for_quantization(export_onnx(ck.build_model(), ck.spec)[0])
    images = CalibrationImages(calib_from_checkpoint(ck.data, ck.spec.classes, 16).paths, ck.spec.preprocess)
    r = {m: compute_ranges(pre, images, CalibConfig(method=m)) for m in ("minmax", "percentile", "entropy")}
    assert set(r["minmax"]) == set(r["percentile"]) == set(r["entropy"])

    def differing(a, b):
        return sum(1 for k in a if not np.allclose(a[k], b[k], rtol=1e-3, atol=1e-6))

    assert differing(r["minmax"], r["percentile"]) > 5
    assert differing(r["minmax"], r["entropy"]) > 5
    assert differing(r["percentile"], r["entropy"]) > 5
    for m in ("percentile", "entropy"):  # clipping methods only ever shrink the observed range
        for k, (lo, hi) in r[m].items():
            mlo, mhi = r["minmax"][k]
            assert mlo - 1e-6 <= lo <= hi <= mhi + 1e-6


def test_entropy_threshold_clips_a_sparse_tail_but_not_a_dense_range():
    from edgecls.export.calib_ranges import entropy_threshold_bin, percentile_threshold

    rng = np.random.default_rng(0)
    dense = np.histogram(rng.uniform(0, 1, 200_000), bins=2048, range=(0, 1))[0]
    assert entropy_threshold_bin(dense) >= 2000
    x = np.concatenate([np.abs(rng.normal(0, 1, 200_000)), [40.0]])  # one outlier at 40 sigma
    hist, edges = np.histogram(x, bins=2048, range=(0, 40.0))
    t = edges[entropy_threshold_bin(hist)]
    assert 2.5 < t < 10.0
    assert 2.5 < percentile_threshold(hist, edges, 99.9) < 4.0


# ----------------------------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_impossible_tolerance_fails_loudly_and_keeps_the_earlier_export(full_export, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "exp"
    shutil.copytree(full_export, out)
    good = _sha(out / "model.onnx")
    code, stdout, stderr = run_cli(["export", tiny_ckpt, "--out", out, "--tol-fp32", "0"], capsys)
    assert code == 3
    assert "parity failed" in stderr and "model.onnx" in stderr and "max |Δlogit|" in stderr
    assert "FAIL" in stdout
    assert _sha(out / "model.onnx") == good  # the earlier good artifact is untouched
    assert (out / "model.onnx.failed").is_file()  # the failed one is kept, but not loadable by its name
    parity = json.loads((out / "parity.json").read_text())
    entry = parity["artifacts"]["model.onnx"]
    assert parity["passed"] is False and entry["status"] == "failed" and entry["file"] == "model.onnx.failed"
    assert entry["previous_good_file"]["file"] == "model.onnx"
    assert parity["artifacts"]["model_int8_qdq.onnx"]["from_previous_export"] is True
    # a later good export clears the failure marker
    code, _, _ = run_cli(["export", tiny_ckpt, "--out", out], capsys)
    assert code == 0 and not (out / "model.onnx.failed").exists()


def test_tampered_onnx_fails_parity(full_export, tiny_ckpt, tmp_path):
    from onnx import numpy_helper

    from edgecls.export.parity import check_artifact, reference_from
    from edgecls.export.parity_data import parity_data_from_checkpoint
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.reference.torch_backend import TorchBackend

    m = onnx.load(str(full_export / "model.onnx"))
    conv_w = next(t for t in m.graph.initializer if t.dims and len(t.dims) == 4)
    arr = numpy_helper.to_array(conv_w).copy()
    arr *= 1.05
    conv_w.CopyFrom(numpy_helper.from_array(arr, conv_w.name))
    bad = tmp_path / "model.onnx"
    onnx.save(m, str(bad))
    ck = load_checkpoint(tiny_ckpt)
    data = parity_data_from_checkpoint(ck)
    with TorchBackend(ck) as be:
        ref = reference_from(be, data, ck.spec)
    rep = check_artifact("model.onnx", bad, "fp32", ref, data, ck.spec.replace(source_sha256=None), _tol())
    assert not rep and "max |Δlogit|" in rep.failures[0]


def _tol():
    from edgecls.export.parity import Tolerances

    return Tolerances()


def test_nan_outputs_always_fail_and_report_is_truthy_only_on_pass(tmp_path):
    from edgecls.export.parity import ParityData, Reference, Tolerances, compare

    spec = ModelSpec(arch="resnet18", classes=("mobile", "other"), positive="mobile")
    ref_logits = np.array([[2.0, -1.0], [-1.0, 3.0]], np.float32)
    data = ParityData(np.zeros((2, 3, 8, 8), np.float32), np.array([0, 1]), ("a", "b"), "test")
    ref = Reference(ref_logits, 1.0, 1.0, {"mobile": 1.0, "other": 1.0}, 0.0)
    loose = Tolerances(fp32_logit_rel=1e9, fp16_agreement=0.0, int8_agreement=0.0, int8_accuracy_drop=1.0)
    for precision in ("fp32", "fp16", "int8-qdq"):
        rep = compare("m.onnx", tmp_path / "m.onnx", precision, np.array([[np.nan, 0], [0, 1]], np.float32), ref,
                      data, spec, loose)
        assert not rep and "NaN" in rep.failures[0]
    ok = compare("m.onnx", tmp_path / "m.onnx", "int8-cpu", ref_logits + 0.01, ref, data, spec, Tolerances())
    assert ok and ok.agreement == 1.0 and ok.accuracy == 1.0
    flipped = compare("m.onnx", tmp_path / "m.onnx", "int8-cpu", ref_logits[:, ::-1].copy(), ref, data, spec,
                      Tolerances())
    assert not flipped and any("decision agreement" in f for f in flipped.failures)
    # 2 of 2 images wrong: a 100-point drop, yet McNemar's p = 0.25 on two images — said, refused only by --strict
    assert any("accuracy drop (McNemar p=0.25)" in w for w in flipped.warnings)
    strict = compare("m.onnx", tmp_path / "m.onnx", "int8-cpu", ref_logits[:, ::-1].copy(), ref, data, spec,
                     Tolerances(gate_accuracy_point=True))
    assert any("accuracy drop" in f for f in strict.failures)


def test_torch_backend_is_the_checkpoint_model(tiny_ckpt):
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.reference.torch_backend import TorchBackend

    ck = load_checkpoint(tiny_ckpt)
    x = np.random.default_rng(0).standard_normal((5, 3, CROP, CROP)).astype(np.float32)
    with TorchBackend(tiny_ckpt, spec=ck.spec, batch_size=2) as be:
        assert be.input_shape == (None, 3, CROP, CROP) and be.providers == ["torch-cpu"]
        got = be.infer(x)
    with torch.no_grad():
        want = ck.build_model()(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------------------------------- calib images


def test_calib_sample_stratifies_and_never_overwrites(tiny_data, tmp_path, capsys):
    out = tmp_path / "calib_images"
    code, stdout, stderr = run_cli(["calib-sample", "--data", tiny_data, "--count", 8, "--out", out], capsys)
    assert code == 0
    files = sorted(p for p in out.rglob("*.jpg"))
    assert len(files) == 8 and {p.parent.name for p in files} == {"mobile", "other"}
    assert len(list((out / "mobile").glob("*.jpg"))) == 3  # 12:20 of the train split → 3:5
    assert "warning" in stderr  # fewer than 100
    code, stdout, _ = run_cli(["calib-sample", "--data", tiny_data, "--count", 8, "--out", out], capsys)
    assert code == 0 and "0 images copied" in stdout and "8 already there" in stdout
    victim = files[0]
    victim.write_bytes(b"not the same image")
    code, _, stderr = run_cli(["calib-sample", "--data", tiny_data, "--count", 8, "--out", out], capsys)
    assert code == 2 and "refusing to overwrite" in stderr
    assert victim.read_bytes() == b"not the same image"


def test_calib_source_order(tiny_ckpt, tiny_data, tmp_path):
    from edgecls.core.errors import InputError
    from edgecls.export.calib import resolve_calib_set
    from edgecls.reference.checkpoint import load_checkpoint

    ck = load_checkpoint(tiny_ckpt)
    empty = tmp_path / "calib_images"
    empty.mkdir()
    s = resolve_calib_set(None, 10, ck.data, ck.spec.classes, default_dir=empty)
    assert "checkpoint" in s.source and s.count == 10 and s.warnings()
    shutil.copy(next((tiny_data / "val" / "mobile").glob("*.jpg")), empty / "a.jpg")
    s = resolve_calib_set(None, 10, ck.data, ck.spec.classes, default_dir=empty)
    assert "folder" in s.source and s.count == 1
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(InputError, match="holds no images"):
        resolve_calib_set(nothing, 10, ck.data, ck.spec.classes)
    with pytest.raises(InputError, match="not a folder"):
        resolve_calib_set(tmp_path / "missing", 10, ck.data, ck.spec.classes)


# ---------------------------------------------------------------------------------------- no TensorRT


@pytest.mark.slow
def test_engine_without_tensorrt_exits_4_with_trtexec_line(tiny_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt → ImportError
    out = tmp_path / "exp"
    code, stdout, stderr = run_cli(["export", tiny_ckpt, "--out", out, "--engine", "int8", "--int8-forms",
                                    "int8-qdq", "--calib-count", "16", "--batch", "1,2,4"] + TINY_INT8, capsys)
    assert code == 4
    assert "tensorrt" in stderr and "trtexec --onnx=" in stderr and "--stronglyTyped" in stderr and "--int8" in stderr
    assert "input:4x3x32x32" in stderr and "edgecls build-engine" in stderr
    assert (out / "model_int8_qdq.onnx").is_file()  # the ONNX artifacts were still exported and checked
    assert json.loads((out / "parity.json").read_text())["engines"]["error"]
    code, _, stderr = run_cli(["build-engine", out / "model_int8_qdq.onnx"], capsys)
    assert code == 4 and "trtexec --onnx=" in stderr and "--int8" in stderr
    code, _, stderr = run_cli(["build-engine", out / "model.onnx", "--precision", "int8"], capsys)
    assert code == 2 and "model_int8_qdq.onnx" in stderr


def test_parity_data_from_folder_labelled_or_not(tiny_data, tmp_path):
    from edgecls.export.parity_data import parity_data_from_folder

    spec = ModelSpec(arch="resnet18", classes=("mobile", "other"), preprocess=PreprocessSpec.for_image_size(CROP))
    d = parity_data_from_folder(tiny_data, spec)  # DIR/val is used when present
    assert d.n == 10 and d.y is not None and sorted(set(d.y.tolist())) == [0, 1] and "labelled" in d.source
    assert d.x.shape == (10, 3, CROP, CROP) and d.x.dtype == np.float32
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in list((tiny_data / "val" / "other").glob("*.jpg"))[:3]:
        shutil.copy(p, flat / p.name)
    u = parity_data_from_folder(flat, spec)
    assert u.n == 3 and u.y is None and "unlabelled" in u.source
    assert parity_data_from_folder(tiny_data, spec, limit=4).n == 4
