"""Sharding an evaluation over ``torchrun`` ranks.

Batches (fixed by ``--batch-size``, independent of the number of ranks) are dealt round-robin:
rank r takes batches r, r+K, r+2K, ... . Every unit of a batch (clean pass, each attack at each
eps) runs on the rank that owns the batch, with seeds derived from (seed, attack, eps, batch),
so the per-example outcome does not depend on K. At the end the records are gathered on rank 0,
which writes the single run directory.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from evalkit.utils.distributed import DistInfo, barrier, device_for, setup, teardown

__all__ = [
    "DistInfo",
    "barrier",
    "broadcast_object",
    "device_for",
    "gather_records",
    "setup",
    "teardown",
]


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


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. an error found while preparing the run)."""
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
