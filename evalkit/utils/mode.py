"""Train/eval mode set for a block and given back module by module.

:func:`model_mode` (mode only) is the one place a mode is saved and restored:
``was = model.training; ...; model.train(was)`` would flatten a mixed model (frozen BatchNorm
inside a training model) to one mode for every module; this restores each module's own flag.
:func:`attack_mode` builds on it with what an attack needs. Both live in ``utils`` so the attack
registry, models, defenses and analyses use them without importing an attack module;
:mod:`evalkit.attacks.mode` re-exports them.

Attacks must see the honest test-time model: eval mode (BatchNorm running statistics, dropout
off, CAS masks from predicted labels) and no parameter gradients (only the input gradient is
wanted; skipping weight gradients saves memory and never leaves stale ``.grad`` behind).
Attacks need autograd for the *input* gradient whatever context the caller is in: an ordinary
evaluation loop wraps everything in ``torch.no_grad()`` or ``torch.inference_mode()``, under
which every gradient attack would die with "element 0 of tensors does not require grad".
:func:`evalkit.utils.grad.gradients_on` is the one place that turns autograd back on;
:func:`attack_mode` (used by :func:`evalkit.evaluate` around every attack and check, and by
every registered attack function, :func:`evalkit.attacks.registry.register_attack`) runs
inside it, so no attack module needs to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch.nn as nn

from evalkit.errors import EvalkitError
from evalkit.utils.grad import gradients_on


@contextmanager
def model_mode(model: nn.Module, training: bool | None = False) -> Iterator[nn.Module]:
    """``model.train(training)`` inside the block (``training=None`` keeps the caller's modes),
    then each module's own ``training`` flag given back, also when the block raises.

    The one place a mode is saved and restored: ``model.train(was_training)`` would flatten a
    mixed model (frozen BatchNorm inside a training model) to one mode for every module."""
    modes = [(m, m.training) for m in model.modules()]
    if training is not None:
        model.train(training)
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was


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


_GOVERNED: ContextVar[tuple[int, ...]] = ContextVar("evalkit_attack_mode", default=())


@contextmanager
def attack_mode(model: nn.Module, *, training: bool | None = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with ``requires_grad=False`` on every parameter, and autograd
    on for the input gradient (:func:`gradients_on`), inside the ``with`` block; restore each
    module's ``training`` flag, each parameter's ``requires_grad`` and the caller's grad mode
    afterwards, also when the attack raises. Raises :class:`~evalkit.errors.EvalkitError` for
    weights created inside ``inference_mode``.

    Every registered attack enters it itself, so ``pgd(model, ...)`` on a model left in train
    mode is safe. A nested ``attack_mode`` on the same model changes nothing: the outermost one
    decides, so ``training=None`` (keep the caller's modes, e.g. Madry-style crafting with
    BatchNorm in train mode) holds for the attacks called inside it."""
    if id(model) in _GOVERNED.get():
        yield model
        return
    check_parameters(model)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    token = _GOVERNED.set((*_GOVERNED.get(), id(model)))
    try:
        with model_mode(model, training):
            for p, _ in flags:
                p.requires_grad_(False)
            with gradients_on():
                yield model
    finally:
        _GOVERNED.reset(token)
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
