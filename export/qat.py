"""Quantization-aware fine-tuning (QAT): a brief fine-tuning of the fake-quantized model, so its weights tolerate
INT8 — for when post-training quantization misses the gates (``edgecls export --int8 --qat``, or automatically).

What is simulated is what the exported Q/DQ model does: BatchNorm folded into the convolutions (as the ONNX
export folds it), every Conv/Linear input fake-quantized per tensor to 8 bits (asymmetric, ranges observed on the
first batches then frozen) and every weight per output channel to symmetric INT8 (scale from its current max).
Gradients pass the rounding straight through (torch's ``fake_quantize_*`` ops). The loss is distillation from the
checkpoint's own model (KL at T = 1, which is what parity measures) plus a quarter of the cross-entropy on the
labels, over ``images`` training images of the checkpoint's train split (random flips), on CUDA when present.
The result is a float model again (fake-quant removed): export writes its FP32 ONNX and quantizes it as usual.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np

from edgecls.core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QatConfig:
    images: int = 512  # training images seen (one pass)
    batch_size: int = 16
    lr: float = 1e-5  # Adam; 1e-4 moved the folded weights too far in 24 steps (KL to PyTorch grew)
    ce_weight: float = 0.25
    observe_batches: int = 4  # activation ranges observed on these batches, then frozen
    min_steps: int = 20  # optimizer steps at least (small train splits are cycled)
    seed: int = 0
    device: str = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.images < 1 or self.batch_size < 1 or self.observe_batches < 1 or not self.lr > 0:
            raise InputError(f"QAT settings must be positive: {self}")


@dataclass(frozen=True)
class QatInfo:
    device: str
    images: int
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    layers: int
    lr: float

    def to_dict(self) -> Dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _fake_quant_wrapper():
    import torch
    import torch.nn.functional as F

    class FakeQuant(torch.nn.Module):
        """A Conv2d/Linear with fake-quantized input (per tensor, uint8 range) and weight (per channel, int8)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("lo", torch.tensor(0.0))
            self.register_buffer("hi", torch.tensor(0.0))
            self.observing = True
            self.seen = False

        def _act(self, x: torch.Tensor) -> torch.Tensor:
            if self.observing:
                with torch.no_grad():
                    lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
                    if self.seen:
                        lo, hi = 0.9 * self.lo + 0.1 * lo, 0.9 * self.hi + 0.1 * hi
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                    self.seen = True
            scale = ((self.hi - self.lo) / 255.0).clamp(min=1e-8)
            zp = torch.clamp(torch.round(-self.lo / scale), 0, 255).to(torch.int32)
            return torch.fake_quantize_per_tensor_affine(x, scale.float(), zp, 0, 255)

        def _weight(self) -> torch.Tensor:
            w = self.inner.weight
            amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=1e-8)
            zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
            return torch.fake_quantize_per_channel_affine(w, (amax / 127.0).float(), zero, 0, -127, 127)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x, w, m = self._act(x), self._weight(), self.inner
            if isinstance(m, torch.nn.Linear):
                return F.linear(x, w, m.bias)
            return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)

    return FakeQuant


def _set_module(root, name: str, module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def prepare(model: torch.nn.Module) -> Tuple[torch.nn.Module, List[str]]:
    """A copy of ``model`` with BatchNorm folded (torch.fx) and every Conv2d/Linear fake-quantized."""
    import copy

    import torch
    from torch.fx.experimental.optimization import fuse

    fused = fuse(copy.deepcopy(model).eval())
    FakeQuant = _fake_quant_wrapper()
    names = [n for n, m in fused.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for n in names:
        _set_module(fused, n, FakeQuant(fused.get_submodule(n)))
    return fused, names


def strip(model: torch.nn.Module, names: List[str]) -> torch.nn.Module:
    """The float model back: each fake-quant wrapper replaced by the layer it wraps (fine-tuned weights)."""
    for n in names:
        _set_module(model, n, model.get_submodule(n).inner)
    return model.eval()


def _train_items(ckpt, count: int, seed: int):
    from edgecls.export.calib import stratified_sample
    from edgecls.reference.checkpoint import recorded_items

    items = recorded_items(ckpt.data, "train", "QAT fine-tunes on the checkpoint's training images; they are not "
                           "recorded or not found (use --qat off)")
    return stratified_sample(items, [str(y) for _, y in items], min(count, len(items)), seed)


def qat_finetune(ckpt, spec: ModelSpec, config: QatConfig) -> Tuple[torch.nn.Module, QatInfo]:
    """The checkpoint's model fine-tuned with fake quantization; returns (float model, what was done)."""
    import torch
    import torch.nn.functional as F

    from edgecls.core.progress import progress
    from edgecls.export.calib_ranges import CalibrationImages
    from edgecls.reference.devices import resolve_torch_device

    device = resolve_torch_device(config.device)
    items = _train_items(ckpt, config.images, config.seed)
    data = CalibrationImages([p for p, _ in items], spec.preprocess)
    labels = torch.tensor([y for _, y in items], dtype=torch.long)
    teacher = ckpt.build_model().to(device).eval()
    student, names = prepare(ckpt.build_model())
    student = student.to(device).eval()  # BatchNorm is folded and stays so; dropout off: gradients still flow
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    total = max(min(config.images, len(data)), (config.observe_batches + config.min_steps) * config.batch_size)
    order = torch.cat([torch.randperm(len(data), generator=gen) for _ in range(-(-total // len(data)))])[:total]
    t0, losses, steps = time.perf_counter(), [], 0
    with progress(total=len(order), desc="QAT", unit="img", enabled=config.progress) as bar:
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            x = torch.from_numpy(data.data[idx.numpy()]).to(device)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip.to(device)] = x[flip.to(device)].flip(-1)
            y = labels[idx].to(device)
            if steps == config.observe_batches:
                for n in names:
                    student.get_submodule(n).observing = False
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            kd = F.kl_div(F.log_softmax(s_logits, 1), F.log_softmax(t_logits, 1), reduction="batchmean",
                          log_target=True)
            loss = kd + config.ce_weight * F.cross_entropy(s_logits, y)
            if steps >= config.observe_batches:  # ranges first, then weights
                opt.zero_grad()
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
            steps += 1
            bar.update(len(idx))
    if not np.all(np.isfinite(losses)):
        raise RuntimeError("QAT diverged (non-finite loss); try --qat off or a lower learning rate")
    model = strip(student, names).cpu()
    info = QatInfo(str(device), len(order), steps, time.perf_counter() - t0, losses[0],
                   float(np.mean(losses[-3:])), len(names), config.lr)
    log.info("QAT on %s: %d images, %d steps in %.1fs, loss %.4f -> %.4f", device, info.images, steps, info.seconds,
             info.loss_first, info.loss_last)
    return model, info
