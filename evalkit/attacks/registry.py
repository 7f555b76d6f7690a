"""Attack registry: name -> callable with one calling convention, so the harness dispatches
without an if/elif chain and ``--attacks`` can list what exists.

Every attack is called as ``spec.fn(model, x, y, eps, *, norm, loss, generator, **options)`` and
returns ``x_adv`` (same shape as ``x``, inside the eps ball, in [0, 1]). ``loss`` is an
:data:`~evalkit.attacks.losses.AttackLoss` already wrapped for joint heads / EOT by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from evalkit.attacks.fgsm import fgsm
from evalkit.attacks.pgd import pgd
from evalkit.errors import EvalkitError

AttackFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: AttackFn
    norms: tuple[str, ...] = ("linf",)
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


ATTACKS: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    ATTACKS[spec.name] = spec
    return spec


def get_attack(name: str) -> AttackSpec:
    """Look up an attack; ``foolbox:Name`` is resolved by the Foolbox adapter when present."""
    key = name.strip().lower()
    if key in ATTACKS:
        return ATTACKS[key]
    raise EvalkitError(f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))}, or foolbox:AttackName)")


def _fgsm(model, x, y, eps, *, norm="linf", loss="ce", generator=None, **opts):
    return fgsm(model, x, y, eps, loss=loss, **opts)


def _pgd(model, x, y, eps, *, norm="linf", loss="ce", generator=None, **opts):
    return pgd(model, x, y, eps, norm=norm, loss=loss, generator=generator, **opts)


register(AttackSpec("fgsm", _fgsm, ("linf",), "FGSM, one step of size eps"))
register(AttackSpec("pgd", _pgd, ("linf", "l2"), "PGD-20, step eps/4, random start",
                    {"steps": 20, "random_start": True}))
