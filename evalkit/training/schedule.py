"""Optimizer and learning-rate schedule (stepped once per epoch, at the epoch's end)."""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError
from evalkit.training.config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def default_milestones(epochs: int) -> list[int]:
    """50% and 75% of training, the usual shape of PGD-AT schedules (e.g. 100/150 of 200)."""
    return sorted({max(1, round(epochs * 0.5)), max(1, round(epochs * 0.75))})


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "multistep":
        ms = cfg.milestones or default_milestones(cfg.epochs)
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=ms, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0)
    raise EvalkitError(f"unknown --schedule {cfg.schedule!r} (use multistep, cosine or constant)")
