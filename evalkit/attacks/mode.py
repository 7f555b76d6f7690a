"""The model state an attack needs, set for the duration of one attack and then given back.

Attacks must see the honest test-time model: eval mode (BatchNorm running statistics, dropout
off, CAS masks from predicted labels) and no parameter gradients (only the input gradient is
wanted; skipping weight gradients saves memory and never leaves stale ``.grad`` behind). The
caller's state is restored exactly, per module and per parameter, because trainers often mix
modes (e.g. frozen BatchNorm inside a training model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn as nn


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with ``requires_grad=False`` on every parameter inside the
    ``with`` block; restore each module's ``training`` flag and each parameter's
    ``requires_grad`` afterwards, also when the attack raises. Nesting is harmless."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
