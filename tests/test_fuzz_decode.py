"""Property test (hypothesis) of the image loader: mutated JPEG, PNG, GIF, TIFF, WebP and BMP bytes through
decode → preprocess and ``Classifier.predict`` (a path, and a lazily opened PIL image) either work or raise the one
documented error, :class:`~edgecls.runtime.preprocess.ImageReadError` — never a decoder's own exception.

A bounded number of examples here (a few seconds, derandomized so CI is reproducible); ``bench/fuzz_decode.py``
runs 10,000 cases with a per-case timeout for hangs.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from fuzz_helpers import (
    INTERESTING,
    OP_KINDS,
    apply_ops,
    garbled_second_idat,
    png_chunks,
    png_from_chunks,
    seed_images,
    tiny_onnx_classifier,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgecls.runtime.classifier import Classifier
from edgecls.runtime.preprocess import ImageReadError, open_rgb, preprocess_one
from edgecls.runtime.spec import PreprocessSpec

SEEDS = seed_images()
SPEC = PreprocessSpec(resize=36, crop=32)

# positions biased to the first 15 % of the file, where the headers (sizes, counts, offsets) are
positions = st.one_of(st.floats(0.0, 0.15), st.floats(0.0, 1.0, exclude_max=True))
ops = st.lists(st.tuples(st.sampled_from(OP_KINDS), positions, st.integers(0, 65535)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    clf = Classifier.load(tiny_onnx_classifier(d / "m.onnx"), device="cpu", threads=1)
    yield clf, d / "case.img"
    clf.close()


def _outcome(fn):
    """'ok' or 'refused' (ImageReadError); any other exception propagates and fails the test."""
    try:
        fn()
        return "ok"
    except ImageReadError:
        return "refused"


def _lazy_pil(data: bytes):
    try:
        return Image.open(io.BytesIO(data))
    except Exception:  # Image.open itself refused: the caller's code, edgecls is not involved yet
        return None


def test_every_seed_decodes(fuzz_env):
    """The unmutated seeds are valid images of every format: they decode and classify."""
    clf, _ = fuzz_env
    formats = {Image.open(io.BytesIO(b)).format for b in SEEDS.values()}
    assert formats == {"JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP"}
    for name, data in SEEDS.items():
        rgb = open_rgb(io.BytesIO(data))
        assert rgb.mode == "RGB", name
        assert clf.predict(rgb).label in ("mobile", "other")


def test_issue_9_png_with_garbled_idat_is_an_image_read_error(fuzz_env, tmp_path):
    clf, _ = fuzz_env
    p = tmp_path / "garbled.png"
    p.write_bytes(garbled_second_idat())
    with pytest.raises(ImageReadError, match="SyntaxError"):
        open_rgb(p)
    with pytest.raises(ImageReadError):
        clf.predict(p)
    with pytest.raises(ImageReadError):
        clf.predict(Image.open(p))  # a lazily opened PIL image: decoded inside predict, under the same guard
    with pytest.raises(ImageReadError):
        clf.predict_batch([open_rgb(io.BytesIO(SEEDS["jpeg"])), p])  # one bad image fails its batch, clearly


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=st.sampled_from(sorted(SEEDS)), mutations=ops, fix_crc=st.booleans())
def test_mutated_images_only_raise_image_read_error(fuzz_env, name, mutations, fix_crc):
    clf, path = fuzz_env
    data = apply_ops(SEEDS[name], mutations, fix_crc and name.startswith("png"))
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on many broken files; the outcome is what is tested
        first = _outcome(lambda: preprocess_one(open_rgb(io.BytesIO(data)), SPEC))
        assert _outcome(lambda: clf.predict(path)) == first  # the same verdict by path
        lazy = _lazy_pil(data)
        if lazy is not None:
            assert _outcome(lambda: clf.predict(lazy)) == first
        if first == "ok":  # what decodes is a usable image: 8-bit RGB, and the model's input is finite
            x = preprocess_one(open_rgb(path), SPEC)
            assert x.shape == (3, 32, 32) and np.isfinite(x).all()


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk=st.integers(0, 7), byte=st.integers(0, 3), value=st.sampled_from(INTERESTING + tuple(b"aZ_")),
       length_delta=st.sampled_from((0, 0, 0, -1, 1, 1 << 20)))
def test_png_chunk_damage_only_raises_image_read_error(fuzz_env, chunk, byte, value, length_delta):
    """Structure-aware: one PNG chunk's type byte (or its length) changed, CRCs kept valid, so the damage reaches
    the chunk reader inside the decoder — where issue 9's SyntaxError came from (a second IDAT chunk)."""
    clf, path = fuzz_env
    chunks = png_chunks(SEEDS["png-multi-idat"])
    c = chunk % len(chunks)
    t = bytearray(chunks[c][0])
    t[byte] = value
    data = png_from_chunks(chunks[:c] + [(bytes(t), chunks[c][1])] + chunks[c + 1 :])
    if length_delta:  # a length field that no longer matches the chunk (its CRC then fails too)
        pos = 8 + sum(12 + len(b) for _, b in chunks[:c])
        n = int.from_bytes(data[pos : pos + 4], "big")
        data = data[:pos] + max(0, n + length_delta).to_bytes(4, "big") + data[pos + 4 :]
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = _outcome(lambda: preprocess_one(open_rgb(io.BytesIO(data)), SPEC))
        assert _outcome(lambda: clf.predict(path)) == first
