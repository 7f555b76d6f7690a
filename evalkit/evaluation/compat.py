"""Attack-side helpers the harness needs, taken from :mod:`evalkit.attacks` when present.

The attack package grows independently of the harness; these thin shims import the real
``attack_mode`` / ``eot_loss`` / ``is_model_random`` and fall back to minimal equivalents so
the harness never breaks on a missing name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss


def _find(name: str) -> Callable[..., Any] | None:
    for mod in (
        "evalkit.attacks",
        "evalkit.attacks.eot",
        "evalkit.attacks.mode",
        "evalkit.attacks.checks",
        "evalkit.attacks.random",
    ):
        try:
            fn = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    return None


@contextmanager
def _attack_mode_fallback(model: nn.Module) -> Iterator[nn.Module]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def attack_mode(model: nn.Module):
    """Eval mode (and frozen parameters) for the duration of an attack; restored after."""
    fn = _find("attack_mode") or _attack_mode_fallback
    return fn(model)


def eot_loss(loss: AttackLoss, n: int) -> AttackLoss:
    """Mean of ``loss`` over ``n`` stochastic forward passes (expectation over transformation)."""
    fn = _find("eot_loss")
    if fn is not None:
        return fn(loss, n)

    def wrapped(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss(model, x, y) for _ in range(n)]).mean(0)

    wrapped.__name__ = f"eot{n}_{getattr(loss, '__name__', 'loss')}"
    return wrapped


@torch.no_grad()
def is_model_random(model: nn.Module, x: torch.Tensor) -> bool:
    """True when two forward passes on the same input give different logits."""
    fn = _find("is_model_random")
    if fn is not None:
        return bool(fn(model, x))
    return not torch.equal(model(x), model(x))
