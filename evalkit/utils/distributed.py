"""Process-group plumbing shared by ``torchrun -m evalkit train`` and ``... attack``.

Ranks come from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); gloo on CPU, NCCL on
CUDA. A single process (no torchrun) needs nothing and every helper is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def owns(self, batch: int) -> bool:
        return batch % self.world_size == self.rank


def setup(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU, NCCL
    on CUDA. A single process needs nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, True)


def device_for(device: torch.device, info: DistInfo) -> torch.device:
    """Each rank on its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and info.active:
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum scalars across ranks (identity in a single process)."""
    if not info.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
