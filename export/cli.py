"""``edgecls export``, ``edgecls build-engine`` and ``edgecls calib-sample``: thin typer commands.

Only typer and the standard library at module top, so ``edgecls --help`` stays fast; the work is in
:mod:`edgecls.export.pipeline`, :mod:`edgecls.export.tensorrt` and :mod:`edgecls.export.calib`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer


def _split(text: Optional[str]) -> Tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def _pct_fraction(value: float, option: str) -> float:
    if not 0.0 <= value <= 100.0:
        from edgecls.core.errors import InputError

        raise InputError(f"{option} is a percentage in [0, 100], got {value}")
    return value / 100.0


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s >= 0.1 else f"{s * 1000:.0f}ms"


def export_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from `edgecls train` (runs/train/<name>/best.pt)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Export folder (default: runs/export/<name>)."),
    fp16: bool = typer.Option(False, "--fp16", help="Also export model_fp16.onnx (FP16 inside, FP32 in/out)."),
    int8: bool = typer.Option(False, "--int8", help="Also export calibrated INT8: model_int8_qdq.onnx (TensorRT) "
                              "and model_int8_cpu.onnx (onnxruntime CPU)."),
    int8_forms: str = typer.Option("int8-qdq,int8-cpu", "--int8-forms", help="Which INT8 forms (comma-separated)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images (default: calib_images/ if it "
                                         "has images, else a stratified sample of the checkpoint's training images)."),
    calib_count: int = typer.Option(256, "--calib-count", help="Calibration images to use (warns below 100)."),
    calib_method: str = typer.Option("percentile", "--calib-method", help="Activation ranges: percentile (of "
                                     "|x|, --calib-percentile) | minmax | entropy (TensorRT's KL threshold)."),
    calib_percentile: float = typer.Option(99.99, "--calib-percentile", help="Percentile of |x| for --calib-method "
                                           "percentile."),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", help="Calibration cache folder "
                                               "(default: <out>/calib_cache)."),
    int8_keep_fp32: str = typer.Option("auto", "--int8-keep-fp32", help="auto: full INT8 unless it misses a gate "
                                       "on the selection split, then the fewest most sensitive layers (per-layer "
                                       "SQNR) kept in FP32; none: every layer INT8; ends: first and last layer "
                                       "FP32; depthwise; depthwise+ends. The layers kept are printed."),
    int8_max_keep: float = typer.Option(25.0, "--int8-max-keep", help="auto keeps at most this % of the weighted "
                                        "layers in FP32 (the export fails, exit 3, when even that misses a gate)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 parses on TensorRT 8.5 / JetPack 5)."),
    no_simplify: bool = typer.Option(False, "--no-simplify", help="Keep the exporter's graph as it is."),
    parity_data: Optional[Path] = typer.Option(None, "--parity-data", help="Held-out images for parity "
                                               "(default: the checkpoint's val images); class subfolders = labels."),
    parity_count: Optional[int] = typer.Option(None, "--parity-count", help="Use at most N parity images."),
    tol_fp32: float = typer.Option(1e-4, "--tol-fp32", help="FP32: max |Δlogit| <= this × max(1, max |logit|)."),
    tol_fp16_agreement: float = typer.Option(99.5, "--tol-fp16-agreement", help="FP16: min top-1 agreement, %."),
    tol_int8_acc_drop: float = typer.Option(1.0, "--tol-int8-acc-drop", help="INT8 gate: max accuracy drop vs "
                                            "PyTorch on the labelled report images, points (fails when also "
                                            "significant: McNemar p < 0.05; --strict: always)."),
    tol_int8_ece: float = typer.Option(0.03, "--tol-int8-ece", help="INT8 gate: max ECE of the artifact at its own "
                                       "temperature (or PyTorch's own ECE on the same images + 0.015, when higher; "
                                       "not gated under 50 labelled images)."),
    tol_int8_decisions: float = typer.Option(97.0, "--tol-int8-decisions", help="INT8 gate (with a positive "
                                             "class): min % of yes/no/uncertain decisions equal to PyTorch's."),
    tol_int8_agreement: Optional[float] = typer.Option(None, "--tol-int8-agreement", help="INT8 fidelity: min top-1 "
                                                       "agreement, % (warned below 99; gated when given, with "
                                                       "--strict, or when the images have no labels)."),
    tol_int8_p99_prob: Optional[float] = typer.Option(None, "--tol-int8-p99-prob", help="INT8 fidelity: max p99 "
                                                      "|Δprob| vs PyTorch at the checkpoint's temperature (warned "
                                                      "above 0.05; gated when given or with --strict)."),
    strict: bool = typer.Option(False, "--strict", help="INT8: also fail on fidelity (top-1 agreement, p99 "
                                "|Δprob|), and on an accuracy drop over the limit even when McNemar's test finds "
                                "it could be chance."),
    gate_data: Optional[Path] = typer.Option(None, "--gate-data", help="More labelled images (class subfolders) "
                                             "for the gates: added to the report split, never used for selection."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Also build TensorRT engines: fp16 | int8 | fp16,int8 "
                                         "(needs tensorrt and a GPU; else exit 4 with the trtexec command)."),
    batch: str = typer.Option("1,1,8", "--batch", help="Engine batch profile MIN,OPT,MAX (or MAX)."),
    workspace: int = typer.Option(1024, "--workspace", help="Engine builder workspace, MiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file."),
    force_engine: bool = typer.Option(False, "--force-engine", help="Rebuild engines even when up to date."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the parity runs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration / parity samples."),
    variants: Optional[str] = typer.Option(None, "--variants", help="Also export deployment variants, each "
                                           "parity-checked: probs (softmax(logits/T) in the graph), raw (0-255 RGB "
                                           "input, normalization in the graph), raw-probs (both)."),
    triton: Optional[Path] = typer.Option(None, "--triton", help="Write a Triton model repository here "
                                          "(REPO/<name>/config.pbtxt, 1/model.onnx or 1/model.plan, labels.txt)."),
    triton_name: Optional[str] = typer.Option(None, "--triton-name", help="Triton model name "
                                              "(default: the export folder's name)."),
    triton_device: str = typer.Option("gpu", "--triton-device", help="gpu | cpu: instance_group kind of the "
                                      "ONNX model in Triton."),
    deepstream: Optional[Path] = typer.Option(None, "--deepstream", help="Write a DeepStream nvinfer classifier "
                                              "config, labels and the raw-probs model to this folder."),
    deepstream_precision: str = typer.Option("fp16", "--deepstream-precision", help="fp16 | fp32: nvinfer "
                                             "network-mode."),
) -> None:
    """Export a checkpoint to ONNX FP32 (+ FP16, calibrated INT8, TensorRT engines); every artifact must pass
    parity against PyTorch (exit 3 if one fails; it is kept as <name>.failed, earlier good files stay)."""
    from edgecls.export.deploy import DeployConfig
    from edgecls.export.int8_flow import Int8Settings
    from edgecls.export.parity import Tolerances
    from edgecls.export.pipeline import ExportConfig, export_checkpoint
    from edgecls.export.trt_plan import BatchProfile
    from edgecls.export.variants import parse_variants

    tol = Tolerances(
        fp32_logit_rel=tol_fp32,
        fp16_agreement=_pct_fraction(tol_fp16_agreement, "--tol-fp16-agreement"),
        int8_accuracy_drop=_pct_fraction(tol_int8_acc_drop, "--tol-int8-acc-drop"), int8_ece=tol_int8_ece,
        int8_decision_agreement=_pct_fraction(tol_int8_decisions, "--tol-int8-decisions"),
        int8_agreement=0.99 if tol_int8_agreement is None else _pct_fraction(tol_int8_agreement,
                                                                            "--tol-int8-agreement"),
        int8_p99_prob=0.05 if tol_int8_p99_prob is None else tol_int8_p99_prob,
        gate_agreement=strict or tol_int8_agreement is not None, gate_p99_prob=strict or tol_int8_p99_prob is not None,
        gate_accuracy_point=strict,
    )
    cfg = ExportConfig(
        checkpoint=checkpoint, out=out, fp16=fp16, int8=int8, int8_forms=_split(int8_forms), calib=calib,
        calib_count=calib_count, calib_method=calib_method, calib_percentile=calib_percentile,
        calib_cache=calib_cache, int8_keep_fp32=int8_keep_fp32,
        int8_settings=Int8Settings(max_keep=_pct_fraction(int8_max_keep, "--int8-max-keep")),
        opset=opset, simplify=not no_simplify,
        parity_data=parity_data, parity_count=parity_count, gate_data=gate_data, tolerances=tol, engines=_split(engine),
        batch=BatchProfile.parse(batch), workspace_mib=workspace, timing_cache=timing_cache,
        force_engine=force_engine, threads=threads, seed=seed, progress=sys.stderr.isatty(),
        deploy=DeployConfig(variants=parse_variants(variants), triton=triton, triton_name=triton_name,
                            triton_device=triton_device, deepstream=deepstream,
                            deepstream_precision=deepstream_precision),
    )
    result = export_checkpoint(cfg)
    typer.echo(result.table())
    if result.calib_set is not None and result.calibration is not None:
        c = result.calibration
        typer.echo(
            f"calibration: {c.method} on {c.images} images ({result.calib_set.source}; "
            f"{', '.join(f'{k} {v}' for k, v in result.calib_set.groups.items())}); "
            f"{'cached ranges reused' if c.cache_hit else 'ranges computed'} ({c.cache_path})"
        )
    for e in result.engines:
        typer.echo(f"engine: {e.path} (TensorRT {e.trt_version}, sm{e.compute_capability}, "
                   f"{'reused' if e.reused else f'built in {e.seconds:.1f}s'})")
    shown = [(k, v) for k, v in result.timings.items() if not k.startswith("parity ")]
    typer.echo("timing: " + ", ".join(f"{k} {_fmt_seconds(v)}" for k, v in shown))
    for d in result.deployed:
        typer.echo(f"wrote {d}")
    typer.echo(f"wrote {result.out} (parity: {result.parity_json})")
    result.raise_for_status()


def build_engine_command(
    onnx: Path = typer.Argument(..., help="An exported ONNX (model.onnx, model_fp16.onnx or model_int8_qdq.onnx)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | fp16 | int8 (default: from the ONNX "
                                            "metadata: int8 for the Q/DQ model, else its precision)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the engine (default: beside the ONNX)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Batch profile MIN,OPT,MAX or just MAX (default: 1,1,8; "
                                        "with --dla 1,1,1: DLA has no dynamic shapes)."),
    workspace: int = typer.Option(1024, "--workspace", help="Builder workspace, MiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file "
                                                "(default: beside the engine, per TensorRT version and GPU)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when an up-to-date engine exists."),
    dla: Optional[int] = typer.Option(None, "--dla", help="Build for DLA core N (Jetson AGX/NX Orin, Xavier; FP16 "
                                      "and INT8 only; part of the engine's cache key)."),
    gpu_fallback: bool = typer.Option(False, "--gpu-fallback", help="With --dla: run the layers DLA cannot on the "
                                      "GPU instead of failing the build."),
    parity_data: Optional[Path] = typer.Option(None, "--parity-data", help="Images to compare the engine with the "
                                               "ONNX it came from (onnxruntime CPU), with the precision's tolerances."),
    parity_count: Optional[int] = typer.Option(None, "--parity-count", help="Use at most N parity images."),
) -> None:
    """Build a TensorRT engine from an exported ONNX, on the device that will run it (e.g. a Jetson).

    The file name carries the cache key: precision, TensorRT version, GPU compute capability, batch profile, DLA
    core and a hash of the ONNX. Without TensorRT or a GPU: exit 4 with the equivalent trtexec command line."""
    from edgecls.export.tensorrt import build_engine
    from edgecls.export.trt_plan import BatchProfile

    profile = BatchProfile.parse(batch or ("1,1,1" if dla is not None else "1,1,8"))
    res = build_engine(onnx, precision, out, profile, workspace, timing_cache, force, dla_core=dla,
                       gpu_fallback=gpu_fallback)
    typer.echo(f"{'reused' if res.reused else 'built'} {res.path} (TensorRT {res.trt_version}, "
               f"sm{res.compute_capability}, {res.plan.device}, batch {res.profile.min}..{res.profile.max}, "
               f"opt {res.profile.opt}"
               + ("" if res.reused else f", {res.seconds:.1f}s") + ")")
    if parity_data is not None:
        _engine_parity(res, onnx, parity_data, parity_count)


def _engine_parity(res, onnx: Path, parity_data: Path, parity_count: Optional[int]) -> None:
    from edgecls.core.errors import ParityError
    from edgecls.export.metadata import read_sidecar
    from edgecls.export.parity import Tolerances, check_artifact, reference_from
    from edgecls.export.parity_data import parity_data_from_folder
    from edgecls.export.parity_table import table
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.model_io import load_model_spec

    spec = load_model_spec(onnx)
    data = parity_data_from_folder(parity_data, spec, parity_count)
    with load_backend(onnx, device="cpu", spec=spec) as ref_be:
        reference = reference_from(ref_be, data, spec)
    report = check_artifact(res.path.name, res.path, res.precision, reference, data, read_sidecar(res.path),
                            Tolerances(), device="auto")
    typer.echo(table([report], reference, spec, data).replace("pytorch (reference)", f"{onnx.name} (onnxruntime)"))
    if not report:
        raise ParityError(f"engine {res.path.name} disagrees with {onnx.name}: " + "; ".join(report.failures))


def calib_sample_command(
    data: Path = typer.Option(..., "--data", help="Image folder (class subfolders; DIR/train is used if present)."),
    count: int = typer.Option(300, "--count", help="How many images to copy (stratified by class folder)."),
    out: Path = typer.Option(Path("calib_images"), "--out", help="Where to copy them."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
) -> None:
    """Fill calib_images/ with a stratified sample of a dataset (copies; never overwrites a different file)."""
    from edgecls.export.calib import MIN_RECOMMENDED, sample_to_folder

    res = sample_to_folder(data, count, out, seed)
    groups = ", ".join(f"{k} {v}" for k, v in res.groups.items())
    typer.echo(f"{len(res.copied)} images copied to {res.out}, {len(res.identical)} already there ({groups}; "
               f"{res.available} available)")
    total = len(res.copied) + len(res.identical)
    if total < MIN_RECOMMENDED:
        typer.echo(f"warning: only {total} calibration images (< {MIN_RECOMMENDED}); a few hundred are recommended",
                   err=True)


__all__: List[str] = ["build_engine_command", "calib_sample_command", "export_command"]
