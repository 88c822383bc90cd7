"""``edgecls export --int8``: choose each INT8 form's recipe on the selection images, then publish it.

Per form (``int8-qdq`` for TensorRT, ``int8-cpu`` for onnxruntime's CPU provider), what the ablation
(bench/INT8_RESULTS.md) kept:

1. **full INT8** first, with the ``--calib-method`` ranges (percentile by default: never less accurate than a
   per-model method search in 12 of 12 measured cases);
2. **ill-conditioned linear bottlenecks fused** (:mod:`edgecls.export.fuse_linear`) when full INT8 misses a gate:
   a layer with SQNR below ``FUSE_BELOW_DB`` that reads a 1×1 projection (no activation between) is computed as one
   convolution with it — exact in float, no INT8 tensor in between — then full INT8 again;
3. **layers kept in higher precision** (``--int8-keep-fp32 auto``, on the plain model) only when that still
   misses a gate on the selection split: layers ranked by their own quantization error (SQNR,
   :mod:`edgecls.export.sensitivity`), the fewest most sensitive ones kept in FP32 (at most ``--int8-max-keep``).
   On the CPU form each one costs latency, measured against FP32 and printed (loudly when slower than FP32).

Cross-layer equalization, the calibration-method search and the QAT fallback were measured and deleted: none
improved a gate result on both forms (QAT made the CPU form fail where PTQ passed; equalization helped one form,
hurt the other, and added nothing once bottlenecks are fused).

Every candidate is judged as the artifact would be: run through the runtime backend, its confidence re-fitted on
its own logits (:mod:`edgecls.export.refit`), then the INT8 gates with the accuracy drop as a point estimate (for
the TensorRT form also top-1 agreement >= 99 %) — all on the *selection* split only. The chosen model is then
published by the pipeline and gated on the *report* split (:mod:`edgecls.export.gates`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.core.fileio import remove_quietly
from edgecls.export import ARTIFACT_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.parity import ParityReport
    from edgecls.export.quantize import QuantizeInfo
    from edgecls.export.refit import RefitRecord
    from edgecls.export.sensitivity import LayerSensitivity
    from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

# layers whose own quantization error is this bad (SQNR, dB) get their linear bottleneck fused into them before
# layers are kept in FP32: products28's MobileNetV2 has one at -1..3 dB, every other layer >= 13 dB
FUSE_BELOW_DB = 10.0


@dataclass(frozen=True)
class Int8Settings:
    """How the INT8 recipe is chosen (``edgecls export`` options)."""

    max_keep: float = 0.25  # auto may keep at most this share of the weighted layers in FP32
    sensitivity_images: int = 32
    latency: bool = True  # time FP32 / full INT8 / chosen INT8 CPU form (b1) to print the cost of kept layers
    refit_temperature: bool = True  # re-fit an artifact's temperature when that lowers cross-fitted held-out NLL

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_keep <= 1.0:
            raise InputError(f"--int8-max-keep must be a fraction in [0, 1], got {self.max_keep}")
        if self.sensitivity_images < 1:
            raise InputError("the sensitivity image count must be >= 1")


@dataclass
class Candidate:
    form: str
    method: str
    exclude: Tuple[str, ...]
    model: Any  # onnx.ModelProto
    info: QuantizeInfo
    report: ParityReport  # on the selection split
    spec: ModelSpec  # with its own re-fitted confidence
    refit: Optional[RefitRecord]
    score: float  # mean KL(PyTorch || artifact) on the selection split, both at the checkpoint's temperature
    fused: Tuple[str, ...] = ()  # linear bottlenecks fused into their readers before quantizing (A+B node names)

    @property
    def passed(self) -> bool:
        return bool(self.report)

    def summary(self) -> str:
        r = self.report
        parts = [f"agreement {100 * r.agreement:.2f}%" if r.agreement is not None else "",
                 f"acc {100 * r.accuracy:.2f}%" if r.accuracy is not None else "",
                 f"ECE {r.ece:.3f}" if r.ece is not None else "",
                 f"p99|Δp| {r.p99_abs_prob:.3f}" if r.p99_abs_prob is not None else "", f"KL {self.score:.2e}"]
        return ", ".join(p for p in parts if p) + (" pass" if self.passed else " FAIL")


@dataclass
class FormResult:
    best: Candidate
    tried: List[str] = field(default_factory=list)
    ranking: List[LayerSensitivity] = field(default_factory=list)
    full: Optional[Candidate] = None  # the best full-INT8 candidate (for the cost of the layers kept)


EMULATED = "CPUExecutionProvider (exact Q/DQ, graph optimizations off)"


def artifact_logits(path: Path, form: str, spec, x: np.ndarray, threads: Optional[int]) -> np.ndarray:
    """An INT8 artifact's logits as its deployment computes them: the CPU form through the runtime backend
    (onnxruntime's CPU int8 kernels); the TensorRT form by exact Q/DQ semantics — onnxruntime with graph
    optimizations off, so no int8 kernel of onnxruntime's CPU provider (which is not where it deploys) stands in
    for TensorRT's int32-accumulating ones."""
    if form == "int8-qdq":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        sess = ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return np.concatenate([np.asarray(sess.run(None, {name: x[i:i + 32]})[0], np.float32)
                               for i in range(0, len(x), 32)])
    from edgecls.runtime.backends import load_backend

    with load_backend(path, device="cpu", threads=threads, allow_fallback=False, spec=spec) as be:
        return np.asarray(be.infer(x), dtype=np.float32)


def qdq_check(ex, name: str, notes: Sequence[str]):
    """The pipeline's parity check for the TensorRT form: :func:`artifact_logits` (exact Q/DQ) on the report
    split, then the usual comparison; a model that cannot run is a failed parity, not a crash."""
    from edgecls.export.parity import compare

    def check(tmp: Path, spec) -> ParityReport:
        t0 = time.perf_counter()
        try:
            logits = artifact_logits(tmp, "int8-qdq", spec, ex.data.x, ex.cfg.threads)
        except Exception as e:  # noqa: BLE001 — reported as the artifact's failure
            logits = np.full((ex.data.n, 0), np.nan, np.float32)
            notes_ = list(notes) + [f"could not run: {type(e).__name__}: {e}"]
            return compare(name, tmp, "int8-qdq", logits, ex.reference, ex.data, spec, ex.cfg.tolerances, (),
                           time.perf_counter() - t0, notes_)
        return compare(name, tmp, "int8-qdq", logits, ex.reference, ex.data, spec, ex.cfg.tolerances, (EMULATED,),
                       time.perf_counter() - t0, notes)

    return check


def _mean_kl(ref_logits: np.ndarray, t_ref: float, logits: np.ndarray, t: float) -> float:
    from edgecls.runtime.metrics import log_softmax

    lp, lq = log_softmax(ref_logits, t_ref), log_softmax(logits, t)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


class Int8Chooser:
    """Chooses and publishes the INT8 artifacts for one export (``exporter``: the pipeline's ``_Exporter``)."""

    def __init__(self, exporter, settings: Int8Settings) -> None:
        self.ex = exporter
        self.s = settings
        self.sel = exporter.split.select
        self.sel_ref = exporter.split.select_reference
        self.tmp = Path(tempfile.mkdtemp(prefix="edgecls-int8-"))
        # Selection is conservative where the report is not: the report refuses an accuracy drop over the limit
        # only with evidence (McNemar), but a recipe whose drop is over it on the selection images is not chosen
        # (products28's plain full-INT8 CPU form: 1.5 pt worse on all 270 val images, not significant on 128).
        # The TensorRT form also asks for 99 % agreement: ~140 images can meet the accuracy gate by cancelling
        # flips (3 of 142 did, and failed on the report split), and layers kept in FP16/FP32 cost TensorRT little.
        tol = dataclasses.replace(exporter.cfg.tolerances, gate_accuracy_point=True)
        self.sel_tol = {"int8-qdq": dataclasses.replace(tol, gate_agreement=True), "int8-cpu": tol}

    # -- one candidate ---------------------------------------------------------------------------------------
    def evaluate(self, pre, calibration, form: str, exclude: Sequence[str] = ()) -> Candidate:
        from edgecls.export.metadata import artifact_spec
        from edgecls.export.parity import compare
        from edgecls.export.quantize import quantize
        from edgecls.export.refit import refit_with_record

        ex = self.ex
        q, info = ex.timed(f"quantize {form}", quantize, pre, calibration, form, tuple(exclude))
        path = self.tmp / f"{form}-{len(exclude)}.onnx"
        path.write_bytes(q.SerializeToString())
        spec = artifact_spec(ex.spec, form, ex.sha)
        t0 = time.perf_counter()
        logits = artifact_logits(path, form, spec, self.sel.x, ex.cfg.threads)
        record = None
        if self.sel.y is not None and np.all(np.isfinite(logits)):
            spec, record = refit_with_record(spec, logits, self.sel.y, f"selection split; {form} logits",
                                             refit_temperature=self.s.refit_temperature)
        report = compare(ARTIFACT_NAMES[form], path, form, logits, self.sel_ref, self.sel, spec, self.sel_tol[form],
                         seconds=time.perf_counter() - t0)
        t_ref = self.sel_ref.temperature or ex.spec.temperature
        score = _mean_kl(self.sel_ref.logits, t_ref, logits, t_ref) if report.agreement is not None \
            else float("inf")
        ex.timings["int8 selection runs"] = ex.timings.get("int8 selection runs", 0.0) + time.perf_counter() - t0
        remove_quietly(path)
        return Candidate(form, calibration.method, tuple(exclude), q, info, report, spec, record, score)

    # -- one form --------------------------------------------------------------------------------------------
    def _ranking(self, model, cal, form: str, images) -> List[LayerSensitivity]:
        from edgecls.export.quantize import quantize
        from edgecls.export.sensitivity import layer_sensitivity

        qa, _ = self.ex.timed(f"sensitivity {form}", quantize, model, cal, form, (), True)
        x = images.data[: self.s.sensitivity_images]
        return self.ex.timed(f"sensitivity {form}", layer_sensitivity, model, qa, x, self.ex.spec.preprocess.crop)

    def choose(self, pre, calibrations: Dict[str, Any], form: str, images) -> FormResult:
        """Full INT8; else the ill-conditioned linear bottlenecks fused into their readers, full INT8 again; else
        the fewest most sensitive layers of the plain model kept in FP32 (on products28 the fused model needed 8
        where the plain one needed 2)."""
        from edgecls.export.fuse_linear import fuse_pointwise_pairs
        from edgecls.export.quantize import fixed_keep_set, weighted_nodes
        from edgecls.export.sensitivity import fewest_passing

        keep_choice = self.ex.cfg.int8_keep_fp32
        exclude: Tuple[str, ...] = () if keep_choice == "auto" else fixed_keep_set(pre, keep_choice)[1]
        tried: List[str] = []
        cands = [self.evaluate(pre, cal, form, exclude) for cal in calibrations.values()]
        for c in cands:
            tried.append(f"{c.method}, {len(c.exclude)} kept: {c.summary()}")
        best = min(cands, key=lambda c: (not c.passed, c.score))
        result = FormResult(best, tried, full=best)
        if best.passed or keep_choice != "auto":
            return result
        cal = calibrations[best.method]
        ranking = self._ranking(pre, cal, form, images)
        weak = {r.name for r in ranking if r.sqnr_db < FUSE_BELOW_DB}
        fz, pairs = fuse_pointwise_pairs(pre, only=weak) if weak else (pre, [])
        if pairs:
            cal = next(iter(_calibrate(self.ex, fz, images).values()))
            cf = self.evaluate(fz, cal, form, ())
            cf.fused = tuple(pairs)
            tried.append(f"{cal.method}, {len(pairs)} bottleneck(s) fused, 0 kept: {cf.summary()}")
            log.info("%s: %d linear bottleneck(s) fused: %s", form, len(pairs), cf.summary())
            if cf.passed:
                result.best = result.full = cf
                return result
            cal = calibrations[best.method]  # (kept layers on the fused model needed more of them: measured)
        result.ranking = ranking
        order = [r.name for r in ranking]
        limit = min(len(order), max(1, int(round(self.s.max_keep * len(weighted_nodes(pre))))))
        seen: Dict[int, Candidate] = {0: best}

        def passes(k: int) -> bool:
            if k not in seen:
                seen[k] = self.evaluate(pre, cal, form, order[:k])
                tried.append(f"{cal.method}, {k} kept: {seen[k].summary()}")
                log.info("%s: %d most sensitive layer(s) in FP32: %s", form, k, seen[k].summary())
            return seen[k].passed

        found = fewest_passing(passes, limit)
        if found.keep is not None:
            result.best = seen[found.keep]
        else:
            result.best = min(seen.values(), key=lambda c: (not c.passed, c.score))
        return result


# ------------------------------------------------------------------------------------------------ the run


def _calibrate(ex, pre, images) -> Dict[str, Any]:
    from edgecls.core.progress import progress
    from edgecls.export.calib_cache import calibrate_many, passes_needed
    from edgecls.export.calib_ranges import CalibConfig

    cfg = ex.cfg
    methods = (cfg.calib_method,)
    configs = [CalibConfig(method=m, percentile=cfg.calib_percentile) for m in methods]
    cache_dir = Path(cfg.calib_cache) if cfg.calib_cache is not None else ex.out / "calib_cache"
    with progress(total=passes_needed(configs) * len(images), desc=f"calibrating ({', '.join(methods)})",
                  unit="img", enabled=cfg.progress) as bar:
        return ex.timed("calibration", calibrate_many, pre, images, configs, cache_dir, bar.update)


def _prepare(ex, fp32):
    """onnxruntime's quantization pre-processing (optimization + shape inference)."""
    from edgecls.export.quantize import preprocess_for_quantization

    return ex.timed("quant pre-process", preprocess_for_quantization, fp32)


def _calib_set(ex):
    calib_set = ex.calib_set if getattr(ex, "calib_set", None) is not None else ex.resolve_calib()
    for w in calib_set.warnings():
        log.warning("%s", w)
        ex.warnings.append(w)
    parity = set(os.path.realpath(p) for p in ex.split.select.paths + ex.split.report.paths)
    overlap = set(os.path.realpath(p) for p in calib_set.paths) & parity
    if overlap:
        w = (f"{len(overlap)} calibration images are also parity images (e.g. {sorted(overlap)[0]}); "
             "calibrate on training or deployment images, not on the held-out set")
        log.warning("%s", w)
        ex.warnings.append(w)
    return calib_set


def run_int8(ex, fp32, forms: Sequence[str]):
    """Choose, then publish, each INT8 form; returns ``(calib_set, calibration of the first form's method)``."""
    import shutil

    from edgecls.export.calib_ranges import CalibrationImages

    s: Int8Settings = ex.cfg.int8_settings
    calib_set = _calib_set(ex)
    images = ex.timed("load calibration images", lambda: CalibrationImages(calib_set.paths, ex.spec.preprocess))
    pre = _prepare(ex, fp32)
    cals = _calibrate(ex, pre, images)
    chooser = Int8Chooser(ex, s)
    try:
        results = {f: chooser.choose(pre, cals, f, images) for f in forms}
        from edgecls.export.agreement import UnlabelledAgreement

        agree = UnlabelledAgreement(ex, calib_set)
        for form in forms:
            _publish(ex, form, results[form], fp32, agree)
    finally:
        shutil.rmtree(chooser.tmp, ignore_errors=True)
    return calib_set, next(iter(cals.values()))


def _publish(ex, form: str, res: FormResult, fp32, agree=None) -> None:
    from edgecls.export.int8_cost import kept_cost

    c = res.best
    name = ARTIFACT_NAMES[form]
    kept = [r for r in res.ranking if r.name in set(c.exclude)] or c.exclude
    cost = kept_cost(ex, form, c, res.full, fp32, res.ranking)
    notes = [f"recipe chosen on {ex.split.select.n} selection images (not the {ex.split.report.n} reported): "
             f"{c.method} calibration, " + (f"{len(c.exclude)} layer(s) kept in FP32" if c.exclude else "full INT8")
             + (f", {len(c.fused)} linear bottleneck(s) fused into their readers" if c.fused else "")]
    if c.exclude or "latency_ms_b1" in cost:
        notes.append(cost["line"])
    if c.refit is not None and ex.spec.positive is not None:
        r = c.refit
        notes.append(f"threshold re-fitted on its own selection-split outputs: {r.threshold_before:.3f} -> "
                     f"{r.threshold:.3f}")
    if not c.passed:
        notes.append("no recipe passed the INT8 gates on the selection split either: " + c.summary())
    check = qdq_check(ex, name, notes) if form == "int8-qdq" else None
    report = ex.publish(name, c.model, form, notes=notes, spec=c.spec, check=check)
    if c.refit is not None:
        report = dataclasses.replace(report, temperature_source=c.refit.describe())
    unlabelled = agree(report.path, form, c.spec) if agree is not None and report.passed else None
    if unlabelled is not None:
        ex.extra.setdefault(name, {})["unlabelled_agreement"] = {k: v for k, v in unlabelled.items() if k != "line"}
        limit = ex.cfg.tolerances.int8_agreement
        warn = () if unlabelled["agreement"] >= limit else (
            f"top-1 agreement {100 * unlabelled['agreement']:.2f}% below {100 * limit:g}% on {unlabelled['n']} "
            "unlabelled calibration-folder images",)
        report = dataclasses.replace(report, notes=report.notes + (unlabelled["line"],),
                                     warnings=report.warnings + warn)
    entry = ex.extra.setdefault(name, {})
    entry.update({
        "form": form, "calib_method": c.method, "kept_fp32": list(c.exclude), "ops": c.info.op_counts,
        "float_outputs": {"qdq_pairs_removed_after_last_layer": c.info.float_outputs},
        "selection": {"images": ex.split.select.n, "passed": c.passed, "tried": res.tried,
                                      "report": c.report.to_dict()},
        "kept_layers": [k.to_dict() if hasattr(k, "to_dict") else {"name": k} for k in kept],
        "sensitivity": [r.to_dict() for r in res.ranking[:12]],
        "cost": {k: v for k, v in cost.items() if k != "line"},
        "refit": c.refit.to_dict() if c.refit is not None else None,
        "fused_bottlenecks": list(c.fused),
    })
    if c.exclude or not c.passed:
        log.warning("%s: %s", name, "; ".join(notes))
    ex.reports.append(report)
