"""Carlini-Wagner attacks.

* :func:`cw_inf` -- the "CW-inf" of robust-training papers: PGD on the per-example CW margin
  ``max_{j != y} z_j - z_y``. Defaults: 30 steps, step ``eps/4``, uniform random start. The
  margin is per example, unlike a batch-summed hinge, which stops giving gradient once the
  batch as a whole is fooled. ``keep_best``/``early_stop`` as in :func:`~evalkit.attacks.pgd.pgd`.
* :func:`cw_l2` -- the original optimisation attack (Carlini & Wagner 2017): minimise
  ``||x' - x||_2^2 + c * max(-margin(x'), -kappa)`` over ``x' = (tanh(w) + 1) / 2`` with Adam,
  and binary-search ``c`` per example. Returns the smallest successful example found, else the
  input. With a finite ``eps`` the result is *projected* onto the L2 ball of radius ``eps`` (a
  projected CW example is often still adversarial, and every attack then honours the ball);
  the harness still checks success on the returned point. It keeps its best (smallest
  successful) iterate by construction, so it takes no ``keep_best`` option.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, cw_margin_from_logits, make_loss
from evalkit.attacks.pgd import pgd, project
from evalkit.attacks.registry import register_attack


@register_attack(
    "cw_inf",
    norms=("linf",),
    white_box=True,
    base_loss="cw",
    description="CW-inf: PGD-30 on the per-example CW margin, step eps/4, random start",
    iterative=True,
    aliases=("cw",),
)
def cw_inf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 30,
    step_size: float | None = None,
    loss: AttackLoss | str = "cw",
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
    keep_best: bool = False,
    early_stop: bool = False,
) -> torch.Tensor:
    """PGD-30 (step ``eps/4``, random start) on the per-example CW margin, Linf ball.

    ``loss`` may be a wrapped margin loss (joint heads, EOT) built by the caller from
    ``make_loss("cw", ...)``; a string is passed to :func:`make_loss`. ``keep_best`` and
    ``early_stop`` keep a misclassified iterate per point (see :func:`~evalkit.attacks.pgd.pgd`).
    """
    return pgd(
        model,
        x,
        y,
        eps,
        steps=steps,
        step_size=step_size,
        norm="linf",
        loss=loss,
        random_start=random_start,
        restarts=restarts,
        targeted=targeted,
        generator=generator,
        init=init,
        keep_best=keep_best,
        early_stop=early_stop,
    )


def _to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    return torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))


def _from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w) + 1) / 2


@register_attack(
    "cw_l2",
    norms=("l2",),
    white_box=True,
    base_loss="cw",
    description="Carlini-Wagner L2 (Adam in tanh space, binary search over c), projected to eps",
)
def cw_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | None = None,
    *,
    steps: int = 100,
    binary_search_steps: int = 5,
    lr: float = 0.01,
    initial_const: float = 0.1,
    confidence: float = 0.0,
    abort_early: bool = True,
    targeted: bool = False,
    loss: AttackLoss | str | None = None,
) -> torch.Tensor:
    """Carlini-Wagner L2. Defaults: 5 binary-search steps over ``c`` starting at 0.1 (x10 while
    no success, bisection after), 100 Adam steps of lr 0.01 each, confidence ``kappa = 0``,
    early abort when the objective stops falling (checked every ``steps // 10`` steps).

    Success for an example means ``margin > kappa`` (untargeted: some other class beats ``y``
    by more than kappa; targeted: ``y`` beats every other class by more than kappa). ``loss``
    replaces the margin with any per-example loss of the same sign convention (e.g. a joint or
    EOT margin); success is then read from a separate prediction. ``eps`` projects the result
    onto the L2 ball (see the module docstring); ``None`` or ``inf`` returns it unprojected.
    """
    x = x.detach()
    n = x.shape[0]
    dev = x.device
    custom = loss not in (None, "cw")
    loss_fn = (make_loss(loss) if isinstance(loss, str) else loss) if custom else None

    def margin_and_pred(x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if loss_fn is None:
            logits = model(x_adv)
            m = cw_margin_from_logits(logits, y)
            pred = logits.detach().argmax(1)
        else:
            m = loss_fn(model, x_adv, y)
            with torch.no_grad():
                pred = model(x_adv).argmax(1)
        return (-m if targeted else m), pred

    def succeeded(m: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        label_ok = pred == y if targeted else pred != y
        return label_ok & (m > confidence) if confidence > 0 else label_ok

    lower = torch.zeros(n, device=dev)
    upper = torch.full((n,), 1e10, device=dev)
    const = torch.full((n,), float(initial_const), device=dev)
    best_l2 = torch.full((n,), float("inf"), device=dev)
    best_adv = x.clone()
    w0 = _to_tanh_space(x)
    check_every = max(steps // 10, 1)

    for _ in range(binary_search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        prev = math.inf
        for it in range(steps):
            x_adv = _from_tanh_space(w)
            l2sq = (x_adv - x).flatten(1).pow(2).sum(1)
            m, pred = margin_and_pred(x_adv)
            f = torch.clamp(-m + confidence, min=0.0)
            objective = (l2sq + const * f).sum()
            (w.grad,) = torch.autograd.grad(objective, w)
            with torch.no_grad():
                ok = succeeded(m.detach(), pred)
                improve = ok & (l2sq.detach() < best_l2)
                best_l2 = torch.where(improve, l2sq.detach(), best_l2)
                best_adv[improve] = x_adv.detach()[improve]
                found |= ok
            opt.step()
            if abort_early and (it + 1) % check_every == 0:
                value = float(objective.detach())
                if value > prev * 0.9999:
                    break
                prev = value
        with torch.no_grad():
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bisect = (lower + upper) / 2
            const = torch.where(upper < 1e9, bisect, const * 10)

    if eps is not None and math.isfinite(eps):
        best_adv = x + project(best_adv - x, eps, "l2")
    return best_adv.clamp(0, 1).detach()
