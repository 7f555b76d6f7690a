"""Projected gradient descent in pixel space (Linf and L2), the workhorse of training and
evaluation. Random starts draw from an explicit generator so runs are reproducible per batch."""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation onto the eps ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _l2_norm(delta)).clamp(max=1.0)


def random_init(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform start in the Linf ball, or a uniform-in-ball start for L2."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    r = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) ** (1.0 / x[0].numel())
    return g / _l2_norm(g) * eps * r.view(-1, *([1] * (x.ndim - 1)))


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    loss: AttackLoss | str = "ce",
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``x_adv`` within the ``norm`` ball of radius ``eps`` around ``x`` and in [0, 1].

    ``y`` is the true label (untargeted: loss ascends) or the target (``targeted``: descends).
    The model's train/eval mode is left as the caller set it (the harness and trainer choose).
    ``init`` overrides the random start (used to cross-check against reference implementations).
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be linf or l2, not {norm!r}")
    loss_fn = make_loss(loss) if isinstance(loss, str) else loss
    step = step_size if step_size is not None else (eps / 4 if norm == "linf" else eps / 4)
    x = x.detach()
    if init is not None:
        delta = init.detach().clone()
    elif random_start:
        delta = random_init(x, eps, norm, generator)
    else:
        delta = torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        x_adv.requires_grad_(True)
        value = loss_fn(model, x_adv, y).sum()
        (grad,) = torch.autograd.grad(value, x_adv)
        with torch.no_grad():
            if norm == "linf":
                x_adv = x_adv + sign * step * grad.sign()
            else:
                x_adv = x_adv + sign * step * grad / _l2_norm(grad)
            x_adv = (x + project(x_adv - x, eps, norm)).clamp(0, 1)
    return x_adv.detach()
