"""`edgecls run --collect DIR`: the rules, the caps (rate, disk, near duplicates), the manifest's fields, a full or
read-only disk, and a slow disk that must not slow the loop."""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.core.errors import InputError
from edgecls.runtime.collect.config import CollectConfig, parse_rules
from edgecls.runtime.collect.manifest import Manifest, read_manifest
from edgecls.runtime.collect.rules import NearDuplicates, RateCap, dhash, hamming, reasons
from edgecls.runtime.collect.sink import Collector
from edgecls.runtime.decision import Prediction
from edgecls.runtime.sources.frame import Frame

MODEL = {"name": "m.onnx", "sha256": "ab" * 32, "classes": ["a", "b", "c"]}


def pred(probs=(0.5, 0.3, 0.2), set_=None, unknown=None, decision=None, label=None) -> Prediction:
    classes = ("a", "b", "c")
    top = int(np.argmax(probs))
    return Prediction(label=label or classes[top], confidence=float(probs[top]), class_index=top,
                      class_name=classes[top], probs=tuple(probs), topk=((classes[top], float(probs[top])),),
                      decision=decision or classes[top], threshold=0.5, set=set_, unknown=unknown,
                      ood_score=None if unknown is None else (2.0 if unknown else 0.1))


def photo(seed: int, size=(64, 80)) -> np.ndarray:
    """A smooth random image (a photo-like scene: its dHash is stable under noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.BICUBIC))


def frame(image, source="cam", i=0) -> Frame:
    return Frame(source=source, index=i, image=image, frame=i)


def record(f: Frame, p: Prediction) -> dict:
    from edgecls.runtime.run.records import prediction_record

    return prediction_record(f, p, 1.0, 1.0, 1)


def lines(folder: Path):
    return list(read_manifest(folder))


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


# -- rules and caps, without a model ----------------------------------------------------------------------------
def test_rules_fire_on_what_they_name():
    rules = ("unknown", "empty-set", "multi-set", "uncertain", "low-margin")
    assert reasons(pred(unknown=True, set_=("a",)), rules, 0.1) == ["unknown"]
    assert reasons(pred(set_=()), rules, 0.1) == ["empty-set"]
    assert reasons(pred(set_=("a", "b"), decision="uncertain"), rules, 0.1) == ["multi-set", "uncertain"]
    assert reasons(pred((0.45, 0.4, 0.15)), rules, 0.1) == ["low-margin"]
    assert reasons(pred((0.45, 0.4, 0.15)), ("unknown",), 0.1) == []
    assert reasons(pred((0.9, 0.05, 0.05), set_=("a",), unknown=False), rules, 0.1) == []


def test_rule_options_are_checked():
    assert parse_rules("unknown, low-margin:0.2") == (("unknown", "low-margin"), 0.2)
    assert parse_rules(None)[0] == ("unknown", "empty-set", "multi-set", "uncertain", "low-margin")
    with pytest.raises(InputError, match="valid: unknown,empty-set"):
        CollectConfig("x", ("unknwon",))
    with pytest.raises(InputError, match="only low-margin takes a value"):
        parse_rules("unknown:3")
    with pytest.raises(InputError, match="--collect-max-mb"):
        CollectConfig("x", max_mb=0)
    with pytest.raises(InputError, match="--collect-rate"):
        CollectConfig("x", rate_per_min=-1)


def test_rate_cap_counts_the_last_minute_per_source_and_rule():
    now = [0.0]
    cap = RateCap(3, clock=lambda: now[0])
    kept = 0
    for _ in range(10):
        kept += cap.take("cam1", ["unknown"])
        now[0] += 1.0
    assert kept == 3
    assert cap.take("cam2", ["unknown"]) and cap.take("cam1", ["low-margin"])  # other source, other rule: own room
    assert not cap.available("cam1", ["unknown"])
    now[0] = 61.0
    assert cap.available("cam1", ["unknown"])


def test_dhash_same_scene_close_other_scene_far():
    a = photo(1)
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    assert dhash(a) == dhash(a.copy())
    assert hamming(dhash(a), dhash(noisy)) <= 4
    assert dhash(a[:, :, ::-1].copy(), bgr=True) == dhash(a)  # channel order handled
    assert dhash(Image.fromarray(a)) is not None
    far = [hamming(dhash(photo(1)), dhash(photo(s))) for s in range(2, 30)]
    assert min(far) > 4, far
    d = NearDuplicates(4)
    d.add("cam", dhash(a))
    assert d.seen("cam", dhash(noisy)) and not d.seen("other-cam", dhash(noisy))


# -- the sink ---------------------------------------------------------------------------------------------------
def make(tmp_path: Path, **kw) -> Collector:
    return Collector(CollectConfig(str(tmp_path / "col"), **kw), MODEL)


def offer(c: Collector, image, p=None, source="cam", i=0, live=False):
    f = frame(image, source, i)
    p = p or pred(set_=())
    c.offer(f, p, record(f, p), live)


def test_copies_saved_once_with_the_manifest_fields(tmp_path):
    c = make(tmp_path)
    same = photo(7)
    for i in range(100):
        offer(c, same.copy(), i=i)
    offer(c, photo(8), pred(unknown=True), source="cam", i=100)
    offer(c, photo(9), pred((0.9, 0.05, 0.05), set_=("a",)), i=101)  # not flagged
    c.close()
    got = lines(c.root)
    assert [d["event"] for d in got] == ["start", "kept", "kept", "end"]
    start, k1, k2, end = got
    assert start["model"]["sha256"] == MODEL["sha256"] and start["rules"][0] == "unknown"
    for k in (k1, k2):
        assert k["model"]["name"] == "m.onnx" and k["model"]["sha256"] == MODEL["sha256"]
        assert k["source"] == "cam" and k["time"] > 1e9 and k["time_utc"].endswith("Z")
        assert {"label", "confidence", "topk", "decision", "margin", "reasons", "dhash", "image"} <= set(k)
        assert (c.root / k["image"]).is_file()
        with Image.open(c.root / k["image"]) as im:
            assert im.format == "JPEG" and im.size == (80, 64)
    assert k1["reasons"] == ["empty-set"] and k1["set"] == [] and k2["reasons"] == ["unknown"] and k2["unknown"]
    assert end["kept"] == 2 and end["duplicate"] == 99 and end["flagged"] == 101
    assert len(list((c.root / "images").iterdir())) == 2 and no_temps(c.root)
    assert "2 kept of 101 flagged, 99 near-duplicates" in c.summary_lines()[0]


def test_rate_cap_holds_on_live_sources_only(tmp_path):
    c = make(tmp_path, rate_per_min=5, queue=500)
    for i in range(40):
        offer(c, photo(100 + i), source="cam", i=i, live=True)
        offer(c, photo(200 + i), source="folder", i=i, live=False)
    c.close()
    kept = [d for d in lines(c.root) if d["event"] == "kept"]
    assert sum(d["source"] == "cam" for d in kept) == 5
    assert sum(d["source"] == "folder" for d in kept) == 40
    assert c.outcomes()["rate_capped"] == 35


def test_disk_cap_stops_collection_and_holds(tmp_path, caplog):
    c = make(tmp_path, max_mb=0.05)  # 52 kB: a few images
    for i in range(60):
        offer(c, photo(300 + i, size=(200, 240)), i=i)
    c.close()
    used = sum(p.stat().st_size for p in c.root.rglob("*") if p.is_file())
    assert used <= 0.05 * 2**20
    kept = [d for d in lines(c.root) if d["event"] == "kept"]
    assert 1 <= len(kept) < 60 and c.outcomes()["stopped"] == 60 - len(kept)
    assert c.stopped and "--collect-max-mb" in c.stopped
    assert sum("collection stopped" in r.getMessage() for r in caplog.records) == 1
    # a second run on a folder over its cap starts stopped, says why, and keeps nothing
    c2 = make(tmp_path, max_mb=0.04)
    offer(c2, photo(999))
    c2.close()
    assert "already holds" in c2.stopped and c2.outcomes()["kept"] == 0


def test_enospc_mid_run_stops_once_leaves_nothing_half_written(tmp_path, caplog):
    c = make(tmp_path, queue=100)
    calls = {"n": 0}
    real = c.write_image

    def full_after_three(path, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    c.write_image = full_after_three
    for i in range(20):
        offer(c, photo(400 + i), i=i)
    c.close()
    kept = [d for d in lines(c.root) if d["event"] == "kept"]
    assert len(kept) == 3 and c.outcomes()["stopped"] == 17
    assert "No space left" in c.stopped
    assert sum("collection stopped" in r.getMessage() for r in caplog.records) == 1
    assert sorted(p.name for p in (c.root / "images").iterdir()) == sorted(Path(d["image"]).name for d in kept)
    assert no_temps(c.root)


def test_manifest_batch_that_fails_is_cut_back_and_its_images_removed(tmp_path):
    c = make(tmp_path, queue=100)

    class FullFile:
        def __init__(self, f):
            self.f = f

        def tell(self):
            return self.f.tell()

        def write(self, data):
            self.f.write(data[: len(data) // 2])  # half a batch reaches the file, then the disk is full
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.f.close()

    c.manifest._f = FullFile(c.manifest._f)
    offer(c, photo(500))
    c.close()
    raw = (c.root / "manifest.jsonl").read_bytes()
    assert raw.endswith(b"\n") and [json.loads(x)["event"] for x in raw.splitlines()] == ["start"]
    assert list((c.root / "images").iterdir()) == [] and c.stopped


def test_torn_manifest_line_is_cut_at_open(tmp_path, caplog):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "manifest.jsonl").write_bytes(b'{"event": "start"}\n{"event": "kept", "id": "x"')
    m = Manifest(folder)
    m.append([{"event": "end"}])
    m.close()
    assert [d["event"] for d in read_manifest(folder)] == ["start", "end"]
    assert "torn" in caplog.text


def test_unwritable_folder_is_refused_at_start(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the folder"):
        make(blocker)

    import edgecls.runtime.collect.sink as sink

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(sink, "temp_path", read_only)
    with pytest.raises(InputError, match="cannot write there: Read-only file system"):
        make(tmp_path)


def _mount(target: Path, opts: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make_fs(name: str, opts: str) -> Path:
        p = tmp_path / name
        if os.geteuid() != 0 or not _mount(p, opts):
            pytest.skip("cannot mount a tmpfs here (needs root in a container that allows it)")
        mounted.append(p)
        return p

    yield make_fs
    for p in mounted:
        subprocess.run(["umount", str(p)], capture_output=True)


def test_real_read_only_and_full_disks(tmpfs):
    ro = tmpfs("ro", "size=4m,ro")
    with pytest.raises(InputError, match="Read-only file system"):
        Collector(CollectConfig(str(ro / "col")), MODEL)
    tiny = tmpfs("tiny", "size=1m")
    with pytest.raises(InputError, match="the disk is full"):
        Collector(CollectConfig(str(tiny / "col")), MODEL)
    small = tmpfs("small", "size=12m")
    c = Collector(CollectConfig(str(small / "col"), queue=500), MODEL)
    (small / "filler").write_bytes(b"\0" * (small_free(small) - 300_000))  # leave ~0.3 MB
    for i in range(80):
        offer(c, photo(600 + i, size=(300, 400)), i=i)
    c.close()
    kept = [d for d in lines(c.root) if d["event"] == "kept"]
    assert 1 <= len(kept) < 80 and "No space left" in c.stopped
    assert sorted(p.name for p in (c.root / "images").iterdir()) == sorted(Path(d["image"]).name for d in kept)
    assert no_temps(c.root)


def small_free(p: Path) -> int:
    import shutil

    return shutil.disk_usage(p).free


# -- in the run loop ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from runtime_helpers import export_tiny_onnx, tiny_spec

    path = tmp_path_factory.mktemp("collect_model") / "tiny.onnx"
    export_tiny_onnx(path, tiny_spec(positive=None))
    return path


def test_run_collect_over_a_folder_keeps_each_photo_once(tiny_model, tmp_path, capsys):
    from cli_helpers import run_cli_captured as cli

    src = tmp_path / "photos"
    src.mkdir()
    for i in range(12):
        Image.fromarray(photo(700 + i)).save(src / f"p{i:02d}.jpg")
    for i in range(100):
        Image.fromarray(photo(7)).save(src / f"copy{i:03d}.png")
    col = tmp_path / "col"
    code, out, err = cli(["run", str(tiny_model), str(src), "--collect", str(col), "--collect-rules",
                          "low-margin:0.999", "--summary-json", str(tmp_path / "s.json")], capsys)
    assert code == 0, err
    assert "collect: 13 kept of 112 flagged, 99 near-duplicates" in err
    kept = [d for d in read_manifest(col) if d["event"] == "kept"]
    assert len(kept) == 13 and len({d["path"] for d in kept}) == 13
    from edgecls.core.fileio import file_sha256

    assert kept[0]["model"]["sha256"] == file_sha256(tiny_model) and kept[0]["model"]["file"] == "tiny.onnx"
    assert kept[0]["model"]["version"] and kept[0]["model"]["name"] == json.loads(out.splitlines()[0])["model"]["name"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["collect"]["kept"] == 13 and summary["collect"]["duplicate"] == 99


def test_run_collect_into_an_unwritable_folder_exits_2_before_work(tiny_model, tmp_path, capsys):
    from cli_helpers import run_cli_captured as cli

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = cli(["run", str(tiny_model), str(blocker), "--collect", str(blocker / "col")], capsys)
    assert code == 2 and "--collect" in err and "cannot create the folder" in err and out == ""


class _Camera:
    """A fast fake camera: a new photo-like frame each read."""

    def __init__(self):
        self.i = 0

    def isOpened(self):
        return True

    def read(self):
        time.sleep(0.002)
        self.i += 1
        return True, photo(1000 + self.i)

    def release(self):
        pass

    def get(self, prop):
        return 0.0


def _live_run(model: Path, tmp_path: Path, collect, slow_s: float = 0.0):
    from edgecls.runtime.classifier import Classifier
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.sources.live import LiveSource

    clf = Classifier.load(str(model), device="cpu", threads=1)
    real_init = Collector.__init__

    def slow_init(self, *a, **k):
        real_init(self, *a, **k)
        real = self.write_image

        def slow(path, data):
            time.sleep(slow_s)
            return real(path, data)

        self.write_image = slow

    cfg = RunConfig(model=str(model), sources=("fake",), max_frames=150, collect=collect)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Collector, "__init__", slow_init)
        stats = run(cfg, out=io.StringIO(), err=io.StringIO(), classifier=clf,
                    sources=[LiveSource("camera:fake", _Camera)])
    clf.close()
    return stats


def test_slow_disk_never_slows_a_live_loop(tiny_model, tmp_path):
    """Every frame flagged, each image write sleeping 0.3 s: the camera loop keeps its pace, drops are counted."""
    every = CollectConfig(str(tmp_path / "col"), ("low-margin",), margin=0.999, rate_per_min=0, dup_bits=-1)
    base = _live_run(tiny_model, tmp_path, None)
    slow = _live_run(tiny_model, tmp_path, every, slow_s=0.3)
    assert base.frames == slow.frames == 150
    # the loop's time, first to last frame (the end of the run then waits, bounded, for what is queued): blocking
    # on the writer would take 150 x 0.3 s = 45 s; the loop may not be more than a little slower
    loop_s = [s.t_last - s.t0 for s in (base, slow)]
    assert loop_s[1] < 1.5 * loop_s[0] + 1.0, loop_s
    out = slow.collect.outcomes()
    assert out["dropped_slow_disk"] > 100 and out["kept"] >= 1
    assert out["kept"] + out["dropped_slow_disk"] + out["write_error"] == slow.collect.flagged == 150
