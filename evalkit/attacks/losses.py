"""Attack losses. A loss is ``loss(model, x, y) -> per-example tensor`` (N,) to be *maximised*
(for an untargeted attack); it runs the forward itself, so joint (auxiliary-head) losses and EOT
averaging wrap around any model the same way."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.defenses.context import aux_logits

AttackLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def ce_from_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin_from_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y`` per example (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.max(1).values - true


def dlr_from_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's (2020) DLR loss ``-(z_y - max_{j != y} z_j) / (z_(1) - z_(3))`` per example
    (N,) from logits (N, C), scale invariant, so bounded logits cannot hide behind it.

    Raises ``ValueError`` for fewer than 3 classes (there is no third-largest logit); use the
    CW margin (``"cw"``) there.
    """
    if logits.shape[1] < 3:
        raise ValueError(
            f"the DLR loss needs >= 3 classes (it divides by z_(1) - z_(3)), the model has "
            f"{logits.shape[1]}: use the CW margin loss 'cw'"
        )
    srt = logits.sort(dim=1).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    is_top = srt[:, -1] == true
    second = torch.where(is_top, srt[:, -2], srt[:, -1])
    return -(true - second) / (srt[:, -1] - srt[:, -3] + 1e-12)


LOGIT_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_from_logits,
    "cw": cw_margin_from_logits,
    "dlr": dlr_from_logits,
}


def make_loss(name: str = "ce", *, joint: bool = False, beta: float = 2.0) -> AttackLoss:
    """Loss ``name`` on the final logits, plus ``beta * mean(loss on auxiliary heads)`` when
    ``joint`` (the adaptive attack for CAS/CIFS-style defenses)."""
    try:
        fn = LOGIT_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOGIT_LOSSES)})") from None

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        value = fn(logits, y)
        if joint:
            heads = aux_logits(model)
            if heads:
                value = value + beta * torch.stack([fn(h, y) for h in heads]).mean(0)
        return value

    loss.__name__ = f"{'joint_' if joint else ''}{name}"
    return loss
