"""The common shape of every evalkit classifier.

``forward(x)`` = normalize -> optional upsample -> ``forward_features`` -> ``pool`` -> classifier.
Defenses find their places through three attributes instead of per-arch code:

* ``penultimate``: name of the module whose output is the last feature map (analysis hooks);
* ``block_sites``: names of the blocks CAS/CIFS wrap (the last stage, as in the papers);
* ``classifier_name``: attribute holding the final linear layer (HE replaces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from evalkit.models.layers import Normalize, Upsample, global_pool


class ImageClassifier(nn.Module):
    """Base class; subclasses build their layers and implement ``forward_features``."""

    penultimate: str = ""
    block_sites: tuple[str, ...] = ()
    classifier_name: str = "linear"
    default_strides: str = ""

    def __init__(
        self,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        upsample: int = 1,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.upsample = Upsample(upsample)
        self.pool = global_pool(pool)
        self.arch_config: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.classifier_name)(torch.flatten(self.pool(feat), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(self.upsample(self.normalize(x))))
