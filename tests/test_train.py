"""``edgecls train`` on tiny generated folders: outputs, checkpoints, resume, atomic writes, bad input, weights."""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from edgecls.core.errors import InputError
from edgecls.reference.checkpoint import load_checkpoint
from edgecls.reference.models import WeightsError, build_model
from edgecls.synthetic import make_image_folder
from edgecls.train.cli import train_command
from edgecls.train.config import RECIPES, TrainConfig
from edgecls.train.data import DataError, EpochSampler, discover
from edgecls.train.rundir import choose_run_dir
from edgecls.train.trainer import resume_config, train

TINY = ["--arch", "resnet18", "--weights", "none", "--image-size", "32", "--no-progress"]
SMALL = ["--arch", "mobilenet_v3_small", "--weights", "none", "--image-size", "32", "--no-progress"]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(train_command)
    return app


def _cli(args, expect_ok=True):
    result = CliRunner().invoke(_app(), [str(a) for a in args])
    if expect_ok and result.exit_code != 0:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}") from result.exception
    return result


def _rows(run: Path):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _headless_state(arch: str, path: Path) -> Path:
    """A backbone-only state dict (head removed), like ../shared/weights/*_features.pth."""
    torch.manual_seed(1)
    model = build_model(arch, 2, "none")
    head = {"mobilenet_v3_small": "classifier.3.", "mobilenet_v2": "classifier.1.", "resnet18": "fc."}[arch]
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith(head)}, path)
    return path


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_end_to_end_resnet18(tiny_data, tmp_path):
    run = tmp_path / "run"
    res = _cli(["--data", tiny_data, *TINY, "--epochs", "2", "--batch-size", "8", "--positive", "mobile",
                "--out", run])
    assert "balanced accuracy" in res.output and "confusion matrix" in res.output and str(run) in res.output
    for name in ("best.pt", "last.pt", "metrics.csv", "summary.json", "config.json", "loss.png", "accuracy.png",
                 "confusion_matrix.png", "pr_curve.png", "reliability.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not list(run.glob(".*.tmp")), "temp files left behind"

    raw = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == "edgecls.checkpoint/1" and raw["train_state"] is None
    ck = load_checkpoint(run / "best.pt")
    assert ck.spec.arch == "resnet18" and ck.spec.classes == ("mobile", "other")
    assert (ck.spec.preprocess.crop, ck.spec.preprocess.resize) == (32, 37)
    assert ck.spec.positive == "mobile" and ck.spec.temperature > 0 and 0 <= ck.spec.threshold <= 1
    assert set(ck.versions) >= {"torch", "torchvision", "edgecls"}
    assert ck.metrics["val"]["confusion"] and "calibration" in ck.metrics
    # the recorded split: absolute paths with labels matching their class folder
    for split, n in (("train", 32), ("val", 10)):
        items = ck.items(split)
        assert len(items) == n
        for p, y in items:
            assert os.path.isabs(p) and Path(p).parent.name == ck.spec.classes[y]
    last = load_checkpoint(run / "last.pt")
    assert last.epoch == 2 and last.train_state["epoch"] == 2 and len(last.train_state["history"]) == 2

    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["phase"] == "finetune" for r in rows)
    assert all(float(r["train_loss"]) > 0 for r in rows) and all(0 <= float(r["val_pos_ap"]) <= 1 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == ck.epoch and summary["spec"]["temperature"] == pytest.approx(ck.spec.temperature)
    assert summary["calibration"]["nll_after"] <= summary["calibration"]["nll_before"] + 1e-9
    assert summary["data"]["train_counts"] == {"mobile": 12, "other": 20}

    # what was validated is what ships: the runtime preprocessing + the saved weights give the recorded metrics
    from edgecls.runtime.metrics import classification_report, softmax
    from edgecls.runtime.preprocess import load_image, preprocess

    model = ck.build_model()
    items = ck.items("val")
    x = preprocess([load_image(p) for p, _ in items], ck.spec.preprocess)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    rep = classification_report([y for _, y in items], softmax(logits), ck.spec.classes)
    assert rep.accuracy == pytest.approx(summary["val"]["accuracy"])
    assert rep.confusion == tuple(tuple(r) for r in summary["val"]["confusion"])


def test_fast_recipe_head_phase_then_finetune(tiny_data, tmp_path, monkeypatch):
    """Head on cached features (eval preprocessing = runtime preprocess_one), then fine-tuning; mobilenet_v3_small."""
    import edgecls.train.data as data_mod

    calls = []
    real = data_mod.preprocess_one
    monkeypatch.setattr(data_mod, "preprocess_one", lambda im, spec, **kw: calls.append(spec) or real(im, spec, **kw))
    weights = _headless_state("mobilenet_v3_small", tmp_path / "mbv3_features.pth")
    run = tmp_path / "run"
    cfg = TrainConfig(
        data=str(tiny_data), arch="mobilenet_v3_small", weights=str(weights), out=str(run), positive="mobile",
        recipe=RECIPES["fast"].override(epochs=1, image_size=48, batch_size=8), progress=False,
    )
    res = train(cfg)
    assert [h["phase"] for h in res.history] == ["head", "finetune"]
    assert res.history[0]["epoch"] == 0 and res.history[0]["train_samples"] == 32
    assert res.summary["head"]["l2"] in RECIPES["fast"].head_l2_grid and len(res.summary["head"]["cv"]) == 4
    assert len(calls) >= 32 + 10 and all(s.crop == 48 for s in calls)  # features: runtime preprocessing
    low = RECIPES["fast"].override(train_size=160)
    assert low.override(image_size=112).train_size == 80  # a train-low/test-high ratio is kept
    ck = load_checkpoint(res.best_path)
    assert ck.epoch == res.best_epoch and ck.spec.arch == "mobilenet_v3_small"
    ck.build_model()  # strict load


# ---------------------------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resume_continues_and_matches_uninterrupted(tiny_data, tmp_path):
    common = ["--data", tiny_data, *TINY, "--recipe", "seed", "--batch-size", "8", "--workers", "0"]
    full, part = tmp_path / "full", tmp_path / "part"
    _cli([*common, "--epochs", "2", "--out", full])
    _cli([*common, "--epochs", "1", "--out", part])  # "interrupted" after epoch 1
    assert len(_rows(part)) == 1
    first = _rows(part)[0]
    res = _cli(["--resume", part, "--epochs", "2", "--no-progress"])
    assert str(part) in res.output
    rows_full, rows_part = _rows(full), _rows(part)
    assert rows_part[0] == first, "resume rewrote the history of epoch 1"
    assert [r["epoch"] for r in rows_part] == ["1", "2"]
    for a, b in zip(rows_full, rows_part):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_balanced_acc", "lr"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), (a["epoch"], key)
    sa, sb = load_checkpoint(full / "last.pt").state_dict, load_checkpoint(part / "last.pt").state_dict
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5), k
    # nothing left to do: a second resume refreshes outputs without training
    _cli(["--resume", part / "last.pt", "--epochs", "2", "--no-progress"])
    assert len(_rows(part)) == 2


@pytest.fixture(scope="module")
def one_epoch_run(tiny_data, tmp_path_factory) -> Path:
    """One finished 1-epoch run (seed recipe, mobilenet_v3_small), shared by the tests below: read-only, copy it
    before writing into it."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    _cli(["--data", tiny_data, *SMALL, "--recipe", "seed", "--epochs", "1", "--batch-size", "8", "--out", run])
    return run


def test_resume_refuses_changed_settings(one_epoch_run, tmp_path):
    run = one_epoch_run
    res = _cli(["--resume", run, "--lr", "0.1"], expect_ok=False)
    assert isinstance(res.exception, InputError) and "--lr" in str(res.exception)
    with pytest.raises(InputError, match="cannot change"):
        resume_config(run, batch_size=4)
    with pytest.raises(InputError, match="does not exist"):
        resume_config(tmp_path / "nowhere")
    with pytest.raises(InputError, match="has no last.pt"):
        resume_config(tmp_path)
    with pytest.raises(InputError, match="no train state"):
        resume_config(run / "best.pt")


def test_crash_while_writing_keeps_previous_checkpoints(one_epoch_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    before_best = load_checkpoint(run / "best.pt")
    before_bytes = (run / "best.pt").read_bytes()

    real_save = torch.save

    def torn_save(obj, f, *a, **kw):  # writes half a checkpoint, then the "machine dies"
        real_save(obj, f, *a, **kw)
        f.seek(0)
        f.truncate(100)
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(torch, "save", torn_save)
    cfg, last = resume_config(run, epochs=2, progress=False)
    with pytest.raises(OSError, match="simulated crash"):
        train(cfg, resume_from=last)
    monkeypatch.setattr(torch, "save", real_save)
    assert (run / "best.pt").read_bytes() == before_bytes
    assert load_checkpoint(run / "best.pt").epoch == before_best.epoch == 1
    assert load_checkpoint(run / "last.pt").epoch == 1
    assert not list(run.glob(".*.tmp")), "temp files left behind"


# ------------------------------------------------------------------------------------------- bad input


def _folder(tmp_path, name="data", **kw):
    return make_image_folder(tmp_path / name, size=40, **kw)


def test_bad_data_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        discover(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(e.value) and "valid layouts" in str(e.value)

    one = _folder(tmp_path, "one", counts={"mobile": 3})
    with pytest.raises(DataError, match="only one class"):
        discover(one)

    mism = _folder(tmp_path, "mism", counts={"mobile": 3, "other": 3})
    shutil.rmtree(mism / "val" / "other")
    make_image_folder(mism, counts={"phone": 2}, splits=("val",), size=40)
    with pytest.raises(DataError, match="class folders differ") as e:
        discover(mism)
    assert "phone" in str(e.value) and "other" in str(e.value)

    empty = _folder(tmp_path, "empty", counts={"mobile": 3, "other": 3})
    for f in (empty / "train" / "other").iterdir():
        f.unlink()
    (empty / "train" / "other" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no readable images") as e:
        discover(empty)
    assert str(empty / "train" / "other") in str(e.value)

    noval = _folder(tmp_path, "noval", counts={"mobile": 3, "other": 3}, splits=("train",))
    with pytest.raises(DataError, match="val"):
        discover(noval)


def test_bad_options_exit_code_2(tiny_data, tmp_path, monkeypatch, capsys):
    from edgecls.train.__main__ import main

    cases = [
        (["--data", tmp_path / "nope", *TINY], "does not exist"),
        (["--data", tiny_data, *TINY, "--positive", "tablet", "--epochs", "1", "--out", tmp_path / "a"], "tablet"),
        (["--data", tiny_data, *TINY, "--arch", "vgg99", "--out", tmp_path / "b"], "vgg99"),
        (["--data", tiny_data, *TINY, "--recipe", "slow"], "slow"),
        (["--data", tiny_data, *TINY, "--val-fraction", "1.5"], "--val-fraction"),
        (["--data", tiny_data, *TINY, "--weights", tmp_path / "w.pth"], "w.pth"),
        ([*TINY], "--data is required"),
    ]
    for args, needle in cases:
        monkeypatch.setattr(sys, "argv", ["edgecls-train", *[str(a) for a in args]])
        with pytest.raises(SystemExit) as e:
            main()
        err = capsys.readouterr().err
        assert e.value.code == 2, (args, err)
        assert needle in err, (needle, err)


def test_unreadable_images_skipped_and_counted(tmp_path):
    data = _folder(tmp_path, counts={"mobile": 8, "other": 8})
    (data / "train" / "other" / "garbage.jpg").write_bytes(b"this is not a jpeg")  # fails the header check
    good = (data / "val" / "mobile" / "mobile_0000.jpg").read_bytes()
    (data / "train" / "mobile" / "truncated.jpg").write_bytes(good[: len(good) * 3 // 4])  # fails only on decode
    (data / "val" / "other" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    split = discover(data)
    assert {Path(p).name for p, _ in split.skipped} == {"garbage.jpg", "broken.png"}

    cfg = TrainConfig(data=str(data), arch="mobilenet_v3_small", weights="none", out=str(tmp_path / "run"),
                      recipe=RECIPES["seed"].override(epochs=1, image_size=32, batch_size=4), progress=False)
    res = train(cfg)
    skipped = res.summary["data"]["skipped_paths"]
    assert res.summary["data"]["skipped"] == 3, skipped
    assert any(p.endswith("truncated.jpg") for p in skipped)
    ck = load_checkpoint(res.best_path)
    assert not any(p.endswith(("truncated.jpg", "garbage.jpg")) for p, _ in ck.items("train"))


def test_single_folder_stratified_split_is_seeded(tmp_path):
    data = _folder(tmp_path, counts={"mobile": 10, "other": 20}, splits=())
    a, b, c = discover(data, 0.2, seed=0), discover(data, 0.2, seed=0), discover(data, 0.2, seed=1)
    assert a.layout == "class folders" and a.classes == ("mobile", "other")
    assert a.counts("val") == [2, 4] and a.counts("train") == [8, 16]
    assert a.val == b.val and a.val != c.val
    assert not {p for p, _ in a.train} & {p for p, _ in a.val}


def test_run_dir_never_overwrites(tmp_path):
    cfg = TrainConfig(data="x", project=str(tmp_path), name="exp")
    assert choose_run_dir(cfg) == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp2").mkdir()
    assert choose_run_dir(cfg) == tmp_path / "exp3"
    out = tmp_path / "mine"
    out.mkdir()
    (out / "best.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="--exist-ok"):
        choose_run_dir(cfg.replace(out=str(out)))
    assert choose_run_dir(cfg.replace(out=str(out), exist_ok=True)) == out


def test_epoch_sampler_balanced_sharded_and_seeded():
    labels = [0] * 10 + [1] * 90
    s = EpochSampler(labels, 2, balanced=True, seed=3)
    s.set_epoch(1)
    idx = s.indices()
    assert len(idx) == 100 and 30 < sum(labels[i] == 0 for i in idx) < 70
    assert idx == s.indices()
    s.set_epoch(2)
    assert idx != s.indices()
    r0 = EpochSampler(labels, 2, seed=3, rank=0, world_size=2)
    r1 = EpochSampler(labels, 2, seed=3, rank=1, world_size=2)
    assert len(r0) == len(r1) == 50 and sorted(r0.indices() + r1.indices()) == list(range(100))


# ---------------------------------------------------------------------------------------------- weights


def test_weights_path_headless_backbone_and_mismatch(tmp_path, caplog):
    feats = _headless_state("mobilenet_v3_small", tmp_path / "feats.pth")
    with caplog.at_level(logging.INFO, logger="edgecls.reference.models"):
        model = build_model("mobilenet_v3_small", 2, str(feats))
    assert "classifier.3.weight" in caplog.text  # the missing head is reported
    ref = torch.load(feats, weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], ref["features.0.0.weight"])
    other = _headless_state("resnet18", tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match="does not match the mobilenet_v3_small backbone"):
        build_model("mobilenet_v3_small", 2, str(other))


def test_imagenet_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*a, **kw):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as e:
        build_model("resnet18", 2, "imagenet")
    msg = str(e.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in msg and "resnet18-" in msg and ".pth" in msg


@pytest.mark.shared
def test_shared_mbv2_backbone_loads_with_head_missing(shared_mbv2, caplog):
    with caplog.at_level(logging.INFO, logger="edgecls.reference.models"):
        build_model("mobilenet_v2", 2, str(shared_mbv2))
    assert "classifier.1.weight" in caplog.text and "classifier.1.bias" in caplog.text
    with pytest.raises(WeightsError, match="resnet18 backbone"):
        build_model("resnet18", 2, str(shared_mbv2))


@pytest.mark.shared
@pytest.mark.slow
def test_shared_mobile_trains_a_few_steps(shared_mobile, shared_mbv2, tmp_path):
    """Head phase on real photos (64 px) plus one short fine-tuning epoch of 64 samples.

    A subset (every mobile, every 8th other; symlinks) keeps it fast; the full set is the acceptance run.
    """
    sub = tmp_path / "mobile"
    for split in ("train", "val"):
        for cls, step in (("mobile", 1), ("other", 8)):
            (sub / split / cls).mkdir(parents=True)
            for f in sorted((shared_mobile / split / cls).iterdir())[::step]:
                (sub / split / cls / f.name).symlink_to(f)
    cfg = TrainConfig(
        data=str(sub), arch="mobilenet_v2", weights=str(shared_mbv2), out=str(tmp_path / "run"),
        positive="mobile", progress=False,
        recipe=RECIPES["fast"].override(epochs=1, image_size=64, epoch_samples=64, batch_size=32),
    )
    res = train(cfg)
    assert [h["phase"] for h in res.history] == ["head", "finetune"]
    assert res.history[1]["train_samples"] == 64
    assert res.summary["data"]["train_counts"] == {"mobile": 35, "other": 141}
    assert res.history[0]["val_balanced_acc"] > 0.75  # ImageNet features separate phones even at 64 px
    assert np.isfinite(res.calibration.temperature) and res.calibration.threshold is not None


# ------------------------------------------------------------------------------------------- confidence


def test_calibration_temperature_and_threshold_margin():
    from edgecls.runtime.metrics import binary_metrics_at, softmax
    from edgecls.train.calibrate import calibrate

    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 270)
    signal = np.where(y[:, None] == np.arange(2)[None, :], 1.0, 0.0) + rng.normal(0, 0.6, (300, 2))
    over = 8.0 * signal  # an overconfident model: T > 1 fixes it
    c = calibrate(over, y, ["mobile", "other"], positive="mobile", target_precision=0.9)
    assert c.temperature > 1.5 and c.nll_after < c.nll_before and c.ece_after < c.ece_before
    m = binary_metrics_at(softmax(over, c.temperature)[:, 0], y == 0, c.threshold.threshold)
    assert m["precision"] == pytest.approx(c.threshold.precision) and m["recall"] == pytest.approx(c.threshold.recall)
    assert c.threshold.achieved and c.threshold.precision >= 0.9

    sep = np.zeros((300, 2))
    sep[y == 0, 0] = rng.uniform(2, 6, 30)
    sep[y == 1, 1] = rng.uniform(2, 6, 270)
    c = calibrate(sep, y, ["mobile", "other"], positive="mobile", target_precision=1.0)
    assert c.temperature == 1.0  # perfectly separated val: T -> 0 would only saturate probabilities
    s = softmax(sep)[:, 0]
    assert s[y == 1].max() < c.threshold.threshold < s[y == 0].min()  # margin on both sides
