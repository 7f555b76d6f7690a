"""The model state an attack needs, set for the duration of one attack and then given back.

Attacks must see the honest test-time model: eval mode (BatchNorm running statistics, dropout
off, CAS masks from predicted labels) and no parameter gradients (only the input gradient is
wanted; skipping weight gradients saves memory and never leaves stale ``.grad`` behind). The
caller's state is restored exactly, per module and per parameter, because trainers often mix
modes (e.g. frozen BatchNorm inside a training model).

Attacks need autograd for the *input* gradient whatever context the caller is in: an ordinary
evaluation loop wraps everything in ``torch.no_grad()`` or ``torch.inference_mode()``, under
which every gradient attack would die with "element 0 of tensors does not require grad".
:func:`evalkit.utils.grad.gradients_on` is the one place that turns autograd back on; :func:`attack_mode` (used by
:func:`evalkit.evaluate` around every attack and check) and every registered attack function
(:func:`evalkit.attacks.registry.register_attack`) run inside it, so no attack module needs to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn as nn

from evalkit.errors import EvalkitError
from evalkit.utils.grad import gradients_on


def check_parameters(model: nn.Module) -> None:
    """Refuse, with the fix, a model whose weights were created inside
    ``torch.inference_mode()``: no gradient can flow through inference tensors."""
    if any(p.is_inference() for p in model.parameters()) or any(
        b.is_inference() for b in model.buffers()
    ):
        raise EvalkitError(
            "the model's weights were created inside torch.inference_mode(), so no gradient "
            "can flow through them: build or load the model outside inference_mode (calling "
            "evaluate() inside it is fine)"
        )


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with ``requires_grad=False`` on every parameter, and autograd
    on for the input gradient (:func:`gradients_on`), inside the ``with`` block; restore each
    module's ``training`` flag, each parameter's ``requires_grad`` and the caller's grad mode
    afterwards, also when the attack raises. Nesting is harmless. Raises
    :class:`~evalkit.errors.EvalkitError` for weights created inside ``inference_mode``."""
    check_parameters(model)
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with gradients_on():
            yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
