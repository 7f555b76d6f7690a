"""VGG16-BN for 32x32 inputs with five configurable max-pools (RCM: a stride-1 pool is removed,
``22222`` -> 1x1 map, ``11222`` -> 4x4) and a 512-256-256 classifier as in RCM's code."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from evalkit.models.base import ImageClassifier
from evalkit.models.layers import parse_strides

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16(ImageClassifier):
    penultimate = "layer5"
    block_sites = ("layer5.0", "layer5.1", "layer5.2")
    default_strides = "22222"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        strides: str | Sequence[int] | None = None,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        upsample: int = 1,
        pool: str = "avg",
    ) -> None:
        super().__init__(mean=mean, std=std, upsample=upsample, pool=pool)
        s = parse_strides(strides, self.default_strides, "vgg16")
        cin = in_channels
        for i, (widths, stride) in enumerate(zip(STAGES, s), start=1):
            layers: list[nn.Module] = []
            for cout in widths:
                layers.append(
                    nn.Sequential(
                        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
                    )
                )
                cin = cout
            self.add_module(f"layer{i}", nn.Sequential(*layers))
            # the max-pool after stage i; stride 1 removes it (RCM)
            self.add_module(
                f"down{i}",
                nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity(),
            )
        self.classifier = nn.Sequential(
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
        self.linear = nn.Linear(256, num_classes)
        self.feature_dim = 512

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 6):
            x = getattr(self, f"down{i}")(getattr(self, f"layer{i}")(x))
        return x

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        return self.linear(self.classifier(torch.flatten(self.pool(feat), 1)))
