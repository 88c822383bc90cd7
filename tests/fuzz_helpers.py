"""Seeds and mutations for fuzzing the image loader (tests/test_fuzz_decode.py, bench/fuzz_decode.py), and a tiny
ONNX classifier built with the ``onnx`` helpers only (no torch: the fuzz and soak benches run without it).

Seeds: small valid images in every format the loader reads (JPEG baseline/progressive/greyscale/CMYK/EXIF-rotated,
PNG RGB/RGBA/palette/16-bit, GIF still/animated, TIFF raw/LZW/16-bit/multi-page, WebP lossy/lossless/
alpha, BMP 24-bit/8-bit/RLE). Mutations: bit flips, interesting bytes, big integers over header fields, truncation,
slice duplication/deletion/insertion, and — for PNG — chunk CRCs recomputed so the damage reaches the decoder.
"""
from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np


def _pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx * 7 + yy * 13) % 256], -1)
    return np.clip(arr + rng.normal(0, 10, arr.shape), 0, 255).astype(np.uint8)


def _save(im, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def seed_images() -> Dict[str, bytes]:
    """``{name: bytes}``: valid small images; the name starts with the format (jpeg, png, gif, tiff, webp, bmp)."""
    from PIL import Image

    rgb = Image.fromarray(_pattern(24, 18))
    grey = rgb.convert("L")
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(_pattern(24, 18, 3)[:, :, 0]))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    sixteen = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    frames = [rgb.convert("P"), Image.fromarray(_pattern(24, 18, 1)).convert("P")]
    seeds = {
        "jpeg": _save(rgb, "JPEG", quality=85),
        "jpeg-progressive": _save(rgb, "JPEG", quality=80, progressive=True),
        "jpeg-grey": _save(grey, "JPEG"),
        "jpeg-cmyk": _save(rgb.convert("CMYK"), "JPEG"),
        "jpeg-exif": _save(rgb, "JPEG", exif=exif.tobytes()),
        "png": _save(rgb, "PNG"),
        "png-rgba": _save(rgba, "PNG"),
        "png-palette": _save(rgb.convert("P"), "PNG"),
        "png-16bit": _save(sixteen, "PNG"),
        "png-multi-idat": split_idat(_save(rgb, "PNG"), parts=3),
        "gif": _save(rgb.convert("P"), "GIF"),
        "gif-animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "tiff": _save(rgb, "TIFF"),
        "tiff-lzw": _save(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-16bit": _save(sixteen, "TIFF"),
        "tiff-pages": _save(rgb, "TIFF", save_all=True, append_images=[Image.fromarray(_pattern(24, 18, 2))]),
        "webp": _save(rgb, "WEBP", quality=80),
        "webp-lossless": _save(rgb, "WEBP", lossless=True),
        "webp-alpha": _save(rgba, "WEBP"),
        "bmp": _save(rgb, "BMP"),
        "bmp-8bit": _save(rgb.convert("P"), "BMP"),
        "bmp-rle": _bmp_rle8(),
    }
    return seeds


def _bmp_rle8() -> bytes:
    """A 4x2 8-bit RLE-compressed BMP (Pillow reads BI_RLE8 but cannot write it)."""
    palette = b"".join(struct.pack("<BBBB", i, 255 - i, (i * 7) % 256, 0) for i in range(256))
    rows = b"\x04\x10\x00\x00" + b"\x04\x80\x00\x01"  # run of 4 x index 16, end of line; 4 x 128, end of bitmap
    info = struct.pack("<IiiHHIIiiII", 40, 4, 2, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset)
    return head + info + palette + rows


INTERESTING = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)
BIG = (0xFFFF, 0x7FFF, 0x8000, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 0)


def png_fix_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk CRC (so a mutation inside a chunk reaches the decoder instead of the CRC check)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data[:8]), 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            out += data[pos:]
            return bytes(out)
        chunk = data[pos + 4 : end]
        out += data[pos : end] + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
        pos = end + 4
    out += data[pos:]
    return bytes(out)


def png_chunks(data: bytes) -> List[Tuple[bytes, bytes]]:
    """``[(type, body), ...]`` of a PNG (stops at the first chunk that runs past the end)."""
    pos, out = 8, []
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        if pos + 12 + length > len(data):
            break
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def png_from_chunks(chunks: Sequence[Tuple[bytes, bytes]]) -> bytes:
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for t, body in chunks:
        out += struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)
    return bytes(out)


def split_idat(data: bytes, parts: int = 2) -> bytes:
    """The same PNG with its image data in ``parts`` IDAT chunks (what large PNGs look like)."""
    chunks = []
    for t, body in png_chunks(data):
        if t == b"IDAT":
            step = -(-len(body) // parts)
            chunks += [(b"IDAT", body[k : k + step]) for k in range(0, len(body), step)]
        else:
            chunks.append((t, body))
    return png_from_chunks(chunks)


def garbled_second_idat() -> bytes:
    """Issue 9's crash: a PNG whose second IDAT chunk has a garbled type (Pillow raises SyntaxError), CRCs valid."""
    from PIL import Image

    chunks = png_chunks(split_idat(_save(Image.fromarray(_pattern(64, 64)), "PNG"), parts=2))
    idat = [i for i, (t, _) in enumerate(chunks) if t == b"IDAT"]
    chunks[idat[1]] = (b"ID\x00T", chunks[idat[1]][1])
    return png_from_chunks(chunks)


Op = Tuple[str, float, int]  # (kind, position in [0, 1), value)
OP_KINDS = ("flip", "byte", "interesting", "big16", "big32", "truncate", "duplicate", "delete", "insert",
            "chunk_type")


def apply_ops(data: bytes, ops: Sequence[Op], fix_crc: bool = False) -> bytes:
    """Apply mutations; every op is a pure function of (kind, position, value), so a case is reproducible."""
    b = bytearray(data)
    for kind, where, value in ops:
        if not b:
            break
        i = min(int(where * len(b)), len(b) - 1)
        if kind == "flip":
            b[i] ^= 1 << (value % 8)
        elif kind == "byte":
            b[i] = value % 256
        elif kind == "interesting":
            b[i] = INTERESTING[value % len(INTERESTING)]
        elif kind in ("big16", "big32"):
            width = 2 if kind == "big16" else 4
            v = BIG[value % len(BIG)] & (0xFFFF if width == 2 else 0xFFFFFFFF)
            order = ">" if value % 2 else "<"
            b[i : i + width] = struct.pack(order + ("H" if width == 2 else "I"), v)
        elif kind == "truncate":
            del b[max(1, i):]
        elif kind == "duplicate":
            n = 1 + value % 64
            b[i:i] = b[i : i + n]
        elif kind == "delete":
            del b[i : i + 1 + value % 64]
        elif kind == "insert":
            b[i:i] = bytes((value + k * 37) % 256 for k in range(1 + value % 16))
        elif kind == "chunk_type":  # PNG: one byte of one chunk's type (a generic flip elsewhere)
            chunks = png_chunks(bytes(b)) if bytes(b[:8]) == b"\x89PNG\r\n\x1a\n" else []
            if chunks:
                c = min(int(where * len(chunks)), len(chunks) - 1)
                t = bytearray(chunks[c][0])
                t[value % 4] = INTERESTING[(value >> 2) % len(INTERESTING)]
                chunks[c] = (bytes(t), chunks[c][1])
                b = bytearray(png_from_chunks(chunks))
            else:
                b[i] ^= 0x20
    out = bytes(b)
    return png_fix_crcs(out) if fix_crc else out


def random_case(seeds: Dict[str, bytes], case: int, seed: int = 0) -> Tuple[str, List[Op], bool, bytes]:
    """Case number ``case`` of a run: (seed name, ops, fix_crc, mutated bytes), a pure function of (case, seed)."""
    rng = random.Random(seed * 1_000_003 + case)
    names = sorted(seeds)
    name = names[rng.randrange(len(names))]
    ops = [(rng.choice(OP_KINDS), rng.random(), rng.randrange(1 << 16)) for _ in range(rng.randint(1, 4))]
    fix = name.startswith("png") and rng.random() < 0.6
    return name, ops, fix, apply_ops(seeds[name], ops, fix)


def tiny_onnx_classifier(path: Path, crop: int = 32, resize: int = 36, classes=("mobile", "other")) -> Path:
    """A 2-layer ONNX classifier (conv → global pool → gemm) carrying its edgecls spec, built without torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgecls.runtime.spec import METADATA_KEY, ModelSpec, PreprocessSpec

    rng = np.random.default_rng(0)
    k = len(classes)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 2.0, (k, 8)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(k, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"]),
        helper.make_node("Flatten", ["p1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, crop, crop])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = ModelSpec(arch="tinynet", classes=tuple(classes), positive=classes[0], threshold=0.5,
                     preprocess=PreprocessSpec(resize=resize, crop=crop))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
