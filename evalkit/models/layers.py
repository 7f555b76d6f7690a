"""Layers shared by every architecture: input normalization, in-model upsampling, pooling.

They hold no persistent state, so a model's ``state_dict`` keys stay those of the common
CIFAR layouts (``conv1``, ``bn1``, ``layer1..4``, ``linear``) and foreign checkpoints load as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the buffers are not saved in the state_dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Upsample(nn.Module):
    """Nearest upsampling inside the model (RCM fix 1): attacks still act on the small input."""

    def __init__(self, factor: int, mode: str = "nearest") -> None:
        super().__init__()
        self.factor = int(factor)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mode={self.mode}"


def global_pool(kind: str) -> nn.Module:
    """The pooling before the classifier: ``avg`` (default) or ``max`` for the RCM pooling study."""
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(1)
    raise ValueError(f"pool must be avg or max, not {kind!r}")


def parse_strides(strides: str | Sequence[int] | None, default: str, arch: str) -> list[int]:
    """``"1122"`` -> ``[1, 1, 2, 2]``, checking the length the architecture needs."""
    text = default if strides is None else "".join(str(s) for s in strides)
    if len(text) != len(default) or any(c not in "12" for c in text):
        raise ValueError(
            f"{arch} needs {len(default)} strides of 1 or 2 (e.g. {default}), got {text!r}"
        )
    return [int(c) for c in text]
