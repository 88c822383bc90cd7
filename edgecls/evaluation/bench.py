"""``edgecls bench``: latency, throughput, size and preprocessing cost of artifacts, beside the PyTorch reference.

Method (these machines are noisy):

- every (batch, threads) cell opens every artifact at that thread count, warms each up, then runs ``rounds``
  rounds; a round times ``iters`` consecutive inferences of each artifact in turn (round-robin, the starting
  artifact rotating every round). Each statistic (p50/p90/p99 latency, throughput) is computed per round and the
  **median over rounds** is reported, with the spread of the per-round p50 to show the noise (:mod:`.timing`);
- the reference is PyTorch eager (a ``.pt`` checkpoint given as MODEL or ``--reference``); ratios are
  ``artifact / reference`` for latency and throughput at the same batch and threads;
- FP32 peak (:mod:`.peak`): the best GFLOP/s of a 2048³ float32 matrix product at the same threads, over
  onnxruntime (MLAS), torch (oneDNN/MKL) and numpy (BLAS), i.e. a *practical* FMA peak of this CPU; ``% peak`` =
  FLOPs per image (2 × MACs counted from the model's Conv/Gemm/MatMul layers, :mod:`.macs`) × images/s ÷ that peak;
- preprocessing (:mod:`.stages`): :func:`edgecls.runtime.preprocess.preprocess_one` per frame on decoded arrays
  (640×480, 1280×720, 1000×1000) and JPEG decode + preprocess of a 1000×1000 JPEG, beside torchvision's PIL
  transform when installed;
- end to end: JPEG decode + preprocess + inference + softmax, one frame at a time.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgecls.core.errors import InputError
from edgecls.core.fileio import write_text as atomic_write_text
from edgecls.core.progress import progress as progress_bar
from edgecls.evaluation.inputs import image_files, input_batch
from edgecls.evaluation.macs import gmacs_of
from edgecls.evaluation.models import PathLike, model_kind, open_model
from edgecls.evaluation.peak import measure_fp32_peak
from edgecls.evaluation.results import Artifact, BenchResult, EndToEndRow, LatencyRow, PreprocessRow
from edgecls.evaluation.stages import bench_end_to_end, bench_preprocess
from edgecls.evaluation.timing import interleaved, summarize
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    models: Tuple[str, ...]
    batches: Tuple[int, ...] = (1, 8)
    threads: Tuple[int, ...] = (1, 2)
    warmup: int = 5
    iters: int = 20  # timed inferences per artifact per round
    rounds: int = 3
    reference: Optional[str] = None
    images: Optional[str] = None  # JPEGs for the input batches and the end-to-end loop (else generated)
    device: str = "cpu"
    preprocess: bool = True
    end_to_end: bool = True
    peak: bool = True
    json_path: Optional[str] = None
    markdown_path: Optional[str] = None
    command: str = ""  # the command line, recorded in the outputs

    def __post_init__(self) -> None:
        if not self.models and not self.reference:
            raise InputError("bench needs at least one MODEL (.pt, .onnx or .engine)")
        for name in ("warmup", "iters", "rounds"):
            if getattr(self, name) < (0 if name == "warmup" else 1):
                raise InputError(f"--{name} must be >= {0 if name == 'warmup' else 1}, got {getattr(self, name)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise InputError(f"--batch values must be >= 1, got {list(self.batches)}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise InputError(f"--threads values must be >= 1, got {list(self.threads)}")
        for m in self.models + ((self.reference,) if self.reference else ()):
            model_kind(m)
            if not Path(m).is_file():
                raise InputError(f"model {m!r} does not exist")
        if self.reference and model_kind(self.reference) != "checkpoint":
            raise InputError(f"--reference {self.reference!r} must be a PyTorch checkpoint (.pt)")
        if self.images is not None and not Path(self.images).is_dir():
            raise InputError(f"--images {self.images!r} is not a folder")


def parse_int_list(text: str, what: str) -> Tuple[int, ...]:
    """``"1,8"`` → ``(1, 8)``; InputError naming the option otherwise."""
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated integers like 1,8; got {text!r}") from e
    if not values or any(v < 1 for v in values):
        raise InputError(f"{what} must be comma-separated integers >= 1, got {text!r}")
    return tuple(dict.fromkeys(values))


def artifact_size(path: PathLike) -> int:
    """Bytes on disk of the artifact, including ONNX external-data files beside it (``<name>.data``)."""
    p = Path(path)
    size = p.stat().st_size
    for extra in (p.with_name(p.name + ".data"), p.with_suffix(".onnx.data") if p.suffix != ".onnx" else None):
        if extra is not None and extra.is_file() and extra != p:
            size += extra.stat().st_size
    return size


def _artifact_facts(paths: List[str], device: str, reference: Optional[str]) -> Tuple[List[Artifact], Dict[str, ModelSpec]]:
    """Kind, precision, size and MACs per artifact (one load each, at 1 thread, closed again)."""
    artifacts: List[Artifact] = []
    specs: Dict[str, ModelSpec] = {}
    for p in paths:
        om = open_model(p, device, threads=1)
        try:
            specs[p] = om.spec
        finally:
            om.close()
        spec = specs[p]
        artifacts.append(Artifact(
            path=p, kind=model_kind(p), precision=spec.precision, arch=spec.arch, size_bytes=artifact_size(p),
            gmacs_per_image=gmacs_of(p, spec.arch, spec.preprocess.crop), is_reference=(p == reference),
        ))
    return artifacts, specs


def _latency_cell(
    opened: List[Any], paths: List[str], by_path: Dict[str, Artifact], batch: int, threads: int,
    files: List[str], config: BenchConfig, peak: Dict[str, Any],
) -> List[LatencyRow]:
    """One (batch, threads) cell: every opened artifact timed in interleaved rounds."""
    inputs = [input_batch(om.spec.preprocess, batch, files) for om in opened]
    fns = [lambda om=om, x=x: om.infer(x) for om, x in zip(opened, inputs)]
    res = interleaved(fns, config.warmup, config.iters, config.rounds)
    rows = []
    for p, om, rounds_ms in zip(paths, opened, res):
        s = summarize(rounds_ms, batch)
        a = by_path[p]
        gf = a.gmacs_per_image * 2 * s["images_per_s"] if a.gmacs_per_image else None
        pk = peak["gflops"].get(str(threads))
        rows.append(LatencyRow(
            model=a.path, kind=a.kind, precision=a.precision, backend=om.backend_name,
            providers=om.providers, batch=batch, threads=threads, gflops_per_s=gf,
            peak_fraction=(gf / pk) if (gf and pk) else None, **s,
        ))
    return rows


def _with_ratios(rows: List[LatencyRow], reference: Optional[str]) -> List[LatencyRow]:
    if reference is None:
        return rows
    ref = {(r.batch, r.threads): r for r in rows if r.model == reference}
    out = []
    for r in rows:
        rr = ref.get((r.batch, r.threads))
        if rr is None:
            out.append(r)
            continue
        out.append(dataclasses.replace(
            r, ratio_p50=r.p50_ms / rr.p50_ms if rr.p50_ms else None,
            ratio_throughput=r.images_per_s / rr.images_per_s if rr.images_per_s else None,
        ))
    return out


def _measure(
    config: BenchConfig, paths: List[str], by_path: Dict[str, Artifact], specs: Dict[str, ModelSpec],
    files: List[str], reference: Optional[str], peak: Dict[str, Any], bar: Any,
) -> Tuple[List[LatencyRow], List[EndToEndRow], List[PreprocessRow]]:
    """Every latency cell, per thread count with the artifacts opened at it; end to end at the most threads."""
    latency: List[LatencyRow] = []
    e2e: List[EndToEndRow] = []
    for t in config.threads:
        opened = [open_model(p, config.device, threads=t) for p in paths]
        try:
            for b in config.batches:
                latency += _latency_cell(opened, paths, by_path, b, t, files, config, peak)
                bar.update(1)
            if config.end_to_end and t == max(config.threads):
                e2e = bench_end_to_end(opened, paths, files, config.images, config.warmup, config.iters,
                                       config.rounds, reference)
                bar.update(1)
        finally:
            for om in opened:
                om.close()
    pre: List[PreprocessRow] = []
    if config.preprocess:
        pre = bench_preprocess(specs[paths[0]].preprocess, max(5, config.iters), config.rounds)
        bar.update(1)
    return latency, e2e, pre


def run_bench(config: BenchConfig, progress: bool = False) -> BenchResult:
    """Everything in the module docstring, as a :class:`BenchResult`; writes JSON/Markdown when configured."""
    from edgecls.evaluation.machine import describe_machine

    paths = list(config.models)
    reference = config.reference
    if reference is None:
        reference = next((m for m in paths if model_kind(m) == "checkpoint"), None)
    elif reference not in paths:
        paths.insert(0, reference)
    notes: List[str] = []
    if reference is None:
        notes.append("no PyTorch checkpoint given (MODEL .pt or --reference): no ratios to a reference")
    files = image_files(config.images)
    artifacts, specs = _artifact_facts(paths, config.device, reference)
    by_path = {a.path: a for a in artifacts}
    peak = measure_fp32_peak(config.threads) if config.peak else {"method": "not measured", "gflops": {}}
    total = len(config.threads) * len(config.batches) + int(config.end_to_end) + int(config.preprocess)
    with progress_bar(total=total, desc="bench", enabled=progress) as bar:
        latency, e2e, pre = _measure(config, paths, by_path, specs, files, reference, peak, bar)
    result = BenchResult(
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=config.command,
        machine=describe_machine(),
        config=dataclasses.asdict(config),
        artifacts=tuple(artifacts),
        latency=tuple(_with_ratios(latency, reference)),
        peak=peak,
        preprocess=tuple(pre),
        end_to_end=tuple(e2e),
        reference=reference,
        notes=tuple(notes),
    )
    if config.json_path:
        atomic_write_text(config.json_path, json.dumps(result.to_dict(), indent=2))
    if config.markdown_path:
        atomic_write_text(config.markdown_path, result.markdown())
    return result
