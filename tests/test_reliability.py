"""Issue 9 — bad input and hard stops never cost a result — for ``edgecls run``, the API and the one image loader:
decoder exceptions (1), flat memory (2), symbolic-link loops (3), exit codes (4), decompression bombs (5), 16-bit
images (6), SIGTERM (7); and issue 14's EXIF orientation, applied by the one loader every stage shares.
Training/export items (3 for train, 8, 9, 10) are in ``test_reliability_train_export.py``.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli_captured as cli
from fuzz_helpers import garbled_second_idat, tiny_onnx_classifier
from PIL import Image
from runtime_helpers import read_jsonl, write_images

from edgecls.core import errors as E
from edgecls.core.images import class_folders, list_images
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.preprocess import ImageReadError, as_rgb, load_image, open_rgb, preprocess_one
from edgecls.runtime.spec import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(tiny_onnx_classifier(tmp_path_factory.mktemp("rel_model") / "tiny.onnx"))


# ------------------------------------------------------------------------------- 1. decoder exceptions


def test_1_decoder_exception_is_the_files_error_in_run(model, tmp_path, capsys):
    folder = tmp_path / "photos"
    good = write_images(folder, n=12)
    (folder / "garbled.png").write_bytes(garbled_second_idat())  # Pillow raises SyntaxError while decoding
    code, out, err = cli(["run", model, folder, "--batch", "4", "--threads", "1"], capsys)
    recs = read_jsonl(out)
    assert code == E.EXIT_PARTIAL, err
    assert len(recs) == 13 and sum("label" in r for r in recs) == len(good)  # no result lost
    bad = [r for r in recs if "error" in r]
    assert len(bad) == 1 and bad[0]["path"].endswith("garbled.png") and "SyntaxError" in bad[0]["error"]
    assert "12 frames, 1 errors" in err and "exit 6: partial: 1 of 13 inputs failed" in err


def test_1_eval_names_the_unreadable_file(tmp_path):
    from edgecls.evaluation.data import iter_batches, labeled_images
    from edgecls.runtime.model_io import load_model_spec

    spec = load_model_spec(tiny_onnx_classifier(tmp_path / "m.onnx"))
    data = tmp_path / "val"
    write_images(data / "mobile", n=2)
    write_images(data / "other", n=2)
    (data / "other" / "garbled.png").write_bytes(garbled_second_idat())
    items = labeled_images(data, spec.classes)
    with pytest.raises(E.InputError, match="garbled.png.*SyntaxError"):
        list(iter_batches(items, spec, batch=8))


def test_1_one_decode_path_in_the_package():
    """Every stage decodes through runtime/preprocess.py; the only other Image.open is the torchvision reference
    of the bench (it must see torchvision's own loader)."""
    allowed = {"runtime/preprocess.py", "edgecls/evaluation/stages.py"}
    found = set()
    for top in ("runtime", "train", "export", "edgecls"):
        for p in (REPO / top).rglob("*.py"):
            if re.search(r"Image\.open\(|cv2\.imread\(|imdecode\(", p.read_text(encoding="utf-8")):
                found.add(p.relative_to(REPO).as_posix())
    assert found <= allowed, found - allowed


# ------------------------------------------------------------------------------- 2. flat memory


def test_2_latency_statistics_are_fixed_size_and_accurate():
    from edgecls.runtime.run.quantiles import _NBINS, EXACT, LatencySketch

    rng = np.random.default_rng(0)
    values = rng.lognormal(1.0, 0.8, 50_000)
    s = LatencySketch()
    s.extend(values[:1000])
    assert s.exact and s.percentile(50) == pytest.approx(np.percentile(values[:1000], 50), rel=1e-12)
    s.extend(values[1000:])
    assert len(s) == 50_000 and len(s._exact) == EXACT and len(s._counts) == _NBINS  # no growth with frames
    for q in (50, 95, 99):
        assert s.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.006)
    assert LatencySketch().percentile(50) is None


def test_2_run_stats_keep_no_per_frame_lists():
    from runtime_helpers import tiny_spec

    from edgecls.runtime.decision import Decider
    from edgecls.runtime.run.quantiles import LatencySketch
    from edgecls.runtime.run.stats import MAX_NOTES, RunStats

    st = RunStats(Decider(tiny_spec()), "cpu", 1, 0.0)
    for name in ("decode", "preprocess", "infer_batch", "infer_image", "latency"):
        assert isinstance(getattr(st, name), LatencySketch), name
    for i in range(MAX_NOTES + 25):
        st.notes.append(f"note {i}")
    assert len(st.notes) == MAX_NOTES and st.notes.more == 25 and "and 25 more" in st.format()
    assert json.loads(json.dumps(st.to_dict()))["notes_not_shown"] == 25


# ------------------------------------------------------------------------------- 3. symbolic-link loops


def test_3_symlink_loops_are_followed_once(tmp_path, caplog):
    root = tmp_path / "root"
    imgs = write_images(root / "a", n=2) + write_images(root / "b", n=1)
    write_images(tmp_path / "sibling", n=3)  # next to root: reachable only through `up`
    os.symlink("..", root / "up")  # a loop back to root's parent
    os.symlink(".", root / "a" / "self")  # a loop onto itself
    os.symlink(str(root / "b"), root / "b_again")  # a second path to the same folder
    found = list_images(root)
    assert sorted(map(str, found)) == sorted(map(str, imgs)), found  # each file once, nothing from outside
    assert "a loop" in caplog.text
    assert [d.name for d in class_folders(root)] == ["a", "b", "b_again"]  # `up` is a loop, b_again is not
    assert [d.name for d in class_folders(root / "a")] == []  # `self` skipped


def test_3_run_over_a_folder_with_link_loops_finishes(model, tmp_path, capsys):
    folder = tmp_path / "photos"
    write_images(folder / "x", n=3)
    os.symlink("..", folder / "up")
    os.symlink(".", folder / "x" / "self")
    write_images(tmp_path / "elsewhere", n=2)
    code, out, err = cli(["run", model, folder, "--no-summary"], capsys)
    assert code == 0, err
    assert sorted(Path(r["path"]).name for r in read_jsonl(out)) == [f"img_{i:03d}.jpg" for i in range(3)]


def test_3_eval_lists_each_image_once(tmp_path):
    from edgecls.evaluation.data import labeled_images

    data = tmp_path / "val"
    write_images(data / "mobile", n=2)
    write_images(data / "other", n=3)
    os.symlink("..", data / "up")
    os.symlink(".", data / "other" / "self")
    items = labeled_images(data, ("mobile", "other"))
    assert sorted(y for _, y in items) == [0, 0, 1, 1, 1]


# ------------------------------------------------------------------------------- 4. exit codes


def test_4_exit_codes_of_run(model, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    from runtime_helpers import write_video

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    (bad / "b.png").write_bytes(garbled_second_idat())
    code, _, err = cli(["run", model, bad], capsys)
    assert code == E.EXIT_NOTHING and "nothing classified" in err  # every input unreadable

    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    code, out, err = cli(["run", model, tmp_path / "broken.mp4"], capsys)
    assert code == E.EXIT_NOTHING and "cannot open video" in out

    video = write_video(tmp_path / "clip.avi", n=40)
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 40
    cap.release()
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 6 // 10])  # header says 40 frames, ~half remain
    code, out, err = cli(["run", model, tmp_path / "cut.avi"], capsys)
    assert code == E.EXIT_PARTIAL and "truncated or corrupt" in err and 0 < len(read_jsonl(out)) < 40

    code, _, err = cli(["run", model, video], capsys)
    assert code == E.EXIT_OK and "exit " not in err


def test_4_lost_live_source_exits_7(model):
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.sources.live import LiveSource, RetryPolicy

    class Dies:
        def __init__(self):
            self.i = 0

        def isOpened(self):
            return True

        def read(self):
            self.i += 1
            return (self.i <= 3), np.full((40, 40, 3), self.i, np.uint8)

        def release(self):
            pass

    caps = [Dies()]
    src = LiveSource("rtsp://cam", lambda: caps.pop() if caps else None, retry=RetryPolicy(retries=1, initial=0.0))
    stats = run(RunConfig(model=model, sources=("x",), device="cpu"), out=io.StringIO(), err=io.StringIO(),
                sources=[src])
    assert stats.frames >= 1 and stats.lost == 1
    assert stats.exit_code() == E.EXIT_NOTHING and "lost" in stats.status()


def test_4_docs_exit_code_table_matches_errors_py():
    text = (REPO / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    section = text.split("# Exit codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", section, flags=re.M)
    assert {int(c): m for c, m in rows} == E.EXIT_MEANINGS
    doc = {int(c) for c in re.findall(r"^\| (\d+) \|", E.__doc__, flags=re.M)}
    assert doc == set(E.EXIT_MEANINGS)  # the module docstring's table lists the same codes


# ------------------------------------------------------------------------------- 5. decompression bombs


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose SOF0 header is patched to claim ``width`` x ``height`` (a 'decompression bomb')."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    sof = b.index(b"\xff\xc0")
    b[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(b)


def test_5_pixel_bound_is_checked_before_decoding(model, tmp_path, monkeypatch, capsys):
    from PIL import ImageFile

    bomb = tmp_path / "photos" / "bomb.jpg"
    bomb.parent.mkdir()
    bomb.write_bytes(_jpeg_claiming(2700, 65500))  # 6 KB claiming 177 MP (2.4 GB decoded, issue 9)
    assert bomb.stat().st_size < 10_000

    def no_decode(self):
        raise AssertionError("decoded an image over the pixel bound")

    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", no_decode)
        with pytest.raises(ImageReadError, match=r"2700x65500 = 176\.\d MP, over the limit of 50 MP.*--max-pixels"):
            open_rgb(bomb)
        with pytest.raises(ImageReadError, match="over the limit"):
            Classifier.load(model, device="cpu").predict(bomb)
    write_images(bomb.parent, n=2, sizes=((90, 60),))
    code, out, err = cli(["run", model, bomb.parent, "--no-summary"], capsys)
    assert code == E.EXIT_PARTIAL and sum("error" in r for r in read_jsonl(out)) == 1
    code, out, _ = cli(["run", model, bomb.parent / "img_000.jpg", "--max-pixels", "5000"], capsys)
    assert code == E.EXIT_NOTHING and "over the limit of 0.005 MP" in out  # 90x60 = 5400 pixels
    assert open_rgb(bomb.parent / "img_000.jpg", max_pixels=0).size == (90, 60)  # 0: no bound of ours
    with pytest.raises(ImageReadError, match="decompression bomb"):  # Pillow's own limit still applies
        open_rgb(io.BytesIO(_jpeg_claiming(20000, 20000)), max_pixels=0)


def test_5_python_decoded_formats_get_a_tenth_of_the_budget():
    from fuzz_helpers import seed_images

    rle = bytearray(seed_images()["bmp-rle"])
    rle[18:22] = (8_388_612).to_bytes(4, "little")  # 1 KB claiming 8388612x2: 5 s of pure-Python decoding
    with pytest.raises(ImageReadError, match="RLE-compressed BMP.*pure Python.*5 MP"):
        open_rgb(io.BytesIO(bytes(rle)))
    assert open_rgb(io.BytesIO(seed_images()["bmp-rle"])).size == (4, 2)  # a genuine small one decodes


# ------------------------------------------------------------------------------- 6. 16-bit images


def test_6_sixteen_bit_greyscale_keeps_its_high_byte(tmp_path):
    rng = np.random.default_rng(0)
    v8 = rng.integers(0, 256, (30, 40), dtype=np.uint16)
    v16 = v8 * 256 + rng.integers(0, 256, v8.shape, dtype=np.uint16)  # low byte: noise below 8-bit precision
    Image.fromarray(v16).save(tmp_path / "g16.png")
    Image.fromarray(v8.astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray(v16).save(tmp_path / "g16.tif")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    want = load_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png"), want)  # not saturated at 255
    np.testing.assert_array_equal(load_image(tmp_path / "g16.tif"), want)
    big_endian = Image.frombytes("I;16B", (40, 30), v16.astype(">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(as_rgb(big_endian)), want)
    np.testing.assert_array_equal(np.asarray(as_rgb(Image.fromarray(v16.astype(np.int32), "I"))), want)
    spec = PreprocessSpec(resize=36, crop=32)  # preprocess_one converts PIL input the same way
    np.testing.assert_array_equal(preprocess_one(Image.open(tmp_path / "g16.png"), spec), preprocess_one(want, spec))


def test_6_unsupported_depths_are_refused_clearly(tmp_path):
    with pytest.raises(ImageReadError, match="32-bit integer pixels"):
        as_rgb(Image.fromarray(np.full((4, 4), 70000, np.int32), "I"))
    with pytest.raises(ImageReadError, match="32-bit float pixels"):
        as_rgb(Image.fromarray(np.ones((4, 4), np.float32), "F"))
    cv2 = pytest.importorskip("cv2")
    rgb16 = np.random.default_rng(1).integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgb48.png"), rgb16[:, :, ::-1])  # a 48-bit RGB PNG
    np.testing.assert_array_equal(load_image(tmp_path / "rgb48.png"), (rgb16 >> 8).astype(np.uint8))


# ------------------------------------------------------------------------------- 7. SIGTERM


def test_7_sigterm_inside_the_guard_is_an_interrupt():
    from edgecls.runtime.run.signals import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as e:
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert isinstance(e.value, E.Terminated) and e.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_7_sigterm_finalizes_the_video_and_prints_the_summary(model, tmp_path):
    cv2 = pytest.importorskip("cv2")
    from runtime_helpers import write_video

    video = write_video(tmp_path / "clip.avi", n=3000, size=(64, 48))
    save = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgecls", "run", model, str(video), "--save", str(save), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline() for _ in range(20)]  # running: 20 records out
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    recs = read_jsonl("".join(lines) + rest)
    assert proc.returncode == E.EXIT_TERMINATED, err
    assert 20 <= len(recs) < 3000 and "INTERRUPTED" in err and "frames/s" in err and "SIGTERM" in err
    saved = save / "clip.annotated.mp4"
    cap = cv2.VideoCapture(str(saved))
    n = 0
    while cap.read()[0]:
        n += 1
    assert len(recs) <= n <= len(recs) + 1, (n, len(recs))  # every frame with a record is in the playable video
    assert not [p for p in save.iterdir() if p.name.startswith(".")]  # no hidden partial file


# ------------------------------------------------------------------------------- issue 14.4: EXIF orientation


def _exif_twins(tmp_path: Path, orientation: int):
    """A JPEG tagged with ``orientation`` and its upright twin (the JPEG's decoded pixels turned as a viewer shows
    them, saved losslessly as PNG): the same picture, so every stage must see the same pixels."""
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    arr = np.clip(np.linspace(0, 255, 48 * 64).reshape(48, 64, 1) + rng.normal(0, 30, (48, 64, 3)), 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpg = tmp_path / f"tagged_{orientation}.jpg"
    Image.fromarray(arr.astype(np.uint8)).save(jpg, quality=90, exif=exif.tobytes())
    with Image.open(jpg) as im:
        upright = ImageOps.exif_transpose(im.convert("RGB"))
    png = tmp_path / f"upright_{orientation}.png"
    upright.save(png)
    return jpg, png


def test_exif_orientation_gives_the_upright_twins_pixels_and_probabilities(model, tmp_path, capsys):
    clf = Classifier.load(model, device="cpu")
    pairs = [_exif_twins(tmp_path, o) for o in range(1, 9)]
    for o, (jpg, png) in enumerate(pairs, start=1):
        stored = np.asarray(Image.open(jpg).convert("RGB"))
        got = load_image(jpg)
        np.testing.assert_array_equal(got, load_image(png))
        if o in (5, 6, 7, 8):
            assert got.shape[:2] == stored.shape[1::-1]  # turned by 90°
        assert clf.predict(jpg).probs == clf.predict(png).probs
        assert clf.predict(Image.open(jpg)).probs == clf.predict(png).probs  # a PIL image given to the API
        assert clf.predict(open_rgb(jpg)).probs == clf.predict(png).probs  # applying it twice is a no-op
    # edgecls run: the same records for the tagged photo and its twin
    code, out, _ = cli(["run", model, *[p for pair in pairs for p in pair], "--probs", "--no-summary"], capsys)
    recs = read_jsonl(out)
    assert code == 0 and len(recs) == 16
    for a, b in zip(recs[0::2], recs[1::2]):
        assert a["probs"] == b["probs"], (a["path"], b["path"])


def test_exif_orientation_in_eval_calibration_and_training(model, tmp_path):
    jpg, png = _exif_twins(tmp_path, 6)
    from edgecls.evaluation.data import iter_batches
    from edgecls.runtime.model_io import load_model_spec

    spec = load_model_spec(model)
    (_, x), = list(iter_batches([(str(jpg), 0), (str(png), 0)], spec, batch=2))
    np.testing.assert_array_equal(x[0], x[1])  # eval
    pytest.importorskip("onnx")
    from edgecls.export.calib_ranges import CalibrationImages

    cal = CalibrationImages([jpg, png], spec.preprocess)
    np.testing.assert_array_equal(cal.data[0], cal.data[1])  # INT8 calibration (and parity: the same load_image)
    pytest.importorskip("torch")
    from edgecls.train.data import EvalDataset, TrainDataset

    ev = EvalDataset([(str(jpg), 0), (str(png), 0)], spec.preprocess)
    np.testing.assert_array_equal(ev[0][0].numpy(), ev[1][0].numpy())  # training's validation pass
    tr = TrainDataset([(str(jpg), 0), (str(png), 0)], transform=lambda im: np.asarray(im))
    np.testing.assert_array_equal(tr[0][0], tr[1][0])  # training's augmentation input
