"""Architectures (CIFAR-style layouts), the normalization layer, the registry, and the ways an
outside model gets in: :func:`wrap` (normalization in front, logits out) and :func:`load_any`
(checkpoints, state_dicts, safetensors, TorchScript, torch.export, factories, RobustBench)."""

from typing import Any

from evalkit.models.base import ImageClassifier
from evalkit.models.layers import Normalize, Upsample
from evalkit.models.registry import ARCHS, build_model
from evalkit.models.wrap import check_outputs, wrap

__all__ = [
    "ARCHS",
    "ImageClassifier",
    "Normalize",
    "Upsample",
    "build_model",
    "check_outputs",
    "load_any",
    "wrap",
]


def __getattr__(name: str) -> Any:
    # load_any pulls in checkpoints, datasets and defenses, which themselves import this
    # package: resolve it lazily to keep the import graph acyclic.
    if name == "load_any":
        from evalkit.models.sources import load_any

        return load_any
    raise AttributeError(f"module 'evalkit.models' has no attribute {name!r}")
