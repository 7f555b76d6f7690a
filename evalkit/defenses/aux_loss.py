"""The training loss shared by auxiliary-head defenses (CAS, CIFS): beta * mean CE(heads)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.defenses.context import aux_logits
from evalkit.defenses.params import get_float


def mean_head_ce(model: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Mean over heads of the batch-mean CE of each head's latest logits (0 when no heads ran)."""
    heads = aux_logits(model)
    if not heads:
        raise RuntimeError(
            "no auxiliary-head logits recorded: call extra_loss right after a forward"
        )
    return torch.stack([F.cross_entropy(h, y) for h in heads]).mean()


def make_head_loss(beta_key: str):
    """``extra_loss(model, logits, y, params) = params[beta_key] * mean CE(heads)``.

    The papers' loss is CE(final) + beta * (1/L) sum_l CE(head_l) with beta = 2 (CAS ``--beta``,
    CIFS ``beta_cls``); the objective supplies the first term, this the second.
    """

    def extra_loss(
        model: nn.Module, logits: torch.Tensor, y: torch.Tensor, params: dict[str, Any]
    ) -> torch.Tensor:
        beta = get_float(params, beta_key, minimum=0.0)
        return beta * mean_head_ce(model, y)

    extra_loss.__name__ = f"head_loss_{beta_key}"
    return extra_loss


def head_beta(params: dict[str, Any], default: float = 2.0) -> float:
    """The auxiliary-head weight of whichever head defense is active (CAS or CIFS), used by
    training adversaries and validation attacks so they maximise the same joint loss."""
    for key in ("cas_beta", "cifs_beta"):
        if key in params:
            return get_float(params, key, minimum=0.0)
    return default
