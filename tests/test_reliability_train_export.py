"""Issue 9 for training and export: decoder exceptions and link loops in train (1, 3), stale artifacts (8),
foreseeable failures as messages with their own exit codes — disk full, a diverging run, tracebacks only with -v —
(9), and the smaller ones (10): orphan temp files, file modes, an empty --calib refused before the FP32 export, a
valid embedded spec preferred over a broken sidecar.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli_captured as cli
from fuzz_helpers import garbled_second_idat, tiny_onnx_classifier

from edgecls.core import errors as E
from edgecls.core import fileio
from edgecls.runtime.model_io import load_model_spec
from edgecls.runtime.spec import METADATA_KEY, ModelSpec, SpecError, sidecar_path

SMALL = ["--arch", "mobilenet_v3_small", "--weights", "none", "--image-size", "32", "--no-progress"]


def full_disk_for(monkeypatch, name: str) -> None:
    """Writes of ``name`` (through edgecls.core.fileio's temp files) go to /dev/full: ENOSPC, like a full disk."""
    real = fileio.temp_path

    def temp_path(path, suffix=""):
        tmp = real(path, suffix)
        if Path(path).name == name:
            tmp.unlink()
            tmp.symlink_to("/dev/full")
        return tmp

    monkeypatch.setattr(fileio, "temp_path", temp_path)


# ------------------------------------------------------------------------------------ 1 + 3 in training


@pytest.mark.slow
def test_1_3_training_skips_undecodable_files_and_link_loops(tmp_path):
    pytest.importorskip("torch")
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.synthetic import make_image_folder
    from edgecls.train.config import RECIPES, TrainConfig
    from edgecls.train.data import discover
    from edgecls.train.trainer import train

    data = make_image_folder(tmp_path / "data", counts={"mobile": 8, "other": 8}, size=40)
    (data / "train" / "other" / "garbled.png").write_bytes(garbled_second_idat())  # header fine, decode fails
    os.symlink(".", data / "train" / "mobile" / "self")  # counted 41 times before issue 9
    os.symlink("..", data / "train" / "up")  # would have been a class "up" holding every image
    split = discover(data)
    assert split.classes == ("mobile", "other") and split.counts("train") == [8, 9]
    cfg = TrainConfig(data=str(data), arch="mobilenet_v3_small", weights="none", out=str(tmp_path / "run"),
                      recipe=RECIPES["seed"].override(epochs=1, image_size=32, batch_size=4), progress=False)
    res = train(cfg)
    assert any(p.endswith("garbled.png") for p in res.summary["data"]["skipped_paths"])
    ck = load_checkpoint(res.best_path)
    train_items = [p for p, _ in ck.items("train")]
    assert len(train_items) == len(set(train_items)) == 16 and not any("garbled" in p for p in train_items)


# ------------------------------------------------------------------------------------ 8. stale artifacts


def _sidecar(out: Path, stem: str, sha: str, suffix: str = ".onnx") -> None:
    from runtime_helpers import tiny_spec

    (out / f"{stem}{suffix}").write_bytes(b"model bytes " + sha.encode())
    sidecar_path(out / f"{stem}{suffix}").write_text(tiny_spec().replace(source_sha256=sha).to_json())


def test_8_other_checkpoints_artifacts_are_moved_aside(tmp_path):
    from edgecls.export.stale import foreign_artifacts, set_aside_foreign

    a, b = "a" * 64, "b" * 64
    out = tmp_path / "E"
    out.mkdir()
    _sidecar(out, "model", a)
    _sidecar(out, "model_fp16", a)
    _sidecar(out, "model_int8_cpu", b)  # this checkpoint's: stays
    (out / "model.onnx.failed").write_bytes(b"failed")
    (out / "parity.json").write_text(json.dumps({"source_sha256": a, "passed": True, "artifacts": {
        "model.onnx": {"file": "model.onnx.failed", "source_sha256": a}}}))
    (out / "notes.json").write_text("{}")  # not a spec: says nothing, stays
    assert set(p.name for p in foreign_artifacts(out, b)) == {
        "model.onnx", "model.json", "model.onnx.failed", "model_fp16.onnx", "model_fp16.json"}
    msgs = set_aside_foreign(out, b)
    assert len(msgs) == 1 and "another checkpoint" in msgs[0] and "aaaaaaaaaaaa" in msgs[0]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "model_int8_cpu.json", "model_int8_cpu.onnx", "notes.json", "parity.json"]
    moved = out / "stale" / a[:12]
    assert (moved / "model_fp16.onnx").read_bytes() == b"model bytes " + a.encode()  # moved, never deleted
    assert (moved / "parity.json").is_file()
    assert set_aside_foreign(out, b) == []  # idempotent


@pytest.mark.slow
def test_8_export_of_another_checkpoint_never_presents_the_old_artifacts(tiny_data, tmp_path):
    pytest.importorskip("onnx")
    from models_helpers import make_tiny_checkpoint

    from edgecls.export.pipeline import ExportConfig, export_checkpoint

    ck_a = make_tiny_checkpoint(tiny_data, tmp_path / "A" / "best.pt", seed=0)
    ck_b = make_tiny_checkpoint(tiny_data, tmp_path / "B" / "best.pt", seed=1)
    out = tmp_path / "E"
    assert export_checkpoint(ExportConfig(ck_a, out=out, fp16=True, parity_count=8)).passed
    orphan = out / ".model.onnx.abcd1234.tmp.onnx"  # what a kill -9 mid-write leaves
    orphan.write_bytes(b"x" * 1000)
    res = export_checkpoint(ExportConfig(ck_b, out=out, parity_count=8))
    assert res.passed and any("another checkpoint" in w for w in res.warnings)
    assert not (out / "model_fp16.onnx").exists() and not orphan.exists()
    parity = json.loads((out / "parity.json").read_text())
    assert set(parity["artifacts"]) == {"model.onnx"} and parity["source_sha256"] == res.source_sha256
    assert load_model_spec(out / "model.onnx").source_sha256 == res.source_sha256
    assert (out / "stale" / fileio.file_sha256(ck_a)[:12] / "model_fp16.onnx").is_file()


# ------------------------------------------------------------------------------------ 9. foreseeable failures


def test_9_disk_full_is_a_message_and_exit_8(tmp_path, monkeypatch, capsys):
    from runtime_helpers import write_images

    model = tiny_onnx_classifier(tmp_path / "m.onnx")
    write_images(tmp_path / "photos", n=2)
    full_disk_for(monkeypatch, "summary.json")
    code, out, err = cli(["run", model, tmp_path / "photos", "--summary-json", tmp_path / "summary.json"], capsys)
    assert code == E.EXIT_WRITE and "No space left on device" in err and "Traceback" not in err
    assert len(out.splitlines()) == 2  # the records written before the failure are out
    assert not list(tmp_path.glob(".summary.json*"))


def test_9_checkpoint_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from runtime_helpers import tiny_spec

    from edgecls.reference.checkpoint import Checkpoint, save_checkpoint

    ck = Checkpoint(spec=tiny_spec(), state_dict={"w": torch.zeros(1000)}, epoch=1, metrics={}, data={})
    path = tmp_path / "best.pt"
    save_checkpoint(ck, path)
    before = path.read_bytes()
    full_disk_for(monkeypatch, "best.pt")
    with pytest.raises(OSError) as e:
        save_checkpoint(ck, path)
    assert e.value.errno == errno.ENOSPC and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # the temp file is gone
    err = E.as_write_error(e.value)
    assert err is not None and err.exit_code == 8 and "No space left" in str(err)
    torch_style = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert "disk is probably full" in str(E.as_write_error(torch_style))
    assert E.as_write_error(ValueError("nope")) is None


@pytest.mark.slow
def test_9_diverging_run_is_a_message_and_exit_9(tiny_data, tmp_path, capsys):
    pytest.importorskip("torch")
    code, _, err = cli(["train", "--data", tiny_data, *SMALL, "--recipe", "seed", "--epochs", "1", "--lr", "1e12",
                        "--batch-size", "8", "--out", tmp_path / "run"], capsys)
    assert code == E.EXIT_DIVERGED, err
    assert "training diverged at epoch 1" in err and "--lr 1e+12" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "best.pt").exists()  # nothing written from a broken model


def test_9_check_finite_names_what_went_wrong(tmp_path):
    from types import SimpleNamespace

    from edgecls.train.trainer import check_finite

    setup = SimpleNamespace(run_dir=tmp_path, recipe=SimpleNamespace(lr=0.5))
    state = SimpleNamespace(best_epoch=2)
    ok = np.zeros((4, 2))
    check_finite(setup, state, 3, "finetune", {"train_loss": 0.3, "train_samples": 8}, ok)
    bad = ok.copy()
    bad[1, 0] = np.nan
    with pytest.raises(E.TrainingDiverged, match=r"epoch 3 .*1 of 4 val logit rows.*--lr 0\.5.*epoch 2"):
        check_finite(setup, state, 3, "finetune", {"train_loss": 0.3, "train_samples": 8}, bad)
    with pytest.raises(E.TrainingDiverged, match="train loss inf"):
        check_finite(setup, state, 3, "finetune", {"train_loss": float("inf"), "train_samples": 8}, ok)


def test_9_tracebacks_only_with_verbose(tmp_path, monkeypatch, capsys):
    from edgecls.runtime.run import loop

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(loop, "run", boom)
    model = tiny_onnx_classifier(tmp_path / "m.onnx")
    code, _, err = cli(["run", model, tmp_path], capsys)
    assert code == E.EXIT_FAILURE and "unexpected RuntimeError: boom" in err and "Traceback" not in err
    code, _, err = cli(["-v", "run", model, tmp_path], capsys)
    assert code == E.EXIT_FAILURE and "Traceback" in err

    def unreadable(*a, **k):  # e.g. `edgecls bench --images DIR` reaching a broken file: bad input, exit 2
        from edgecls.runtime.preprocess import ImageReadError

        raise ImageReadError("cannot read image 'x.jpg': SyntaxError: broken PNG file")

    monkeypatch.setattr(loop, "run", unreadable)
    code, _, err = cli(["run", model, tmp_path], capsys)
    assert code == E.EXIT_INPUT and "error: cannot read image 'x.jpg'" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ 10. smaller ones


@pytest.mark.slow
def test_10_disk_full_mid_training_then_resume_cleans_orphans(tiny_data, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from edgecls.reference.checkpoint import load_checkpoint

    run = tmp_path / "run"
    common = ["--data", tiny_data, *SMALL, "--recipe", "seed", "--batch-size", "8"]
    code, _, err = cli(["train", *common, "--epochs", "1", "--out", run], capsys)
    assert code == 0, err
    last = (run / "last.pt").read_bytes()
    with monkeypatch.context() as m:
        full_disk_for(m, "last.pt")
        code, _, err = cli(["train", "--resume", run, "--epochs", "2", "--no-progress"], capsys)
    assert code == E.EXIT_WRITE and "No space left on device" in err and "Traceback" not in err
    assert (run / "last.pt").read_bytes() == last and load_checkpoint(run / "last.pt").epoch == 1
    orphan = run / ".last.pt.k3j4h5g6.tmp"  # what a kill -9 during a checkpoint write leaves
    orphan.write_bytes(b"\0" * 100_000)
    code, _, err = cli(["train", "--resume", run, "--epochs", "2", "--no-progress"], capsys)
    assert code == 0, err
    assert not orphan.exists() and load_checkpoint(run / "last.pt").epoch == 2


def test_10_orphan_temp_files_are_recognised_exactly(tmp_path):
    keep = ["best.pt", ".hidden", ".best.pt", ".best.pt.tmp", "notes.tmp", ".x.short.tmp"]
    for n in keep:
        (tmp_path / n).write_text("x")
    t1 = fileio.temp_path(tmp_path / "best.pt")
    t2 = fileio.temp_path(tmp_path / "model.onnx", suffix=".onnx")
    assert sorted(fileio.remove_orphan_temps(tmp_path)) == sorted([t1, t2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_10_outputs_keep_the_umask_mode(tmp_path):
    from edgecls.runtime.run.saver import Saver
    from edgecls.runtime.sources.frame import Frame

    mask = os.umask(0o022)
    try:
        fileio.write_text(tmp_path / "summary.json", "{}")
        saver = Saver(tmp_path / "save")
        saver.save_image(Frame(source="s", index=0, save_name="a/b.jpg"), np.zeros((8, 8, 3), np.uint8))
        for p in (tmp_path / "summary.json", tmp_path / "save" / "a" / "b.jpg"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p  # not mkstemp's 0600
    finally:
        os.umask(mask)


def test_10_empty_calib_is_refused_before_the_fp32_export(tiny_data, tmp_path):
    pytest.importorskip("onnx")
    from models_helpers import make_tiny_checkpoint

    from edgecls.export import pipeline
    from edgecls.export.pipeline import ExportConfig, export_checkpoint

    ck = make_tiny_checkpoint(tiny_data, tmp_path / "best.pt")
    (tmp_path / "calib").mkdir()
    calls = []
    real = pipeline._Exporter.timed

    def timed(self, key, fn, *a):
        calls.append(key)
        return real(self, key, fn, *a)

    pipeline._Exporter.timed = timed
    try:
        with pytest.raises(E.InputError, match="holds no images"):
            export_checkpoint(ExportConfig(ck, out=tmp_path / "E", int8=True, calib=tmp_path / "calib"))
    finally:
        pipeline._Exporter.timed = real
    assert calls == ["load checkpoint"] and not (tmp_path / "E" / "model.onnx").exists()


def test_10_valid_embedded_spec_wins_over_a_broken_sidecar(tmp_path, caplog):
    import onnx

    m = tiny_onnx_classifier(tmp_path / "m.onnx")
    sidecar_path(m).write_text("{not json", encoding="utf-8")
    spec = load_model_spec(m)
    assert spec.arch == "tinynet" and "ignoring the broken sidecar" in caplog.text
    # the other way round: a broken embedded spec, a valid sidecar
    proto = onnx.load(str(m))
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            good, p.value = p.value, '{"arch": 1}'
    onnx.save(proto, str(m))
    sidecar_path(m).write_text(good, encoding="utf-8")
    assert load_model_spec(m) == ModelSpec.from_json(good) and "is broken" in caplog.text
    sidecar_path(m).unlink()
    with pytest.raises(SpecError):
        load_model_spec(m)
