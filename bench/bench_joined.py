"""Joined backbones on products28: accuracy of every single backbone, pair and the triple (joined features vs
probability averaging; each backbone at its own preprocessing vs the joined network's one shared input), and the
latency/throughput of their ONNX exports, the joined graph against the sum of its backbones' own graphs.

    # 1. features, once (cached): bench/joined_features.py
    # 2. accuracy (head fits on the cached features: a minute or two)
    /work/bin/cpu .venv/bin/python bench/bench_joined.py accuracy --cache /work/cache_joined
    # 3. latency (b1 at 2 threads and b8 throughput, A and B alternating in one run, on a quiet machine)
    /work/bin/quiet .venv/bin/python bench/bench_joined.py latency

Accuracy: the recipe's head (class-weighted L-BFGS logistic regression, L2 by 5-fold CV on train) fitted on train
(1,160), scored on val (n = 270, Clopper-Pearson 95 % interval); "pooled CV": 5 stratified folds over all 1,430
images at the L2 chosen on train (every image scored once by a head that never saw it).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from joined_features import BACKBONES, joined_arch, joined_weights  # noqa: E402

OWN = {"mnv2": "pair224", "lite0": "lite0lead", "lite2": "triple260"}  # the view where it gets its own input
NAMES = {"mnv2": "MobileNetV2", "lite0": "Lite0", "lite2": "Lite2"}


def joined_view(names) -> str:
    """The cached view whose shared input is the one the joined network of ``names`` (in this order) gets."""
    from edgecls.reference.joined import lead_index

    lead = names[lead_index([BACKBONES[n][0] for n in names])]
    if lead == "lite2":
        return "triple260"
    return "pair224" if lead == "mnv2" else "lite0lead"


def load(cache: Path, view: str, name: str):
    z = np.load(cache / view / f"{name}.npz")
    return z["train"], z["val"], z["y_train"], z["y_val"]


def fit_head(x, y, c, l2=None):
    from edgecls.train.data import class_weights
    from edgecls.train.linear_head import fit_linear_head, select_head_l2

    if l2 is None:
        l2, _ = select_head_l2(x, y, c, (1e-3, 1e-2, 3e-2, 1e-1), 5, 0, True, 100)
    w, b = fit_linear_head(x, y, c, class_weights(np.bincount(y, minlength=c)), l2, 100)
    return w, b, l2


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def rate(k: int, n: int) -> str:
    from edgecls.export.gates import proportion_interval

    lo, hi = proportion_interval(k, n)
    return f"{k / n:.3f} ({k}/{n}, {lo:.3f}-{hi:.3f})"


def pooled_cv(parts, l2s, c, average: bool):
    """5-fold stratified CV over train + val; ``parts``: [(x_all, ...)] per backbone; joined or averaged."""
    from edgecls.train.linear_head import _stratified_folds

    y = parts[0][1]
    fold = _stratified_folds(y, c, 5, 1)
    hit = 0
    for f in range(5):
        tr = fold != f
        if average:
            p = np.mean([softmax(x[~tr] @ w.T + b) for (x, _), l2 in zip(parts, l2s)
                         for w, b, _ in [fit_head(x[tr], y[tr], c, l2)]], axis=0)
        else:
            x = np.concatenate([x for x, _ in parts], 1)
            w, b, _ = fit_head(x[tr], y[tr], c, l2s[0])
            p = x[~tr] @ w.T + b
        hit += int(np.sum(p.argmax(1) == y[~tr]))
    return hit, len(y)


def accuracy(a) -> list:
    cache = Path(a.cache)
    rows = []
    combos = [c for r in (1, 2, 3) for c in itertools.combinations(("mnv2", "lite0", "lite2"), r)]
    combos.append(("lite0", "mnv2"))  # the pair led by Lite0's preprocessing
    if a.combos:
        combos = [tuple(c.split("+")) for c in a.combos.split(",")]
    single_l2 = {}
    for names in combos:
        t = time.monotonic()
        view = joined_view(names) if len(names) > 1 else OWN[names[0]]
        feats = [load(cache, view, n) for n in names]
        own = [load(cache, OWN[n], n) for n in names]
        ytr, yva = feats[0][2], feats[0][3]
        c = int(ytr.max()) + 1
        entry = {"backbones": "+".join(names), "arch": joined_arch(names), "input_view": view}
        variants = (("joined", feats), ("own_preprocessing", own)) if len(names) > 1 and not a.no_own else (
            ("joined", feats),)
        for label, fs in variants:
            xtr = np.concatenate([f[0] for f in fs], 1)
            xva = np.concatenate([f[1] for f in fs], 1)
            w, b, l2 = fit_head(xtr, ytr, c)
            k = int(np.sum((xva @ w.T + b).argmax(1) == yva))
            entry[label] = {"val_correct": k, "n": len(yva), "l2": l2}
            if len(names) == 1:
                single_l2[names[0]] = l2
            if a.branch_norm and len(names) > 1:  # each branch's features scaled to one norm: does it help?
                xn_tr = np.concatenate([f[0] * (a.branch_norm / np.linalg.norm(f[0], axis=1, keepdims=True))
                                        for f in fs], 1)
                xn_va = np.concatenate([f[1] * (a.branch_norm / np.linalg.norm(f[1], axis=1, keepdims=True))
                                        for f in fs], 1)
                wn, bn, l2n = fit_head(xn_tr, ytr, c)
                entry[label + "_branch_norm"] = {"val_correct": int(np.sum((xn_va @ wn.T + bn).argmax(1) == yva)),
                                                 "n": len(yva), "l2": l2n}
                if a.cv:
                    hk, hn = pooled_cv([(np.concatenate([xn_tr, xn_va]), np.concatenate([ytr, yva]))], [l2n], c,
                                       False)
                    entry[label + "_branch_norm"].update(cv_correct=hk, cv_n=hn)
            if a.cv:
                hk, hn = pooled_cv([(np.concatenate([xtr, xva]), np.concatenate([ytr, yva]))], [l2], c, False)
                entry[label].update(cv_correct=hk, cv_n=hn)
        if len(names) > 1 and not a.no_average:  # probability averaging: each backbone's own head at its own preprocessing
            probs = []
            for n, f in zip(names, own):
                if n not in single_l2:
                    single_l2[n] = fit_head(f[0], ytr, c)[2]
                w, b, _ = fit_head(f[0], ytr, c, single_l2[n])
                probs.append(softmax(f[1] @ w.T + b))
            k = int(np.sum(np.mean(probs, 0).argmax(1) == yva))
            entry["prob_average"] = {"val_correct": k, "n": len(yva)}
            if a.cv:
                hk, hn = pooled_cv([(np.concatenate([f[0], f[1]]), np.concatenate([ytr, yva])) for f in own],
                                   [single_l2[n] for n in names], c, True)
                entry["prob_average"].update(cv_correct=hk, cv_n=hn)
        entry["seconds"] = round(time.monotonic() - t, 1)
        rows.append(entry)
        print(json.dumps(entry), flush=True)
    return rows


def print_accuracy(rows) -> None:
    print("\n| backbones (input) | joined features, one input: val | pooled CV | joined, each at its own "
          "preprocessing: val | pooled CV | probability average: val | pooled CV |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        j, o, p = r["joined"], r.get("own_preprocessing"), r.get("prob_average")

        def cell(d, k="val"):
            return rate(d[f"{k}_correct"], d["n" if k == "val" else "cv_n"]) if d and f"{k}_correct" in d else "-"
        name = " + ".join(NAMES[n] for n in r["backbones"].split("+"))
        print(f"| {name} ({r['input_view']}) | {cell(j)} | {cell(j, 'cv')} | {cell(o)} | {cell(o, 'cv')} "
              f"| {cell(p)} | {cell(p, 'cv')} |")


# --------------------------------------------------------------------------------------------------- latency


def export_fp32(arch: str, weights: str, folder: Path) -> Path:
    """A plain FP32 ONNX of ``arch`` (28 classes) through edgecls's exporter (simplified, opset 17)."""
    import onnx

    from edgecls.export.onnx_export import export_onnx
    from edgecls.reference.models import build_model, preprocess_for
    from edgecls.runtime.spec import ModelSpec

    spec = ModelSpec(arch=arch, classes=tuple(f"c{i}" for i in range(28)), preprocess=preprocess_for(arch))
    proto, _ = export_onnx(build_model(arch, 28, weights).eval(), spec)
    path = folder / (arch.replace(":", "_").replace("+", "__") + ".onnx")
    onnx.save(proto, str(path))
    return path


def latency(a) -> None:
    import onnxruntime as ort

    folder = Path(a.onnx_dir)
    folder.mkdir(parents=True, exist_ok=True)
    combos = [tuple(c.split("+")) for c in a.combos.split(",")]
    needed = sorted({(n,) for c in combos for n in c} | set(c for c in combos if len(c) > 1))
    paths = {}
    for names in needed:
        p = folder / (joined_arch(names).replace(":", "_").replace("+", "__") + ".onnx")
        if not p.is_file():
            w = joined_weights(names) if len(names) > 1 else str(BACKBONES[names[0]][1])
            p = export_fp32(joined_arch(names), w, folder)
        paths[names] = p

    def session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
        so.log_severity_level = 3
        s = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        return s, i.name, int(i.shape[-1])

    sess = {k: session(p) for k, p in paths.items()}
    rng = np.random.default_rng(0)

    def once(names, batch):
        s, name, size = sess[names]
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        t = time.perf_counter()
        s.run(None, {name: x})
        return time.perf_counter() - t

    for k in sess:  # warm-up
        for _ in range(3):
            once(k, 1)
    times = {k: [] for k in sess}
    for _ in range(a.rounds):  # A, B, ... alternating: every model sees the same machine state
        for k in sess:
            times[k].append(once(k, 1))
    thr = {k: [] for k in sess}
    for _ in range(max(3, a.rounds // 5)):
        for k in sess:
            thr[k].append(a.batch / once(k, a.batch))
    print(f"load {os.getloadavg()} | onnxruntime {ort.__version__}, 2 threads, {a.rounds} alternating rounds")
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    out = {}
    print("\n| model | b1 median ms (p10-p90) | b8 img/s | joined / sum of its backbones' own graphs |")
    print("|---|---|---|---|")
    for k in sess:
        v = np.array(times[k]) * 1e3
        ratio = ""
        if len(k) > 1:
            per_round = np.array(times[k]) / np.sum([times[(n,)] for n in k], axis=0)
            ratio = (f"{med[k] / sum(med[(n,)] for n in k):.3f} (per-round median "
                     f"{float(np.median(per_round)):.3f})")
        out["+".join(k)] = {"b1_ms": med[k], "img_s": float(np.median(thr[k])), "ratio": ratio}
        print(f"| {' + '.join(NAMES[n] for n in k)} | {med[k]:.1f} ({np.percentile(v, 10):.1f}-"
              f"{np.percentile(v, 90):.1f}) | {np.median(thr[k]):.1f} | {ratio} |")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pa = sub.add_parser("accuracy")
    pa.add_argument("--cache", default="/work/cache_joined")
    pa.add_argument("--cv", action=argparse.BooleanOptionalAction, default=True)
    pa.add_argument("--json", default=None)
    pa.add_argument("--combos", default=None, help="e.g. mnv2+lite0,mnv2+lite0+lite2 (default: all)")
    pa.add_argument("--branch-norm", type=float, default=0.0, help="also: each branch's features scaled to this norm")
    pa.add_argument("--no-own", action="store_true", help="skip the own-preprocessing variant")
    pa.add_argument("--no-average", action="store_true", help="skip probability averaging")
    pl = sub.add_parser("latency")
    pl.add_argument("--onnx-dir", default="/work/cache_joined/onnx")
    pl.add_argument("--combos", default="mnv2+lite0,mnv2+lite2,lite0+lite2,mnv2+lite0+lite2")
    pl.add_argument("--rounds", type=int, default=40)
    pl.add_argument("--batch", type=int, default=8)
    pl.add_argument("--json", default=None)
    a = p.parse_args()
    import torch

    torch.set_num_threads(2)
    if a.cmd == "accuracy":
        rows = accuracy(a)
        print_accuracy(rows)
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    else:
        latency(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
