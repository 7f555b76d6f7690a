"""Shared plumbing for attacks from external libraries (pyautoattack, Foolbox).

Those libraries reseed torch's *global* generator (AutoAttack calls ``torch.manual_seed``
inside ``perturb``), print, and assume an eval-mode model. :func:`external_call` gives them a
forked global RNG seeded from evalkit's per-batch generator, eval mode without parameter
gradients, and :func:`finalize` projects their output back into the eps ball and [0, 1], so a
library's rounding never leaks out of the threat model.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator

import torch
import torch.nn as nn

from evalkit.attacks.mode import attack_mode
from evalkit.attacks.pgd import project


def seed_from(generator: torch.Generator | None, seed: int | None = None) -> int:
    """An explicit seed wins; else one int drawn from ``generator``; else 0 (never wall time)."""
    if seed is not None:
        return int(seed)
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


@contextlib.contextmanager
def external_call(model: nn.Module, x: torch.Tensor, seed: int) -> Iterator[None]:
    """Eval mode, forked and seeded global RNG, library stdout sent to stderr."""
    devices = [x.device] if x.device.type == "cuda" else []
    with attack_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(sys.stderr if sys.stderr else io.StringIO()):
            yield


def finalize(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball around ``x`` and clip to [0, 1]."""
    x_adv = x_adv.detach().to(x.device, x.dtype)
    if eps is not None and norm in ("linf", "l2"):
        x_adv = x + project(x_adv - x, eps, norm)
    return x_adv.clamp(0, 1)
