"""FGSM (Goodfellow et al.): one signed-gradient step of size eps, no random start."""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.registry import register_attack


@register_attack(
    "fgsm",
    norms=("linf",),
    white_box=True,
    base_loss="ce",
    description="FGSM, one signed-gradient step of size eps, no random start",
)
def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    loss: AttackLoss | str = "ce",
    targeted: bool = False,
) -> torch.Tensor:
    """``clip(x + eps * sign(grad), 0, 1)`` (minus for a targeted attack), CE loss by default.

    No random start (vanilla FGSM, as Foolbox's ``FGSM``; the CAS scripts' "FGSM" is R+FGSM).
    The model's mode is left as the caller set it.
    """
    loss_fn = make_loss(loss) if isinstance(loss, str) else loss
    x_adv = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model, x_adv, y).sum(), x_adv)
    sign = -1.0 if targeted else 1.0
    return (x + sign * eps * grad.sign()).clamp(0, 1).detach()
