"""Projected gradient descent in pixel space (Linf and L2), the workhorse of training and
evaluation. Random starts draw from an explicit generator so runs are reproducible per batch.

Defaults (DESIGN.md section 6): Linf step ``eps/4`` (PGD-20 at 8/255 -> 2/255), L2 step
``2.5 * eps / steps`` (Madry et al.'s rule: enough to cross the ball 2.5 times), uniform random
start, one restart. ``pgd`` never changes the model's train/eval mode or its parameters'
``requires_grad``; wrap the call in :func:`evalkit.attacks.mode.attack_mode` to attack the
honest eval-mode model (the harness does).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss

NORMS = ("linf", "l2")


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation onto the eps ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _l2_norm(delta)).clamp(max=1.0)


def random_init(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform start in the Linf ball, or a uniform-in-ball start for L2.

    Drawn on the CPU from ``generator`` and moved, so a batch gets the same start on any device.
    """
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    r = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device, x.dtype)
    r = r ** (1.0 / x[0].numel())
    return g / _l2_norm(g) * eps * r.view(-1, *([1] * (x.ndim - 1)))


def default_step_size(eps: float, norm: str, steps: int) -> float:
    """``eps/4`` for Linf; ``2.5 * eps / steps`` for L2 (documented defaults, see module doc)."""
    if norm == "linf":
        return eps / 4
    return 2.5 * eps / max(int(steps), 1)


def _check(norm: str, steps: int, restarts: int) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be linf or l2, not {norm!r}")
    if int(steps) < 0 or int(restarts) < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1 (got {steps}, {restarts})")


def _pgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step: float,
    norm: str,
    loss_fn: AttackLoss,
    ascend: float,
    delta: torch.Tensor,
) -> torch.Tensor:
    """One PGD run from ``x + delta``; returns the last iterate (as reference implementations do).

    The update works in place on detached tensors and differentiates w.r.t. the input only, so a
    step costs one forward and one input backward and nothing else.
    """
    x_adv = (x + project(delta, eps, norm)).clamp_(0, 1)
    if norm == "linf":
        lo = (x - eps).clamp_(min=0)
        hi = (x + eps).clamp_(max=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model, x_adv, y).sum(), x_adv)
        x_adv = x_adv.detach()
        with torch.no_grad():
            if norm == "linf":
                x_adv.add_(grad.sign(), alpha=ascend * step)
                x_adv = torch.minimum(torch.maximum(x_adv, lo, out=x_adv), hi, out=x_adv)
            else:
                x_adv.add_(grad / _l2_norm(grad), alpha=ascend * step)
                x_adv = (x + project(x_adv.sub_(x), eps, norm)).clamp_(0, 1)
    return x_adv.detach()


def _success(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, targeted: bool
) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    return pred == y if targeted else pred != y


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
    restarts: int = 1,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``x_adv`` within the ``norm`` ball of radius ``eps`` around ``x`` and in [0, 1].

    Defaults: ``steps=10`` (the registry's ``pgd`` entry uses 20), step from
    :func:`default_step_size`, uniform random start, ``restarts=1``, CE loss.

    * ``y`` is the true label (untargeted: the loss ascends) or the target (``targeted``: the
      loss descends, success means predicting ``y``).
    * ``restarts > 1`` runs again from fresh random starts on the examples not yet fooled and
      keeps, per example, the first restart that succeeds, else the one with the highest loss
      (lowest for targeted). Costs one extra forward pass per restart for the bookkeeping.
    * ``init`` (a perturbation) replaces the first random start; used to cross-check against
      reference implementations from the same starting point.
    * The model's train/eval mode is left as the caller set it (the harness and trainer choose).
    """
    _check(norm, steps, restarts)
    loss_fn = make_loss(loss) if isinstance(loss, str) else loss
    step = step_size if step_size is not None else default_step_size(eps, norm, steps)
    ascend = -1.0 if targeted else 1.0
    x = x.detach()

    def start(xs: torch.Tensor, first: bool) -> torch.Tensor:
        if first and init is not None:
            return init.detach().to(xs.device, xs.dtype).clone()
        if random_start:
            return random_init(xs, eps, norm, generator)
        return torch.zeros_like(xs)

    if restarts == 1:
        return _pgd_run(model, x, y, eps, steps, step, norm, loss_fn, ascend, start(x, True))

    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for r in range(restarts):
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xs, ys = x[idx], y[idx]
        adv = _pgd_run(model, xs, ys, eps, steps, step, norm, loss_fn, ascend, start(xs, r == 0))
        with torch.no_grad():
            value = ascend * loss_fn(model, adv, ys).detach().float()
        fooled = _success(model, adv, ys, targeted)
        better = fooled | (value > best_loss[idx])
        best[idx[better]] = adv[better]
        best_loss[idx[better]] = value[better]
        done[idx[fooled]] = True
    return best
