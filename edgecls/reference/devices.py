"""Torch device resolution, the one home: a device string (parsed by :func:`edgecls.core.devices.parse_device`)
→ the torch device this process uses.

``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` → ``cuda:<local_rank>`` under DDP, else
``cuda:0``; ``cuda:N`` is checked against the GPUs present. Asking for CUDA where there is none is a
:class:`CapabilityError`, never a silent fallback to the CPU.
"""
from __future__ import annotations

from edgecls.core.devices import parse_device
from edgecls.core.errors import CapabilityError

TORCH_DEVICES = ("auto", "cpu", "cuda")


def resolve_torch_device(device: str, local_rank: int = 0, distributed: bool = False) -> str:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` → ``"cpu"`` or ``"cuda:N"`` (see the module docstring)."""
    import torch

    name, index = parse_device(device, TORCH_DEVICES)
    explicit_index = ":" in str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise CapabilityError(f"--device {device}: CUDA is not available here (use --device cpu or auto)")
    if not explicit_index:
        index = local_rank if distributed else 0
    resolved = f"cuda:{index}"
    if index >= torch.cuda.device_count():
        raise CapabilityError(f"--device {resolved}: only {torch.cuda.device_count()} CUDA device(s) present")
    return resolved
