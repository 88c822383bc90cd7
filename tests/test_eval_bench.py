"""``edgecls eval`` / ``edgecls bench`` on a tiny model built here (ResNet18 at 32 px, checkpoint + ONNX).

The model is not trained: its head is re-drawn and centred so that it predicts both classes on the generated
data, which is all these tests need (they check that every path computes the same numbers, not accuracy).
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgecls.core.errors import InputError

CROP = 32


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_data):
    """(checkpoint path, onnx path, spec) of an untrained ResNet18 at 32 px whose predictions are mixed."""
    from models_helpers import make_tiny_checkpoint, plain_onnx, tiny_spec

    from edgecls.runtime.spec import PreprocessSpec

    out = tmp_path_factory.mktemp("tiny_models")
    spec = tiny_spec(preprocess=PreprocessSpec(resize=36, crop=CROP), threshold=0.5, temperature=1.3)
    ckpt = make_tiny_checkpoint(tiny_data, out / "best.pt", head="centred", spec=spec, record_data=False, epoch=0)
    return ckpt, plain_onnx(ckpt, out / "model.onnx"), spec


def _cli():
    from edgecls.evaluation.cli import bench_command, eval_command

    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("eval")(eval_command)
    app.command("bench")(bench_command)
    return app


# ------------------------------------------------------------------------------------------------- eval


def test_eval_onnx_matches_direct_inference_and_writes_files(tiny_models, tiny_data, tmp_path):
    import onnxruntime as ort

    from edgecls.evaluation.evaluate import EvalConfig, evaluate
    from edgecls.runtime.metrics import softmax
    from edgecls.runtime.preprocess import load_image, preprocess

    _, onnx_path, spec = tiny_models
    out = tmp_path / "ev"
    res = evaluate(EvalConfig(model=str(onnx_path), data=str(tiny_data / "val"), batch=3, out=str(out),
                              json_path=str(tmp_path / "r.json")))
    # independent path: plain onnxruntime on the runtime preprocessing, one image at a time
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"input": preprocess([load_image(p)], spec.preprocess)})[0]
                             for p in res.paths])
    np.testing.assert_allclose(res.logits, logits, atol=1e-4)
    y = np.array([spec.classes.index(Path(p).parent.name) for p in res.paths])
    assert res.labels.tolist() == y.tolist()
    pred = logits.argmax(1)
    assert res.report.accuracy == pytest.approx(float(np.mean(pred == y)))
    cm = [[int(np.sum((y == t) & (pred == q))) for q in range(2)] for t in range(2)]
    assert [list(r) for r in res.report.confusion] == cm
    assert 0 < sum(cm[0]) and cm[0][0] + cm[1][0] > 0 and cm[0][1] + cm[1][1] > 0  # both classes predicted
    # calibrated probabilities at the model's temperature, threshold on P(mobile)
    p_mobile = softmax(logits, spec.temperature)[:, 0]
    tp = int(np.sum((p_mobile >= 0.5) & (y == 0)))
    assert res.report.positive_metrics["tp"] == tp
    # the runtime's yes/no/uncertain decision, per true class: "yes" is exactly p >= threshold
    assert res.decisions["mobile"]["yes"] == tp
    assert res.decisions["other"]["yes"] == int(np.sum((p_mobile >= 0.5) & (y == 1)))
    assert sum(sum(c.values()) for c in res.decisions.values()) == len(y)
    assert res.pr is not None and len(res.pr["precision"]) == len(res.pr["thresholds"])
    for name in ("eval.json", "predictions.csv", "reliability.png", "pr_curve.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["metrics"]["confusion"] == cm and d["precision"] == "fp32" and d["kind"] == "onnx"
    assert json.loads((out / "eval.json").read_text())["metrics"] == d["metrics"]
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(y)
    assert [r["predicted"] for r in rows] == [spec.classes[k] for k in pred]
    text = res.table()
    assert "confusion matrix" in text and "mobile" in text and "ECE" in text


def test_eval_checkpoint_agrees_with_onnx(tiny_models, tiny_data):
    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    ckpt, onnx_path, _ = tiny_models
    a = evaluate(EvalConfig(model=str(ckpt), data=str(tiny_data / "val"), threads=1))
    b = evaluate(EvalConfig(model=str(onnx_path), data=str(tiny_data / "val"), threads=1))
    assert a.kind == "checkpoint" and b.kind == "onnx"
    assert a.paths == b.paths
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-3)
    assert a.report.confusion == b.report.confusion
    assert a.report.accuracy == b.report.accuracy
    assert a.report.ece == pytest.approx(b.report.ece, abs=1e-4)
    assert a.files == () and b.files == ()


def test_labeled_images_maps_classes_by_name(tiny_data):
    from edgecls.evaluation.data import labeled_images

    items = labeled_images(tiny_data / "val", ("zeta", "other", "mobile"))
    by_folder = {Path(p).parent.name: label for p, label in items}
    assert by_folder == {"other": 1, "mobile": 2}


def test_labeled_images_skips_hidden_files_like_every_lister(tiny_data, tmp_path):
    """The one image lister's rule (edgecls.core.images): hidden files and folders are not images to evaluate."""
    from edgecls.core.images import list_images
    from edgecls.evaluation.data import labeled_images

    data = tmp_path / "val"
    shutil.copytree(tiny_data / "val", data)
    src = next((data / "other").glob("*.jpg"))
    shutil.copy(src, data / "other" / ".hidden.jpg")
    (data / "other" / ".cache").mkdir()
    shutil.copy(src, data / "other" / ".cache" / "x.jpg")
    items = labeled_images(data, ("mobile", "other"))
    assert not any("/." in p for p, _ in items)
    assert [p for p, _ in items] == [str(p) for c in ("mobile", "other") for p in list_images(data / c)]


def test_eval_rejects_unknown_class_folder_and_split_root(tiny_data, tmp_path):
    from edgecls.evaluation.data import labeled_images

    with pytest.raises(InputError, match=r"\['other'\].*model classes: \['mobile', 'cat'\]"):
        labeled_images(tiny_data / "val", ("mobile", "cat"))
    with pytest.raises(InputError, match="split root"):
        labeled_images(tiny_data, ("mobile", "other"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no class folders"):
        labeled_images(tmp_path / "empty", ("mobile", "other"))
    with pytest.raises(InputError, match="not a folder"):
        labeled_images(tmp_path / "missing", ("mobile", "other"))


def test_eval_subset_of_classes_and_unreadable_image(tiny_models, tiny_data, tmp_path):
    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    _, onnx_path, _ = tiny_models
    data = tmp_path / "only_other"
    shutil.copytree(tiny_data / "val" / "other", data / "other")
    res = evaluate(EvalConfig(model=str(onnx_path), data=str(data)))
    assert res.report.per_class[0].support == 0 and res.report.per_class[1].support == res.report.n
    assert res.pr is None  # no positive images, no PR curve
    (data / "other" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        evaluate(EvalConfig(model=str(onnx_path), data=str(data)))


def test_eval_cli(tiny_models, tiny_data, tmp_path):
    _, onnx_path, _ = tiny_models
    runner = CliRunner()
    r = runner.invoke(_cli(), ["eval", str(onnx_path), "--data", str(tiny_data / "val"), "--out", str(tmp_path / "o"),
                               "--json", str(tmp_path / "e.json"), "--batch", "4"])
    assert r.exit_code == 0, r.output
    assert "balanced accuracy" in r.output and (tmp_path / "e.json").is_file()
    r = runner.invoke(_cli(), ["eval", str(onnx_path), "--data", str(tiny_data / "val"), "--device", "tpu"])
    assert isinstance(r.exception, InputError) and "tpu" in str(r.exception)
    r = runner.invoke(_cli(), ["eval", str(tmp_path / "model.tflite"), "--data", str(tiny_data / "val")])
    assert isinstance(r.exception, InputError) and ".onnx" in str(r.exception)


# ------------------------------------------------------------------------------------------------ bench


def test_bench_end_to_end_small(tiny_models, tiny_data, tmp_path):
    from edgecls.evaluation.bench import BenchConfig, run_bench

    ckpt, onnx_path, _ = tiny_models
    cfg = BenchConfig(
        models=(str(onnx_path),), reference=str(ckpt), batches=(1, 2), threads=(1,), warmup=1, iters=3, rounds=2,
        images=str(tiny_data / "val"), peak=False, json_path=str(tmp_path / "b.json"),
        markdown_path=str(tmp_path / "b.md"),
    )
    res = run_bench(cfg)
    assert res.reference == str(ckpt)
    assert {(r.model, r.batch, r.threads) for r in res.latency} == {
        (m, b, 1) for m in (str(ckpt), str(onnx_path)) for b in (1, 2)
    }
    for r in res.latency:
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.p50_spread_ms[0] <= r.p50_ms <= r.p50_spread_ms[1]
        ref = next(x for x in res.latency if x.model == str(ckpt) and x.batch == r.batch)
        assert r.ratio_p50 == pytest.approx(r.p50_ms / ref.p50_ms)
        assert r.ratio_throughput == pytest.approx(r.images_per_s / ref.images_per_s)
    assert {a.path: a.size_bytes for a in res.artifacts} == {
        str(ckpt): ckpt.stat().st_size, str(onnx_path): onnx_path.stat().st_size
    }
    g = {a.kind: a.gmacs_per_image for a in res.artifacts}
    assert g["onnx"] == pytest.approx(g["checkpoint"], rel=1e-6) and g["onnx"] > 0
    assert [p.input for p in res.preprocess][-1].startswith("1000×1000 JPEG")
    assert len(res.preprocess) == 5 and all(p.ms_per_frame > 0 for p in res.preprocess)
    assert {e.model for e in res.end_to_end} == {str(ckpt), str(onnx_path)}
    md = (tmp_path / "b.md").read_text()
    assert "| model | precision |" in md and "(reference)" in md and "machine:" in md
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["machine"]["cpu"]["logical_cores"] >= 1 and len(d["latency"]) == 4


def test_bench_cli_validates_options(tiny_models):
    ckpt, onnx_path, _ = tiny_models
    runner = CliRunner()
    r = runner.invoke(_cli(), ["bench", str(onnx_path), "--batch", "1,x"])
    assert isinstance(r.exception, InputError) and "--batch" in str(r.exception)
    r = runner.invoke(_cli(), ["bench", str(onnx_path), "--reference", str(onnx_path)])
    assert isinstance(r.exception, InputError) and "--reference" in str(r.exception)


def test_measure_fp32_peak_small():
    from edgecls.evaluation.peak import measure_fp32_peak

    peak = measure_fp32_peak((1,), n=128, reps=2)
    assert "onnxruntime MatMul (MLAS)" in peak["by_method"]
    best = peak["gflops"]["1"]
    assert best > 0 and best == max(v["1"] for v in peak["by_method"].values())


def test_count_macs_resnet18_224():
    from edgecls.evaluation.macs import count_macs_torch
    from edgecls.reference.models import build_model

    assert count_macs_torch(build_model("resnet18", 1000), 224) == pytest.approx(1.814, abs=0.005)


def test_interleaved_round_robin_and_summary():
    from edgecls.evaluation.timing import interleaved, summarize

    calls = []
    fns = [lambda k=k: calls.append(k) for k in range(3)]
    res = interleaved(fns, warmup=1, iters=2, rounds=3)
    assert calls[:3] == [0, 1, 2]  # warm-up
    assert calls[3:] == [0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 2, 2, 0, 0, 1, 1]  # start rotates each round
    assert [len(r) for r in res] == [3, 3, 3] and all(len(x) == 2 for r in res for x in r)
    s = summarize([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [10.0, 10.0, 10.0]], batch=2)
    assert s["p50_ms"] == 3.0 and s["p50_spread_ms"] == (2.0, 10.0)
    assert s["images_per_s"] == pytest.approx(2000 / 3)


def test_parse_int_list():
    from edgecls.evaluation.bench import parse_int_list

    assert parse_int_list("1, 8,1", "--batch") == (1, 8)
    for bad in ("", "0", "a", "1,-2"):
        with pytest.raises(InputError):
            parse_int_list(bad, "--batch")


def test_cpu_info_parses_x86_and_arm():
    from edgecls.evaluation.machine import cpu_info, machine_summary

    x86 = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\ncpu MHz\t\t: 2000.000\nphysical id\t: 0\n"
        "core id\t\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nphysical id\t: 0\ncore id\t\t: 1\n"
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n"
    )
    c = cpu_info(x86)
    assert c["model"] == "Intel(R) Xeon(R) Gold 6338" and c["physical_cores"] == 2 and c["mhz"] == 2000.0
    assert c["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp\nCPU part\t: 0xd42\n"
    a = cpu_info(arm)
    assert a["isa"] == ["asimd", "asimddp"] and a["physical_cores"] is None
    line = machine_summary({"cpu": c, "gpus": [], "versions": {"python": "3.8"}})
    assert "Gold 6338" in line and "avx512_vnni" in line and "GPU none" in line


def test_edgecls_cli_exit_codes(tiny_models, tiny_data, tmp_path, capsys):
    """Through the real `edgecls` entry point: success is 0, bad input is 2 with a message naming the problem."""
    from edgecls.cli import main

    _, onnx_path, _ = tiny_models
    with pytest.raises(SystemExit) as e:
        main(["eval", str(onnx_path), "--data", str(tiny_data / "val"), "--no-files"])
    assert e.value.code == 0
    assert "confusion matrix" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["eval", str(onnx_path), "--data", str(tiny_data)])
    assert e.value.code == 2
    assert "split root" in capsys.readouterr().err


def test_bench_without_reference(tiny_models):
    from edgecls.evaluation.bench import BenchConfig, run_bench
    from edgecls.evaluation.tables import latency_table

    _, onnx_path, _ = tiny_models
    res = run_bench(BenchConfig(models=(str(onnx_path),), batches=(2,), threads=(1,), warmup=0, iters=2, rounds=1,
                                peak=False, preprocess=False, end_to_end=False))
    assert res.reference is None and any("no PyTorch checkpoint" in n for n in res.notes)
    (row,) = res.latency
    assert row.ratio_p50 is None and row.peak_fraction is None and row.images_per_s > 0
    assert "–" in res.markdown() and "model.onnx" in latency_table(res)
