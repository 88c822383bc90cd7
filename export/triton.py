"""``edgecls export --triton REPO``: a Triton Inference Server model repository for the exported classifier.

Layout (Triton's model repository)::

    REPO/<name>/config.pbtxt        platform, max_batch_size, input/output dims, dynamic_batching, instance_group
    REPO/<name>/labels.txt          one class per line (the output's label_filename: the classification extension)
    REPO/<name>/1/model.onnx        the ``probs`` variant: softmax(logits / T) in the graph (platform
                                    onnxruntime_onnx), or ``1/model.plan``: a TensorRT engine of it (tensorrt_plan)
    REPO/<name>/1/model.json        its edgecls spec (what ``edgecls run ... --backend triton://`` reads)

The model outputs tempered probabilities, so a request for ``"parameters": {"classification": k}`` ranks the
probabilities ``edgecls run`` reports. ``max_batch_size`` is the export's batch profile maximum (``--batch``);
the input is the preprocessed NCHW float32 image without the batch dimension. Every file is written atomically.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, List, Optional

from edgecls.core import fileio as atomic
from edgecls.core.errors import InputError
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
PLATFORMS = {".onnx": "onnxruntime_onnx", ".plan": "tensorrt_plan"}
QUEUE_DELAY_US = 500  # dynamic batching: how long Triton may hold a request to fill a batch
LABELS_FILE = "labels.txt"


def check_model_name(name: str) -> str:
    """A Triton model name is a folder name: letters, digits, ``_ . -``, not starting with ``.`` or ``-``."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"Triton model name {name!r} is not valid: use letters, digits, '_', '.', '-' "
                         "(it is the repository's folder name and part of the URL /v2/models/<name>)")
    return name


def default_model_name(out: Path) -> str:
    """The export folder's name with anything Triton would refuse replaced by ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(out).resolve().name) or "edgecls"
    return name if NAME_RE.match(name) else f"m_{name}"


def labels_text(spec: ModelSpec) -> str:
    """Triton's label file: one label per line, in output order."""
    bad = [c for c in spec.classes if "\n" in c or "\r" in c]
    if bad:
        raise InputError(f"class names {bad} contain a line break; Triton's label file has one label per line")
    return "".join(f"{c}\n" for c in spec.classes)


def config_text(name: str, spec: ModelSpec, platform: str, max_batch_size: int, device: str = "gpu",
                preferred_batch: Optional[int] = None) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ModelConfig)."""
    check_model_name(name)
    if platform not in PLATFORMS.values():
        raise InputError(f"Triton platform {platform!r}: valid {', '.join(PLATFORMS.values())}")
    if platform == "tensorrt_plan" and device != "gpu":
        raise InputError("a TensorRT plan runs only on a GPU: --triton-device gpu")
    if max_batch_size < 1:
        raise InputError(f"max_batch_size must be >= 1, got {max_batch_size}")
    c = spec.preprocess.crop
    pre = spec.preprocess
    pixels = ("0..255 RGB (normalization in the graph)" if all(m == 0 for m in pre.mean)
              else f"RGB /255, mean {list(pre.mean)}, std {list(pre.std)}")
    preferred = ""
    if preferred_batch and 1 < preferred_batch <= max_batch_size:
        preferred = f"  preferred_batch_size: [ {preferred_batch} ]\n"
    return (
        f"# edgecls {spec.edgecls_version}: {spec.arch} classifier, classes {list(spec.classes)}\n"
        f"# input: resize shorter side to {pre.resize} ({pre.interpolation}), centre crop {c}, {pixels}\n"
        f"# output: softmax(logits / {spec.temperature:g}); threshold {spec.threshold:g}"
        + (f", positive class {spec.positive!r}" if spec.positive else "") + "\n"
        + ("# a TensorRT plan loads only in a Triton built with the same TensorRT version, on the same GPU type\n"
           if platform == "tensorrt_plan" else "")
        + f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch_size}\n"
        "input [\n  {\n"
        f'    name: "{spec.input_name}"\n    data_type: TYPE_FP32\n    format: FORMAT_NCHW\n    dims: [ 3, {c}, {c} ]\n'
        "  }\n]\n"
        "output [\n  {\n"
        f'    name: "{spec.output_name}"\n    data_type: TYPE_FP32\n    dims: [ {spec.num_classes} ]\n'
        f'    label_filename: "{LABELS_FILE}"\n'
        "  }\n]\n"
        "dynamic_batching {\n"
        f"{preferred}  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n"
        "}\n"
        "instance_group [\n  {\n    count: 1\n"
        f"    kind: {'KIND_GPU' if device == 'gpu' else 'KIND_CPU'}\n"
        "  }\n]\n"
    )


def write_repository(repo: os.PathLike, name: str, model_file: os.PathLike, spec: ModelSpec, max_batch_size: int,
                     device: str = "gpu", preferred_batch: Optional[int] = None) -> Path:
    """Write ``REPO/<name>/`` for ``model_file`` (an ``.onnx`` or a TensorRT ``.plan``/``.engine``); returns the
    model folder. The model must output probabilities (the ``probs`` variant)."""
    from edgecls.export.metadata import write_sidecar

    check_model_name(name)
    src = Path(model_file)
    suffix = ".onnx" if src.suffix.lower() == ".onnx" else ".plan"
    if src.suffix.lower() not in (".onnx", ".plan", ".engine"):
        raise InputError(f"{os.fspath(src)!r}: a Triton model is an .onnx or a TensorRT .plan/.engine")
    if spec.output != "probs":
        raise InputError(f"{src.name} outputs logits; the Triton repository gets the probs variant "
                         "(export --variants probs) so the classification extension ranks probabilities")
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise InputError(f"--triton {os.fspath(repo)!r} exists and is not a folder")
    folder = repo / name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    platform = PLATFORMS[suffix]
    text = config_text(name, spec, platform, max_batch_size, device, preferred_batch)
    dest = version / f"model{suffix}"
    other = version / ("model.plan" if suffix == ".onnx" else "model.onnx")
    atomic.copy_file(src, dest)
    write_sidecar(dest, spec)
    atomic.write_text(folder / LABELS_FILE, labels_text(spec))
    atomic.write_text(folder / "config.pbtxt", text)
    atomic.remove_quietly(other)  # a model of the other kind from an earlier export would be ignored: remove it
    return folder


def _probs_plan(exporter: Any, probs_onnx: Path, precision: str) -> Optional[Path]:
    """A TensorRT engine of the probs variant at ``precision``, parity-checked; None when it failed parity."""
    from edgecls.export.tensorrt import build_engine
    from edgecls.export.variants import VARIANT_NAMES, check_variant, variant_spec

    cfg = exporter.cfg
    res = exporter.timed(f"engine probs {precision}", build_engine, probs_onnx, precision, exporter.out, cfg.batch,
                         cfg.workspace_mib, cfg.timing_cache, cfg.force_engine)
    spec = variant_spec(exporter.spec, "probs").replace(precision=precision, source_sha256=exporter.sha)
    report = check_variant(res.path.name, res.path, "probs", precision, exporter.base_logits, exporter.reference,
                           exporter.data, spec, exporter.spec.preprocess, device="auto",
                           agreement_min=cfg.tolerances.fp16_agreement if precision == "fp16" else None)
    exporter.reports.append(report)
    exporter.extra[res.path.name] = {"variant": "probs", "derived_from": VARIANT_NAMES["probs"]}
    return res.path if report else None


def triton_step(exporter: Any, probs_onnx: Path, engines: List[Any]) -> Path:
    """The repository for this export: a plan of the probs variant when engines were built, else its ONNX."""
    from edgecls.export.metadata import read_sidecar

    dcfg = exporter.cfg.deploy
    name = dcfg.triton_name or default_model_name(exporter.out)
    precision = next((e.precision for e in engines if e.precision in ("fp16", "fp32")), None)
    model = _probs_plan(exporter, probs_onnx, precision) if precision else None
    if precision and model is None:
        from edgecls.export.deploy import add_warning

        add_warning(exporter, f"Triton repository gets model_probs.onnx: the {precision} engine of it failed parity")
    elif engines and precision is None:
        log.info("Triton repository gets model_probs.onnx (a plan is built with --engine fp16 or fp32; INT8 engines "
                 "come from the Q/DQ model, which has no probs variant)")
    model = model or probs_onnx
    device = "gpu" if model.suffix != ".onnx" else dcfg.triton_device
    return write_repository(dcfg.triton, name, model, read_sidecar(model), exporter.cfg.batch.max, device,
                            exporter.cfg.batch.opt)
