"""Adversarial training: objectives (standard, PGD-AT, TRADES, MART), schedules, the loop, DDP."""

from evalkit.training.config import TrainConfig
from evalkit.training.trainer import build_training_model, train

__all__ = ["TrainConfig", "build_training_model", "train"]
