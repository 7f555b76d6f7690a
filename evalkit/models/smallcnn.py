"""A small CNN for CPU work: four conv-BN-ReLU stages, global pooling, linear."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from evalkit.models.base import ImageClassifier
from evalkit.models.layers import parse_strides


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class SmallCNN(ImageClassifier):
    """Stages ``layer1..layer4`` (widths w, 2w, 4w, 4w); CAS/CIFS sit on ``layer4`` alone.

    The papers put CAS/CIFS on both blocks of ResNet-18's last stage, 15+ convolutions deep.
    Here a module on ``layer3`` would see features three convolutions deep: trained with CAS it
    became the classifier (the final prediction equalled its argmax on every test point, the
    later layers only decoded the chosen mask row) and its argmax hid the gradient from plain
    attacks, leaving AT+CAS 12.7 points below AT. ``layer4``, the block whose map is pooled into
    the classifier, is the one place of the paper's kind. ``--param cas_sites=layer3,layer4``
    keeps the two-site variant."""

    penultimate = "layer4"
    block_sites = ("layer4",)
    default_strides = "1221"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        width: int = 16,
        strides: str | Sequence[int] | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        upsample: int = 1,
        pool: str = "avg",
    ) -> None:
        super().__init__(mean=mean, std=std, upsample=upsample, pool=pool)
        s = parse_strides(strides, self.default_strides, "smallcnn")
        w = int(width)
        self.layer1 = conv_bn_relu(in_channels, w, s[0])
        self.layer2 = conv_bn_relu(w, 2 * w, s[1])
        self.layer3 = conv_bn_relu(2 * w, 4 * w, s[2])
        self.layer4 = conv_bn_relu(4 * w, 4 * w, s[3])
        self.linear = nn.Linear(4 * w, num_classes)
        self.feature_dim = 4 * w

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
