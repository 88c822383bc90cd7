"""``edgecls ray`` on a simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one CPU per node): one
model actor per node, the records of ``edgecls run``, exactly once."""
from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="edgecls[ray] is not installed")
pytest.importorskip("cv2")

import ray_helpers as H  # noqa: E402
from runtime_helpers import export_tiny_onnx, write_images  # noqa: E402

from edgecls.runtime.scale.config import ScaleConfig  # noqa: E402
from edgecls.runtime.scale.job import run_job  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    ray.cloudpickle.register_pickle_by_value(H)
    yield c
    ray.shutdown()
    c.shutdown()


def test_two_nodes_one_actor_each_records_of_run(cluster, tmp_path, monkeypatch):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    export_tiny_onnx(tmp_path / "model.onnx")
    folder = tmp_path / "photos"
    write_images(folder / "a", n=30, seed=4)
    H.write_bad_files(folder / "b")
    want, code = H.run_records(str(tmp_path / "model.onnx"), str(folder))
    nodelog = tmp_path / "nodes.log"
    monkeypatch.setattr(H.NodeLogActor, "nodelog", str(nodelog))
    cfg = ScaleConfig(model=str(tmp_path / "model.onnx"), input=str(folder), out=str(tmp_path / "out"),
                      shard_size=3, actors=2, cpus_per_actor=1, max_pixels=H.MAX_PIXELS, progress=False)
    res = run_job(cfg, actor_cls=H.NodeLogActor)
    assert code == 6 and res.exit_code() == 6 and res.classified == len(want) and res.duplicates == 0
    H.assert_same_records(H.read_records(Path(cfg.out) / "records.jsonl"), want)
    assert len(set(nodelog.read_text().split())) == 2, "the two actors did not run on the two nodes"
