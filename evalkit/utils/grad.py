"""Autograd on whatever the caller's context: the one place evalkit turns gradients back on
for attacks (:func:`evalkit.attacks.mode.attack_mode` and every registered attack use it; see
:mod:`evalkit.attacks.mode` for why). Kept outside ``evalkit.attacks`` so the attack registry
can use it without importing an attack module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def gradients_on() -> Iterator[None]:
    """Autograd on inside the block, also when the caller is in ``torch.no_grad()`` or
    ``torch.inference_mode()``; the caller's modes are restored afterwards."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable_input(x: torch.Tensor) -> torch.Tensor:
    """``x``, or a normal copy of it when it was created inside ``torch.inference_mode()``
    (an *inference tensor*, which autograd refuses to record)."""
    if isinstance(x, torch.Tensor) and x.is_inference():
        with torch.inference_mode(False):
            return x.clone()
    return x
