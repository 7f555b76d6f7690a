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
from fractions import Fraction

from evalkit.errors import EvalkitError
from evalkit.utils.suggest import eps_hint, with_hint

NORMS = ("linf", "l2")
DEFAULT_EPS = {"linf": "8/255", "l2": "0.5"}


@dataclass(frozen=True)
class Budget:
    """One perturbation budget: ``label`` as written, ``value`` in pixel units, ``norm``."""

    label: str
    value: float
    norm: str

    def __str__(self) -> str:
        return f"{self.norm} eps {self.label}"


def check_norm(norm: str | None, default: str = "linf") -> str:
    """``linf``/``l2`` (case-insensitive); anything else is a one-line error."""
    value = (norm or default).strip().lower()
    if value not in NORMS:
        raise EvalkitError(f"norm must be linf or l2, not {norm!r}")
    return value


def _read(raw: str | float) -> float:
    if isinstance(raw, bool):
        raise EvalkitError(f"cannot read eps {raw!r} (write it like 8/255 or 0.031)")
    if isinstance(raw, (int, float)):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise EvalkitError(f"cannot read eps {text!r} (write it like 8/255 or 0.031)") from None


def max_eps(norm: str, input_shape: Sequence[int] | None) -> float:
    """Largest meaningful radius: 1 for Linf; the image diameter sqrt(C*H*W) for L2."""
    if norm == "linf" or not input_shape:
        return 1.0 if norm == "linf" else math.inf
    return math.sqrt(math.prod(int(s) for s in input_shape))


def parse_budgets(
    eps: str | float | Sequence[str | float] | None,
    norm: str | None = None,
    *,
    preset_eps: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> list[Budget]:
    """Budgets from ``eps`` (``"8/255,4/255"``, a float, or a list of either).

    With ``eps`` None the preset's eps is used for Linf and :data:`DEFAULT_EPS` for L2 (a
    preset's Linf radius means nothing under L2). Each value must be finite and in
    ``(0, max_eps(norm, input_shape)]``; labels must be unique. Raises :class:`EvalkitError`.
    """
    n = check_norm(norm)
    if eps is None:
        eps = preset_eps if (preset_eps and n == "linf") else DEFAULT_EPS[n]
    if isinstance(eps, bool):
        _read(eps)  # one-line error
    if isinstance(eps, (str, int, float)):
        items: list[str | float] = (
            [t.strip() for t in eps.split(",") if t.strip()] if isinstance(eps, str) else [eps]
        )
    else:
        items = list(eps)
    if not items:
        raise EvalkitError("eps is empty (give e.g. 8/255 or 8/255,4/255)")
    top = max_eps(n, input_shape)
    out: list[Budget] = []
    for raw in items:
        value = _read(raw)
        label = str(raw).strip() if isinstance(raw, str) else f"{value:g}"
        if not math.isfinite(value) or value <= 0 or value > top:
            where = (
                "(0, 1]: pixels live in [0, 1]"
                if n == "linf"
                else f"(0, {top:.4g}], the diameter of the input"
                if math.isfinite(top)
                else "(0, inf)"
            )
            raise EvalkitError(
                with_hint(
                    f"eps {label} is out of range for {n}: it must be in {where}",
                    eps_hint(value, n),
                )
            )
        if any(b.label == label for b in out):
            raise EvalkitError(f"eps {label} is given twice (list each budget once)")
        out.append(Budget(label, value, n))
    return out


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
