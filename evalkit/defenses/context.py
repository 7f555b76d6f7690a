"""How defended models talk to trainers and attacks without labels ever entering ``forward``.

* Label-conditioned modules (CAS in training, CIFS in training) set ``uses_labels = True`` and
  read ``self.labels``; :func:`label_context` fills it for one block of code and always clears
  it, so a plain ``model(x)`` is the honest test-time model.
* Modules with auxiliary heads set ``has_aux_head = True`` and store their latest head logits
  in ``self.aux_logits`` during ``forward``; :func:`aux_logits` collects them (joint losses,
  adaptive attacks).
* Stochastic modules (SAP) set ``stochastic = True``; bounded-logit heads (HE) set
  ``bounded_logits = True``. The harness reads these flags to choose adaptive attacks.
* Non-differentiable steps declared with their backward approximation (BPDA,
  :mod:`evalkit.defenses.bpda`: bit-depth reduction, JPEG, median smoothing, or any step
  wrapped by :func:`evalkit.bpda`) set ``non_differentiable = True`` and read
  ``self.bpda_active``, which :func:`bpda_gradients` turns on for one attack.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


@contextmanager
def label_context(model: nn.Module, y: torch.Tensor | None) -> Iterator[nn.Module]:
    """Give label-conditioned modules the true labels ``y`` inside the ``with`` block only."""
    mods = [m for m in model.modules() if getattr(m, "uses_labels", False)]
    for m in mods:
        m.labels = y
    try:
        yield model
    finally:
        for m in mods:
            m.labels = None


def aux_logits(model: nn.Module) -> list[torch.Tensor]:
    """Auxiliary-head logits recorded by the latest forward, in module order, as fp32 (under
    reduced-precision autocast, :mod:`evalkit.models.precision`, the joint loss on them stays an
    fp32 reduction)."""
    return [
        m.aux_logits.float()
        for m in model.modules()
        if getattr(m, "has_aux_head", False) and getattr(m, "aux_logits", None) is not None
    ]


def _flag(model: nn.Module, name: str) -> bool:
    return any(getattr(m, name, False) for m in model.modules())


def has_aux_heads(model: nn.Module) -> bool:
    """True for CAS/CIFS-style models: attacks should add the heads' losses (joint loss)."""
    return _flag(model, "has_aux_head")


def is_stochastic(model: nn.Module) -> bool:
    """True when the model declares randomness at test time (SAP): attacks need EOT."""
    return _flag(model, "stochastic")


def has_bounded_logits(model: nn.Module) -> bool:
    """True for HE-style cosine logits: CE attacks understate, use margin/DLR losses."""
    return _flag(model, "bounded_logits")


def has_mask_gradients(model: nn.Module) -> bool:
    """True when a module computes its mask from a gradient (CIFS): a faithful adaptive attack
    differentiates through that mask instead of treating it as a constant."""
    return any(hasattr(m, "adaptive") and hasattr(m, "probe") for m in model.modules())


@contextmanager
def gradients_through_masks(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside the block, CIFS-style masks keep the graph through their gradient computation
    (second-order, Yan et al. 2021's adaptive setting), so attack gradients see how the mask
    moves with the input. Forward values are unchanged; each module's setting is restored."""
    mods = [m for m in model.modules() if hasattr(m, "adaptive") and hasattr(m, "probe")]
    old = [(m, m.adaptive) for m in mods]
    if enabled:
        for m in mods:
            m.adaptive = True
    try:
        yield model
    finally:
        for m, value in old:
            m.adaptive = value


def has_non_differentiable(model: nn.Module) -> bool:
    """True when a module declares a non-differentiable step with a backward approximation
    (BPDA): the harness then adds BPDA versions of its gradient attacks."""
    return _flag(model, "non_differentiable")


def non_differentiable_steps(model: nn.Module) -> list[str]:
    """``name: description`` of every declared non-differentiable step, in module order."""
    return [
        f"{name or type(m).__name__}: {m.extra_repr()}"
        for name, m in model.named_modules()
        if getattr(m, "non_differentiable", False)
    ]


@contextmanager
def bpda_gradients(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside the block, declared non-differentiable steps use their backward approximation
    (BPDA, Athalye et al. 2018); outside it a gradient sees the step as it is (zero or the
    step's own autograd gradient). Forward values never change; settings are restored."""
    mods = [m for m in model.modules() if getattr(m, "non_differentiable", False)]
    old = [(m, getattr(m, "bpda_active", False)) for m in mods]
    if enabled:
        for m in mods:
            m.bpda_active = True
    try:
        yield model
    finally:
        for m, value in old:
            m.bpda_active = value
