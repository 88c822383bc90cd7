"""How the run loop's parts work together: a drift alarm switches collection on for its source (``--on-drift
collect``), and a model swapped in is watched against its own drift reference, not the previous model's."""
from __future__ import annotations

import io

import pytest
from cli_helpers import run_cli_captured as cli
from runtime_helpers import export_tiny_onnx, read_jsonl, write_images

from edgecls.runtime.drift.reference import reference_path
from edgecls.runtime.run.config import RunConfig


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("wiring")
    export_tiny_onnx(d / "model.onnx")
    write_images(d / "calib", n=40, seed=3)
    photos = write_images(d / "photos", n=4, seed=4)
    return {"dir": d, "model": str(d / "model.onnx"), "calib": str(d / "calib"), "photos": photos}


def _frozen_video(path, image_path, frames=80):
    cv2 = pytest.importorskip("cv2")
    img = cv2.imread(str(image_path))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (img.shape[1], img.shape[0]))
    for _ in range(frames):
        vw.write(img)
    vw.release()
    return path


def test_on_drift_collect_keeps_a_drifting_sources_frames(env, capsys, tmp_path):
    code, _, err = cli(["drift-reference", env["model"], "--images", env["calib"], "--threads", "1"], capsys)
    assert code == 0, err
    video = _frozen_video(tmp_path / "frozen.avi", env["photos"][0])
    col = tmp_path / "col"
    # low-margin:1e-9 all but never fires: whatever is kept was kept because the source drifted
    args = ["run", env["model"], str(video), "--threads", "1", "--collect", str(col),
            "--collect-rules", "low-margin:1e-9"]
    code, out, err = cli(args, capsys)
    assert code == 0, err
    assert not any(r["drift"] for r in read_jsonl(out)[:50]) and read_jsonl(out)[-1]["drift"] == ["frozen"]
    from edgecls.runtime.collect.manifest import read_manifest

    assert [d for d in list(read_manifest(col)) if d["event"] == "kept"] == []  # without --on-drift: nothing
    code, out, err = cli(args + ["--on-drift", "collect"], capsys)
    assert code == 0, err
    kept = [d for d in list(read_manifest(col)) if d["event"] == "kept"]
    # the frozen frames are one picture: kept once (near-duplicates still apply), for the drift and nothing else
    assert len(kept) == 1 and kept[0]["reasons"] == ["drift:frozen"] and kept[0]["frame"] >= 59, kept


def test_on_drift_needs_collect_and_names_its_one_action(env):
    from edgecls.core.errors import InputError

    with pytest.raises(InputError, match="needs --collect"):
        RunConfig(model=env["model"], sources=("x",), on_drift="collect")
    with pytest.raises(InputError, match="the one action is 'collect'"):
        RunConfig(model=env["model"], sources=("x",), on_drift="email")


def test_a_swapped_in_model_is_watched_against_its_own_reference(env, capsys, tmp_path):
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.drift import drift_after_swap

    cfg = RunConfig(model=env["model"], sources=("x",))
    other = tmp_path / "other.onnx"
    export_tiny_onnx(other, seed=7)
    with Classifier.load(str(other), threads=1) as clf:
        err = io.StringIO()
        assert drift_after_swap(cfg, str(other), clf, err) is None  # none beside it: said once, no signals
        assert "no drift reference" in err.getvalue()
        code, _, e = cli(["drift-reference", str(other), "--images", env["calib"], "--threads", "1"], capsys)
        assert code == 0, e
        watch = drift_after_swap(cfg, str(other), clf, io.StringIO())
        assert watch is not None and watch.reference.model_sha256 != _sha(env["model"])
        # the previous model's reference given by --drift-reference is not carried over to another model
        cfg2 = RunConfig(model=env["model"], sources=("x",), drift_reference=str(reference_path(env["model"])))
        assert drift_after_swap(cfg2, str(other), clf, io.StringIO()) is not None


def _sha(path):
    from edgecls.core.fileio import file_sha256

    return file_sha256(path)
