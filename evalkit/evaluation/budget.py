"""Threat-model budgets, parsed once at the edge and passed on as typed values.

A :class:`Budget` is (label, value, norm): ``label`` is what the user wrote (``"8/255"``) and keys
records and tables, ``value`` is the radius in pixel units ([0, 1] images), ``norm`` is ``linf`` or
``l2``. Ranges follow the geometry of the input space: a Linf radius above 1 cannot constrain a
[0, 1] image; an L2 radius above the image's diameter ``sqrt(C*H*W)`` cannot either. Defaults per
norm are the field's common ones (RobustBench): Linf 8/255, L2 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.utils.parse import NORMS, check_norm, max_eps, parse_eps_items

__all__ = [
    "DEFAULT_EPS",
    "NORMS",
    "Budget",
    "check_norm",
    "check_positive_int",
    "max_eps",
    "parse_budgets",
]

DEFAULT_EPS = {"linf": "8/255", "l2": "0.5"}


@dataclass(frozen=True)
class Budget:
    """One perturbation budget: ``label`` as written, ``value`` in pixel units, ``norm``."""

    label: str
    value: float
    norm: str

    def __str__(self) -> str:
        return f"{self.norm} eps {self.label}"


def parse_budgets(
    eps: str | float | Sequence[str | float] | None,
    norm: str | None = None,
    *,
    preset_eps: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> list[Budget]:
    """Budgets from ``eps`` (``"8/255,4/255"``, a float, or a list of either).

    With ``eps`` None the preset's eps is used for Linf and :data:`DEFAULT_EPS` for L2 (a
    preset's Linf radius means nothing under L2). Reading and range checks are
    :func:`evalkit.utils.parse.parse_eps_items` (one parser for every eps the user writes):
    each value finite and in ``(0, max_eps(norm, input_shape)]``, labels unique.
    """
    n = check_norm(norm)
    if eps is None:
        eps = preset_eps if (preset_eps and n == "linf") else DEFAULT_EPS[n]
    return [
        Budget(label, value, n) for label, value in parse_eps_items(eps, n, input_shape=input_shape)
    ]


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """An integer option ``>= minimum``; bools, floats with a fraction and NaN are refused."""
    if isinstance(value, bool) or value is None:
        raise EvalkitError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EvalkitError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or int(number) < minimum:
        raise EvalkitError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(number)
