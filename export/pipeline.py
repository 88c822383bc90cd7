"""``edgecls export`` as a library call: checkpoint → parity-checked artifacts (+ engines) and ``parity.json``.

Each artifact is written to a temp name, checked against PyTorch through the runtime backend, and only then
renamed to its final name (with its sidecar). A failed artifact never replaces an earlier good one: it is kept as
``<name>.failed`` (not loadable by the runtime: wrong suffix) for inspection, and marked failed in
``parity.json``. Nothing is swapped for another precision.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgecls.core import fileio as atomic
from edgecls.core.errors import CapabilityError, InputError, ParityError
from edgecls.export import ARTIFACT_NAMES
from edgecls.export.calib import DEFAULT_CALIB_COUNT, CalibSet
from edgecls.export.calib_cache import Calibration
from edgecls.export.calib_ranges import CALIB_CHOICES
from edgecls.export.deploy import DeployConfig
from edgecls.export.int8_flow import Int8Settings
from edgecls.export.onnx_export import DEFAULT_OPSET
from edgecls.export.parity import ParityData, ParityReport, Reference, Tolerances
from edgecls.export.parity_json import write_parity_json
from edgecls.export.quantize import INT8_FORMS, KEEP_FP32_CHOICES
from edgecls.export.tensorrt import EngineResult
from edgecls.export.trt_plan import DEFAULT_WORKSPACE_MIB, ENGINE_PRECISIONS, BatchProfile
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path
    out: Optional[Path] = None
    fp16: bool = False
    int8: bool = False
    int8_forms: Tuple[str, ...] = INT8_FORMS
    calib: Optional[Path] = None
    calib_count: int = DEFAULT_CALIB_COUNT
    calib_method: str = "percentile"
    calib_percentile: float = 99.99
    calib_cache: Optional[Path] = None
    calib_default_dir: Path = Path("calib_images")
    int8_keep_fp32: str = "auto"
    int8_settings: Int8Settings = field(default_factory=Int8Settings)  # --int8-max-keep
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    parity_data: Optional[Path] = None
    parity_count: Optional[int] = None
    gate_data: Optional[Path] = None  # more labelled images, added to the report split (never selection)
    tolerances: Tolerances = field(default_factory=Tolerances)
    engines: Tuple[str, ...] = ()
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    timing_cache: Optional[Path] = None
    force_engine: bool = False
    threads: Optional[int] = None
    seed: int = 0
    progress: bool = False
    deploy: DeployConfig = field(default_factory=DeployConfig)  # --variants, --triton, --deepstream

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        forms = tuple(self.int8_forms)
        bad = [f for f in forms if f not in INT8_FORMS]
        if bad or not forms:
            raise InputError(f"--int8-forms {','.join(forms)!r}: valid forms are {', '.join(INT8_FORMS)}")
        object.__setattr__(self, "int8_forms", forms)
        if self.calib_method not in CALIB_CHOICES:
            raise InputError(f"--calib-method {self.calib_method!r} is not one of {', '.join(CALIB_CHOICES)}")
        if self.int8_keep_fp32 not in KEEP_FP32_CHOICES:
            raise InputError(f"--int8-keep-fp32 {self.int8_keep_fp32!r} is not one of {', '.join(KEEP_FP32_CHOICES)}")
        engines = tuple(self.engines)
        bad = [e for e in engines if e not in ENGINE_PRECISIONS]
        if bad:
            raise InputError(f"--engine {','.join(bad)!r}: valid {', '.join(ENGINE_PRECISIONS)}")
        object.__setattr__(self, "engines", engines)
        if self.parity_count is not None and self.parity_count < 1:
            raise InputError(f"--parity-count must be >= 1, got {self.parity_count}")
        if self.calib_count < 1:
            raise InputError(f"--calib-count must be >= 1, got {self.calib_count}")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    spec: ModelSpec
    source_sha256: str
    data: ParityData
    reference: Reference
    reports: Tuple[ParityReport, ...]
    timings: Dict[str, float]
    parity_json: Path
    calib_set: Optional[CalibSet] = None
    calibration: Optional[Calibration] = None
    engines: Tuple[EngineResult, ...] = ()
    warnings: Tuple[str, ...] = ()
    engine_error: Optional[str] = None
    deployed: Tuple[str, ...] = ()  # Triton repository / DeepStream config written

    @property
    def passed(self) -> bool:
        return all(self.reports)

    def failed(self) -> List[ParityReport]:
        return [r for r in self.reports if not r]

    def table(self) -> str:
        from edgecls.export.parity_table import table

        return table(self.reports, self.reference, self.spec, self.data)

    def raise_for_status(self) -> None:
        """ParityError (exit 3) naming each failed artifact; else CapabilityError (exit 4) for a missing engine."""
        bad = self.failed()
        if bad:
            parts = []
            for r in bad:
                parts.append(f"{r.artifact} ({r.precision}): " + "; ".join(r.failures)
                             + f" — kept as {Path(r.path).name} for inspection")
            prev = [r.artifact for r in bad if (self.out / r.artifact).is_file()]
            tail = (f"; the earlier {', '.join(prev)} from a previous export {'was' if len(prev) == 1 else 'were'} "
                    "left untouched") if prev else ""
            raise ParityError(
                f"parity failed for {len(bad)} artifact(s) in {self.out}: " + " | ".join(parts) + tail
                + f". Details in {self.parity_json}"
            )
        if self.engine_error:
            raise CapabilityError(self.engine_error)


def default_out(checkpoint: Path) -> Path:
    parent = checkpoint.resolve().parent.name
    name = parent if parent and parent not in (".", "/") else checkpoint.stem
    return Path("runs") / "export" / name


def _stamp(report: ParityReport, path: Path) -> ParityReport:
    return dataclasses.replace(report, path=os.fspath(path))


class _Exporter:
    def __init__(self, config: ExportConfig) -> None:
        self.cfg = config
        self.reports: List[ParityReport] = []
        self.timings: Dict[str, float] = {}
        self.warnings: List[str] = []
        self.extra: Dict[str, Dict[str, Any]] = {}

    # -- artifacts -------------------------------------------------------------------------------------------
    def publish(self, name: str, proto, precision: str, notes: Sequence[str] = (), keep_failed: bool = True,
                spec: Optional[ModelSpec] = None, check: Optional[Callable[..., ParityReport]] = None,
                ) -> ParityReport:
        """Write ``proto`` to a temp name, check parity through the runtime backend, then rename (or mark failed).

        ``spec``: the artifact's own spec (a variant's) instead of the checkpoint's; ``check(tmp, stamped spec)``:
        its parity check instead of :func:`~edgecls.export.parity.check_artifact`."""
        from edgecls.export.metadata import artifact_spec, embed_spec, write_sidecar
        from edgecls.export.parity import check_artifact

        spec = artifact_spec(spec or self.spec, precision, self.sha)
        embed_spec(proto, spec)
        final = self.out / name
        tmp = atomic.temp_path(final, suffix=".onnx")
        try:
            tmp.write_bytes(proto.SerializeToString())
            t0 = time.perf_counter()
            report = check(tmp, spec) if check is not None else check_artifact(
                name, tmp, precision, self.reference, self.data, spec, self.cfg.tolerances, device="cpu",
                threads=self.cfg.threads, notes=notes)
            self.timings[f"parity {name}"] = time.perf_counter() - t0
            if not report and not keep_failed:  # an attempt that will be retried leaves nothing behind
                atomic.remove_quietly(tmp)
                return report
            if report:
                from edgecls.export.confidence import refit_artifact
                from edgecls.export.promise import with_promise

                spec = refit_artifact(self, tmp, spec, name, report=report)  # the checkpoint's promise, carried
                report = with_promise(report, spec, self.extra.get(name, {}).get("promise"))
                embed_spec(proto, spec)
                tmp.write_bytes(proto.SerializeToString())
                atomic.publish(tmp, final)
                write_sidecar(final, spec)
                atomic.remove_quietly(final.with_name(final.name + ".failed"))
                return _stamp(report, final)
            failed = final.with_name(final.name + ".failed")
            atomic.publish(tmp, failed)
            return _stamp(report, failed)
        finally:
            atomic.remove_quietly(tmp)

    def timed(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> ExportResult:
        from edgecls.core.fileio import file_sha256
        from edgecls.reference.checkpoint import load_checkpoint

        cfg = self.cfg
        t_start = time.perf_counter()
        ckpt = self.timed("load checkpoint", lambda: load_checkpoint(cfg.checkpoint))
        self.ckpt = ckpt
        self.sha = file_sha256(cfg.checkpoint)
        self.spec = ckpt.spec
        self.out = Path(cfg.out) if cfg.out is not None else default_out(cfg.checkpoint)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {os.fspath(self.out)!r} exists and is not a folder")
        self.out.mkdir(parents=True, exist_ok=True)
        self.prepare_out()
        # an empty or missing --calib is refused now, not after the FP32 export and the parity runs
        self.calib_set = self.resolve_calib() if (cfg.int8 or "int8" in cfg.engines) else None
        model = ckpt.build_model()
        want_fp16 = cfg.fp16 or "fp16" in cfg.engines
        want_int8 = cfg.int8 or "int8" in cfg.engines
        forms = cfg.int8_forms if cfg.int8 else ("int8-qdq",) if want_int8 else ()
        if "int8" in cfg.engines and "int8-qdq" not in forms:
            forms = forms + ("int8-qdq",)
        self.parity_images(model, bool(forms))

        from edgecls.export.onnx_export import export_onnx

        fp32, info = self.timed("export fp32", lambda: export_onnx(model, ckpt.spec, cfg.opset, cfg.simplify))
        self.extra["model.onnx"] = {"opset": info.opset, "exporter": info.exporter, "simplified": info.simplified,
                                    "nodes": info.nodes_after, "nodes_before_simplify": info.nodes_before}
        self.reports.append(self.publish(ARTIFACT_NAMES["fp32"], fp32, "fp32"))

        if want_fp16:
            from edgecls.export.fp16 import to_fp16

            fp16 = self.timed("export fp16", lambda: to_fp16(fp32))
            self.reports.append(self.publish(ARTIFACT_NAMES["fp16"], fp16, "fp16"))

        calib_set = calibration = None
        if forms:
            calib_set, calibration = self.int8(fp32, forms)

        engines: List[EngineResult] = []
        engine_error = None
        if cfg.engines:
            engines, engine_error = self.engines()
        deployed: List[str] = []
        if cfg.deploy.active:
            from edgecls.export.deploy import run_deploy

            deployed = run_deploy(self, fp32, engines)
        from edgecls.export.drift_reference import write_references

        self.warnings.extend(write_references(self))  # each good artifact's .drift.json
        self.timings["total"] = time.perf_counter() - t_start
        parity_json = write_parity_json(
            self.out, checkpoint=cfg.checkpoint, sha=self.sha, data=self.data, reference=self.reference,
            tolerances=cfg.tolerances, reports=self.reports, extra=self.extra, timings=self.timings,
            calib_set=calib_set, calibration=calibration, engines=engines, engine_error=engine_error,
            selection=self.split.to_dict() if self.split is not None else None)
        return ExportResult(self.out, ckpt.spec, self.sha, self.data, self.reference, tuple(self.reports),
                            dict(self.timings), parity_json, calib_set, calibration, tuple(engines),
                            tuple(self.warnings), engine_error, tuple(deployed))

    def parity_images(self, model, split: bool) -> None:
        """The parity images and PyTorch's logits on them; with INT8, split into selection and report (the images
        that choose the INT8 recipe are not the ones reported: :mod:`edgecls.export.select_split`); ``--gate-data``
        joins the reported images."""
        from edgecls.export.parity import reference_from
        from edgecls.export.parity_data import gate_data, parity_data_from_checkpoint, parity_data_from_folder
        from edgecls.reference.torch_backend import TorchBackend

        cfg, ckpt = self.cfg, self.ckpt
        self.data = self.timed("load parity images", lambda: (
            parity_data_from_folder(cfg.parity_data, ckpt.spec, cfg.parity_count) if cfg.parity_data is not None
            else parity_data_from_checkpoint(ckpt, cfg.parity_count)))
        extra = self.timed("load parity images", lambda: gate_data(cfg.gate_data, ckpt.spec, self.data))
        with TorchBackend(model, spec=ckpt.spec, threads=cfg.threads) as torch_be:
            self.reference = self.timed("pytorch reference", lambda: reference_from(torch_be, self.data, ckpt.spec))
            extra_ref = None if extra is None else self.timed(
                "pytorch reference", lambda: reference_from(torch_be, extra, ckpt.spec))
        self.split = None
        if split:
            from edgecls.export.confidence import ArtifactRefit
            from edgecls.export.select_split import split_select_report

            self.split = split_select_report(self.data, self.reference, ckpt.spec, ckpt.data)
            log.info("parity images split: %s", self.split.rule)
            self._confidence_refit = ArtifactRefit(ckpt.data, self.split.select, cfg.threads)  # fits on select
            self.data, self.reference = self.split.report, self.split.report_reference
        if extra is not None:
            from edgecls.export.select_split import concat_parity

            self.data, self.reference = concat_parity(self.data, self.reference, extra, extra_ref, ckpt.spec)

    def prepare_out(self) -> None:
        """The export folder made this checkpoint's: another checkpoint's artifacts moved to ``stale/<sha>/``
        (:mod:`edgecls.export.stale`), temp files of an export that was killed mid-write removed."""
        from edgecls.export.stale import set_aside_foreign

        self.warnings.extend(set_aside_foreign(self.out, self.sha))
        orphans = atomic.remove_orphan_temps(self.out)
        if orphans:
            log.warning("removed %d temp file(s) an interrupted export left in %s: %s", len(orphans), self.out,
                        ", ".join(p.name for p in orphans))

    def resolve_calib(self):
        from edgecls.export.calib import resolve_calib_set

        cfg = self.cfg
        return resolve_calib_set(cfg.calib, cfg.calib_count, self.ckpt.data, self.spec.classes, cfg.seed,
                                 cfg.calib_default_dir)

    def int8(self, fp32, forms: Sequence[str]):
        from edgecls.export.int8_flow import run_int8

        return run_int8(self, fp32, forms)

    def engines(self) -> Tuple[List[EngineResult], Optional[str]]:
        from edgecls.export.parity import check_artifact
        from edgecls.export.tensorrt import build_engine
        from edgecls.export.trt_plan import choose_onnx
        from edgecls.runtime.backends.tensorrt import import_tensorrt

        cfg = self.cfg
        results: List[EngineResult] = []
        try:
            trt_version = str(getattr(import_tensorrt(), "__version__", "0"))
        except CapabilityError:
            trt_version = None
        errors = []
        for precision in cfg.engines:
            onnx_path = choose_onnx(self.out, precision, trt_version)
            rep = next((r for r in self.reports if r.artifact == onnx_path.name), None)
            if rep is not None and not rep:
                errors.append(f"{precision} engine not built: {onnx_path.name} failed parity")
                continue
            try:
                res = self.timed(f"engine {precision}", build_engine, onnx_path, precision, self.out, cfg.batch,
                                 cfg.workspace_mib, cfg.timing_cache, cfg.force_engine)
            except CapabilityError as e:
                errors.append(str(e))
                continue
            results.append(res)
            from edgecls.export.metadata import read_sidecar

            spec = read_sidecar(res.path)
            report = check_artifact(res.path.name, res.path, precision, self.reference, self.data, spec,
                                    cfg.tolerances, device="auto")
            if report:
                from edgecls.export.confidence import refit_artifact
                from edgecls.export.metadata import write_sidecar

                write_sidecar(res.path, refit_artifact(self, res.path, spec, res.path.name, device="auto",
                                                       report=report))
            self.reports.append(report)
        return results, ("\n".join(errors) if errors else None)


def require_export_dependencies() -> None:
    """CapabilityError (exit 4) naming the install command when the export extra is missing."""
    from edgecls.runtime.model_io import import_onnxruntime

    missing = []
    for mod, pkg in (("torch", "torch"), ("torchvision", "torchvision"), ("onnx", "onnx")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        raise CapabilityError(
            f"edgecls export needs {', '.join(missing)}: pip install 'edgecls[export,cpu]' (or [export,gpu])"
        )
    import_onnxruntime()


def export_checkpoint(config: ExportConfig) -> ExportResult:
    """Run the export; returns the result (check ``result.passed`` or call ``result.raise_for_status()``)."""
    require_export_dependencies()
    return _Exporter(config).run()
