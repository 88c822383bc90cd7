"""``edgecls bench``: latency, throughput, size and preprocessing cost of artifacts, beside the PyTorch reference.

Method (these machines are noisy):

- every (batch, threads) cell opens every artifact at that thread count, warms each up, then runs ``rounds``
  rounds; a round times ``iters`` consecutive inferences of each artifact in turn (round-robin, the starting
  artifact rotating every round). Each statistic (p50/p90/p99 latency, throughput) is computed per round and the
  **median over rounds** is reported, with the spread of the per-round p50 to show the noise;
- the reference is PyTorch eager (a ``.pt`` checkpoint given as MODEL or ``--reference``); ratios are
  ``artifact / reference`` for latency and throughput at the same batch and threads;
- FP32 peak: the best GFLOP/s of a 2048³ float32 matrix product at the same threads, over onnxruntime (MLAS),
  torch (oneDNN/MKL) and numpy (BLAS), i.e. a *practical* FMA peak of this CPU; ``% peak`` = FLOPs per image (2 × MACs counted
  from the model's Conv/Gemm/MatMul layers) × images/s ÷ that peak;
- preprocessing: :func:`edgecls.runtime.preprocess.preprocess_one` per frame on decoded arrays (640×480, 1280×720,
  1000×1000) and JPEG decode + preprocess of a 1000×1000 JPEG, beside torchvision's PIL transform when installed;
- end to end: JPEG decode + preprocess + inference + softmax, one frame at a time.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecls.errors import InputError
from edgecls.evaluate import IMG_EXTENSIONS, OpenedModel, PathLike, atomic_write_text, model_kind, open_model
from edgecls.runtime.spec import PreprocessSpec

log = logging.getLogger(__name__)

PREPROCESS_SIZES = ((640, 480), (1280, 720), (1000, 1000))
# torchvision's documented multiply-accumulates per 224x224 image (its "GFLOPS" column counts MACs); used only
# when the layers cannot be counted (no onnx package for an ONNX file)
ARCH_GMACS_224 = {
    "resnet18": 1.81, "resnet50": 4.09, "mobilenet_v2": 0.30, "mobilenet_v3_small": 0.06,
    "mobilenet_v3_large": 0.22, "efficientnet_b0": 0.39,
}


# ----------------------------------------------------------------------------------------------- config


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


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Artifact:
    path: str
    kind: str
    precision: str
    arch: str
    size_bytes: int
    gmacs_per_image: Optional[float]
    is_reference: bool = False

    @property
    def label(self) -> str:
        return f"{Path(self.path).parent.name}/{Path(self.path).name}" if Path(self.path).parent.name else self.path


@dataclass(frozen=True)
class LatencyRow:
    model: str
    kind: str
    precision: str
    backend: str
    providers: Tuple[str, ...]
    batch: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p50_spread_ms: Tuple[float, float]  # min and max of the per-round p50
    images_per_s: float
    gflops_per_s: Optional[float] = None
    peak_fraction: Optional[float] = None
    ratio_p50: Optional[float] = None  # p50 / reference p50 (same batch, threads)
    ratio_throughput: Optional[float] = None  # images/s / reference images/s


@dataclass(frozen=True)
class PreprocessRow:
    input: str
    ms_per_frame: float
    ms_spread: Tuple[float, float]
    reference_ms: Optional[float] = None  # torchvision's PIL transform on the same frame
    ratio: Optional[float] = None


@dataclass(frozen=True)
class EndToEndRow:
    model: str
    threads: int
    frames_per_s: float
    ms_per_frame: float
    source: str
    ratio_fps: Optional[float] = None


@dataclass(frozen=True)
class BenchResult:
    date: str
    command: str
    machine: Dict[str, Any]
    config: Dict[str, Any]
    artifacts: Tuple[Artifact, ...]
    latency: Tuple[LatencyRow, ...]
    peak: Dict[str, Any]  # {"method": str, "gflops": {threads: GFLOP/s}}
    preprocess: Tuple[PreprocessRow, ...] = ()
    end_to_end: Tuple[EndToEndRow, ...] = ()
    reference: Optional[str] = None
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "date": self.date,
            "command": self.command,
            "machine": self.machine,
            "config": self.config,
            "reference": self.reference,
            "artifacts": [dataclasses.asdict(a) for a in self.artifacts],
            "latency": [dataclasses.asdict(r) for r in self.latency],
            "peak": self.peak,
            "preprocess": [dataclasses.asdict(r) for r in self.preprocess],
            "end_to_end": [dataclasses.asdict(r) for r in self.end_to_end],
            "notes": list(self.notes),
        }

    def markdown(self) -> str:
        from edgecls.machine import machine_summary

        arts = {a.path: a for a in self.artifacts}
        lines = [f"### edgecls bench — {self.date}", "", f"- machine: {machine_summary(self.machine)}"]
        if self.command:
            lines.append(f"- command: `{self.command}`")
        c = self.config
        lines.append(
            f"- method: {c['warmup']} warm-up + {c['rounds']} interleaved rounds × {c['iters']} timed inferences per "
            f"artifact; medians over rounds; reference {'`' + self.reference + '`' if self.reference else 'none'}"
        )
        if self.peak.get("gflops"):
            src = self.peak.get("source", {})
            peaks = ", ".join(
                f"{v:.0f} GFLOP/s at {k} thread(s){' (' + src[k] + ')' if k in src else ''}"
                for k, v in self.peak["gflops"].items()
            )
            lines.append(f"- FP32 practical peak: {peaks} ({self.peak['method']})")
        lines += [
            "",
            "| model | precision | size MB | batch | threads | p50 ms | ×ref | p90 ms | p99 ms | img/s | ×ref | "
            "GFLOP/s | % FP32 peak |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.latency:
            a = arts[r.model]
            lines.append(
                f"| {a.label}{' (reference)' if a.is_reference else ''} | {r.precision} ({a.kind}) | "
                f"{a.size_bytes / 1e6:.1f} | {r.batch} | {r.threads} | {r.p50_ms:.2f} | {_ratio(r.ratio_p50)} | "
                f"{r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.images_per_s:.1f} | {_ratio(r.ratio_throughput)} | "
                f"{_num(r.gflops_per_s, '.1f')} | {_num(None if r.peak_fraction is None else 100 * r.peak_fraction, '.1f')} |"
            )
        if self.preprocess:
            lines += [
                "",
                "| preprocessing (1 thread) | ms / frame | per-round range | torchvision PIL ms | ×torchvision |",
                "|---|---:|---:|---:|---:|",
            ]
            for p in self.preprocess:
                lines.append(
                    f"| {p.input} | {p.ms_per_frame:.2f} | {p.ms_spread[0]:.2f}–{p.ms_spread[1]:.2f} | "
                    f"{_num(p.reference_ms, '.2f')} | {_ratio(p.ratio)} |"
                )
        if self.end_to_end:
            lines += [
                "",
                "| end to end (decode + preprocess + infer, batch 1) | threads | frames/s | ms / frame | ×ref |",
                "|---|---:|---:|---:|---:|",
            ]
            for e in self.end_to_end:
                lines.append(
                    f"| {arts[e.model].label} ({e.source}) | {e.threads} | {e.frames_per_s:.1f} | "
                    f"{e.ms_per_frame:.2f} | {_ratio(e.ratio_fps)} |"
                )
        for n in self.notes:
            lines.append(f"\n> {n}")
        return "\n".join(lines) + "\n"


def _ratio(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _num(x: Optional[float], fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


# ---------------------------------------------------------------------------------------------- timing


def _percentiles(ms: Sequence[float]) -> Tuple[float, float, float]:
    a = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def time_calls(fn: Callable[[], Any], iters: int) -> List[float]:
    """Milliseconds of ``iters`` consecutive calls."""
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def interleaved(fns: Sequence[Callable[[], Any]], warmup: int, iters: int, rounds: int) -> List[List[List[float]]]:
    """``result[i][r]`` = per-call ms of ``fns[i]`` in round ``r``; rounds round-robin with a rotating start."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    res: List[List[List[float]]] = [[] for _ in fns]
    n = len(fns)
    for r in range(rounds):
        for j in range(n):
            i = (r + j) % n
            res[i].append(time_calls(fns[i], iters))
    return res


def summarize(rounds_ms: List[List[float]], batch: int) -> Dict[str, Any]:
    """Median over rounds of p50/p90/p99 and of throughput (batch / mean latency)."""
    per = [_percentiles(r) for r in rounds_ms]
    thr = [batch * 1000.0 / float(np.mean(r)) for r in rounds_ms]
    p50s = [p[0] for p in per]
    return {
        "p50_ms": float(np.median(p50s)),
        "p90_ms": float(np.median([p[1] for p in per])),
        "p99_ms": float(np.median([p[2] for p in per])),
        "p50_spread_ms": (float(min(p50s)), float(max(p50s))),
        "images_per_s": float(np.median(thr)),
    }


# ------------------------------------------------------------------------------------------- model facts


def artifact_size(path: PathLike) -> int:
    """Bytes on disk of the artifact, including ONNX external-data files beside it (``<name>.data``)."""
    p = Path(path)
    size = p.stat().st_size
    for extra in (p.with_name(p.name + ".data"), p.with_suffix(".onnx.data") if p.suffix != ".onnx" else None):
        if extra is not None and extra.is_file() and extra != p:
            size += extra.stat().st_size
    return size


def _static(dims: Sequence[Any]) -> List[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in dims]


def count_macs_onnx(path: PathLike) -> Optional[float]:
    """Multiply-accumulates per image of an ONNX model's Conv/Gemm/MatMul layers (any Q/DQ or QLinear form)."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load(os.fspath(path), load_external_data=False)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as e:  # a model shape inference cannot follow: give up counting, don't fail the bench
        log.info("cannot infer shapes of %s (%s); MACs from the arch table", path, e)
        return None
    shapes: Dict[str, List[int]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = _static([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim])
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    # a DequantizeLinear's output has its input's shape (for Q/DQ weights whose value_info may be missing)
    for node in model.graph.node:
        if node.op_type in ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity") and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    weight_input = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
    macs = 0.0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type in weight_input:
            w = shapes.get(node.input[weight_input[node.op_type]])
            if out is None or w is None:
                return None
            macs += float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a = shapes.get(node.input[0])
            if out is None or a is None:
                return None
            k = a[0] if node.op_type == "Gemm" and any(
                at.name == "transA" and at.i for at in node.attribute) else a[-1]
            macs += float(np.prod(out)) * float(k)
    return macs / 1e9


def count_macs_torch(model: Any, crop: int) -> float:
    """GMACs per image of a torch model's Conv2d/Linear layers, by one forward pass with hooks."""
    import torch

    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop, crop))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0] / 1e9


def gmacs_of(path: str, arch: str, crop: int) -> Optional[float]:
    kind = model_kind(path)
    g = None
    if kind == "onnx":
        g = count_macs_onnx(path)
    elif kind == "checkpoint":
        from edgecls.train.checkpoint import load_checkpoint

        g = count_macs_torch(load_checkpoint(path).build_model(), crop)
    if g is None and arch in ARCH_GMACS_224:
        g = ARCH_GMACS_224[arch] * (crop / 224.0) ** 2
    return g


# ------------------------------------------------------------------------------------------------- peak


def _matmul_onnx_bytes(n: int) -> Optional[bytes]:
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _best_gflops(fn: Callable[[], Any], flops: float, reps: int) -> float:
    fn()
    return flops / (min(time_calls(fn, reps)) / 1000.0) / 1e9


_NUMPY_PEAK_SCRIPT = """
import sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32); b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(2.0 * n ** 3 / best / 1e9)
"""


def _numpy_peak(threads: int, n: int, reps: int) -> Optional[float]:
    """numpy's BLAS in a subprocess, its thread count pinned by the usual environment variables."""
    import subprocess
    import sys

    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    try:
        out = subprocess.run([sys.executable, "-c", _NUMPY_PEAK_SCRIPT, str(n), str(reps)], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
        return float(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log.info("numpy peak measurement failed: %s", e)
        return None


def measure_fp32_peak(threads: Sequence[int], n: int = 2048, reps: int = 5) -> Dict[str, Any]:
    """A practical FP32 FMA peak per thread count: the best GFLOP/s of an ``n``³ float32 matrix product.

    Measured with every library at hand, each pinned to the thread count: onnxruntime's MatMul (MLAS, the kernels
    behind its Conv), ``torch.mm`` (oneDNN/MKL, when torch is installed) and numpy's BLAS (in a subprocess with
    ``OMP/OPENBLAS/MKL_NUM_THREADS``). The peak is the best of them, so "% of peak" is not flattered by a slow
    GEMM; every measurement is kept in ``by_method``.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    by_method: Dict[str, Dict[str, float]] = {}
    data = _matmul_onnx_bytes(n)
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None and data is not None:
        res = {}
        for t in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads = int(t)
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
            feed = {"a": a, "b": b}
            res[str(t)] = _best_gflops(lambda sess=sess, feed=feed: sess.run(None, feed), flops, reps)
            del sess
        by_method["onnxruntime MatMul (MLAS)"] = res
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        saved = torch.get_num_threads()
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        res = {}
        try:
            for t in threads:
                torch.set_num_threads(int(t))
                res[str(t)] = _best_gflops(lambda: torch.mm(ta, tb), flops, reps)
        finally:
            torch.set_num_threads(saved)
        by_method["torch.mm"] = res
    res = {}
    for t in threads:
        g = _numpy_peak(int(t), n, reps)
        if g is not None:
            res[str(t)] = g
    if res:
        by_method["numpy matmul (BLAS)"] = res
    best: Dict[str, float] = {}
    source: Dict[str, str] = {}
    for method, values in by_method.items():
        for t, g in values.items():
            if g > best.get(t, 0.0):
                best[t], source[t] = g, method
    method = (f"best of {', '.join(by_method) or 'nothing'}: {n}x{n}x{n} float32 product, best of {reps} runs "
              f"per library and thread count")
    return {"method": method, "gflops": best, "source": source, "by_method": by_method}


# -------------------------------------------------------------------------------------------- inputs


def _natural_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB frame (gradients, shapes, noise): JPEG-compresses like a real one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([
        128 + 90 * np.sin(xx / (37 + 11 * c) + yy / (53 + 7 * c) + c) for c in range(3)
    ], axis=2)
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _image_files(folder: Optional[str], limit: int = 64) -> List[str]:
    if not folder:
        return []
    files = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise InputError(f"--images {folder!r} contains no images ({', '.join(IMG_EXTENSIONS)})")
    return files[:limit]


def _input_batch(spec: PreprocessSpec, batch: int, files: List[str]) -> np.ndarray:
    from edgecls.runtime.preprocess import load_image, preprocess

    if files:
        return preprocess([load_image(files[i % len(files)]) for i in range(batch)], spec)
    frames = [_natural_frame(320, 240, seed=i) for i in range(batch)]
    return preprocess(frames, spec)


# ------------------------------------------------------------------------------------------- benchmarks


def bench_preprocess(spec: PreprocessSpec, iters: int, rounds: int) -> List[PreprocessRow]:
    """ms per frame of the runtime preprocessing (one thread), beside torchvision's PIL transform if present."""
    from PIL import Image

    from edgecls.runtime.preprocess import load_image, open_rgb, preprocess_one

    try:
        import torch
        from torchvision import transforms as T

        ref_tf = T.Compose([
            T.Resize(spec.resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(spec.crop),
            T.ToTensor(), T.Normalize(spec.mean, spec.std),
        ])
        torch_threads = torch.get_num_threads()
    except ImportError:
        ref_tf, torch_threads = None, None
    rows = []
    cases: List[Tuple[str, Callable[[], Any], Optional[Callable[[], Any]]]] = []
    for w, h in PREPROCESS_SIZES:
        frame = _natural_frame(w, h)
        cases.append((
            f"{w}×{h} RGB array",
            lambda f=frame: preprocess_one(f, spec),
            (lambda f=frame: ref_tf(Image.fromarray(f))) if ref_tf else None,
        ))
    tmp = tempfile.NamedTemporaryFile(suffix=".jpg", delete=False)
    try:
        Image.fromarray(_natural_frame(1000, 1000)).save(tmp, format="JPEG", quality=90)
        tmp.close()
        jpeg = tmp.name

        def _ref_jpeg(p=jpeg):
            with Image.open(p) as im:
                return ref_tf(im.convert("RGB"))

        cases.append((
            "1000×1000 JPEG decode (open_rgb) + preprocess",
            lambda p=jpeg: preprocess_one(open_rgb(p), spec),
            _ref_jpeg if ref_tf else None,
        ))
        cases.append((
            "1000×1000 JPEG decode (load_image → array) + preprocess",
            lambda p=jpeg: preprocess_one(load_image(p), spec),
            _ref_jpeg if ref_tf else None,
        ))
        if ref_tf is not None:
            torch.set_num_threads(1)
        try:
            for name, fn, ref in cases:
                fns = [fn] + ([ref] if ref else [])
                res = interleaved(fns, warmup=2, iters=iters, rounds=rounds)
                med = [float(np.median(r)) for r in res[0]]
                ms = float(np.median(med))
                ref_ms = float(np.median([np.median(r) for r in res[1]])) if ref else None
                rows.append(PreprocessRow(name, ms, (min(med), max(med)), ref_ms, ms / ref_ms if ref_ms else None))
        finally:
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)
    finally:
        os.unlink(tmp.name)
    return rows


def _e2e_fn(opened: OpenedModel, files: List[str]) -> Callable[[], Any]:
    from edgecls.runtime.metrics import softmax
    from edgecls.runtime.preprocess import open_rgb, preprocess

    state = {"i": 0}

    def step():
        path = files[state["i"] % len(files)]
        state["i"] += 1
        x = preprocess([open_rgb(path)], opened.spec.preprocess)
        return softmax(opened.infer(x), opened.spec.temperature)

    return step


def run_bench(config: BenchConfig, progress: bool = False) -> BenchResult:
    """Everything in the module docstring, as a :class:`BenchResult`; writes JSON/Markdown when configured."""
    from edgecls.machine import describe_machine

    paths = list(config.models)
    reference = config.reference
    if reference is None:
        reference = next((m for m in paths if model_kind(m) == "checkpoint"), None)
    elif reference not in paths:
        paths.insert(0, reference)
    notes: List[str] = []
    if reference is None:
        notes.append("no PyTorch checkpoint given (MODEL .pt or --reference): no ratios to a reference")
    files = _image_files(config.images)

    # facts per artifact (one load each, at 1 thread, closed again)
    artifacts: List[Artifact] = []
    specs = {}
    for p in paths:
        om = open_model(p, config.device, threads=1)
        try:
            specs[p] = om.spec
        finally:
            om.close()
        spec = specs[p]
        artifacts.append(Artifact(
            path=p, kind=model_kind(p), precision=spec.precision, arch=spec.arch, size_bytes=artifact_size(p),
            gmacs_per_image=gmacs_of(p, spec.arch, spec.preprocess.crop), is_reference=(p == reference),
        ))
    by_path = {a.path: a for a in artifacts}

    peak = measure_fp32_peak(config.threads) if config.peak else {"method": "not measured", "gflops": {}}
    cells = [(t, b) for t in config.threads for b in config.batches]
    bar = _bar(progress, len(cells) + int(config.end_to_end) + int(config.preprocess), "bench")
    latency: List[LatencyRow] = []
    e2e: List[EndToEndRow] = []
    try:
        for t in config.threads:
            opened = [open_model(p, config.device, threads=t) for p in paths]
            try:
                for b in config.batches:
                    inputs = [_input_batch(om.spec.preprocess, b, files) for om in opened]
                    fns = [lambda om=om, x=x: om.infer(x) for om, x in zip(opened, inputs)]
                    res = interleaved(fns, config.warmup, config.iters, config.rounds)
                    for p, om, rounds_ms in zip(paths, opened, res):
                        s = summarize(rounds_ms, b)
                        a = by_path[p]
                        gf = a.gmacs_per_image * 2 * s["images_per_s"] if a.gmacs_per_image else None
                        pk = peak["gflops"].get(str(t))
                        latency.append(LatencyRow(
                            model=a.path, kind=a.kind, precision=a.precision, backend=om.backend_name,
                            providers=om.providers, batch=b, threads=t, gflops_per_s=gf,
                            peak_fraction=(gf / pk) if (gf and pk) else None, **s,
                        ))
                    if bar is not None:
                        bar.update(1)
                if config.end_to_end and t == max(config.threads):
                    e2e = _bench_e2e(opened, paths, files, config, reference)
                    if bar is not None:
                        bar.update(1)
            finally:
                for om in opened:
                    om.close()
        pre: List[PreprocessRow] = []
        if config.preprocess:
            pre = bench_preprocess(specs[paths[0]].preprocess, max(5, config.iters), config.rounds)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    latency = _with_ratios(latency, reference)
    cfg = dataclasses.asdict(config)
    result = BenchResult(
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=config.command,
        machine=describe_machine(),
        config=cfg,
        artifacts=tuple(artifacts),
        latency=tuple(latency),
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


def _bench_e2e(
    opened: List[OpenedModel], paths: List[str], files: List[str], config: BenchConfig, reference: Optional[str]
) -> List[EndToEndRow]:
    from PIL import Image

    tmpdir = None
    source = f"{len(files)} images from {config.images}" if files else "1000×1000 JPEG"
    if not files:
        tmpdir = tempfile.mkdtemp(prefix="edgecls-bench-")
        p = os.path.join(tmpdir, "frame.jpg")
        Image.fromarray(_natural_frame(1000, 1000)).save(p, format="JPEG", quality=90)
        files = [p]
    try:
        fns = [_e2e_fn(om, files) for om in opened]
        res = interleaved(fns, config.warmup, config.iters, config.rounds)
    finally:
        if tmpdir:
            for f in files:
                os.unlink(f)
            os.rmdir(tmpdir)
    rows = []
    t = opened[0].threads or 1
    for p, rounds_ms in zip(paths, res):
        ms = float(np.median([np.mean(r) for r in rounds_ms]))
        rows.append(EndToEndRow(model=p, threads=t, frames_per_s=1000.0 / ms, ms_per_frame=ms,
                                source=source))
    ref = next((r for r in rows if r.model == reference), None)
    if ref is not None:
        rows = [dataclasses.replace(r, ratio_fps=r.frames_per_s / ref.frames_per_s) for r in rows]
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


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False)


def latency_table(result: BenchResult) -> str:
    """The terminal version of the latency table (same numbers as the Markdown)."""
    arts = {a.path: a for a in result.artifacts}
    w = max(12, max(len(arts[r.model].label) for r in result.latency)) if result.latency else 12
    head = (f"{'model':<{w}}  {'prec':<9} {'batch':>5} {'thr':>3} {'p50 ms':>8} {'×ref':>6} {'p90 ms':>8} "
            f"{'p99 ms':>8} {'img/s':>8} {'×ref':>6} {'%peak':>6}")
    lines = [head]
    for r in result.latency:
        lines.append(
            f"{arts[r.model].label:<{w}}  {r.precision:<9} {r.batch:>5} {r.threads:>3} {r.p50_ms:>8.2f} "
            f"{_ratio(r.ratio_p50):>6} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.images_per_s:>8.1f} "
            f"{_ratio(r.ratio_throughput):>6} "
            f"{'–' if r.peak_fraction is None else format(100 * r.peak_fraction, '.1f'):>6}"
        )
    return "\n".join(lines)


__all__ = [
    "BenchConfig", "BenchResult", "LatencyRow", "PreprocessRow", "EndToEndRow", "Artifact", "run_bench",
    "measure_fp32_peak", "count_macs_onnx", "count_macs_torch", "bench_preprocess", "parse_int_list",
    "latency_table", "interleaved", "summarize",
]
