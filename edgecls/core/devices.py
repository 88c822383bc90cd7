"""The one device-string parser: ``auto``, ``cpu``, ``cuda[:N]``, ``tensorrt[:N]``."""

from __future__ import annotations

from typing import Sequence, Tuple

from edgecls.core.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def parse_device(device: str, allowed: Sequence[str] = DEVICES) -> Tuple[str, int]:
    """``"cuda:1"`` → ``("cuda", 1)``; the name must be one of ``allowed`` (an error lists them)."""
    name, _, idx = str(device).strip().lower().partition(":")
    if name not in allowed:
        raise InputError(f"device {device!r} is not one of {', '.join(allowed)} (a GPU index may follow: cuda:1)")
    if idx:
        if not idx.isdigit() or name in ("auto", "cpu"):
            raise InputError(f"device {device!r}: only cuda:N or tensorrt:N take a GPU index N")
        return name, int(idx)
    return name, 0
