"""Attacks in pixel space [0, 1]: functions of ``(model, x, y, eps, loss=...) -> x_adv``.

Look attacks up by name with :func:`get_attack` (``fgsm``, ``pgd``, ``cw``/``cw_inf``,
``cw_l2``, ``autoattack``/``aa``/``aa_plus``/``aa_rand``, ``square``, ``foolbox:Name``); wrap
calls in :func:`attack_mode` so the model is attacked in eval mode and given back as it was.
"""

from evalkit.attacks.cw import cw_inf, cw_l2
from evalkit.attacks.eot import eot_loss, is_model_random, needs_eot
from evalkit.attacks.fgsm import fgsm
from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.mode import attack_mode
from evalkit.attacks.pgd import pgd
from evalkit.attacks.registry import ATTACKS, AttackSpec, describe_attacks, get_attack, register

__all__ = [
    "ATTACKS",
    "AttackLoss",
    "AttackSpec",
    "attack_mode",
    "cw_inf",
    "cw_l2",
    "describe_attacks",
    "eot_loss",
    "fgsm",
    "get_attack",
    "is_model_random",
    "make_loss",
    "needs_eot",
    "pgd",
    "register",
]
