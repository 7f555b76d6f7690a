"""Attacks in pixel space [0, 1]: functions ``attack(model, x, y, eps, **options) -> x_adv``.

Each attack module registers its attacks with :func:`register_attack` where they are defined;
importing this package imports every attack module, so the registry is complete. Look attacks
up by name with :func:`get_attack` and run them by keyword::

    from evalkit.attacks import attack_mode, get_attack

    with attack_mode(model):
        x_adv = get_attack("pgd").run(model, x, y, eps=8 / 255, steps=20, keep_best=True)

Names: ``fgsm``, ``pgd``, ``cw_inf`` (alias ``cw``), ``cw_l2``, ``autoattack`` (alias ``aa``),
``aa_plus``, ``aa_rand``, ``square``, ``apgd`` (alias ``apgd-ce``), ``apgd-dlr``, ``apgd-t``,
``apgd-ce-t``, ``fmn`` (minimum-norm), ``bpda`` (any of them with BPDA gradients), and
``foolbox:Name`` for any Foolbox 3 attack
(:func:`attack_names` lists the registered ones, :func:`describe_attacks` describes them).
:func:`attack_mode` puts the model in eval mode for the attack and restores it after.
"""

# Attack modules, each registering its attacks on import. Order does not matter; the registry
# imports none of them.
from evalkit.attacks import foolbox_adapter as foolbox_adapter
from evalkit.attacks.apgd import apgd, apgd_ce_t, apgd_targeted
from evalkit.attacks.autoattack import autoattack
from evalkit.attacks.bpda import bpda_attack
from evalkit.attacks.cw import cw_inf, cw_l2
from evalkit.attacks.eot import eot_loss, is_model_random, needs_eot
from evalkit.attacks.fgsm import fgsm
from evalkit.attacks.fmn import fmn, fmn_min_norm
from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.mode import attack_mode
from evalkit.attacks.pgd import pgd
from evalkit.attacks.registry import (
    AttackSpec,
    attack_names,
    describe_attacks,
    get_attack,
    register_attack,
)
from evalkit.attacks.square import square

__all__ = [
    "AttackLoss",
    "AttackSpec",
    "apgd",
    "apgd_ce_t",
    "apgd_targeted",
    "attack_mode",
    "attack_names",
    "autoattack",
    "bpda_attack",
    "cw_inf",
    "cw_l2",
    "describe_attacks",
    "eot_loss",
    "fgsm",
    "fmn",
    "fmn_min_norm",
    "get_attack",
    "is_model_random",
    "make_loss",
    "needs_eot",
    "pgd",
    "register_attack",
    "square",
]
