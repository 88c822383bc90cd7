"""``edgecls export --deepstream DIR``: a DeepStream ``nvinfer`` classifier config for the exported model.

DeepStream's nvinfer converts each frame (or object) itself: it scales it to the network size, then computes
``net-scale-factor · (pixel − offsets)`` — one scale for all channels, so torchvision's per-channel std cannot be
written down (the usual average-σ workaround is off by about +1.3 % / −0.9 % / −0.4 % per channel). The folder
therefore ships the ``raw-probs`` variant: 0–255 RGB in, per-channel normalization and ``softmax(logits / T)``
inside the graph, so ``net-scale-factor=1``, ``offsets=0;0;0`` are exact and ``classifier-threshold`` compares with
the probability ``edgecls run`` reports.

What nvinfer does NOT do: the centre crop. It scales the whole frame to the input size (``maintain-aspect-ratio=0``,
as configured here); ``edgecls eval --preprocess deepstream`` measures what that costs on your data.

Files written (atomically) in DIR::

    config_infer_edgecls.txt   [property] group for nvinfer (process-mode=1: whole frames)
    labels.txt                 classes on one line separated by ';' (nvinfer: one line per output layer)
    model_raw_probs.onnx       the model (+ model_raw_probs.json, its edgecls spec)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict

from edgecls.core import fileio as atomic
from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

CONFIG_NAME = "config_infer_edgecls.txt"
LABELS_NAME = "labels.txt"
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}  # NvDsInferNetworkMode
RGB = 0  # model-color-format: 0 RGB, 1 BGR, 2 GRAY
BILINEAR = 1  # scaling-filter: NvBufSurfTransformInter_Bilinear


def labels_line(spec: ModelSpec) -> str:
    """nvinfer's classifier label file: one line per output layer, the layer's labels separated by ';'."""
    bad = [c for c in spec.classes if ";" in c or "\n" in c or "\r" in c]
    if bad:
        raise InputError(f"class names {bad} contain ';' or a line break, which DeepStream's label file uses as "
                         "separators; rename the classes and retrain/re-export")
    return ";".join(spec.classes) + "\n"


def engine_file_name(onnx_name: str, batch_size: int, precision: str, gpu_id: int = 0) -> str:
    """The name nvinfer gives the engine it builds from ``onnx-file`` (reused on the next start)."""
    return f"{onnx_name}_b{batch_size}_gpu{gpu_id}_{precision}.engine"


def properties(model_name: str, spec: ModelSpec, batch_size: int, precision: str) -> Dict[str, str]:
    """The ``[property]`` keys, in order. The model must be the raw-probs variant."""
    from edgecls.export.variants import is_raw_input

    if spec.output != "probs" or not is_raw_input(spec.preprocess):
        raise InputError(f"{model_name}: DeepStream gets the raw-probs variant (0-255 input, probabilities out); "
                         "this model is not it")
    if precision not in NETWORK_MODES:
        raise InputError(f"DeepStream precision {precision!r}: valid {', '.join(NETWORK_MODES)}")
    if batch_size < 1:
        raise InputError(f"batch-size must be >= 1, got {batch_size}")
    c = spec.preprocess.crop
    return {
        "gpu-id": "0",
        "onnx-file": model_name,
        "model-engine-file": engine_file_name(model_name, batch_size, precision),
        "labelfile-path": LABELS_NAME,
        "batch-size": str(batch_size),
        "network-mode": str(NETWORK_MODES[precision]),
        "network-type": "1",
        "process-mode": "1",
        "gie-unique-id": "1",
        "model-color-format": str(RGB),
        "infer-dims": f"3;{c};{c}",
        "net-scale-factor": "1",
        "offsets": "0;0;0",
        "maintain-aspect-ratio": "0",
        "scaling-filter": str(BILINEAR),
        "output-blob-names": spec.output_name,
        "classifier-threshold": f"{spec.threshold:g}",
        "classifier-async-mode": "0",
        "classifier-type": "edgecls",
    }


def config_text(model_name: str, spec: ModelSpec, batch_size: int, precision: str) -> str:
    props = properties(model_name, spec, batch_size, precision)
    pre = spec.preprocess
    notes = [
        f"edgecls {spec.edgecls_version}: {spec.arch} classifier, classes {list(spec.classes)}, trained at "
        f"resize {pre.resize} + centre crop {pre.crop}; nvinfer scales the whole frame to {pre.crop}x{pre.crop} "
        "instead (no crop): measure the difference with `edgecls eval MODEL --data DIR --preprocess deepstream`",
        f"input 0..255 RGB, normalization and softmax(logits / {spec.temperature:g}) inside the model: "
        "net-scale-factor=1 and offsets=0;0;0 are exact",
        "nvinfer labels a frame with its top class when that probability is > classifier-threshold "
        "(the edgecls label rule uses >=)",
        "on objects of a detector: process-mode=2, operate-on-gie-id=<detector id>, gie-unique-id=2, "
        "classifier-async-mode=1 with a tracker",
    ]
    if spec.positive is not None and spec.threshold < 0.5:
        notes.append(f"the model's {spec.positive!r} threshold {spec.threshold:g} is below 0.5: nvinfer only labels "
                     f"{spec.positive!r} when it is the top class, so low-probability positives that `edgecls run` "
                     "calls 'yes' get no label here (use output-tensor-meta=1 and read the probabilities)")
    head = "".join(f"# {n}\n" for n in notes)
    return head + "[property]\n" + "".join(f"{k}={v}\n" for k, v in props.items())


def write_deepstream(folder: os.PathLike, model_file: os.PathLike, spec: ModelSpec, batch_size: int,
                     precision: str = "fp16") -> Path:
    """Write the config, labels and a copy of the model (with its sidecar) into ``folder``; returns the config."""
    from edgecls.export.metadata import write_sidecar

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--deepstream {os.fspath(folder)!r} exists and is not a folder")
    src = Path(model_file)
    text = config_text(src.name, spec, batch_size, precision)  # validates before anything is written
    labels = labels_line(spec)
    if spec.positive is not None and spec.threshold < 0.5:
        log.warning("DeepStream: threshold %.3g < 0.5 for %r cannot be expressed by classifier-threshold "
                    "(see the note in %s)", spec.threshold, spec.positive, CONFIG_NAME)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    if dest.resolve() != src.resolve():
        atomic.copy_file(src, dest)
        write_sidecar(dest, spec)
    atomic.write_text(folder / LABELS_NAME, labels)
    return atomic.write_text(folder / CONFIG_NAME, text)
