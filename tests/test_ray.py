"""``edgecls ray`` on a local Ray (2 CPUs, one session for the module): the records of ``edgecls run`` (bad files
included) exactly once, resumable, a worker killed mid-job, the driver killed mid-job and run again."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="edgecls[ray] is not installed")
pytest.importorskip("cv2")

import ray_helpers as H  # noqa: E402
from cli_helpers import run_cli  # noqa: E402
from runtime_helpers import export_tiny_onnx, write_images  # noqa: E402

from edgecls.runtime.scale.config import ScaleConfig  # noqa: E402
from edgecls.runtime.scale.job import run_job  # noqa: E402

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.cloudpickle.register_pickle_by_value(H)  # the test actors travel with the job (tests/ is no package)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def env(tmp_path_factory, session):
    d = tmp_path_factory.mktemp("ray")
    export_tiny_onnx(d / "model.onnx")
    folder = d / "photos"
    write_images(folder / "a", n=24, seed=1)
    write_images(folder / "b", n=16, seed=2)
    bad = H.write_bad_files(folder / "c")
    want, code = H.run_records(str(d / "model.onnx"), str(folder))
    return {"dir": d, "model": str(d / "model.onnx"), "folder": str(folder), "bad": bad, "want": want,
            "run_code": code}


def _cfg(env, out, **kw):
    kw.setdefault("shard_size", 8)
    return ScaleConfig(model=env["model"], input=env["folder"], out=str(out), max_pixels=H.MAX_PIXELS,
                       progress=False, **kw)


def test_cli_gives_run_records_bad_files_and_exit_6(env, capsys):
    out = env["dir"] / "out_cli"
    code = run_cli(["ray", env["model"], env["folder"], "--out", out, "--shard-size", "8", "--max-pixels",
                    H.MAX_PIXELS, "--no-progress"])
    err = capsys.readouterr().err
    assert env["run_code"] == 6 and code == 6, err  # some inputs failed, as `edgecls run` says
    got = H.read_records(out / "records.jsonl")
    H.assert_same_records(got, env["want"])
    assert [r["index"] for r in got] == list(range(len(env["want"])))  # in input order
    assert {r["id"] for r in got} == {Path(r["path"]).relative_to(env["folder"]).as_posix() for r in got}
    errors = {Path(r["path"]).name: r["error"] for r in got if "error" in r}
    assert set(errors) == {p.name for k, p in env["bad"].items() if k != "sixteen"}  # 16-bit PNGs are read
    assert "over the limit" in errors["bad_oversized.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == sum("error" not in r for r in env["want"]) and summary["errors"] == 4
    assert summary["exit_code"] == 6 and summary["duplicates_dropped"] == 0
    assert "edgecls ray:" in err and "errors 4" in err
    # the same command again: every shard already committed, nothing classified, the same output
    code = run_cli(["ray", env["model"], env["folder"], "--out", out, "--shard-size", "8", "--max-pixels",
                    H.MAX_PIXELS, "--no-progress"])
    again = json.loads((out / "summary.json").read_text())
    assert code == 6 and again["classified_this_run"] == 0 and again["resumed_shards"] == again["shards"] == 6
    assert H.read_records(out / "records.jsonl") == got
    # another job into the same folder is refused (exit 2), naming what differs
    code = run_cli(["ray", env["model"], env["folder"], "--out", out, "--shard-size", "8", "--threshold", "0.9",
                    "--no-progress"])
    assert code == 2 and "another job" in capsys.readouterr().err


def test_manifest_ids_and_parquet(env):
    import pyarrow.parquet as pq

    manifest = env["dir"] / "catalog.csv"
    want = [r for r in env["want"] if "error" not in r][:10]
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "title"])
        for n, r in enumerate(want):
            w.writerow([f"sku-{n}", os.path.relpath(r["path"], manifest.parent), "phone"])
    res = run_job(ScaleConfig(model=env["model"], input=str(manifest), out=str(env["dir"] / "out_pq"),
                              fmt="parquet", shard_size=4, max_pixels=H.MAX_PIXELS, progress=False))
    assert res.exit_code() == 0 and res.classified == 10
    table = pq.read_table(env["dir"] / "out_pq" / "records.parquet").to_pylist()
    assert [r["id"] for r in table] == [f"sku-{n}" for n in range(10)]
    by_path = {r["path"]: r for r in want}
    for row in table:
        rec = json.loads(row["record"])
        ref = by_path[rec["path"]]
        assert rec["label"] == row["label"] == ref["label"] and rec["decision"] == ref["decision"]
        assert abs(row["confidence"] - ref["confidence"]) <= 1e-5


def test_worker_killed_mid_job_output_exactly_once(env, tmp_path, monkeypatch):
    names = sorted(r["path"] for r in env["want"])
    monkeypatch.setattr(H.DieOnceActor, "target", names[len(names) // 2])  # ~50 %: the worker dies there, once
    monkeypatch.setattr(H.DieOnceActor, "flag", str(tmp_path / "died"))
    res = run_job(_cfg(env, tmp_path / "out", actors=1), actor_cls=H.DieOnceActor)
    assert (tmp_path / "died").exists(), "the worker never died: the test proved nothing"
    assert res.exit_code() == 6
    H.assert_same_records(H.read_records(tmp_path / "out" / "records.jsonl"), env["want"])


def test_driver_killed_mid_job_then_rerun(env, session, tmp_path):
    folder = tmp_path / "many"
    write_images(folder, n=160, seed=3)
    want, _ = H.run_records(env["model"], str(folder))
    worklog, out = tmp_path / "work.log", tmp_path / "out"
    envvars = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(HERE / "ray_helpers.py"), env["model"], str(folder), str(out), session, "8",
           str(worklog), "0.03"]
    p = subprocess.Popen(cmd, env=envvars, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    shards = out / "shards"
    while time.time() < deadline and p.poll() is None:
        if shards.is_dir() and len([n for n in os.listdir(shards) if n.endswith(".jsonl")]) >= 10:
            break
        time.sleep(0.05)
    assert p.poll() is None, p.stdout.read().decode()[-3000:]  # still running at ~50 %: kill it
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    committed = len([n for n in os.listdir(shards) if n.endswith(".jsonl")])
    assert 10 <= committed < 20 and not (out / "records.jsonl").exists()
    r = subprocess.run(cmd, env=envvars, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
    assert r.returncode == 0, r.stdout.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_shards"] == committed
    H.assert_same_records(H.read_records(out / "records.jsonl"), want)
    work = len(worklog.read_text().split())
    print(f"driver killed with {committed}/20 shards committed; work {work} photos for 160 = {work / 160:.2f}x")
    assert 160 <= work <= 1.2 * 160, f"{work} photos classified for 160"


def test_uri_prefix_is_read_through_pyarrow_with_the_same_loader(env, tmp_path):
    """A URI prefix (file:// here; s3:// and gs:// take the same path): photos fetched as bytes and decoded in the
    actor give the labels and probabilities of the local run; a bad file's error names its URI."""
    folder = Path(env["folder"]) / "c"
    uri = "file://" + str(folder)
    res = run_job(ScaleConfig(model=env["model"], input=uri, out=str(tmp_path / "out"), max_pixels=H.MAX_PIXELS,
                              progress=False))
    assert res.exit_code() == 6
    got = {r["path"]: r for r in H.read_records(tmp_path / "out" / "records.jsonl")}
    want = {r["path"]: r for r in env["want"] if r["path"].startswith(str(folder))}
    assert set(got) == {"file://" + p for p in want}
    for p, w in want.items():
        g = got["file://" + p]
        assert g["id"] == Path(p).name and g.get("label") == w.get("label")
        if "error" in w:
            assert "error" in g and repr("file://" + p) in g["error"]
        else:
            assert abs(g["confidence"] - w["confidence"]) <= 1e-5
