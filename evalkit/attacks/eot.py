"""Expectation over Transformation (Athalye et al. 2018) for stochastic defenses such as SAP.

A single stochastic forward gives a one-sample gradient estimate and makes a randomised model
look robust; averaging the loss over ``n`` forward passes makes its gradient the mean of ``n``
samples, an unbiased estimate of the gradient of the expected loss. AutoAttack's ``rand``
version uses 20 samples (Croce & Hein 2020), so :data:`DEFAULT_EOT_SAMPLES` is 20.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.defenses.context import is_stochastic

DEFAULT_EOT_SAMPLES = 20


def eot_loss(loss: AttackLoss | str, n: int = DEFAULT_EOT_SAMPLES) -> AttackLoss:
    """An :data:`AttackLoss` whose value is the mean of ``loss`` over ``n`` forward passes, so
    its gradient is the EOT gradient. The ``n`` graphs are kept until the backward (memory grows
    with ``n``; the harness can shrink the batch). ``n == 1`` returns ``loss`` unchanged."""
    if int(n) < 1:
        raise ValueError(f"EOT needs n >= 1 samples, got {n}")
    base = make_loss(loss) if isinstance(loss, str) else loss
    if int(n) == 1:
        return base

    def averaged(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = base(model, x, y)
        for _ in range(int(n) - 1):
            total = total + base(model, x, y)
        return total / int(n)

    averaged.__name__ = f"eot{int(n)}_{getattr(base, '__name__', 'loss')}"
    averaged.eot_samples = int(n)  # type: ignore[attr-defined]
    return averaged


@torch.no_grad()
def is_model_random(
    model: nn.Module, x: torch.Tensor, *, tries: int = 2, atol: float = 1e-4
) -> bool:
    """True when forward passes on the same ``x`` disagree (the model is randomised).

    Outputs are compared after scaling each row to unit L2 norm, with tolerance ``atol``, as
    AutoAttack's own check does, so non-deterministic GPU kernels (differences ~1e-7) do not
    count as randomness. Runs in whatever mode the caller set; use inside ``attack_mode``.
    """
    first = model(x).float()
    first = first / first.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (first.ndim - 1))
    for _ in range(max(int(tries), 2) - 1):
        out = model(x).float()
        out = out / out.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (out.ndim - 1))
        if (out - first).abs().max().item() > atol:
            return True
    return False


def needs_eot(model: nn.Module, x: torch.Tensor) -> tuple[bool, str]:
    """Whether attacks on ``model`` should use EOT, and why (for the harness to print)."""
    if is_stochastic(model):
        return True, "the model declares a stochastic defense"
    if is_model_random(model, x):
        return True, "two forward passes on the same input differ"
    return False, "the model is deterministic"
