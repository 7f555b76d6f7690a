"""Sharding an evaluation over ``torchrun`` ranks.

Batches (fixed by ``--batch-size``, independent of the number of ranks) are dealt round-robin:
rank r takes batches r, r+K, r+2K, ... . Every unit of a batch (clean pass, each attack at each
eps) runs on the rank that owns the batch, with seeds derived from (seed, attack, eps, batch),
so the per-example outcome does not depend on K. At the end the records are gathered on rank 0,
which writes the single run directory.
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


def gather_records(records: dict[str, dict[str, Any]], info: DistInfo) -> dict[str, dict[str, Any]]:
    """All ranks' records on every rank (objects travel through the process group)."""
    if not info.active:
        return records
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, records)
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        merged.update(part or {})
    return merged


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. an error found while preparing the run)."""
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
