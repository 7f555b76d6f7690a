"""Bit-depth reduction (Xu et al., NDSS 2018, "Feature Squeezing"; Guo et al., ICLR 2018), a
test-time input transformation: ``round(x * (2^b - 1)) / (2^b - 1)`` per pixel.

Rounding has zero derivative almost everywhere, so a plain gradient attack sees a zero gradient
(a shattered gradient, Athalye et al. 2018); the part declares itself non-differentiable with the
identity backward (BPDA) and the harness adds BPDA attacks. Default 3 bits (Guo et al.'s
setting); ``--defense bitdepth --param bitdepth_bits=1`` is Xu et al.'s MNIST binarisation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.params import get_int
from evalkit.defenses.registry import Plugin, register
from evalkit.defenses.transforms import prepend
from evalkit.errors import EvalkitError


class BitDepth(nn.Module):
    """Quantise [0, 1] inputs to ``bits`` bits per channel (2^bits levels, 0 and 1 included)."""

    def __init__(self, bits: int = 3) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise EvalkitError(f"bit-depth reduction needs 1..8 bits, not {bits}")
        self.bits = int(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def apply_bitdepth(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    return prepend(model, BitDepth(get_int(params, "bitdepth_bits", minimum=1)))


PLUGIN = register(
    Plugin(
        name="bitdepth",
        apply=apply_bitdepth,
        test_time_only=True,
        any_model=True,
        defaults={"bitdepth_bits": 3},
        summary="bit-depth reduction of the input (test time; attacked with BPDA)",
    )
)
