"""HE: hypersphere embedding (Pang et al., NeurIPS 2020).

The final linear layer becomes a cosine classifier: features and weight rows are
L2-normalised *inside* the autograd graph (``F.normalize``; the official code overwrites
``weight.data`` outside autograd instead, as the authors' code does; we chose the differentiable form
so gradients and weight decay see the same normalised weights), there is no bias, and the logits
are ``s * cos(theta)``, so ``|logits| <= s`` (flag ``bounded_logits``: the harness then adds
margin/DLR attacks, since CE-PGD overstates HE, AT_HE issue #1).

The training CE uses an additive cosine margin on the true class (CosFace-style, the official
``HELoss``): :func:`margin_logits` returns ``logits - s*m*onehot(y)``. Attacks and evaluation
see the plain ``s*cos`` logits (the official training adversary uses ``s`` and no margin).

Defaults ``he_s = 10``, ``he_m = 0.2``: the current AT_HE README's PGD-AT+HE setting. The
paper's TRADES+HE and the script defaults use ``he_s = 15`` (pass it for TRADES); ALP+HE uses
``s = 20, m = 0.3``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.defenses.params import get_float
from evalkit.defenses.registry import Plugin, register
from evalkit.errors import EvalkitError


class CosineHead(nn.Module):
    """``s * <x/|x|, w_j/|w_j|>`` for every class j; a ``weight`` parameter and no bias."""

    bounded_logits = True

    def __init__(self, in_features: int, num_classes: int, s: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.s = float(s)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.s * F.linear(F.normalize(feat, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, classes={self.weight.shape[0]}, s={self.s}"


def apply_he(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    """Replace the model's classifier (``model.classifier_name``) by a :class:`CosineHead`."""
    s = get_float(params, "he_s", minimum=0.0, strict_min=True)
    get_float(params, "he_m", minimum=0.0)  # validate early, used in margin_logits
    name = getattr(model, "classifier_name", "linear")
    old = getattr(model, name, None)
    if not isinstance(old, nn.Linear):
        raise EvalkitError(
            f"HE needs a linear classifier at model.{name}; this model has {type(old).__name__}"
        )
    head = CosineHead(old.in_features, old.out_features, s).to(old.weight.device)
    with torch.no_grad():
        head.weight.copy_(old.weight)  # keeps the arch's own init (and seeding) unchanged
    setattr(model, name, head)
    return model


def margin_logits(logits: torch.Tensor, y: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """``s*cos - s*m*onehot(y)``: CE on these is the HE loss ``-log e^{s(cos_y - m)} / ...``."""
    s = get_float(params, "he_s", minimum=0.0, strict_min=True)
    m = get_float(params, "he_m", minimum=0.0)
    return logits - s * m * F.one_hot(y, logits.shape[1]).to(logits.dtype)


PLUGIN = register(
    Plugin(
        name="he",
        apply=apply_he,
        margin_logits=margin_logits,
        defaults={"he_s": 10.0, "he_m": 0.2},
        summary="hypersphere embedding: cosine classifier s*cos with an additive margin in training",
    )
)
