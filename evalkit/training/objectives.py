"""Training objectives: standard, PGD-AT (Madry), TRADES (Zhang et al.) and MART (Wang et al.).

Each returns ``(loss, logits)`` where ``logits`` are those whose accuracy is logged (adversarial
for AT/MART, natural for standard/TRADES). Plugin hooks compose with every objective:
``margin_logits`` (HE) changes the logits fed to the CE terms; ``extra_loss`` (CAS/CIFS heads)
is taken right after the forward of the examples the objective trains on; TRADES and MART also
apply their own KL/MART terms to each auxiliary head, as CAS's TRADES/MART scripts do. The whole loss is
computed inside ``label_context(model, y)`` so label-conditioned modules see labels only here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.mode import attack_mode
from evalkit.attacks.pgd import pgd
from evalkit.defenses.aux_loss import head_beta
from evalkit.defenses.context import aux_logits, has_aux_heads, label_context
from evalkit.utils.mode import model_mode


@dataclass
class ObjectiveContext:
    """What an objective needs besides the batch."""

    objective: str
    eps: float
    steps: int
    step_size: float
    beta: float
    attack_bn: str = "eval"
    margin_fns: list[Callable[..., torch.Tensor]] = field(default_factory=list)
    extra_fns: list[Callable[..., torch.Tensor]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    autocast: Callable[[], Any] = nullcontext


def _ce(ctx: ObjectiveContext, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for fn in ctx.margin_fns:
        logits = fn(logits, y, ctx.params)
    return F.cross_entropy(logits, y)


def _extra(
    ctx: ObjectiveContext, model: nn.Module, logits: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    total = logits.new_zeros(())
    for fn in ctx.extra_fns:
        total = total + fn(model, logits, y, ctx.params)
    return total


def craft(
    attack_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ctx: ObjectiveContext,
    loss: AttackLoss,
    generator: torch.Generator,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Training-time PGD; BN in eval mode while crafting unless ``attack_bn == 'train'``."""
    with attack_mode(attack_model, training=_crafting_mode(ctx)), ctx.autocast():
        return pgd(
            attack_model,
            x,
            y,
            ctx.eps,
            steps=ctx.steps,
            step_size=ctx.step_size,
            loss=loss,
            random_start=init is None,
            generator=generator,
            init=init,
        )


def _crafting_mode(ctx: ObjectiveContext) -> bool | None:
    """Eval mode while crafting (TRADES/MART/CAS), or the trainer's own modes (Madry's BN in
    train mode) when ``attack_bn == 'train'``; :func:`attack_mode` restores them per module."""
    return False if ctx.attack_bn == "eval" else None


def _attack_loss(model: nn.Module, ctx: ObjectiveContext) -> AttackLoss:
    """CE, or the joint loss (final + heads) for auxiliary-head defenses, as CAS/CIFS train."""
    if has_aux_heads(model):
        return make_loss("ce", joint=True, beta=head_beta(ctx.params))
    return make_loss("ce")


def standard_loss(model, attack_model, x, y, ctx, gen):
    with label_context(model, y), ctx.autocast():
        logits = model(x)
        loss = _ce(ctx, logits, y) + _extra(ctx, attack_model, logits, y)
    return loss, logits


def pgd_at_loss(model, attack_model, x, y, ctx, gen):
    x_adv = craft(attack_model, x, y, ctx, _attack_loss(attack_model, ctx), gen)
    with label_context(model, y), ctx.autocast():
        logits = model(x_adv)
        loss = _ce(ctx, logits, y) + _extra(ctx, attack_model, logits, y)
    return loss, logits


def trades_loss(model, attack_model, x, y, ctx, gen):
    """CE(f(x), y) + beta * KL(f(x) || f(x')) (Zhang et al. 2019, batch mean); x' maximises the KL from x + 0.001 N(0, 1).

    With auxiliary heads (TRADES+CAS/CIFS, as in CAS's ``trades_reg.py``) each head adds its CE on
    x (the plugin's extra loss) and ``head_beta * beta * KL(head(x') || head(x))``.
    """
    with model_mode(attack_model, _crafting_mode(ctx)), torch.no_grad(), ctx.autocast():
        p_nat = F.softmax(attack_model(x).float(), dim=1)

    def kl_loss(m: nn.Module, xa: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(m(xa).float(), dim=1), p_nat, reduction="none").sum(1)

    noise = 0.001 * torch.randn(x.shape, generator=gen).to(x.device)
    x_adv = craft(attack_model, x, y, ctx, kl_loss, gen, init=noise)
    with label_context(model, y), ctx.autocast():
        logits = model(x)
        heads_nat = aux_logits(attack_model)
        loss_nat = _ce(ctx, logits, y) + _extra(ctx, attack_model, logits, y)
        logits_adv = model(x_adv)
        heads_adv = aux_logits(attack_model)
        loss = loss_nat + ctx.beta * _kl(logits_adv, logits)
        if heads_nat:
            head_kl = torch.stack([_kl(a, n) for a, n in zip(heads_adv, heads_nat)]).mean()
            loss = loss + head_beta(ctx.params) * ctx.beta * head_kl
    return loss, logits


def _kl(logits_adv: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(softmax(nat) || softmax(adv)) as TRADES computes it."""
    return F.kl_div(
        F.log_softmax(logits_adv.float(), 1),
        F.softmax(logits_nat.float(), 1),
        reduction="batchmean",
    )


def _mart_terms(
    ctx: ObjectiveContext,
    logits_adv: torch.Tensor,
    logits_nat: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """MART's BCE-boosted CE on x' + beta * KL(f(x) || f(x')) weighted per example by ``weight``."""
    logits_adv, logits_nat = logits_adv.float(), logits_nat.float()
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = adv_probs.topk(2, dim=1).indices
    runner_up = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    bce = _ce(ctx, logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), runner_up)
    nat_probs = F.softmax(logits_nat, dim=1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)
    return bce + ctx.beta * (kl * weight).mean()


def mart_loss(model, attack_model, x, y, ctx, gen):
    """MART on the final logits, weight (1 - p_y(x)); with auxiliary heads (MART+CAS, as in
    CAS's ``mart_reg.py``) every head adds the same terms, weighted by the *final* p_y(x)."""
    x_adv = craft(attack_model, x, y, ctx, _attack_loss(attack_model, ctx), gen)
    with label_context(model, y), ctx.autocast():
        logits_adv = model(x_adv)
        heads_adv = aux_logits(attack_model)
        logits_nat = model(x)
        heads_nat = aux_logits(attack_model)
    true_probs = F.softmax(logits_nat.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    weight = 1.0000001 - true_probs
    loss = _mart_terms(ctx, logits_adv, logits_nat, y, weight)
    if heads_adv:
        head = torch.stack(
            [_mart_terms(ctx, a, n, y, weight) for a, n in zip(heads_adv, heads_nat)]
        ).mean()
        loss = loss + head_beta(ctx.params) * head
    return loss, logits_adv


OBJECTIVES = {
    "standard": standard_loss,
    "at": pgd_at_loss,
    "trades": trades_loss,
    "mart": mart_loss,
}
