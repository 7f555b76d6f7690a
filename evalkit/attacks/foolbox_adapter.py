"""Any Foolbox 3 attack by name: ``foolbox:LinfPGD``, ``foolbox:L2CarliniWagnerAttack``, ...

The name is matched case-insensitively against the attack classes in ``foolbox.attacks``;
constructor options (``steps=10``, ``binary_search_steps=5``, ...) are passed through, so the
defaults are Foolbox's own. Foolbox uses its own losses (the evalkit ``loss`` is ignored) and
torch's global RNG for random starts, which is forked and seeded from evalkit's per-batch
generator. The result is Foolbox's eps-clipped output, projected again into the ball and [0, 1].
This module registers the ``foolbox:`` prefix with the attack registry when imported (and
:mod:`evalkit.attacks` imports it).
"""

from __future__ import annotations

import inspect
import math
from functools import cache, lru_cache

import torch
import torch.nn as nn

from evalkit.attacks._external import external_call, finalize, seed_from
from evalkit.attacks.registry import AttackSpec, keyword_options, register_resolver
from evalkit.errors import EvalkitError

PREFIX = "foolbox:"
_SKIP = {"Attack", "DatasetAttack"}
_P_TO_NORM = {math.inf: "linf", 2.0: "l2", 1.0: "l1", 0.0: "l0"}


@lru_cache(maxsize=1)
def foolbox_attack_classes() -> dict[str, tuple[str, type]]:
    """Lower-cased name -> (Foolbox's spelling, attack class), aliases such as ``LinfPGD``
    and ``FGSM`` included."""
    import foolbox as fb

    out: dict[str, tuple[str, type]] = {}
    for name in dir(fb.attacks):
        obj = getattr(fb.attacks, name)
        if inspect.isclass(obj) and issubclass(obj, fb.attacks.base.Attack) and name not in _SKIP:
            out[name.lower()] = (name, obj)
    return out


def resolve(name: str) -> tuple[str, type]:
    """Foolbox's spelling and class for ``foolbox:Name`` (or ``Name``); one-line error if
    unknown."""
    short = name[len(PREFIX) :] if name.lower().startswith(PREFIX) else name
    classes = foolbox_attack_classes()
    try:
        return classes[short.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(spelling for spelling, _ in classes.values()))
        raise EvalkitError(f"unknown Foolbox attack {short!r} (known: {known})") from None


def attack_norms(cls: type) -> tuple[str, ...]:
    """Norms the class attacks in, read from a default instance's ``distance``."""
    try:
        p = float(cls().distance.p)
    except Exception:  # noqa: BLE001 - classes needing constructor arguments
        return ("linf", "l2")
    return (_P_TO_NORM.get(p, f"l{p:g}"),)


def foolbox_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    attack_name: str,
    norm: str = "linf",
    loss: object = None,
    targeted: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """Run Foolbox attack ``attack_name`` (constructor ``options``) at ``eps`` on one batch."""
    import foolbox as fb

    _, cls = resolve(attack_name)
    try:
        attack = cls(**options)
    except TypeError as exc:
        raise EvalkitError(f"bad options for foolbox:{cls.__name__}: {exc}") from None
    criterion = (
        fb.criteria.TargetedMisclassification(y) if targeted else fb.criteria.Misclassification(y)
    )
    with external_call(model, x, seed_from(generator, seed)):
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        _, clipped, _ = attack(fmodel, x.detach(), criterion, epsilons=float(eps))
    return finalize(clipped, x, eps, norm)


def is_white_box(cls: type) -> bool:
    """Whether a Foolbox attack class reads gradients: a ``BaseGradientDescent`` subclass, or
    its module calls ``value_and_grad``/``value_aux_and_grad`` (DeepFool, CW, FMN, ...)."""
    import foolbox as fb

    if issubclass(cls, fb.attacks.gradient_descent_base.BaseGradientDescent):
        return True
    try:
        return "_and_grad" in inspect.getsource(inspect.getmodule(cls))
    except (OSError, TypeError):
        return True  # unknown: claim white-box, the weaker assumption for gradient checks


@cache
def foolbox_spec(name: str) -> AttackSpec:
    """The :class:`AttackSpec` for ``foolbox:Name`` (cached per class, so lookups agree).

    Options are the class's constructor parameters plus ``targeted`` and ``seed``; the defaults
    are the constructor's own (Foolbox's).
    """
    spelling, cls = resolve(name)
    full = f"{PREFIX}{spelling}"
    own, var_kw = keyword_options(cls.__init__)
    own.pop("self", None)
    defaults = {**own, "targeted": False, "seed": None}

    def fn(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str = "linf",
        loss: object = None,
        generator: torch.Generator | None = None,
        **options,
    ) -> torch.Tensor:
        return foolbox_attack(
            model, x, y, eps, attack_name=spelling, norm=norm, generator=generator, **options
        )

    fn.__name__ = f"attack_foolbox_{spelling}"
    return AttackSpec(
        name=full,
        fn=fn,
        norms=attack_norms(cls),
        white_box=is_white_box(cls),
        base_loss=None,
        defaults=defaults,
        description=f"Foolbox {cls.__name__} (Foolbox's defaults)",
        options=None if var_kw else frozenset(defaults),
    )


register_resolver(
    PREFIX,
    lambda name: foolbox_spec(resolve(name)[0]),
    hint="foolbox:AttackName",
    description="any Foolbox 3 attack class by name, e.g. foolbox:L2CarliniWagnerAttack",
)
