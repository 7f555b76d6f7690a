"""Reading plugin parameters that may arrive as strings (from ``--defense-param k=v``)."""

from __future__ import annotations

from typing import Any

from evalkit.errors import EvalkitError


def get_float(
    params: dict[str, Any],
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
) -> float:
    """``params[key]`` as a float, range-checked; the error names the parameter to fix."""
    raw = params[key]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise EvalkitError(f"defense parameter {key}={raw!r} is not a number") from None
    too_small = minimum is not None and (value <= minimum if strict_min else value < minimum)
    if too_small or (maximum is not None and value > maximum):
        lo = "" if minimum is None else f"{'>' if strict_min else '>='} {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise EvalkitError(
            f"defense parameter {key}={raw!r} must be {' and '.join(p for p in (lo, hi) if p)}"
        )
    return value


def get_int(params: dict[str, Any], key: str, *, minimum: int = 1) -> int:
    """``params[key]`` as an int >= ``minimum``."""
    raw = params[key]
    try:
        value = int(raw)
        if value != float(raw):
            raise ValueError
    except (TypeError, ValueError):
        raise EvalkitError(f"defense parameter {key}={raw!r} must be an integer") from None
    if value < minimum:
        raise EvalkitError(f"defense parameter {key}={raw!r} must be >= {minimum}")
    return value


def get_bool(params: dict[str, Any], key: str) -> bool:
    """``params[key]`` as a bool (accepts true/false/1/0/yes/no strings)."""
    raw = params[key]
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise EvalkitError(f"defense parameter {key}={raw!r} must be true or false")
