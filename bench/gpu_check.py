"""GPU check (run on a CUDA machine): training/inference throughput with AMP vs FP32, and parity of a model
trained on CUDA against its ONNX export run by onnxruntime.

    python bench/gpu_check.py --ckpt runs/train/gpu/best.pt --data ../shared/data/mobile/val [--json out.json]

Prints a table; every figure is measured in this run. Needs torch with CUDA (the `train` extra) and onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _sync() -> None:
    torch.cuda.synchronize()


def train_throughput(arch: str, batch: int, size: int, amp: bool, channels_last: bool, steps: int = 15) -> float:
    from edgecls.reference.models import build_model

    model = build_model(arch, 2, weights="none").cuda().train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, size, size, device="cuda")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(5):
        step()
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync()
    return batch * steps / (time.perf_counter() - t)


@torch.no_grad()
def infer_throughput(arch: str, batch: int, size: int, amp: bool, steps: int = 25) -> float:
    from edgecls.reference.models import build_model

    model = build_model(arch, 2, weights="none").cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            model(x)
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            model(x)
    _sync()
    return batch * steps / (time.perf_counter() - t)


def cuda_vs_onnx(ckpt_path: Path, onnx_path: Path, data: Path, limit: int = 270) -> dict:
    """The checkpoint on CUDA (FP32, TF32 off and on) vs the exported ONNX on onnxruntime CPU."""
    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.preprocess import load_image, preprocess

    ck = load_checkpoint(ckpt_path)
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    batch = preprocess([load_image(p) for p in files], ck.spec.preprocess)
    with load_backend(onnx_path, device="cpu") as be:
        ort = np.concatenate([be.infer(batch[i : i + 32]) for i in range(0, len(batch), 32)])
    model = ck.build_model().cuda()
    out = {"images": len(files)}
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.no_grad():
            ref = model(torch.from_numpy(batch).cuda()).float().cpu().numpy()
        d = np.abs(ref - ort)
        out[f"tf32={tf32}"] = {
            "max_abs_dlogit": float(d.max()),
            "scale": float(np.abs(ref).max()),
            "top1_agreement": float((ref.argmax(1) == ort.argmax(1)).mean()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures the GPU path")
    torch.backends.cudnn.benchmark = True
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    rows = []
    for arch in ("resnet18", "mobilenet_v2"):
        for amp in (False, True):
            tr = train_throughput(arch, 128, 224, amp=amp, channels_last=amp)
            inf = infer_throughput(arch, 128, 224, amp=amp)
            rows.append((arch, "AMP fp16 + channels_last" if amp else "fp32", tr, inf))
    res["throughput"] = [dict(arch=a, mode=m, train_img_s=t, infer_img_s=i) for a, m, t, i in rows]
    print(f"GPU {res['gpu']}  torch {res['torch']}  CUDA {res['cuda']}  (batch 128, 224 px, synthetic tensors)")
    print(f"{'arch':14} {'mode':26} {'train img/s':>12} {'infer img/s':>12}")
    base = {}
    for a, m, t, i in rows:
        base.setdefault(a, (t, i))
        print(f"{a:14} {m:26} {t:12.0f} {i:12.0f}   x{t / base[a][0]:.2f} / x{i / base[a][1]:.2f}")
    if args.ckpt and args.onnx and args.data:
        res["cuda_vs_onnx"] = cuda_vs_onnx(args.ckpt, args.onnx, args.data)
        print(json.dumps(res["cuda_vs_onnx"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
