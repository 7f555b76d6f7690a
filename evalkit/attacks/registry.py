"""Attack registry: a name -> :class:`AttackSpec` table that attack modules fill themselves.

An attack module registers its public function where it is defined::

    @register_attack("pgd", norms=("linf", "l2"), white_box=True, base_loss="ce",
                     description="PGD, step eps/4 ...", iterative=True)
    def pgd(model, x, y, eps, *, steps=10, ...): ...

and callers run it by keyword, whatever its own signature::

    get_attack("pgd").run(model, x, y, eps=8 / 255, norm="linf", generator=gen, steps=20)

* :meth:`AttackSpec.run` checks the norm and the option names (a typo is a one-line
  :class:`~evalkit.errors.EvalkitError` listing the options), fills in ``defaults`` and, when the
  caller gives no ``loss``, the attack's ``base_loss``; it then calls ``spec.fn``.
* ``spec.fn(model, x, y, *, eps, norm, loss, generator, **options)`` is the one calling
  convention; it forwards ``norm``/``loss``/``generator`` only to functions that take them (an
  Linf-only attack has no ``norm`` parameter, a deterministic one no ``generator``).
* ``spec.defaults`` are the function's own keyword defaults; an entry overrides one only for a
  documented reason (``aa_plus`` sets ``version="plus"``: that *is* the entry).
* Prefixed names (``foolbox:LinfPGD``) are resolved on demand by a resolver that the defining
  module registers with :func:`register_resolver`; this module imports no attack module, so
  there is no import cycle. ``import evalkit.attacks`` imports every attack module, so any
  import of this registry sees every attack.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError
from evalkit.utils.grad import gradients_on, usable_input
from evalkit.utils.mode import attack_mode
from evalkit.utils.suggest import did_you_mean, with_hint

AttackFn = Callable[..., torch.Tensor]

#: Arguments every attack receives from :meth:`AttackSpec.run`; never options.
RESERVED = frozenset({"model", "x", "y", "eps", "norm", "loss", "generator"})


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    ``fn(model, x, y, *, eps, norm, loss, generator, **options) -> x_adv`` returns a tensor of
    ``x``'s shape and dtype inside the ``norm`` ball of radius ``eps`` and in [0, 1].
    ``white_box`` is False for attacks that never read a gradient (Square, Foolbox's
    decision-based attacks). ``base_loss`` names the loss the attack is meant to run on
    (``"ce"``, ``"cw"``), so a caller can wrap it (joint heads, EOT) and pass it as ``loss``;
    ``None`` means the attack brings its own losses and ignores ``loss``. ``iterative`` attacks
    accept ``keep_best`` and ``early_stop`` (see :func:`evalkit.attacks.pgd.pgd`).
    ``options`` are the option names :meth:`run` accepts (``None``: any, checked by ``fn``).
    """

    name: str
    fn: AttackFn
    norms: tuple[str, ...]
    white_box: bool
    base_loss: str | None
    defaults: dict[str, Any]
    description: str
    iterative: bool = False
    min_classes: int = 2
    options: frozenset[str] | None = field(default=None, compare=False)

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str = "linf",
        loss: Any = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Run the attack on one batch ``x`` (N, ...) in [0, 1] with labels ``y`` (N,).

        Raises :class:`EvalkitError` (one line) for an unsupported ``norm``, a NaN or negative
        ``eps`` and unknown option names. ``options`` override ``defaults`` one by one;
        ``loss=None`` means ``base_loss``.
        """
        if norm not in self.norms:
            raise EvalkitError(
                f"attack {self.name!r} supports norm {' or '.join(self.norms)}, not {norm!r} "
                "(pick another attack or norm)"
            )
        try:
            value = float(eps)
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value) or value < 0:
            raise EvalkitError(f"attack {self.name!r} needs eps >= 0, got {eps!r}")
        if self.options is not None:
            unknown = sorted(set(options) - self.options)
            if unknown:
                known = ", ".join(sorted(self.options)) or "none"
                raise EvalkitError(
                    f"attack {self.name!r} has no option {', '.join(unknown)} (options: {known})"
                )
        if loss is None:
            loss = self.base_loss
        return self.fn(
            model,
            x,
            y,
            eps=value,
            norm=norm,
            loss=loss,
            generator=generator,
            **{**self.defaults, **options},
        )


_ATTACKS: dict[str, AttackSpec] = {}
_CANONICAL: list[str] = []
_SOURCES: dict[str, tuple[str, str]] = {}
_RESOLVERS: dict[str, tuple[Callable[[str], AttackSpec], str, str]] = {}

#: Read-only view of every registered name (aliases included) -> spec.
ATTACKS: Mapping[str, AttackSpec] = MappingProxyType(_ATTACKS)


def keyword_options(fn: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """``fn``'s optional keyword parameters with their defaults (reserved names left out), and
    whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    opts = {
        p.name: p.default
        for p in params
        if p.name not in RESERVED
        and (
            p.kind is p.KEYWORD_ONLY
            or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
        )
    }
    return opts, any(p.kind is p.VAR_KEYWORD for p in params)


def keyword_adapter(fn: Callable[..., torch.Tensor], name: str) -> AttackFn:
    """Wrap ``fn`` in the registry's calling convention, passing ``eps``, ``norm``, ``loss``
    and ``generator`` only where ``fn`` has such a parameter."""
    params = inspect.signature(fn).parameters
    takes = {k for k in ("eps", "norm", "loss", "generator") if k in params}

    def call(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str = "linf",
        loss: Any = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        given = {"eps": eps, "norm": norm, "loss": loss, "generator": generator}
        passed = {k: v for k, v in given.items() if k in takes}
        if "loss" in passed and loss is None:
            del passed["loss"]  # the function's own default loss
        return fn(model, x, y, **passed, **options)

    call.__name__ = f"attack_{name}"
    call.__doc__ = fn.__doc__
    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def _add(spec: AttackSpec, names: tuple[str, ...], source: tuple[str, str]) -> None:
    keys = [key.strip().lower() for key in names]
    for key in keys:
        if key in _SOURCES and _SOURCES[key] != source:
            where = ".".join(_SOURCES[key])
            raise ValueError(f"attack name {key!r} is already registered by {where}")
    for key in keys:
        _ATTACKS[key] = spec
        _SOURCES[key] = source
    if spec.name not in _CANONICAL:
        _CANONICAL.append(spec.name)


def register_attack(
    name: str,
    *,
    norms: tuple[str, ...],
    white_box: bool,
    base_loss: str | None,
    description: str,
    iterative: bool = False,
    min_classes: int = 2,
    aliases: tuple[str, ...] = (),
    **defaults: Any,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator registering an attack function under ``name`` (and ``aliases``); returns the
    function wrapped so that it runs inside :func:`~evalkit.utils.mode.attack_mode` (eval
    mode, restored module by module, so a direct call on a model left in train mode is safe)
    with autograd on whatever the caller's context (inside ``torch.no_grad()`` or
    ``torch.inference_mode()`` too) and otherwise unchanged (same name, docstring and signature),
    so decorators can be stacked for entries differing only in defaults.

    The function takes ``(model, x, y, ...)`` plus any of ``eps``, ``norm``, ``loss``,
    ``generator`` by keyword, and options as keyword parameters with defaults. ``defaults``
    overrides some of those defaults for this entry (document why in ``description``); an
    unknown default name is a ``ValueError`` at import. Registering a name twice from a different
    function is a ``ValueError`` (re-running the same module, e.g. on reload, is allowed).
    """
    if not norms:
        raise ValueError(f"attack {name!r} needs at least one norm")
    if iterative and base_loss is None:
        raise ValueError(f"iterative attack {name!r} needs a base loss")

    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        own, var_kw = keyword_options(fn)
        bad = sorted(set(defaults) - set(own)) if not var_kw else []
        if bad:
            raise ValueError(f"attack {name!r}: {fn.__name__} has no option {', '.join(bad)}")
        if iterative and not {"keep_best", "early_stop"} <= set(own):
            raise ValueError(f"iterative attack {name!r} must take keep_best and early_stop")
        spec = AttackSpec(
            name=name.strip().lower(),
            fn=keyword_adapter(fn, name),
            norms=tuple(norms),
            white_box=bool(white_box),
            base_loss=base_loss,
            defaults={**own, **defaults},
            description=description,
            iterative=bool(iterative),
            min_classes=int(min_classes),
            options=None if var_kw else frozenset(own),
        )
        _add(spec, (name, *aliases), (fn.__module__, fn.__qualname__))
        return fn

    def decorate_with_gradients(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return decorate(with_gradients(fn))

    return decorate_with_gradients


def with_gradients(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` run inside :func:`~evalkit.utils.mode.attack_mode` (eval mode, per-module
    restore, autograd on via :func:`~evalkit.utils.grad.gradients_on`), with inputs created in
    ``inference_mode`` copied to normal tensors; applied once (stacked registrations reuse it).
    A model that is not an ``nn.Module`` (a plain callable) only gets autograd on."""
    if getattr(fn, "_evalkit_gradients_on", False):
        return fn

    @functools.wraps(fn)
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *args: Any, **kwargs: Any):
        mode = attack_mode(model) if isinstance(model, nn.Module) else gradients_on()
        with mode:
            return fn(model, usable_input(x), usable_input(y), *args, **kwargs)

    run._evalkit_gradients_on = True  # type: ignore[attr-defined]
    return run


def register_resolver(
    prefix: str, resolve: Callable[[str], AttackSpec], *, hint: str, description: str
) -> None:
    """Resolve names ``prefix:Something`` on demand with ``resolve(name) -> AttackSpec``.

    ``hint`` (e.g. ``"foolbox:AttackName"``) is shown in the unknown-attack message,
    ``description`` in :func:`describe_attacks`.
    """
    _RESOLVERS[prefix.strip().lower().rstrip(":") + ":"] = (resolve, hint, description)


def get_attack(name: str) -> AttackSpec:
    """The spec for ``name`` (case-insensitive; aliases allowed; ``prefix:Name`` through the
    registered resolvers). Unknown names raise a one-line :class:`EvalkitError`."""
    key = name.strip().lower()
    if key in _ATTACKS:
        return _ATTACKS[key]
    for prefix, (resolve, _, _) in _RESOLVERS.items():
        if key.startswith(prefix):
            return resolve(name.strip())
    hints = [hint for _, hint, _ in _RESOLVERS.values()]
    known = ", ".join(sorted(_ATTACKS)) + (f", or {', '.join(hints)}" if hints else "")
    raise EvalkitError(
        with_hint(f"unknown attack {name!r} (known: {known})", did_you_mean(name, _ATTACKS))
    )


def attack_names() -> list[str]:
    """Canonical names of the registered attacks (no aliases, no resolver prefixes), sorted."""
    return sorted(_CANONICAL)


def aliases_of(name: str) -> list[str]:
    """Every registered name (canonical first) that maps to ``name``'s spec."""
    spec = get_attack(name)
    others = sorted(k for k, s in _ATTACKS.items() if s is spec and k != spec.name)
    return [spec.name, *others]


def describe_attacks() -> str:
    """One line per registered attack (name, aliases, kind, norms, defaults), for help texts."""
    lines = []
    for name in attack_names():
        spec = _ATTACKS[name]
        alias = aliases_of(name)[1:]
        kind = "white-box" if spec.white_box else "black-box"
        opts = (
            ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items() if v is not None)
            or "no options"
        )
        also = f" (also: {', '.join(alias)})" if alias else ""
        lines.append(f"{name}{also}: {spec.description} [{kind}; {'/'.join(spec.norms)}; {opts}]")
    for _, hint, description in _RESOLVERS.values():
        lines.append(f"{hint}: {description}")
    return "\n".join(lines)
