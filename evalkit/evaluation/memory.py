"""Back off the batch size before a run when a batch does not fit in the device's memory.

An attack step holds one batch's activations for the backward pass plus a few input-sized
tensors (iterate, gradient, best point), so a forward and an input backward on one full batch
is a fair test of whether the attacks fit. :func:`fit_batch_size` tries it at the requested size
and halves on ``torch.OutOfMemoryError`` until it fits; the size found is the run's batch size
(recorded in config.json, so a resume sees the same units). Halving before the run, rather than
splitting a unit that ran out of memory in the middle, keeps every unit's random starts a
function of the run's settings alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fits(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether one forward and input backward on ``x`` runs without running out of memory."""
    xg = x.detach().clone().requires_grad_(True)
    try:
        out = model(xg)
        (grad,) = torch.autograd.grad(out.float().logsumexp(1).sum(), xg)
        del grad, out
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        del xg
        _free(x.device)


def fit_batch_size(
    model: nn.Module,
    fetch: Callable[[int], torch.Tensor],
    batch_size: int,
    *,
    say: Callable[[str], None] | None = None,
) -> int:
    """The largest of ``batch_size``, ``batch_size // 2``, ... that :func:`fits`, trying each on
    ``fetch(size)`` (the first ``size`` examples on the device). Raises :class:`EvalkitError`
    when not even one example fits."""
    size = int(batch_size)
    while size >= 1:
        if fits(model, fetch(size)):
            if size != batch_size and say is not None:
                say(
                    f"  batch size {batch_size} ran out of device memory; using {size} "
                    "(recorded in config.json)"
                )
            return size
        size //= 2
    raise EvalkitError(
        "one example does not fit in the device's memory: evaluate on a larger device or on "
        "the CPU (device='cpu'), or with precision='bf16'"
    )
