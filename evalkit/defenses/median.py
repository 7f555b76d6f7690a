"""Median smoothing of the input (Xu et al., NDSS 2018, "Feature Squeezing"), a test-time input
transformation: each channel is replaced by its k x k sliding-window median.

The window and border follow ``scipy.ndimage.median_filter(size=k, mode="reflect")`` (window
``[i - k//2, i - k//2 + k - 1]``, symmetric padding, the upper median for even k; the test
compares the two), computed batched in torch. A median routes its gradient to one input pixel
per window, so plain attacks see a sparse gradient; the part declares itself non-differentiable
with the identity backward (BPDA) so the harness also attacks through it that way. Default
2 x 2 (Xu et al.'s MNIST setting).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.params import get_int
from evalkit.defenses.registry import Plugin, register
from evalkit.defenses.transforms import prepend
from evalkit.errors import EvalkitError


def _symmetric_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """numpy's ``symmetric`` padding (the edge value repeated) along ``dim``."""
    parts = []
    if before:
        parts.append(x.narrow(dim, 0, before).flip(dim))
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, x.shape[dim] - after, after).flip(dim))
    return torch.cat(parts, dim) if len(parts) > 1 else x


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """k x k median per channel of ``x`` (N, C, H, W), same shape out."""
    k = int(size)
    if x.shape[-1] < k or x.shape[-2] < k:
        raise EvalkitError(f"median window {k} is larger than the image {tuple(x.shape[-2:])}")
    before, after = k // 2, k - 1 - k // 2
    p = _symmetric_pad(_symmetric_pad(x, before, after, -1), before, after, -2)
    windows = p.unfold(-2, k, 1).unfold(-2, k, 1)  # (N, C, H, W, k, k)
    flat = windows.reshape(*windows.shape[:-2], k * k)
    return flat.kthvalue(k * k // 2 + 1, dim=-1).values


class Median(nn.Module):
    """Median smoothing with a ``size`` x ``size`` window (size >= 2)."""

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        if int(size) < 2:
            raise EvalkitError(f"median smoothing needs a window of at least 2, not {size}")
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def apply_median(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    return prepend(model, Median(get_int(params, "median_size", minimum=2)))


PLUGIN = register(
    Plugin(
        name="median",
        apply=apply_median,
        test_time_only=True,
        any_model=True,
        defaults={"median_size": 2},
        summary="median smoothing of the input (test time; attacked with BPDA)",
    )
)
