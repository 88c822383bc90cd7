"""The export's deployment step: model variants (parity-checked), a Triton model repository, a DeepStream config.

Called by :mod:`edgecls.export.pipeline` after the FP32 model (and any engines) passed parity:

- ``--variants probs,raw,raw-probs``: :mod:`edgecls.export.variants`, each published like every other artifact
  (temp name → parity → final name, or ``<name>.failed``);
- ``--triton REPO``: the ``probs`` variant (or a TensorRT plan of it) in a Triton repository (:mod:`.triton`);
- ``--deepstream DIR``: the ``raw-probs`` variant with an nvinfer config and labels (:mod:`.deepstream`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError

log = logging.getLogger(__name__)

TRITON_DEVICES = ("gpu", "cpu")
DEEPSTREAM_PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class DeployConfig:
    """What ``edgecls export`` was asked to produce for serving (all optional)."""

    variants: Tuple[str, ...] = ()
    triton: Optional[Path] = None  # model repository root
    triton_name: Optional[str] = None  # default: the export folder's name
    triton_device: str = "gpu"  # instance_group kind for an ONNX model (a plan always runs on the GPU)
    deepstream: Optional[Path] = None  # folder for the nvinfer config, labels and model
    deepstream_precision: str = "fp16"  # network-mode

    def __post_init__(self) -> None:
        from edgecls.export.variants import VARIANT_NAMES

        bad = [v for v in self.variants if v not in VARIANT_NAMES]
        if bad:
            raise InputError(f"--variants {','.join(bad)!r}: valid variants are {', '.join(VARIANT_NAMES)}")
        if self.triton_device not in TRITON_DEVICES:
            raise InputError(f"--triton-device {self.triton_device!r} is not one of {', '.join(TRITON_DEVICES)}")
        if self.deepstream_precision not in DEEPSTREAM_PRECISIONS:
            raise InputError(f"--deepstream-precision {self.deepstream_precision!r} is not one of "
                             f"{', '.join(DEEPSTREAM_PRECISIONS)} (INT8 in DeepStream needs a TensorRT calibration "
                             "table; use the INT8 engine from `edgecls export --engine int8` with `edgecls run`)")
        if self.triton_name is not None:
            from edgecls.export.triton import check_model_name

            check_model_name(self.triton_name)
        for name in ("triton", "deepstream"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, Path(v))

    @property
    def wanted(self) -> Tuple[str, ...]:
        """The variants to build: those asked for, plus what --triton / --deepstream ship."""
        want = list(self.variants)
        if self.triton is not None:
            want.append("probs")
        if self.deepstream is not None:
            want.append("raw-probs")
        return tuple(dict.fromkeys(want))

    @property
    def active(self) -> bool:
        return bool(self.wanted)


def add_warning(exporter: Any, msg: str) -> None:
    log.warning("%s", msg)
    exporter.warnings.append(msg)


def _base_logits(exporter: Any) -> np.ndarray:
    """model.onnx's logits on the parity images, through the runtime backend (what variants are compared with)."""
    from edgecls.export import ARTIFACT_NAMES
    from edgecls.runtime.backends import load_backend

    path = exporter.out / ARTIFACT_NAMES["fp32"]
    with load_backend(path, device="cpu", threads=exporter.cfg.threads, spec=None) as be:
        return np.asarray(be.infer(exporter.data.x), dtype=np.float32)


def build_variants(exporter: Any, fp32: Any, variants: Tuple[str, ...]) -> Dict[str, Path]:
    """Publish each variant through ``exporter.publish`` with its own spec and check; ``{variant: path}`` of those
    that passed."""
    from edgecls.export.variants import VARIANT_NAMES, build_variant, check_variant, variant_spec

    base = exporter.timed("variants: model.onnx logits", _base_logits, exporter)
    exporter.base_logits = base  # the Triton plan of the probs variant is compared with the same logits
    passed: Dict[str, Path] = {}
    for variant in variants:
        name = VARIANT_NAMES[variant]
        spec = variant_spec(exporter.spec, variant)
        proto = exporter.timed(f"variant {variant}", build_variant, fp32, exporter.spec, variant)

        def check(tmp: Path, stamped, variant=variant, name=name):
            return check_variant(name, tmp, variant, "fp32", base, exporter.reference, exporter.data, stamped,
                                 exporter.spec.preprocess, device="cpu", threads=exporter.cfg.threads)

        report = exporter.publish(name, proto, "fp32", spec=spec, check=check)
        exporter.extra.setdefault(name, {}).update({"variant": variant, "derived_from": "model.onnx"})
        exporter.reports.append(report)
        if report:
            passed[variant] = exporter.out / name
    return passed


def run_deploy(exporter: Any, fp32: Any, engines: List[Any]) -> List[str]:
    """The whole step; returns what was written besides the export folder (for the CLI to print)."""
    from edgecls.export import ARTIFACT_NAMES

    dcfg: DeployConfig = exporter.cfg.deploy
    fp32_report = next((r for r in exporter.reports if r.artifact == ARTIFACT_NAMES["fp32"]), None)
    if fp32_report is None or not fp32_report:
        add_warning(exporter, "no variants, Triton or DeepStream output: model.onnx failed parity")
        return []
    passed = build_variants(exporter, fp32, dcfg.wanted)
    written: List[str] = []
    if dcfg.triton is not None:
        if "probs" not in passed:
            add_warning(exporter, "Triton repository not written: model_probs.onnx failed parity")
        else:
            from edgecls.export.triton import triton_step

            written.append(os.fspath(exporter.timed("triton repository", triton_step, exporter, passed["probs"],
                                                    engines)))
    if dcfg.deepstream is not None:
        if "raw-probs" not in passed:
            add_warning(exporter, "DeepStream config not written: model_raw_probs.onnx failed parity")
        else:
            from edgecls.export.deepstream import write_deepstream

            written.append(os.fspath(exporter.timed(
                "deepstream config", write_deepstream, dcfg.deepstream, passed["raw-probs"],
                _spec_of(passed["raw-probs"]), exporter.cfg.batch.max, dcfg.deepstream_precision)))
    return written


def _spec_of(path: Path):
    from edgecls.export.metadata import read_sidecar

    return read_sidecar(path)
