"""Helpers for the ``edgecls ray`` tests: a photo folder with every kind of bad file, ``edgecls run``'s records on
it, actors that fail on purpose or count their work, and a driver script a test can kill (``python THIS ...``)."""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

MAX_PIXELS = 20_000  # the "oversized" photo (150x150) is over it; the generated photos (<= 90x60) are not


def write_bad_files(folder: Path) -> Dict[str, Path]:
    """Unreadable (not an image), truncated JPEG, zero-byte, 16-bit PNG (readable: high byte), oversized."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    files = {
        "unreadable": folder / "bad_unreadable.jpg",
        "truncated": folder / "bad_truncated.jpg",
        "zero": folder / "bad_zero.png",
        "sixteen": folder / "bad_sixteen.png",
        "oversized": folder / "bad_oversized.png",
    }
    files["unreadable"].write_bytes(b"this is not an image at all" * 10)
    files["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["zero"].write_bytes(b"")
    Image.fromarray((rng.integers(0, 65536, (40, 50))).astype(np.uint16)).save(files["sixteen"])
    Image.fromarray(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)).save(files["oversized"])
    return files


def run_records(model: str, folder: str, **kw) -> tuple:
    """``edgecls run MODEL FOLDER``'s records and exit code (in-process, the real loop)."""
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run

    out, err = io.StringIO(), io.StringIO()
    stats = run(RunConfig(model=model, sources=(folder,), max_pixels=MAX_PIXELS, **kw), out=out, err=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], stats.exit_code()


def read_records(path: Path) -> List[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def assert_same_records(got: List[dict], want: List[dict]) -> None:
    """Joined by path: each photo exactly once; label, decision, set, unknown and errors equal; probabilities
    within 1e-5; source and index as ``edgecls run`` numbered them."""
    paths = [r["path"] for r in got]
    assert len(paths) == len(set(paths)), "a photo has two records"
    by_path = {r["path"]: r for r in got}
    assert set(by_path) == {r["path"] for r in want}, "missing or extra photos"
    for w in want:
        g = by_path[w["path"]]
        assert {k: g.get(k) for k in ("source", "index", "error", "label", "decision", "set", "unknown")} == \
            {k: w.get(k) for k in ("source", "index", "error", "label", "decision", "set", "unknown")}, w["path"]
        assert set(g) - {"id"} == set(w), w["path"]
        if "error" not in w:
            assert abs(g["confidence"] - w["confidence"]) <= 1e-5
            if w.get("p_positive") is not None:
                assert abs(g["p_positive"] - w["p_positive"]) <= 1e-5
            assert [t["label"] for t in g["topk"]] == [t["label"] for t in w["topk"]]
            np.testing.assert_allclose([t["p"] for t in g["topk"]], [t["p"] for t in w["topk"]], atol=1e-5)


from edgecls.runtime.scale.actor import ClassifyActor  # noqa: E402  (after the helpers a runtime-free test uses)


# Ray workers do not see the test's environment (their raylet started before): the test actors' settings are class
# attributes, which travel with the class (tests register this module to be pickled by value).
class DieOnceActor(ClassifyActor):
    """Kills its own worker process (``os._exit``) when it meets the photo whose path ends with ``target``, the
    first time only (the ``flag`` file records that it died)."""

    target = ""
    flag = ""

    def classify(self, ids, paths, indices):
        if any(str(p).endswith(self.target) for p in paths) and not Path(self.flag).exists():
            Path(self.flag).write_text(f"died in pid {os.getpid()}\n")
            os._exit(1)
        return super().classify(ids, paths, indices)


class CountingActor(ClassifyActor):
    """Appends one line per photo it classifies to ``worklog`` (the work done, kept or lost), taking ``delay`` s
    per photo (so a test can stop the job half-way)."""

    worklog = ""
    delay = 0.0

    def classify(self, ids, paths, indices):
        time.sleep(self.delay * len(paths))
        recs = super().classify(ids, paths, indices)
        with open(self.worklog, "a") as f:
            f.write("".join(f"{i}\n" for i in indices))
        return recs


class NodeLogActor(ClassifyActor):
    """Appends the Ray node it runs on to ``nodelog``, once per call."""

    nodelog = ""

    def classify(self, ids, paths, indices):
        import ray

        with open(self.nodelog, "a") as f:
            f.write(ray.get_runtime_context().get_node_id() + "\n")
        return super().classify(ids, paths, indices)


if __name__ == "__main__":  # a driver a test kills: python ray_helpers.py MODEL INPUT OUT ADDRESS SHARD WORKLOG DELAY
    import logging

    from edgecls.runtime.scale.config import ScaleConfig
    from edgecls.runtime.scale.job import run_job

    logging.basicConfig(level=logging.WARNING)
    model, inp, out, address, shard, worklog, delay = sys.argv[1:8]
    CountingActor.worklog, CountingActor.delay = worklog, float(delay)
    cfg = ScaleConfig(model=model, input=inp, out=out, address=address, shard_size=int(shard), actors=1,
                      max_pixels=MAX_PIXELS, progress=False)
    sys.exit(run_job(cfg, actor_cls=CountingActor).exit_code())
