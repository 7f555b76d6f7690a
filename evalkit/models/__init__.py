"""Architectures (CIFAR-style layouts), the normalization layer and the registry."""

from evalkit.models.base import ImageClassifier
from evalkit.models.layers import Normalize, Upsample
from evalkit.models.registry import ARCHS, build_model

__all__ = ["ARCHS", "ImageClassifier", "Normalize", "Upsample", "build_model"]
