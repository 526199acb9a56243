"""torchrun / DDP helpers: one process per device, rank 0 logs and checkpoints.

``torchrun --nproc_per_node=K train/<task>.py ...`` sets RANK, LOCAL_RANK and
WORLD_SIZE; `init` reads them and opens the process group (NCCL on CUDA, gloo
on CPU). Without those variables everything degrades to a single process and
the collectives below are no-ops, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank/world size from torchrun's environment (single process when absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise RuntimeError(f"torchrun environment: WORLD_SIZE/RANK/LOCAL_RANK must be integers ({e})") from None
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def init(device_type: str) -> DistInfo:
    """Open the process group if launched by torchrun (idempotent)."""
    info = env_info()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if active():
        dist.barrier()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (stop signals, bad steps)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_int(value: int, device: torch.device) -> int:
    """The largest ``value`` over all ranks (which stop signal arrived anywhere; 0 = none)."""
    if not active():
        return int(value)
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (used to checkpoint each rank's RNG state)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if active():
        dist.destroy_process_group()
