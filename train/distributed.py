"""Device selection and ``torchrun`` (DistributedDataParallel) support.

Run ``torchrun --nproc_per_node N $(which edgecls) train ...`` (or ``python -m torch.distributed.run ... -m
edgecls.train ...``): torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; each process drives one GPU (NCCL) or, on a
CPU machine, one share of the cores (gloo). Rank 0 writes every output; the others only compute.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, List

from edgecls.reference.devices import resolve_torch_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str = ""  # "" when not distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def setup(device: str = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); pick this process's device."""
    import torch
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_torch_device(device, local_rank, world > 1)
    if world <= 1:
        return DistContext(0, 1, 0, dev, "")
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    else:  # share the cores between the local processes instead of oversubscribing them
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if rank != 0:  # rank 0 reports; the others only speak up about errors
        logging.getLogger("edgecls").setLevel(logging.ERROR)
    log.info("distributed: rank %d/%d (local %d) on %s via %s", rank, world, local_rank, dev, backend)
    return DistContext(rank, world, local_rank, dev, backend)


def cleanup(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed:
        dist.barrier()


def all_gather(ctx: DistContext, obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    import torch.distributed as dist

    if not ctx.distributed:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_rank0(ctx: DistContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its exception) to every rank."""
    if not ctx.distributed:
        return fn(*args, **kwargs)
    box: Any = None
    if ctx.is_main:
        try:
            box = ("ok", fn(*args, **kwargs))
        except Exception as e:  # re-raised on every rank below
            box = ("err", e)
    box = broadcast(ctx, box)
    if box[0] == "err":
        raise box[1]
    return box[1]
