"""How ``edgecls run`` uses the cores (runtime/run/plan.py), ``--batch auto``, ``--streams``, and the loader's
OpenCV path (``open_for``): same records whatever the plan, same pixels whatever the decoder."""
from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from runtime_helpers import export_tiny_onnx, read_jsonl, tiny_spec, write_images

from edgecls.core.errors import InputError
from edgecls.runtime.preprocess import ImageReadError, open_for, open_rgb, preprocess_one
from edgecls.runtime.run.config import RunConfig
from edgecls.runtime.run.loop import run
from edgecls.runtime.run.plan import auto_batch, plan_inference
from edgecls.runtime.spec import PreprocessSpec

FILES = [SimpleNamespace(live=False)]
CAMERA = [SimpleNamespace(live=True)]


def cfg(**kw):
    base = dict(model="m.onnx", sources=("x",))
    base.update(kw)
    return RunConfig(**base)


def test_plan_throughput_for_files_latency_for_live_and_overrides():
    p = plan_inference(cfg(), FILES, cpus=2)
    assert (p.threads, p.streams, p.session_config) == (1, 2, {})  # one-thread calls side by side
    assert plan_inference(cfg(), FILES, cpus=64).streams == 8  # capped: the decode threads could not feed more
    p = plan_inference(cfg(threads=2), FILES, cpus=2)  # the user's threads: as many calls as fit, no spinning
    assert (p.threads, p.streams, p.session_config) == (2, 1, {"session.intra_op.allow_spinning": "0"})
    p = plan_inference(cfg(streams=3), FILES, cpus=6)
    assert (p.threads, p.streams) == (2, 3)
    live = plan_inference(cfg(), CAMERA, cpus=2)  # a camera: one call with all the threads (latency)
    assert (live.threads, live.streams, live.session_config) == (None, 1, {})
    assert plan_inference(cfg(model="m.engine", device="tensorrt"), FILES, cpus=2).streams == 1
    assert plan_inference(cfg(device="cuda"), FILES, cpus=2).streams == 1
    assert plan_inference(cfg(backend="triton://h:1/m"), FILES, cpus=2).streams == 1
    assert plan_inference(cfg(), FILES, cpus=2).describe() == "2 streams x 1 thread"


def test_batch_and_streams_are_validated_with_what_is_valid():
    assert cfg(batch="auto").batch == "auto"
    for bad in (0, "8x", -1, 1.5):
        with pytest.raises(InputError, match="--batch must be an integer >= 1 or 'auto'"):
            cfg(batch=bad)
    with pytest.raises(InputError, match="--streams must be an integer >= 1"):
        cfg(streams=0)


def test_auto_batch_measures_and_keeps_the_smallest_near_best(monkeypatch):
    import edgecls.runtime.run.plan as plan

    clock = [0.0]  # a model whose cost is known exactly: time advances only inside its calls
    monkeypatch.setattr(plan.time, "perf_counter", lambda: clock[0])

    def costly_calls(x):  # 2 ms per call + 0.1 ms per image: bigger batches pay
        clock[0] += 0.002 + 0.0001 * len(x)

    assert auto_batch(costly_calls, (3, 8, 8)) == 8
    assert auto_batch(costly_calls, (3, 8, 8), limit=4) == 4  # a TensorRT profile's maximum

    def per_image(x):  # the cost is per image only: batch 1 is as fast, and has the least latency
        clock[0] += 0.002 * len(x)

    assert auto_batch(per_image, (3, 8, 8)) == 1
    assert auto_batch(per_image, (3, 8, 8), fixed=4) == 4  # a model with a fixed batch


@pytest.fixture(scope="module")
def folder_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    export_tiny_onnx(d / "model.onnx")
    write_images(d / "imgs", n=23, sizes=((48, 40), (40, 64), (90, 60), (20, 30)), seed=3)
    return d


@pytest.mark.parametrize("streams,batch", [(1, 1), (2, 1), (3, 4), (2, "auto")])
def test_records_are_identical_and_in_order_whatever_the_plan(folder_env, streams, batch):
    def records(**kw):
        out = io.StringIO()
        stats = run(RunConfig(model=str(folder_env / "model.onnx"), sources=(str(folder_env / "imgs"),),
                              device="cpu", summary=False, **kw), out=out, err=io.StringIO())
        recs = read_jsonl(out.getvalue())
        for r in recs:
            r.pop("timings_ms")
        return stats, recs

    ref_stats, ref = records(threads=1, streams=1, batch=1)
    stats, got = records(streams=streams, batch=batch)
    assert [r["index"] for r in got] == list(range(23)) and stats.frames == 23
    assert [r["label"] for r in got] == [r["label"] for r in ref]
    np.testing.assert_allclose([r["confidence"] for r in got], [r["confidence"] for r in ref], atol=1e-6)
    assert stats.streams == streams and (batch == "auto" or stats.batch == batch)
    assert json.loads(json.dumps(stats.to_dict()))["streams"] == streams


def _jpeg(path, size, **save):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    a = np.dstack([(x * 255 // size[0]), (y * 255 // size[1]), rng.integers(0, 256, (size[1], size[0]))])
    Image.fromarray(a.astype(np.uint8)).save(path, "JPEG", quality=90, **save)
    return path


def test_open_for_uses_opencv_only_where_the_pixels_are_pillows(tmp_path):
    pytest.importorskip("cv2")
    spec = PreprocessSpec()
    small = _jpeg(tmp_path / "small.jpg", (200, 150))  # enlarged to 256: OpenCV decodes and resizes
    image, bgr = open_for(small, spec)
    assert bgr and isinstance(image, np.ndarray)
    np.testing.assert_array_equal(image[:, :, ::-1], np.asarray(open_rgb(small)))  # the same decoded pixels
    np.testing.assert_array_equal(preprocess_one(image, spec, bgr=True), preprocess_one(open_rgb(small), spec))
    big = _jpeg(tmp_path / "big.jpg", (400, 300))  # shrunk: Pillow's antialiasing filter, a PIL image
    assert open_for(big, spec)[1] is False
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: Pillow's rules (upright) apply
    rotated = _jpeg(tmp_path / "rot.jpg", (200, 150), exif=exif)
    image, bgr = open_for(rotated, spec)
    assert not bgr and image.size == (150, 200)
    png = tmp_path / "small.png"
    Image.open(small).save(png)
    assert open_for(png, spec)[1] is False
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(small.read_bytes()[:-200])  # OpenCV would fill it in grey: it stays an error
    with pytest.raises(ImageReadError, match="cut.jpg"):
        open_for(truncated, spec)
    with pytest.raises(ImageReadError, match="over the limit"):
        open_for(small, spec, max_pixels=100)


def test_live_records_carry_capture_time():
    from edgecls.runtime.run.records import prediction_record
    from edgecls.runtime.sources.frame import Frame

    pred = SimpleNamespace(to_dict=lambda probs=False: {"label": "a"})
    rec = prediction_record(Frame(source="camera:0", index=0), pred, 1.0, 2.0, 1, latency_ms=50.0)
    assert abs(rec["capture_time"] - (time.time() - 0.05)) < 1.0 and rec["timings_ms"]["latency"] == 50.0
    assert "capture_time" not in prediction_record(Frame(source="d", index=0), pred, 1.0, 2.0, 1)


def test_tiny_spec_is_upsampled_by_opencv_within_one_level_of_pillow(tmp_path):
    """The tests' tiny models (resize 36) take the OpenCV upsampling path too: same as Pillow within 1/255."""
    pytest.importorskip("cv2")
    spec = tiny_spec().preprocess
    rng = np.random.default_rng(1)
    for _ in range(20):
        w, h = (int(v) for v in rng.integers(5, 36, 2))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        from edgecls.runtime.preprocess import crop_box, resize_crop, resized_size

        nw, nh = resized_size(w, h, spec.resize)
        left, top = crop_box(nw, nh, spec.crop)
        ref = np.asarray(Image.fromarray(a).resize((nw, nh), Image.BILINEAR))[top : top + 32, left : left + 32]
        assert np.abs(resize_crop(a, spec).astype(int) - ref).max() <= 1


@pytest.mark.parametrize("streams", [1, 2])
def test_micro_batcher_keeps_streams_batches_in_flight_and_answers_each_request(streams):
    import asyncio
    import threading

    from edgecls.runtime.serve.batching import MicroBatcher

    active, peak, lock = [0], [0], threading.Lock()

    def infer(x):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.03)
        with lock:
            active[0] -= 1
        return x.reshape(len(x), -1)[:, :2]

    async def main():
        b = MicroBatcher(infer, max_batch=2, max_wait_ms=0, streams=streams)
        b.start()
        res = await asyncio.gather(*(b.submit(np.full((3, 2, 2), i, np.float32)) for i in range(8)))
        await b.close()
        return res

    res = asyncio.run(main())
    assert [float(r.output[0]) for r in res] == list(range(8))  # each request its own row, whatever the order
    assert peak[0] == streams


def test_realtime_video_is_a_live_source_with_latency_and_a_clean_end(folder_env, tmp_path):
    """``--realtime``: a video played at its own frame rate through the newest-frame slot, as a camera would."""
    pytest.importorskip("cv2")
    from runtime_helpers import write_video

    video = write_video(tmp_path / "clip.avi", n=12, fps=20.0)
    out = io.StringIO()
    t0 = time.perf_counter()
    stats = run(RunConfig(model=str(folder_env / "model.onnx"), sources=(str(video),), device="cpu", realtime=True),
                out=out, err=io.StringIO())
    wall = time.perf_counter() - t0
    recs = read_jsonl(out.getvalue())
    assert stats.exit_code() == 0 and stats.lost == 0  # the file's end is an end, not a lost camera
    assert stats.frames + stats.dropped == 12 and len(recs) == stats.frames >= 1
    assert wall >= 11 / 20.0 - 0.05  # paced at the file's 20 frames/s, not as fast as it decodes
    for r in recs:
        assert r["timings_ms"]["latency"] >= 0 and abs(r["capture_time"] - time.time()) < 60
    assert [r["frame"] for r in recs] == sorted(r["frame"] for r in recs)
