"""Any registered attack run with BPDA gradients: ``bpda`` wraps ``attack`` (default ``pgd``).

The model's declared non-differentiable steps (:class:`evalkit.defenses.bpda.BPDA`, e.g. the
``jpeg``/``bitdepth``/``median`` defense parts or :func:`evalkit.bpda`) use their backward
approximation for the duration of the wrapped attack
(:func:`~evalkit.defenses.context.bpda_gradients`; Athalye, Carlini & Wagner, ICML 2018); the
forward pass, and so every candidate's score, is the real model's. Because the switch lives in
the model, it reaches attacks evalkit does not implement (pyautoattack, Foolbox) as well.

The protocol's adaptive layer adds these as ``<id>-bpda`` plans (docs/defenses.md); directly::

    get_attack("bpda").run(model, x, y, eps=0.1, attack="pgd", steps=20)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks.registry import get_attack, register_attack
from evalkit.defenses.context import bpda_gradients


@register_attack(
    "bpda",
    norms=("linf", "l2"),
    white_box=True,
    base_loss="ce",
    iterative=True,
    description="the named attack (option attack=, default pgd) with BPDA gradients through the "
    "model's declared non-differentiable steps",
)
def bpda_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    loss: Any = None,
    generator: torch.Generator | None = None,
    attack: str = "pgd",
    keep_best: bool = False,
    early_stop: bool = False,
    **options: Any,
) -> torch.Tensor:
    """``attack`` (a registry name) on ``x`` (N, C, H, W) in [0, 1] within the ``norm`` ball of
    radius ``eps``, with the model's BPDA approximations on; returns ``x_adv`` of ``x``'s shape.

    ``options`` go to the wrapped attack; ``keep_best``/``early_stop`` only when it is iterative.
    ``loss`` (a callable, e.g. the harness's EOT or joint loss, or a name) is passed on; the
    name ``"ce"``, which the registry fills in when the caller gives none, means the wrapped
    attack's own default. Raises :class:`~evalkit.errors.EvalkitError` for an unknown attack or
    option.
    """
    spec = get_attack(attack)
    if isinstance(loss, str) and loss == "ce":
        loss = None
    if spec.iterative:
        options = {**options, "keep_best": keep_best, "early_stop": early_stop}
    with bpda_gradients(model):
        return spec.run(model, x, y, eps=eps, norm=norm, loss=loss, generator=generator, **options)
