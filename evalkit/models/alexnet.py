"""AlexNet for 32x32 inputs as in RCM's code: conv1 5x5 with stride ``s0``, then three 2x2
max-pools with strides ``s1..s3`` (kept even at stride 1). ``2222`` -> 2x2 map, ``1122`` -> 7x7."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from evalkit.models.base import ImageClassifier
from evalkit.models.layers import parse_strides


class AlexNet(ImageClassifier):
    penultimate = "down3"
    block_sites = ("layer4", "layer5")
    default_strides = "2222"

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
        s = parse_strides(strides, self.default_strides, "alexnet")
        self.layer1 = nn.Sequential(
            nn.Conv2d(in_channels, 64, 5, stride=s[0], padding=2), nn.ReLU()
        )
        self.down1 = nn.MaxPool2d(2, s[1])
        self.layer2 = nn.Sequential(nn.Conv2d(64, 192, 5, padding=2), nn.ReLU())
        self.down2 = nn.MaxPool2d(2, s[2])
        self.layer3 = nn.Sequential(nn.Conv2d(192, 384, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(384, 256, 3, padding=1), nn.ReLU())
        self.layer5 = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        self.down3 = nn.MaxPool2d(2, s[3])
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(256, 1024),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(1024, 512),
            nn.ReLU(),
        )
        self.linear = nn.Linear(512, num_classes)
        self.feature_dim = 256

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down1(self.layer1(x))
        x = self.down2(self.layer2(x))
        return self.down3(self.layer5(self.layer4(self.layer3(x))))

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        return self.linear(self.classifier(torch.flatten(self.pool(feat), 1)))
