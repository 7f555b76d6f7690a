"""Attacks in pixel space [0, 1]: functions of ``(model, x, y, eps, loss=...) -> x_adv``."""

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.pgd import pgd

__all__ = ["AttackLoss", "make_loss", "pgd"]
