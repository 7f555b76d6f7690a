"""Square attack (Andriushchenko et al. 2020): score-based, black-box, no gradients.

Used by the harness's gradient-masking check: if a black-box attack beats the white-box ones,
the gradients are lying. Runs pyautoattack's ``SquareAttack`` with AutoAttack's settings
(margin loss, ``p_init=0.8``, one restart, 5000 queries, no rescaled schedule); lower
``n_queries`` for quick checks. Linf and L2.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.attacks._external import external_call, finalize, seed_from
from evalkit.attacks.registry import register_attack

_NORMS = {"linf": "Linf", "l2": "L2"}


@register_attack(
    "square",
    norms=tuple(_NORMS),
    white_box=False,
    base_loss=None,
    description="Square attack (black-box, score-based, 5000 queries), the gradient-masking check",
)
def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    n_restarts: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return Square's adversarial examples for ``x`` (N, ...) in [0, 1] (the input where it
    failed), inside the ``norm`` ball of radius ``eps``. ``seed`` defaults to one draw from
    ``generator``."""
    from pyautoattack.square import SquareAttack

    seed_value = seed_from(generator, seed)
    with external_call(model, x, seed_value), torch.no_grad():
        attack = SquareAttack(
            model,
            norm=_NORMS[norm],
            n_queries=int(n_queries),
            eps=float(eps),
            p_init=float(p_init),
            n_restarts=int(n_restarts),
            seed=seed_value,
            verbose=False,
            resc_schedule=False,
            device=x.device,
        )
        x_adv = attack.perturb(x.detach(), y.detach())
    return finalize(x_adv, x, eps, norm)
