"""What a plug-in defense's modules decided on the latest forward pass.

CAS and CIFS both pick a channel mask through a *discrete* choice the input gradient cannot see:
CAS takes the weight row of its head's argmax, CIFS the relevance of its probe's top-2 classes.
That choice is exactly where such a defense can defeat itself (a head that becomes the
classifier, a selection an attack flips only when it targets the heads), so the trainer's health
checks and the evaluation's masking diagnostics read it from here, in one way:

* ``logits`` of the head/probe (the auxiliary logits of the joint loss);
* ``selection``: the discrete choice per example, ``(N, k)`` long (CAS: the row, k = 1; CIFS:
  the two classes in ascending order, k = 2, since the mask is symmetric in them);
* ``mask``: the channel mask actually applied, ``(N, C)``.

Modules opt in by having ``has_aux_head = True`` and a ``readout()`` method returning
``(logits, selection, mask)``; see :class:`evalkit.defenses.cas.CASBlock` and
:class:`evalkit.defenses.cifs.CIFSBlock`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Readout:
    """One masking module's decision on the latest forward (tensors detached)."""

    site: str
    logits: torch.Tensor  # (N, classes)
    selection: torch.Tensor  # (N, k) long
    mask: torch.Tensor  # (N, C)


def readouts(model: nn.Module) -> list[Readout]:
    """The latest decision of every masking module of ``model``, in module order (empty for a
    model without CAS/CIFS-style modules or before its first forward)."""
    out = []
    for name, m in model.named_modules():
        read = getattr(m, "readout", None)
        if getattr(m, "has_aux_head", False) and callable(read):
            got = read()
            if got is not None:
                logits, selection, mask = (t.detach() for t in got)
                out.append(Readout(name, logits, selection, mask))
    return out


def normalized_entropy(mask: torch.Tensor) -> torch.Tensor:
    """Entropy of ``|mask| / sum |mask|`` over channels divided by ``log C``, per example.

    1 means the mask weighs every channel alike (selects nothing), 0 that it keeps one channel.
    Shape ``(N, C) -> (N,)``; a mask of all zeros counts as uniform."""
    weights = mask.abs().float()
    total = weights.sum(dim=1, keepdim=True)
    c = weights.shape[1]
    if c < 2:
        return torch.zeros(weights.shape[0], device=mask.device)
    p = torch.where(total > 0, weights / total.clamp_min(1e-30), torch.full_like(weights, 1 / c))
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)
    return ent / math.log(c)


def selection_changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per example, whether the discrete selection differs, ``(N, k), (N, k) -> (N,)`` bool."""
    return (before != after).any(dim=1)
