#!/usr/bin/env python
"""INT8 ablation (issue 18, item 4): which INT8 mechanisms of ``edgecls export`` actually pay?

Measured at commit 3460f96, before its verdicts deleted QAT (export/qat.py), cross-layer equalization
(export/equalize.py) and the calibration-method search: run it from that commit (``git worktree add /tmp/abl
3460f96``) to reproduce bench/INT8_ABLATION.md; on later commits those imports no longer exist.

For each checkpoint and each INT8 form (``int8-qdq``: TensorRT's Q/DQ form, run with exact Q/DQ semantics by
``int8_flow.artifact_logits``; ``int8-cpu``: onnxruntime's CPU form, run through the runtime backend) it builds the
INT8 model with the export's own functions and switches one mechanism at a time:

(a) calibration method: ``search`` (minmax / percentile / entropy, the one with the least mean KL to PyTorch on the
    *selection* split, both at the checkpoint's temperature — the export's score) vs each method fixed;
(b) cross-layer equalization (``equalize.equalize``) on / off;
(c) the k = 0, 2, 4 most sensitive layers (``sensitivity.layer_sensitivity``, SQNR on 32 calibration images, full
    INT8 at the searched method) kept in FP32;
(d) QAT (``qat.qat_finetune``, the export's defaults) before quantizing — calibration sample 0 only, at the method
    the search chose for the PTQ baseline;
(e) the artifact's temperature: matched to PyTorch's probabilities on the selection split (``refit.match_temperature``),
    the checkpoint's, the NLL fit on the selection labels (``refit.fit_temperature``) and, where refit.py has it,
    ``refit.crossfit_temperature`` (the NLL fit only when it lowers cross-fitted held-out NLL).

Baseline recipe: search, CLE on, k = 0, no QAT, matched T. Every variant is built for 3 calibration samples
(``calib.resolve_calib_set`` seeds 0, 1, 2: 256 training images each) and judged on the *report* split (the parity
images that chose nothing, ``select_split.split_select_report``): accuracy, accuracy drop vs PyTorch (points), ECE
(15 bins, artifact at its own T), top-1 flips vs PyTorch, yes/no/uncertain decisions equal to PyTorch's (positive
class only; ``runtime.decision.positive_decision`` at the checkpoint's threshold), p99 over images of max|Δprob| with
both sides at the checkpoint's T — and the gates: drop <= 1 pt, ECE <= max(0.03, PyTorch ECE + 0.015), decisions
>= 97 %. Ranges, rankings, QAT models and logits are cached under ``--cache``: a rerun only recomputes the tables.
The script writes the header and the tables; the verdict in bench/INT8_ABLATION.md is written by hand, and a rerun
overwrites the file (pass ``--out`` elsewhere to keep it).

    .venv/bin/python bench/int8_ablation.py                        # → bench/INT8_ABLATION.md, CACHE/ablation.json
    .venv/bin/python bench/int8_ablation.py --no-qat --keep 0,2     # cheaper grid
    .venv/bin/python bench/int8_ablation.py --latency               # + FP32 vs CPU-form b1 latency (quiet machine!)
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

FORMS = ("int8-qdq", "int8-cpu")
METHODS = ("minmax", "percentile", "entropy")
TEMPS = ("match", "ckpt", "nll", "crossfit")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", action="append", metavar="NAME=PATH",
                    help="repeatable; default mobile=/work/runs/mobile/best.pt, p28=/work/runs/p28/best.pt")
    ap.add_argument("--samples", default="0,1,2", help="calibration-sample seeds")
    ap.add_argument("--calib-count", type=int, default=256)
    ap.add_argument("--keep", default="0,2,4", help="numbers of most sensitive layers kept in FP32")
    ap.add_argument("--no-qat", action="store_true", help="skip (d), the expensive one")
    ap.add_argument("--threads", type=int, default=1, help="torch / onnxruntime intra-op threads")
    ap.add_argument("--latency", action="store_true", help="time FP32 vs CPU-form variants (b1, 2 threads)")
    ap.add_argument("--cache", default="/work/bench_cache/ablation")
    ap.add_argument("--out", default="bench/INT8_ABLATION.md")
    return ap.parse_args(argv)


def limit_threads(n: int) -> None:
    """torch and every onnxruntime session (also those the export's functions open) on ``n`` intra-op threads."""
    import onnxruntime as ort
    import torch

    torch.set_num_threads(n)
    base = ort.SessionOptions
    if getattr(base, "_ablation", False):
        return

    class Limited(base):  # export/calib_ranges, equalize and sensitivity open sessions without a thread count
        _ablation = True

        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = n
            self.inter_op_num_threads = 1

    ort.SessionOptions = Limited


# ---------------------------------------------------------------------------------------------- metrics


def judge(z: np.ndarray, t: float, ref: np.ndarray, t_ck: float, y: np.ndarray, spec) -> Dict[str, float]:
    """The report-split numbers of logits ``z`` at temperature ``t`` against PyTorch's ``ref`` (at ``t_ck``)."""
    from edgecls.runtime.decision import positive_decision
    from edgecls.runtime.metrics import expected_calibration_error, softmax

    p, p_ref = softmax(z, t), softmax(ref, t_ck)
    acc, acc_ref = float(np.mean(z.argmax(1) == y)), float(np.mean(ref.argmax(1) == y))
    ece, ece_ref = float(expected_calibration_error(p, y)), float(expected_calibration_error(p_ref, y))
    out = {"acc": acc, "drop_pt": 100 * (acc_ref - acc), "ece": ece, "flips": int(np.sum(z.argmax(1) != ref.argmax(1))),
           "p99": float(np.percentile(np.abs(softmax(z, t_ck) - p_ref).max(1), 99)), "t": float(t)}
    fails = []
    if acc_ref - acc > 0.01 + 1e-12:
        fails.append("acc")
    if ece > max(0.03, ece_ref + 0.015):
        fails.append("ece")
    k = spec.positive_index
    if k is not None:
        th = spec.threshold
        mine = [positive_decision(float(v), th) for v in p[:, k]]
        theirs = [positive_decision(float(v), th) for v in p_ref[:, k]]
        out["dec"] = float(np.mean([a == b for a, b in zip(mine, theirs)]))
        if out["dec"] < 0.97:
            fails.append("dec")
    out["fails"] = fails
    return out


def match_temperature(z: np.ndarray, ref: np.ndarray, t_ref: float) -> float:
    """export/refit.py ``match_temperature`` (least mean KL to PyTorch's calibrated probabilities); the same code
    when a newer refit.py no longer has it."""
    try:
        from edgecls.export.refit import match_temperature as fn
    except ImportError:
        fn = None
    if fn is not None:
        return fn(z, ref, t_ref)
    from edgecls.export.refit import T_BOUNDS
    from edgecls.runtime.metrics.calibration import argmin_on_interval, log_softmax

    lp = log_softmax(np.asarray(ref, np.float64), t_ref)
    p, z = np.exp(lp), np.asarray(z, np.float64)

    def kl(log_t: float) -> float:
        return float(np.mean(np.sum(p * (lp - log_softmax(z, float(np.exp(log_t)))), axis=1)))

    return float(np.exp(argmin_on_interval(kl, np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]), grid=61)))


def mean_kl(ref: np.ndarray, t_ref: float, z: np.ndarray, t: float) -> float:
    from edgecls.runtime.metrics import log_softmax

    lp, lq = log_softmax(ref, t_ref), log_softmax(z, t)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


# ---------------------------------------------------------------------------------------------- one model


class Bench:
    """One checkpoint: reference, split, and cached INT8 logits of each variant on select + report images."""

    def __init__(self, name: str, path: Path, args: argparse.Namespace) -> None:
        from edgecls.core.fileio import file_sha256
        from edgecls.export.parity import reference_from
        from edgecls.export.parity_data import parity_data_from_checkpoint
        from edgecls.export.select_split import split_select_report
        from edgecls.reference.checkpoint import load_checkpoint
        from edgecls.reference.torch_backend import TorchBackend

        self.name, self.args, self.ckpt_path = name, args, path
        self.ckpt = load_checkpoint(path)
        self.spec = self.ckpt.spec
        self.sha = file_sha256(path)
        self.dir = Path(args.cache) / f"{name}-{self.sha[:12]}"
        (self.dir / "logits").mkdir(parents=True, exist_ok=True)
        data = parity_data_from_checkpoint(self.ckpt)
        with TorchBackend(self.ckpt, spec=self.spec, threads=args.threads) as be:
            ref = self.cached("ref.npy", lambda: reference_from(be, data, self.spec).logits)
        ref_obj = reference_from(_Fixed(ref), data, self.spec)
        self.split = split_select_report(data, ref_obj, self.spec, self.ckpt.data)
        self.sel, self.rep = self.split.select, self.split.report
        self.x = np.concatenate([self.sel.x, self.rep.x])  # every variant runs once on both halves
        self.t_ck = float(self.spec.temperature)
        self._fp32 = None
        self._samples: Dict[Tuple[int, bool, bool], Dict] = {}

    def cached(self, rel: str, make):
        f = self.dir / rel
        if f.is_file():
            return np.load(f)
        a = np.asarray(make(), dtype=np.float32)
        tmp = f.with_suffix(".tmp.npy")
        np.save(tmp, a)
        os.replace(tmp, f)
        return a

    # -- models (lazy: not built when every logit is cached) ------------------------------------------------
    def fp32(self, qat: bool = False):
        import onnx

        from edgecls.export.onnx_export import DEFAULT_OPSET, export_onnx

        f = self.dir / ("fp32_qat.onnx" if qat else "fp32.onnx")
        if not f.is_file():
            if qat:
                from edgecls.export.qat import QatConfig, qat_finetune

                t0 = time.perf_counter()
                model, info = qat_finetune(self.ckpt, self.spec, QatConfig(seed=0))
                print(f"  [{self.name}] QAT: {info.to_dict()} ({time.perf_counter() - t0:.0f} s)", flush=True)
            else:
                model = self.ckpt.build_model()
            proto, _ = export_onnx(model, self.spec, DEFAULT_OPSET, True)
            onnx.save(proto, os.fspath(f))
        return onnx.load(os.fspath(f))

    def sample(self, seed: int, eq: bool, qat: bool = False) -> Dict:
        """``{"images", "pre", "cals"}`` for calibration sample ``seed`` (the export's _prepare and _calibrate)."""
        key = (seed, eq, qat)
        if key not in self._samples:
            from edgecls.export.calib import resolve_calib_set
            from edgecls.export.calib_cache import calibrate_many
            from edgecls.export.calib_ranges import CalibConfig, CalibrationImages
            from edgecls.export.equalize import equalize
            from edgecls.export.quantize import preprocess_for_quantization

            self._samples = {k: v for k, v in self._samples.items() if k[0] == seed}  # one sample's images in memory
            t0 = time.perf_counter()
            cs = resolve_calib_set(None, self.args.calib_count, self.ckpt.data, self.spec.classes, seed,
                                   self.dir / "no_calib_dir")  # never the repo's calib_images/: training images
            images = next((v["images"] for k, v in self._samples.items() if k[0] == seed), None) \
                or CalibrationImages(cs.paths, self.spec.preprocess)
            pre = preprocess_for_quantization(self.fp32(qat))
            if eq:
                pre, _ = equalize(pre, images.data[:32])
            cals = calibrate_many(pre, images, [CalibConfig(method=m) for m in METHODS], self.dir / "calib")
            self._samples[key] = {"images": images, "pre": pre, "cals": cals}
            print(f"  [{self.name}] sample {seed} CLE {'on' if eq else 'off'}{' QAT' if qat else ''}: "
                  f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)
        return self._samples[key]

    def ranking(self, form: str, seed: int, method: str) -> List[str]:
        """Weighted layers, most sensitive (lowest SQNR) first, for the full-INT8 ``form`` at ``method``."""
        f = self.dir / f"rank-{form}-s{seed}-{method}.json"
        if not f.is_file():
            from edgecls.export.quantize import quantize
            from edgecls.export.sensitivity import layer_sensitivity

            s = self.sample(seed, True)
            qa, _ = quantize(s["pre"], s["cals"][method], form, (), True)
            r = layer_sensitivity(s["pre"], qa, s["images"].data[:32], self.spec.preprocess.crop)
            f.write_text(json.dumps([x.to_dict() for x in r], indent=1))
        return [d["name"] for d in json.loads(f.read_text())]

    def quantized(self, form: str, seed: int, eq: bool, method: str, exclude: Sequence[str] = (), qat: bool = False):
        from edgecls.export.quantize import quantize

        s = self.sample(seed, eq, qat)
        return quantize(s["pre"], s["cals"][method], form, tuple(exclude))[0]

    def logits(self, form: str, seed: int, eq: bool, method: str, exclude: Sequence[str] = (),
               qat: bool = False) -> np.ndarray:
        h = hashlib.sha256("\n".join(exclude).encode()).hexdigest()[:8]
        rel = f"logits/{form}-s{seed}-{'cle' if eq else 'nocle'}-{method}-k{len(exclude)}-{h}{'-qat' if qat else ''}.npy"

        def make():
            import tempfile

            from edgecls.export.int8_flow import artifact_logits
            from edgecls.export.metadata import artifact_spec

            q = self.quantized(form, seed, eq, method, exclude, qat)
            with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
                p = Path(tmp) / "m.onnx"
                p.write_bytes(q.SerializeToString())
                t0 = time.perf_counter()
                z = artifact_logits(p, form, artifact_spec(self.spec, form, self.sha), self.x, self.args.threads)
            print(f"    {rel}: {len(self.x)} images in {time.perf_counter() - t0:.0f} s", flush=True)
            return z

        return self.cached(rel, make)

    # -- a variant judged ------------------------------------------------------------------------------------
    def temperature(self, z_sel: np.ndarray, how: str) -> float:
        from edgecls.export import refit

        if how == "match":
            return match_temperature(z_sel, self.split.select_reference.logits, self.t_ck)
        if how == "nll":
            t = refit.fit_temperature(z_sel, self.sel.y)
            return self.t_ck if t is None else t  # perfectly separated: the export keeps the checkpoint's
        if how == "crossfit":  # the re-fit only when it lowers cross-fitted held-out NLL (newer export/refit.py)
            t, _, _ = refit.crossfit_temperature(z_sel, self.sel.y, self.t_ck)
            return self.t_ck if t is None else t
        return self.t_ck

    def evaluate(self, z: np.ndarray, how: str = "match") -> Dict:
        n = self.sel.n
        t = self.temperature(z[:n], how)
        out = judge(z[n:], t, self.split.report_reference.logits, self.t_ck, self.rep.y, self.spec)
        ref_sel = self.split.select_reference.logits
        out["kl_sel"] = mean_kl(ref_sel, self.t_ck, z[:n], self.t_ck)  # both at the checkpoint's T
        out["kl_sel_own_t"] = mean_kl(ref_sel, self.t_ck, z[:n], t)  # the artifact at its own T
        return out

    def search(self, form: str, seed: int, eq: bool, exclude: Sequence[str] = (), qat: bool = False):
        """(method, evaluations): the least mean KL to PyTorch on the selection split, both at the checkpoint's T
        (the export's score; ``alt``: the method the KL at the artifact's own matched T would have chosen)."""
        evals = {m: self.evaluate(self.logits(form, seed, eq, m, exclude, qat)) for m in METHODS}
        best = min(METHODS, key=lambda m: evals[m]["kl_sel"])
        alt = min(METHODS, key=lambda m: evals[m]["kl_sel_own_t"])
        evals[best] = dict(evals[best], method=best, alt=alt)
        return best, evals


class _Fixed:
    """A backend that returns given logits (the cached PyTorch reference)."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.logits


# ---------------------------------------------------------------------------------------------- the grid


def run_grid(b: Bench, seeds: Sequence[int], keeps: Sequence[int], qat: bool) -> Dict[str, Dict]:
    """``{variant: {"form", "per": {seed: evaluation}, "note"}}``."""
    from edgecls.export import refit

    rows: Dict[str, Dict] = {}

    def put(label: str, form: str, seed: int, ev: Dict) -> None:
        rows.setdefault(label, {"form": form, "per": {}})["per"][seed] = ev

    for seed in seeds:
        for form in FORMS:
            for eq in (True, False):
                best, evals = b.search(form, seed, eq)
                cle = "CLE on" if eq else "CLE off"
                put(f"{form} · search · {cle} · k=0", form, seed, evals[best])
                for m in METHODS:
                    put(f"{form} · {m} · {cle} · k=0", form, seed, evals[m])
                if not eq:
                    continue
                z = b.logits(form, seed, True, best)
                for how in [h for h in TEMPS[1:] if h != "crossfit" or hasattr(refit, "crossfit_temperature")]:
                    put(f"{form} · search · CLE on · k=0 · T {how}", form, seed, dict(b.evaluate(z, how), method=best))
                order = b.ranking(form, seed, best)
                for k in keeps:
                    if k:
                        ev = b.evaluate(b.logits(form, seed, True, best, order[:k]))
                        put(f"{form} · search · CLE on · k={k}", form, seed, dict(ev, method=best, kept=order[:k]))
    if qat and 0 in seeds:  # expensive: sample 0 only, at the method the search chose for the PTQ baseline
        for form in FORMS:
            best = rows[f"{form} · search · CLE on · k=0"]["per"][0]["method"]
            ev = b.evaluate(b.logits(form, 0, True, best, qat=True))
            put(f"{form} · QAT · search · CLE on · k=0", form, 0, dict(ev, method=best))
    return rows


def _sort_key(label: str) -> Tuple[int, int]:
    """Rows of a form: baseline, fixed methods, CLE off, kept layers, temperatures, QAT."""
    form, rest = label.split(" · ", 1)
    order = ["search · CLE on · k=0", "minmax · CLE on · k=0", "percentile · CLE on · k=0", "entropy · CLE on · k=0",
             "search · CLE off · k=0", "minmax · CLE off · k=0", "percentile · CLE off · k=0",
             "entropy · CLE off · k=0", "search · CLE on · k=2", "search · CLE on · k=4",
             "search · CLE on · k=0 · T ckpt", "search · CLE on · k=0 · T nll",
             "search · CLE on · k=0 · T crossfit", "QAT · search · CLE on · k=0"]
    return FORMS.index(form), order.index(rest) if rest in order else len(order)


def fmt_cell(vals: List[Optional[float]], f: str) -> str:
    got = [v for v in vals if v is not None]
    if not got:
        return "–"
    if len(vals) == 1:
        return format(got[0], f)
    return f"{format(float(np.mean(got)), f)} ({' / '.join('–' if v is None else format(v, f) for v in vals)})"


def table(b: Bench, rows: Dict[str, Dict], seeds: Sequence[int]) -> str:
    from edgecls.runtime.metrics import expected_calibration_error, softmax

    ref, y = b.split.report_reference.logits, b.rep.y
    acc_ref = float(np.mean(ref.argmax(1) == y))
    ece_ref = float(expected_calibration_error(softmax(ref, b.t_ck), y))
    pos = b.spec.positive_index is not None
    cols = ["variant", "calib", "T", "accuracy %", "Δacc pt (drop)", "ECE", "flips"] + (["decisions %"] if pos else []) \
        + ["p99 \\|Δp\\| @T_ckpt", "gates"]
    lines = [f"**{b.name}** — `{b.ckpt_path}`, {b.spec.arch}, {b.spec.num_classes} classes"
             + (f", positive `{b.spec.positive}` (threshold {b.spec.threshold:.3f})" if pos else "")
             + f"; report split n = {b.rep.n} (selection n = {b.sel.n}); {b.split.rule}.",
             f"Gates: drop <= 1 pt; ECE <= {max(0.03, ece_ref + 0.015):.4f} (max(0.03, PyTorch {ece_ref:.4f} + 0.015))"
             + ("; decisions >= 97 %" if pos else "") + ". Cells: mean (sample " + " / ".join(map(str, seeds))
             + "); gates per sample: P = all pass, else the failed ones.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append("| PyTorch (reference) | – | " + f"{b.t_ck:.3f} | {100 * acc_ref:.2f} | – | {ece_ref:.4f} | – | "
                 + ("– | " if pos else "") + "– | – |")
    for label in sorted(rows, key=_sort_key):
        r = rows[label]
        per = [r["per"].get(s) for s in seeds]
        if all(p is None for p in per):
            continue
        if len([p for p in per if p]) == 1:
            per = [p for p in per if p]

        def get(k: str, scale: float = 1.0, per=per) -> List[Optional[float]]:
            return [None if p is None else scale * p[k] for p in per]

        fixed = label.split(" · ")[1]
        calib = fixed if fixed in METHODS else "/".join(p["method"][:4] for p in per if p)  # searched: per sample
        gates = " ".join("–" if p is None else ("P" if not p["fails"] else "F:" + "+".join(p["fails"])) for p in per)
        cells = [label, calib, fmt_cell(get("t"), ".3f"), fmt_cell(get("acc", 100), ".2f"),
                 fmt_cell(get("drop_pt"), "+.2f"), fmt_cell(get("ece"), ".4f"), fmt_cell(get("flips"), ".1f")] \
            + ([fmt_cell(get("dec", 100), ".2f")] if pos else []) + [fmt_cell(get("p99"), ".3f"), gates]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_info() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
        return f"{model}; avx512_vnni: {'yes' if 'avx512_vnni' in flags else 'no'}; {os.cpu_count()} CPUs"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "?"


def latency(b: Bench, keeps: Sequence[int]) -> str:
    """FP32 vs the CPU form (sample 0, CLE on, searched method) full INT8 and with k layers kept, b1, 2 threads."""
    from edgecls.export.int8_cost import interleaved_latency, loadavg

    method, _ = b.search("int8-cpu", 0, True)
    order = b.ranking("int8-cpu", 0, method)
    models = {"fp32": b.fp32().SerializeToString()}
    for k in keeps:
        models[f"int8-cpu k={k}"] = b.quantized("int8-cpu", 0, True, method, order[:k]).SerializeToString()
    before = loadavg()
    ms = interleaved_latency(models, np.ascontiguousarray(b.rep.x[:1]), threads=2, rounds=15, iters=10)
    return (f"**{b.name}** latency b1, 2 threads, interleaved (loadavg {before} → {loadavg()}): "
            + ", ".join(f"{k} {v:.2f} ms ({v / ms['fp32']:.2f}×)" for k, v in ms.items()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    limit_threads(args.threads)
    seeds = [int(s) for s in args.samples.split(",")]
    keeps = sorted({0} | {int(k) for k in args.keep.split(",")})
    ckpts = args.checkpoint or ["mobile=/work/runs/mobile/best.pt", "p28=/work/runs/p28/best.pt"]
    t_start = time.perf_counter()
    started = dt.datetime.now().isoformat(timespec="seconds")
    sections, lat, dump = [], [], {}
    for item in ckpts:
        name, _, path = item.partition("=")
        t0 = time.perf_counter()
        print(f"[{name}] {path}", flush=True)
        b = Bench(name, Path(path), args)
        rows = run_grid(b, seeds, keeps, not args.no_qat)
        sections.append(f"## {name}\n\n{table(b, rows, seeds)}\n\n({time.perf_counter() - t0:.0f} s)")
        dump[name] = rows
        if args.latency:
            lat.append(latency(b, keeps))
        print(sections[-1], flush=True)
    import onnxruntime as ort
    import torch

    cmd = " ".join([".venv/bin/python", "bench/int8_ablation.py"] + list(argv if argv is not None else sys.argv[1:]))
    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    head = [f"# INT8 ablation ({started})", "",
            f"`{env}OMP_NUM_THREADS={args.threads} {cmd}` — {time.perf_counter() - t_start:.0f} s wall "
            f"(with caches under {args.cache}); CPU: {cpu_info()}; onnxruntime {ort.__version__} "
            f"({os.path.dirname(ort.__file__)}), torch {torch.__version__}, both on {args.threads} thread(s).", "",
            "Baseline = the export's recipe without the keep/QAT fallbacks: calibration method searched on the "
            "selection split (least mean KL to PyTorch, both at the checkpoint's T), cross-layer equalization on, full INT8 "
            "(k=0), T matched to PyTorch's probabilities on the selection split. Each other row changes one thing. "
            "`int8-qdq` is run with exact Q/DQ semantics (onnxruntime, graph optimizations off), `int8-cpu` through "
            "the runtime's onnxruntime CPU backend. Δacc = PyTorch − artifact (positive = worse); flips = top-1 "
            "differences from PyTorch on the report split; decisions = yes/no/uncertain equal to PyTorch's, both "
            "at the checkpoint's threshold; ECE at the artifact's own T; p99 |Δp| with both at the checkpoint's T. "
            "k>0 rows keep the k lowest-SQNR layers of that sample's ranking (the searched method at k=0). "
            "QAT rows: calibration sample 0 only, at the method searched for the PTQ baseline of sample 0.", ""]
    text = "\n".join(head + sections + ([("## latency\n\n" + "\n\n".join(lat))] if lat else [])) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    (Path(args.cache) / "ablation.json").write_text(json.dumps(dump, indent=1, default=str), encoding="utf-8")
    print(f"wrote {args.out} in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
