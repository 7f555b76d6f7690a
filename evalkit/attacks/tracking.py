"""Scoring attack iterates for free: the logits of the forward that computes the gradient.

An iterative attack that keeps its best iterate must know, per step, which points are
misclassified. Running the model again on every iterate would double the cost of a step, so
:class:`LogitTap` puts a forward hook on the model and keeps the outputs of the ``model(x)``
calls the loss makes on the watched iterate (several with an EOT loss: their mean is used).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType

import torch
import torch.nn as nn


class LogitTap:
    """Forward hook on ``model`` recording its outputs on one watched input tensor.

    Use as ``with LogitTap(model) as tap:`` around an attack, ``with tap.watching(x):`` around
    the loss call, then ``tap.logits(model, x)`` for the (N, classes) logits of that call.
    Only calls whose first argument *is* the watched tensor and whose output is an (N, C)
    tensor are recorded; when there were none (the loss transformed ``x`` first, or ``model``
    is not an ``nn.Module``), :meth:`logits` runs one extra no-grad forward instead.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._target: torch.Tensor | None = None
        self._outs: list[torch.Tensor] = []
        self._handle = None
        self.extra_forwards = 0

    def __enter__(self) -> LogitTap:
        if isinstance(self.model, nn.Module):
            self._handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: nn.Module, args: tuple, output: object) -> None:
        target = self._target
        if (
            target is not None
            and args
            and args[0] is target
            and isinstance(output, torch.Tensor)
            and output.ndim == 2
            and output.shape[0] == target.shape[0]
        ):
            self._outs.append(output.detach())

    @contextmanager
    def watching(self, x: torch.Tensor) -> Iterator[None]:
        """Record the model's outputs on ``x`` inside the block (earlier records are dropped)."""
        self._target, self._outs = x, []
        try:
            yield
        finally:
            self._target = None

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean of the recorded outputs (N, C); an extra no-grad forward if none were recorded."""
        outs, self._outs = self._outs, []
        if len(outs) == 1:
            return outs[0]
        if outs:
            return torch.stack(outs).mean(0)
        self.extra_forwards += 1
        with torch.no_grad():
            return model(x.detach()).detach()


def score_dtype(device: torch.device) -> torch.dtype:
    """float64 for margins and losses used to rank iterates; float32 where the device has no
    float64 (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def success_and_margin(
    logits: torch.Tensor, y: torch.Tensor, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: whether the attack succeeded, and its margin (lower = more broken), in
    :func:`score_dtype`.

    Untargeted: success is ``argmax != y`` or non-finite logits (never counted correct), margin
    ``z_y - max_{j != y} z_j`` (``-inf`` for non-finite logits). Targeted (``y`` the target):
    success is ``argmax == y`` with finite logits, margin ``max_{j != y} z_j - z_y``.
    """
    z = logits.detach().to(score_dtype(logits.device))
    finite = torch.isfinite(z).all(1)
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).max(1).values
    pred = z.argmax(1)
    if targeted:
        ok = (pred == y) & finite
        margin = torch.where(finite, other - true, torch.full_like(true, float("inf")))
    else:
        ok = (pred != y) | ~finite
        margin = torch.where(finite, true - other, torch.full_like(true, float("-inf")))
    return ok, margin


_SAVED: ContextVar[list[int] | None] = ContextVar("evalkit_pgd_cycle_savings", default=None)


@contextmanager
def cycle_savings() -> Iterator[list[int]]:
    """``with cycle_savings() as saved:`` ``saved[0]`` is the number of propagations (one
    forward and one backward per skipped step and point) that cycle detection did not spend
    inside the block. The harness records it so that a budget set as a share of the protocol
    (the sanity checks') is not shrunk by a shortcut that only skips unbroken points' repeats:
    a model with zero input gradients cycles at once, and that is when the checks matter."""
    box = [0]
    token = _SAVED.set(box)
    try:
        yield box
    finally:
        _SAVED.reset(token)


def note_cycle_savings(propagations: int) -> None:
    """Add to the innermost :func:`cycle_savings` block's count (no block: nothing)."""
    box = _SAVED.get()
    if box is not None:
        box[0] += int(propagations)
