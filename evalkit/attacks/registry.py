"""Attack registry: name -> callable with one calling convention, so the harness dispatches
without an if/elif chain and ``--attacks`` can list what exists.

Every attack is called as ``spec.fn(model, x, y, eps, *, norm, loss, generator, **options)`` and
returns ``x_adv`` (same shape as ``x``, inside the eps ball, in [0, 1]).

* ``spec.defaults`` are the options the entry uses when the caller gives none (the wrapper
  applies them; ``options`` override them one by one).
* ``spec.loss`` names the base loss the attack is meant to run on (``"ce"`` for PGD, ``"cw"``
  for the CW attacks), so the harness can build ``make_loss(spec.loss, joint=...)`` and wrap it
  in EOT before passing it as ``loss``; ``None`` means the attack brings its own losses
  (AutoAttack, Square, Foolbox) and ignores ``loss``.
* ``spec.norms`` lists the supported norms; any other raises :class:`EvalkitError`.
* ``foolbox:Name`` resolves any Foolbox 3 attack (see :mod:`evalkit.attacks.foolbox_adapter`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from evalkit.attacks.autoattack import autoattack, build_autoattack
from evalkit.attacks.cw import cw_inf, cw_l2
from evalkit.attacks.fgsm import fgsm
from evalkit.attacks.pgd import pgd
from evalkit.attacks.square import square
from evalkit.errors import EvalkitError

AttackFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: AttackFn
    norms: tuple[str, ...] = ("linf",)
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    loss: str | None = "ce"


ATTACKS: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    ATTACKS[spec.name] = spec
    return spec


def get_attack(name: str) -> AttackSpec:
    """Look up an attack by name (case-insensitive); ``foolbox:Name`` is resolved on demand."""
    key = name.strip().lower()
    if key in ATTACKS:
        return ATTACKS[key]
    if key.startswith("foolbox:"):
        from evalkit.attacks.foolbox_adapter import foolbox_spec

        return foolbox_spec(name.strip())
    raise EvalkitError(
        f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))}, or foolbox:AttackName)"
    )


def _check_norm(name: str, norm: str, norms: tuple[str, ...]) -> None:
    if norm not in norms:
        raise EvalkitError(
            f"attack {name!r} supports --norm {' or '.join(norms)}, not {norm!r} (pick another attack or norm)"
        )


def _entry(
    name: str,
    call: Callable[..., torch.Tensor],
    norms: tuple[str, ...],
    description: str,
    defaults: dict[str, Any] | None = None,
    loss: str | None = "ce",
    options_of: tuple[Callable[..., Any], ...] = (),
) -> AttackSpec:
    """Register ``call(model, x, y, eps, norm, loss, generator, options)`` under ``name``.

    Option names are checked against the keyword parameters of ``options_of`` so a typo
    (``--attack-option stesp=5``) is a one-line user error, not a TypeError deep inside.
    """
    defaults = dict(defaults or {})
    reserved = {"model", "x", "y", "eps", "norm", "loss", "generator", "device", "num_classes"}
    allowed = {
        p.name
        for f in options_of
        for p in inspect.signature(f).parameters.values()
        if p.kind is p.KEYWORD_ONLY
        or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
    } - reserved

    def fn(model, x, y, eps, *, norm="linf", loss=loss, generator=None, **options):
        _check_norm(name, norm, norms)
        unknown = sorted(set(options) - allowed) if allowed else []
        if unknown:
            raise EvalkitError(
                f"attack {name!r} has no option {', '.join(unknown)} (options: {', '.join(sorted(allowed))})"
            )
        return call(model, x, y, eps, norm, loss, generator, {**defaults, **options})

    fn.__name__ = f"attack_{name}"
    fn.__doc__ = f"{description}. Defaults: {defaults or 'none'}."
    return register(AttackSpec(name, fn, norms, description, defaults, loss))


_entry(
    "fgsm",
    lambda m, x, y, e, n, lo, g, o: fgsm(m, x, y, e, loss=lo, **o),
    ("linf",),
    "FGSM, one signed-gradient step of size eps, no random start",
    options_of=(fgsm,),
)
_entry(
    "pgd",
    lambda m, x, y, e, n, lo, g, o: pgd(m, x, y, e, norm=n, loss=lo, generator=g, **o),
    ("linf", "l2"),
    "PGD-20, step eps/4 (L2: 2.5*eps/steps), random start, 1 restart",
    {"steps": 20, "random_start": True, "restarts": 1},
    options_of=(pgd,),
)
for _name in ("cw", "cw_inf"):
    _entry(
        _name,
        lambda m, x, y, e, n, lo, g, o: cw_inf(m, x, y, e, loss=lo, generator=g, **o),
        ("linf",),
        "CW-inf: PGD-30 on the per-example CW margin, step eps/4, random start",
        {"steps": 30, "random_start": True},
        loss="cw",
        options_of=(cw_inf,),
    )
_entry(
    "cw_l2",
    lambda m, x, y, e, n, lo, g, o: cw_l2(m, x, y, e, loss=lo, **o),
    ("l2",),
    "Carlini-Wagner L2 (Adam in tanh space, binary search over c), projected to eps",
    {"steps": 100, "binary_search_steps": 5, "lr": 0.01, "initial_const": 0.1, "confidence": 0.0},
    loss="cw",
    options_of=(cw_l2,),
)
for _name, _version in (
    ("autoattack", "standard"),
    ("aa", "standard"),
    ("aa_plus", "plus"),
    ("aa_rand", "rand"),
):
    _entry(
        _name,
        lambda m, x, y, e, n, lo, g, o: autoattack(m, x, y, e, norm=n, generator=g, **o),
        ("linf", "l2", "l1"),
        f"AutoAttack via pyautoattack, version {_version!r}",
        {"version": _version},
        loss=None,
        options_of=(autoattack, build_autoattack),
    )
_entry(
    "square",
    lambda m, x, y, e, n, lo, g, o: square(m, x, y, e, norm=n, generator=g, **o),
    ("linf", "l2"),
    "Square attack (black-box, 5000 queries), for the gradient-masking check",
    {"n_queries": 5000, "p_init": 0.8},
    loss=None,
    options_of=(square,),
)


def describe_attacks() -> str:
    """One line per registered attack (name, norms, defaults): for ``--help`` texts."""
    lines = []
    for name in sorted(ATTACKS):
        spec = ATTACKS[name]
        opts = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "no options"
        lines.append(f"{name}: {spec.description} [{'/'.join(spec.norms)}; {opts}]")
    lines.append("foolbox:Name: any Foolbox 3 attack class, e.g. foolbox:L2CarliniWagnerAttack")
    return "\n".join(lines)
