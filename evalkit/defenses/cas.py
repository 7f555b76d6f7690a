"""CAS: channel-wise activation suppressing (Bai et al., ICLR 2021).

Each CAS site gets an auxiliary head ``Linear(C, classes)`` on the global average of the site's
output ``f``; the output is ``f * w[k]`` where ``w[k]`` is the head's raw weight row (no
normalisation, signs kept, as in the official ``CASBlock``) of

* the **true** class in training mode, read from ``self.labels`` (set by
  :func:`~evalkit.defenses.context.label_context`, never through ``forward``);
* the head's **own predicted** class in eval mode, or whenever no labels are given.

In eval mode ``self.labels`` is ignored entirely, so labels can never leak into a test-time
prediction (the official code's main pitfall). Training crafts its adversaries in eval mode, so
their masks come from predictions, as in the paper. The training loss adds
``cas_beta * mean CE(heads)`` (beta = 2) and the adaptive attack is the same joint loss.

Params: ``cas_beta`` (2.0), ``cas_sites`` (``auto`` = the paper placement, see
:func:`evalkit.defenses.sites.paper_sites`; ``blocks``; or ``layer4.0,layer4.1``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.aux_loss import make_head_loss
from evalkit.defenses.registry import Plugin, register
from evalkit.defenses.sites import (
    get_module,
    num_classes_of,
    resolve_sites,
    set_module,
    site_channels,
)


class CASBlock(nn.Module):
    """Wraps one block: ``block`` computes the features, ``head`` predicts and picks the mask."""

    uses_labels = True
    has_aux_head = True

    def __init__(self, block: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.block = block
        self.head = nn.Linear(channels, num_classes)
        self.labels: torch.Tensor | None = None
        self.aux_logits: torch.Tensor | None = None
        self.last_index: torch.Tensor | None = None  # which weight row each example used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.block(x)
        logits = self.head(feat.mean(dim=(2, 3)))
        self.aux_logits = logits
        if self.training and self.labels is not None:
            index = self.labels.to(feat.device)
            if index.shape[0] != feat.shape[0]:
                raise ValueError(f"CAS got {index.shape[0]} labels for a batch of {feat.shape[0]}")
        else:
            index = logits.argmax(dim=1)
        self.last_index = index.detach()
        mask = self.head.weight[index]  # (N, C): only the chosen row gets gradient
        return feat * mask[:, :, None, None]

    def readout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(head logits, chosen row as (N, 1), the mask row) of the latest forward, for
        :mod:`evalkit.defenses.inspect`."""
        if self.aux_logits is None or self.last_index is None:
            return None
        index = self.last_index
        return self.aux_logits, index[:, None], self.head.weight[index]


def apply_cas(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    """Wrap every CAS site of ``model`` in a :class:`CASBlock` (in place)."""
    sites = resolve_sites(model, params.get("cas_sites", "auto"))
    channels = site_channels(model, sites)
    classes = num_classes_of(model)
    for s in sites:
        block = get_module(model, s)
        wrapped = CASBlock(block, channels[s], classes)
        ref = next(block.parameters(), None)
        if ref is not None:
            wrapped.head.to(ref.device)
        set_module(model, s, wrapped)
    return model


PLUGIN = register(
    Plugin(
        name="cas",
        apply=apply_cas,
        extra_loss=make_head_loss("cas_beta"),
        defaults={"cas_beta": 2.0, "cas_sites": "auto"},
        summary="channel-wise activation suppressing: aux heads mask the last stage's channels",
    )
)
