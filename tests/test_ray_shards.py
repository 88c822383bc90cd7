"""``edgecls ray``'s commit protocol and inputs, without Ray: shards committed once and complete, duplicates
dropped, another job's folder refused, unfinished temp files removed; manifests checked with clear errors."""
from __future__ import annotations

import json
import os

import pytest

from edgecls.core.errors import InputError
from edgecls.core.fileio import temp_path
from edgecls.runtime.scale.inputs import list_inputs
from edgecls.runtime.scale.shards import ShardCollector, ShardStore


def _rec(i: int) -> str:
    return json.dumps({"index": i, "label": "mobile"})


def test_collector_commits_each_shard_once_complete_and_drops_duplicates(tmp_path):
    store = ShardStore(tmp_path, n=10, shard_size=4, fmt="jsonl", job={"inputs_sha256": "x"})
    assert store.open() == set() and store.count == 3
    c = ShardCollector(store)
    for i in (5, 4, 9, 6):  # out of order, across shards
        assert c.add(i // 4, i, _rec(i))
    assert not store.path(1).exists()  # shard 1 has 3 of its 4 records: nothing written
    assert not c.add(1, 5, _rec(5))  # a retried batch: its record again
    assert c.add(1, 7, _rec(7)) and store.path(1).exists()
    assert not c.add(1, 4, _rec(4))  # a late retry of a committed shard
    assert c.duplicates == 2
    with pytest.raises(RuntimeError, match="incomplete"):
        c.check_complete()  # shard 2 has 9 but not 8: never committed
    lines = store.path(1).read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [4, 5, 6, 7]
    with pytest.raises(RuntimeError, match="not in shard"):
        c.add(0, 7, _rec(7))


def test_reopen_keeps_committed_shards_removes_temps_and_refuses_another_job(tmp_path):
    job = {"inputs_sha256": "abc", "model_sha256": "m"}
    store = ShardStore(tmp_path, n=6, shard_size=3, fmt="jsonl", job=job)
    store.open()
    store.commit(1, [_rec(i) for i in range(3, 6)])
    orphan = temp_path(store.path(0), ".jsonl")  # what a driver killed mid-write leaves
    orphan.write_text("half a shard")
    again = ShardStore(tmp_path, n=6, shard_size=3, fmt="jsonl", job=job)
    assert again.open() == {1} and again.missing({1}) == [0] and not orphan.exists()
    with pytest.raises(RuntimeError):
        again.commit(0, [_rec(0)])  # a shard is written whole or not at all
    other = ShardStore(tmp_path, n=6, shard_size=2, fmt="jsonl", job=job)
    with pytest.raises(InputError, match="another job .*shard_size"):
        other.open()


def test_parquet_shards_merge_in_order(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    store = ShardStore(tmp_path, n=5, shard_size=2, fmt="parquet", job={})
    store.open()
    for k in (2, 0, 1):
        lo, hi = store.bounds(k)
        store.commit(k, [_rec(i) for i in range(lo, hi)])
    table = pq.read_table(store.merge())
    assert [json.loads(r)["index"] for r in table.column("record").to_pylist()] == list(range(5))
    assert table.column("label").to_pylist() == ["mobile"] * 5


def test_manifest_ids_paths_and_errors(tmp_path):
    (tmp_path / "img").mkdir()
    m = tmp_path / "m.csv"
    m.write_text("id,path\nsku-1,img/a.jpg\nsku-2,/abs/b.jpg\nsku-3,s3://bucket/c.jpg\n")
    inp = list_inputs(str(m))
    assert inp.ids == ("sku-1", "sku-2", "sku-3")
    assert inp.paths == (os.path.join(str(tmp_path.resolve()), "img/a.jpg"), "/abs/b.jpg", "s3://bucket/c.jpg")
    m.write_text("sku,file\n1,a.jpg\n")
    with pytest.raises(InputError, match="no id column .*it has sku, file"):
        list_inputs(str(m))
    m.write_text("id,path\n1,a.jpg\n1,b.jpg\n")
    with pytest.raises(InputError, match="row 2: id '1' appears twice"):
        list_inputs(str(m))
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(str(tmp_path / "nowhere"))


def test_without_ray_exit_4_and_nothing_written(tmp_path, monkeypatch):
    import sys

    from cli_helpers import run_cli

    monkeypatch.setitem(sys.modules, "ray", None)  # the runtime-only install: no Ray
    assert run_cli(["ray", tmp_path / "model.onnx", tmp_path, "--out", tmp_path / "out", "--no-progress"]) == 4
    assert not (tmp_path / "out").exists()
