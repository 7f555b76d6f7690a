"""Parsing of command-line values shared by several commands."""

from __future__ import annotations

from fractions import Fraction

from evalkit.errors import EvalkitError
from evalkit.utils.suggest import eps_hint


def parse_eps(text: str | float, *, allow_zero: bool = False) -> float:
    """Parse ``8/255``, ``0.031`` or ``2`` style budgets; eps must lie in (0, 1] in pixel space."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            value = float(Fraction(raw)) if "/" in raw else float(raw)
        except (ValueError, ZeroDivisionError):
            raise EvalkitError(f"cannot read eps {raw!r} (write it like 8/255 or 0.031)") from None
    if value < 0 or (value == 0 and not allow_zero) or value > 1:
        hint = eps_hint(value)
        raise EvalkitError(
            f"eps {text} is out of range: pixels live in [0, 1], so eps must be in (0, 1] "
            + (f"({hint})" if hint else "(e.g. 8/255)")
        )
    return value


def parse_eps_list(text: str) -> list[tuple[str, float]]:
    """Parse ``8/255,4/255`` into ``[("8/255", 0.0313...), ("4/255", 0.0156...)]``."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise EvalkitError("--eps is empty (give e.g. 8/255 or 8/255,4/255)")
    return [(t, parse_eps(t)) for t in items]


def parse_floats(text: str, n: int | None = None, name: str = "value") -> tuple[float, ...]:
    """Parse a comma-separated list of floats such as ``0.5,0.5,0.5``."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise EvalkitError(f"cannot read {name} {text!r} (comma-separated numbers)") from None
    if n is not None and len(vals) not in (1, n):
        raise EvalkitError(f"{name} needs 1 or {n} numbers, got {len(vals)}")
    return vals
