"""PreAct ResNet-18 (the Fast-AT / Rice et al. layout: ``conv1``, ``layer1..4``, ``bn``, ``linear``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from evalkit.models.base import ImageClassifier
from evalkit.models.layers import parse_strides


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet18(ImageClassifier):
    penultimate = "relu"
    block_sites = ("layer4.0", "layer4.1")
    default_strides = "1222"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        width: int = 64,
        strides: str | Sequence[int] | None = None,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        upsample: int = 1,
        pool: str = "avg",
    ) -> None:
        super().__init__(mean=mean, std=std, upsample=upsample, pool=pool)
        s = parse_strides(strides, self.default_strides, "preact_resnet18")
        w = int(width)
        self.in_planes = w
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(w, s[0])
        self.layer2 = self._make_layer(2 * w, s[1])
        self.layer3 = self._make_layer(4 * w, s[2])
        self.layer4 = self._make_layer(8 * w, s[3])
        self.bn = nn.BatchNorm2d(8 * w)
        self.relu = nn.ReLU()
        self.linear = nn.Linear(8 * w, num_classes)
        self.feature_dim = 8 * w

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        blocks = []
        for st in (stride, 1):
            blocks.append(PreActBlock(self.in_planes, planes, st))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.relu(self.bn(out))
