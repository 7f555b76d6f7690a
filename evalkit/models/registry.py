"""Architecture registry: one place that maps names to constructors and rebuilds models from
checkpoint metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.alexnet import AlexNet
from evalkit.models.base import ImageClassifier
from evalkit.models.preact_resnet import PreActResNet18
from evalkit.models.resnet import ResNet18
from evalkit.models.smallcnn import SmallCNN
from evalkit.models.vgg import VGG16
from evalkit.models.wide_resnet import WideResNet

ARCHS: dict[str, Callable[..., ImageClassifier]] = {
    "smallcnn": SmallCNN,
    "resnet18": ResNet18,
    "preact_resnet18": PreActResNet18,
    "wrn34_10": lambda **kw: WideResNet(depth=34, widen_factor=10, **kw),
    "wrn28_10": lambda **kw: WideResNet(depth=28, widen_factor=10, **kw),
    "vgg16": VGG16,
    "alexnet": AlexNet,
}


def build_model(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **arch_kwargs: Any,
) -> ImageClassifier:
    """Build ``arch``; ``mean``/``std`` default to identity (raw [0, 1] input, as most
    robust-training repositories use). ``arch_kwargs`` (strides, upsample, pool, width) are
    recorded on the model so a checkpoint can rebuild it exactly."""
    key = arch.lower().replace("-", "_")
    if key not in ARCHS:
        raise EvalkitError(f"unknown arch {arch!r} (known: {', '.join(ARCHS)})")
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise EvalkitError(
            f"normalization needs {in_channels} mean/std values, got {len(mean)}/{len(std)}"
        )
    kwargs = {k: v for k, v in arch_kwargs.items() if v is not None}
    try:
        model = ARCHS[key](
            num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **kwargs
        )
    except (TypeError, ValueError) as exc:
        raise EvalkitError(f"cannot build {arch}: {exc}") from None
    model.arch_config = {
        "arch": key,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "mean": list(mean),
        "std": list(std),
        "arch_kwargs": kwargs,
    }
    return model
