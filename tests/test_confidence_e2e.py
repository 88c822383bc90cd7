"""A confidence you can state, end to end on a tiny model: train (honest split) → export (each artifact re-fits
its own confidence on its own outputs) → run / Python API (sets, unknown) → eval (coverage, risk–coverage, AUROC).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def conf_data(tmp_path_factory) -> Path:
    from edgecls.synthetic import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("conf_data"), counts={"mobile": 24, "other": 32},
                             val_counts={"mobile": 20, "other": 24}, size=48, seed=3)


@pytest.fixture(scope="module")
def trained(conf_data, tmp_path_factory):
    import torch

    from edgecls.reference.models import build_model
    from edgecls.train.config import RECIPES, TrainConfig
    from edgecls.train.trainer import train

    work = tmp_path_factory.mktemp("run")
    torch.manual_seed(1)  # a random backbone without its head (like ../shared/weights): the head phase only
    state = build_model("mobilenet_v3_small", 2, "none").state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.3.")}, work / "features.pth")
    cfg = TrainConfig(data=str(conf_data), arch="mobilenet_v3_small", weights=str(work / "features.pth"),
                      positive="mobile", progress=False, out=str(work / "run"),
                      recipe=RECIPES["fast"].override(epochs=0, image_size=32))
    return train(cfg)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from edgecls.export.deploy import DeployConfig
    from edgecls.export.int8_flow import Int8Settings
    from edgecls.export.parity import Tolerances
    from edgecls.export.pipeline import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("export")
    # parity is another test's business: INT8 of an untrained backbone may not agree; let it pass to check the refit
    loose = Tolerances(fp16_agreement=0.0, int8_agreement=0.0, int8_accuracy_drop=1.0, int8_ece=1.0,
                       int8_p99_prob=1.0)
    res = export_checkpoint(ExportConfig(trained.best_path, out=out, fp16=True, int8=True, int8_forms=("int8-cpu",),
                                         calib_count=16, tolerances=loose, deploy=DeployConfig(variants=("probs",)),
                                         int8_settings=Int8Settings(latency=False)))
    res.raise_for_status()
    return out


def _onnx_outputs(path: Path, paths, pspec) -> np.ndarray:
    """The artifact's outputs computed here with a bare onnxruntime session (not edgecls's backend)."""
    import onnxruntime as ort

    from edgecls.runtime.preprocess import load_image, preprocess

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = preprocess([load_image(p) for p in paths], pspec)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float64)


def test_training_calibrates_on_images_that_did_not_pick_the_epoch(trained):
    from edgecls.reference.checkpoint import load_checkpoint

    ck = load_checkpoint(trained.best_path)
    splits = trained.summary["splits"]
    assert splits["honest"] and splits["calibration"]["images"] == 22 and splits["selection"]["images"] == 22
    assert splits["calibration"]["counts"] == {"mobile": 10, "other": 12}
    calib = set(ck.data["calib"])
    assert calib == set(splits["calibration"]["paths"]) and calib < {p for p, _ in ck.items("val")}
    conf = ck.spec.confidence  # the head-phase model: cross-fitted scores of all 100 labelled images (issue 19)
    assert conf.n == 100 and "cross-fitted" in conf.source and conf.temperature == ck.spec.temperature
    assert conf.conformal.n == 100 and conf.ood is not None
    g = conf.guarantee  # 44 phones cannot certify 95 % from a random backbone: a visible refusal
    assert g.positives == 44 and not g.certified and ck.spec.threshold == pytest.approx(g.threshold)
    assert "NOT GUARANTEED" in g.statement() and "NOT GUARANTEED" in trained.table()
    assert "splits     epoch picked on 22 val images; calibrated on 100 cross-fitted scores" in trained.table()


@pytest.fixture(scope="module")
def fp32_and_int8(trained, tmp_path_factory):
    """model.onnx (FP32 export) and an INT8 copy (onnxruntime dynamic quantization, spec stamped int8-cpu): the
    INT8 export flow is tested elsewhere; here only an INT8 artifact with its spec is needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgecls.export.metadata import embed_spec, read_sidecar, write_sidecar
    from edgecls.export.pipeline import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("fp32")
    export_checkpoint(ExportConfig(trained.best_path, out=out)).raise_for_status()
    import onnx

    bare = onnx.load(str(out / "model.onnx"))
    del bare.graph.value_info[:]  # stale shapes trip onnxruntime's shape inference
    onnx.save(bare, str(out / "bare.onnx"))
    quantize_dynamic(str(out / "bare.onnx"), str(out / "model_int8_cpu.onnx"), weight_type=QuantType.QInt8)
    spec = read_sidecar(out / "model.onnx").replace(precision="int8-cpu")
    m = onnx.load(str(out / "model_int8_cpu.onnx"))
    onnx.save(embed_spec(m, spec), str(out / "model_int8_cpu.onnx"))
    write_sidecar(out / "model_int8_cpu.onnx", spec)
    return out


def test_calibrate_refits_pt_fp32_and_int8_from_a_labelled_folder(fp32_and_int8, trained, conf_data, tmp_path):
    """``edgecls calibrate`` on copies of best.pt, model.onnx and model_int8_cpu.onnx: each re-states its promise
    on the labelled scores it was certified on plus its own outputs for the folder (an image in both counted once,
    with its new output), weights untouched, ONNX metadata and sidecar agree."""
    import shutil

    import onnx
    import torch

    from edgecls.cli import main
    from edgecls.export.metadata import read_sidecar, spec_of_model
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.runtime.confidence import nonconformity
    from edgecls.runtime.confidence.conformal import round_up
    from edgecls.runtime.confidence.recalibrate import labelled_folder
    from edgecls.runtime.metrics import softmax
    from edgecls.runtime.model_io import load_model_spec
    from edgecls.runtime.spec import sidecar_path

    names = ("best.pt", "model.onnx", "model_int8_cpu.onnx")
    shutil.copy(trained.best_path, tmp_path / "best.pt")
    for n in names[1:]:
        shutil.copy(fp32_and_int8 / n, tmp_path / n)
        shutil.copy(sidecar_path(fp32_and_int8 / n), sidecar_path(tmp_path / n))
    before = {n: onnx.load(str(tmp_path / n)).graph.SerializeToString() for n in names[1:]}
    with pytest.raises(SystemExit) as e:
        main(["calibrate", *[str(tmp_path / n) for n in names], "--data", str(conf_data / "val"),
              "--target-precision", "0.8"])
    assert e.value.code == 0
    items = labelled_folder(conf_data / "val", ("mobile", "other"))
    y = np.array([lab for _, lab in items])
    ck = load_checkpoint(tmp_path / "best.pt")
    old = load_checkpoint(trained.best_path)
    assert all(torch.equal(ck.state_dict[k], old.state_dict[k]) for k in old.state_dict)
    stored = old.spec.confidence.scores.n  # the cross-fitted scores of all 100 labelled images (val among them)
    assert stored == 100 and ck.spec.confidence.n == 100 and "+ 44 from labelled folder" in ck.spec.confidence.source
    assert ck.spec.confidence.guarantee.target == 0.8 and ck.metrics["recalibrated"]["images"] == 44
    for n in names[1:]:
        spec = load_model_spec(tmp_path / n)
        assert onnx.load(str(tmp_path / n)).graph.SerializeToString() == before[n]  # weights untouched
        assert spec == read_sidecar(tmp_path / n) == spec_of_model(onnx.load(str(tmp_path / n)))
        assert spec.confidence.n == 100
        assert f"outputs of {n}" in spec.confidence.source and spec.precision == load_model_spec(fp32_and_int8 / n).precision
        out = _onnx_outputs(tmp_path / n, [p for p, _ in items], spec.preprocess)
        rows = spec.confidence.scores
        assert rows.outputs[-44:] == pytest.approx(out, abs=2e-5), n  # its own outputs for the folder's images
        assert np.all(rows.margin[-44:] == 0) and list(rows.labels[-44:]) == list(y)
        own = round_up(nonconformity(softmax(out, spec.temperature), y, "lac"))
        assert set(own) <= set(spec.confidence.conformal.scores), n
    with open(sidecar_path(tmp_path / "model.onnx")) as f:
        assert json.loads(f.read())["confidence"]["n"] == 100


def test_every_artifact_states_the_checkpoints_promise_or_its_own(exported, trained):
    """Logit artifacts carry the checkpoint's promise (its scores, moved by the measured output difference when
    that changes it); the probabilities variant (other outputs) re-fits on its own outputs for the calibration
    split."""
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.runtime.confidence import nonconformity
    from edgecls.runtime.confidence.conformal import round_up
    from edgecls.runtime.metrics import softmax
    from edgecls.runtime.model_io import load_model_spec

    ck = load_checkpoint(trained.best_path)
    calib = ck.data["calib"]
    y = np.array([lab for p, lab in ck.items("val") if p in set(calib)])
    order = [p for p, _ in ck.items("val") if p in set(calib)]
    parity = json.loads((exported / "parity.json").read_text())
    for name in ("model.onnx", "model_fp16.onnx", "model_int8_cpu.onnx"):
        conf = load_model_spec(exported / name).confidence
        promise = parity["artifacts"][name]["promise"]
        assert conf.n == ck.spec.confidence.n == 100 and promise["n"] > 0
        assert (f"carried to {name}" if promise["kept"] else f"re-certified for {name}") in conf.source
        if promise["kept"]:
            assert conf.guarantee.statement() == ck.spec.confidence.guarantee.statement()
        assert parity["artifacts"][name]["confidence"]["source"] == conf.source
    for name in ("model_probs.onnx",):
        spec = load_model_spec(exported / name)
        conf = spec.confidence
        assert conf is not None and conf.n == 22 and f"outputs of {name}" in conf.source
        assert "calibration split recorded in the checkpoint" in conf.source
        out = _onnx_outputs(exported / name, order, spec.preprocess)
        probs = out if spec.output == "probs" else softmax(out, spec.temperature)
        assert conf.conformal.scores == pytest.approx(round_up(nonconformity(probs, y, "lac")), abs=2e-6), name
        assert conf.ood.kind == ("msp" if spec.output == "probs" else "energy")
        assert parity["artifacts"][name]["confidence"]["source"] == conf.source


def test_run_records_and_api_expose_sets_and_unknown(exported, conf_data, tmp_path):
    from PIL import Image

    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run

    out, err = io.StringIO(), io.StringIO()
    stats = run(RunConfig(model=str(exported / "model_int8_cpu.onnx"), sources=(str(conf_data / "val"),),
                          coverage=0.8), out=out, err=err)
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(recs) == 44 and all("set" in r and "unknown" in r and "ood_score" in r for r in recs)
    assert all(set(r["set"]) <= {"mobile", "other"} for r in recs)
    from edgecls.export.confidence import SETS_MARGIN
    from edgecls.runtime.model_io import load_model_spec

    margin = json.loads((exported / "parity.json").read_text())["artifacts"]["model_int8_cpu.onnx"]["promise"]["margin"]
    n_sets = 22 if margin > SETS_MARGIN else 100  # its own outputs on the calibration split, else the checkpoint's
    assert load_model_spec(exported / "model_int8_cpu.onnx").confidence.conformal.n == n_sets
    assert f"confidence: sets: 80 % coverage (LAC, {n_sets} calibration images" in err.getvalue()
    assert "NOT GUARANTEED" in err.getvalue() and stats.to_dict()["confidence"]
    noise = tmp_path / "noise.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise)
    with Classifier.load(exported / "model.onnx", device="cpu", coverage=0.9) as clf:
        p = clf.predict(str(noise))
        assert p.set is not None and isinstance(p.unknown, bool) and p.ood_score is not None
        assert (p.decision == "unknown") == p.unknown


def test_eval_reports_coverage_risk_coverage_and_ood_auroc(exported, conf_data, tmp_path):
    from PIL import Image

    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    ood = tmp_path / "unknown"
    ood.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(ood / f"{i}.jpg")
    res = evaluate(EvalConfig(model=str(exported / "model.onnx"), data=str(conf_data / "val"),
                              out=str(tmp_path / "eval"), ood_data=str(ood), coverage=0.9))
    c = res.confidence
    assert c["conformal"]["target"] == 0.9 and 0 <= c["conformal"]["coverage"] <= 1
    assert 0 <= c["conformal"]["average_size"] <= 2 and c["risk_coverage"]["coverage"][-1] == 1.0
    assert 0 <= c["ood"]["auroc"] <= 1 and c["ood"]["unknown_images"] == 12
    assert c["guarantee"]["certified"] is False
    assert (tmp_path / "eval" / "risk_coverage.png").stat().st_size > 0
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["confidence"]["ood"]["auroc"] == pytest.approx(c["ood"]["auroc"])
    assert "sets (LAC, target 90 %)" in res.table() and "AUROC" in res.table()


def test_old_artifact_runs_as_before_and_refuses_coverage(tmp_path, tiny_data, capsys):
    from models_helpers import make_tiny_checkpoint, plain_onnx

    from edgecls.cli import main

    ck = make_tiny_checkpoint(tiny_data, tmp_path / "old.pt")
    onnx_path = plain_onnx(ck, tmp_path / "old.onnx")  # a spec without confidence, as before issue 13
    img = str(sorted((tiny_data / "val" / "mobile").glob("*.jpg"))[0])
    with pytest.raises(SystemExit) as e:
        main(["run", str(onnx_path), img, "--no-summary", "--device", "cpu"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "set" not in json.loads(out.splitlines()[0])
    with pytest.raises(SystemExit) as e:
        main(["run", str(onnx_path), img, "--coverage", "0.9", "--device", "cpu"])
    assert e.value.code == 2 and "--coverage needs a model that carries" in capsys.readouterr().err
