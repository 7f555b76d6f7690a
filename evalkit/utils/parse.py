"""The one parser per value a user writes: eps budgets, normalization, comma lists.

CLI, Python API, training, analyses and studies all call these, so a flag and its API twin
give the same value or the same one-line :class:`~evalkit.errors.EvalkitError`. Range and
finiteness are checked here, once, at the edge; callers downstream trust the floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.utils.suggest import eps_hint, with_hint

NORMS = ("linf", "l2")
_READ_HELP = "(write it like 8/255 or 0.031)"
_NORMALIZE_HELP = "(write 'MEAN,STD' or 'M1,M2,M3;S1,S2,S3', stds > 0)"


def check_norm(norm: str | None, default: str = "linf") -> str:
    """``linf``/``l2`` (case-insensitive); anything else is a one-line error."""
    value = (norm or default).strip().lower()
    if value not in NORMS:
        raise EvalkitError(f"norm must be linf or l2, not {norm!r}")
    return value


def max_eps(norm: str, input_shape: Sequence[int] | None) -> float:
    """Largest meaningful radius: 1 for Linf; the image diameter sqrt(C*H*W) for L2."""
    if norm == "linf" or not input_shape:
        return 1.0 if norm == "linf" else math.inf
    return math.sqrt(math.prod(int(s) for s in input_shape))


def _read_eps(raw: str | float) -> float:
    """A number from ``8/255``, ``0.031`` or a Python number; bools are refused (True is not 1)."""
    if isinstance(raw, bool):
        raise EvalkitError(f"cannot read eps {raw!r} {_READ_HELP}")
    if isinstance(raw, (int, float)):
        return float(raw)
    text = str(raw).strip()
    try:
        if "/" not in text:
            return float(text)
        num, _, den = text.partition("/")
        if "/" in den:
            raise ValueError(text)
        # Fraction keeps 8/255 exact before the one rounding; it refuses 0.5/255, floats don't.
        return float(Fraction(num) / Fraction(den))
    except (ValueError, ZeroDivisionError):
        raise EvalkitError(f"cannot read eps {text!r} {_READ_HELP}") from None


def _eps_label(raw: str | float, value: float) -> str:
    """What keys records and tables: the text as written, or ``f"{value:g}"`` for a number."""
    return str(raw).strip() if isinstance(raw, str) else f"{value:g}"


def _check_range(value: float, label: str, norm: str, top: float, allow_zero: bool) -> None:
    """Finite and in ``(0, top]`` (``[0, top]`` with ``allow_zero``), else a one-line error."""
    low_ok = value >= 0 if allow_zero else value > 0
    if math.isfinite(value) and low_ok and value <= top:
        return
    opening = "[0" if allow_zero else "(0"
    where = (
        f"{opening}, 1]: pixels live in [0, 1]"
        if norm == "linf"
        else f"{opening}, {top:.4g}], the diameter of the input"
        if math.isfinite(top)
        else f"{opening}, inf)"
    )
    raise EvalkitError(
        with_hint(
            f"eps {label} is out of range for {norm}: it must be in {where}", eps_hint(value, norm)
        )
    )


def parse_eps(
    text: str | float,
    *,
    allow_zero: bool = False,
    norm: str = "linf",
    input_shape: Sequence[int] | None = None,
) -> float:
    """One budget from ``8/255``, ``0.031`` or a number, checked against ``norm``'s range.

    Linf radii lie in (0, 1] (pixels live in [0, 1]); L2 radii in (0, sqrt(C*H*W)] when the
    input shape is known. ``allow_zero`` admits 0 (a step size of 0 means "no step").
    """
    n = check_norm(norm)
    value = _read_eps(text)
    _check_range(value, _eps_label(text, value), n, max_eps(n, input_shape), allow_zero)
    return value


def parse_eps_items(
    eps: str | float | Sequence[str | float],
    norm: str = "linf",
    *,
    input_shape: Sequence[int] | None = None,
) -> list[tuple[str, float]]:
    """``[(label, value), ...]`` from ``"8/255,4/255"``, one number, or a list of either.

    Each value is checked as :func:`parse_eps` checks it; a label given twice is refused
    (records are keyed by label, so the second would overwrite the first).
    """
    n = check_norm(norm)
    if isinstance(eps, bool):
        _read_eps(eps)  # one-line error
    if isinstance(eps, str):
        items: list[str | float] = [t.strip() for t in eps.split(",") if t.strip()]
    elif isinstance(eps, (int, float)):
        items = [eps]
    else:
        items = list(eps)
    if not items:
        raise EvalkitError("eps is empty (give e.g. 8/255 or 8/255,4/255)")
    out: list[tuple[str, float]] = []
    for raw in items:
        value = parse_eps(raw, norm=n, input_shape=input_shape)
        label = _eps_label(raw, value)
        if any(seen == label for seen, _ in out):
            raise EvalkitError(f"eps {label} is given twice (list each budget once)")
        out.append((label, value))
    return out


def parse_floats(text: str, n: int | None = None, name: str = "value") -> tuple[float, ...]:
    """Parse a comma-separated list of floats such as ``0.5,0.5,0.5``."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise EvalkitError(f"cannot read {name} {text!r} (comma-separated numbers)") from None
    if n is not None and len(vals) not in (1, n):
        raise EvalkitError(f"{name} needs 1 or {n} numbers, got {len(vals)}")
    return vals


def _normalize_numbers(values: Any, raw: Any) -> list[float]:
    try:
        return [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    except (TypeError, ValueError):
        raise EvalkitError(f"cannot read normalize {raw!r} {_NORMALIZE_HELP}") from None


def parse_normalize(text: Any) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` from ``'MEAN,STD'``, ``'M1,M2,M3;S1,S2,S3'`` or a ``(mean, std)`` pair.

    None or blank means no normalization. Means must be finite, stds finite and positive (a
    std of 0 divides by zero inside the model); mean and std have the same count, or one of
    them is a single number shared by every channel. A lone number such as ``"0.5"`` is
    refused: it is not one of the documented forms, and reading it as mean = std = 0.5
    would be a guess.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise EvalkitError(f"cannot read normalize {text!r} {_NORMALIZE_HELP}")
        mean, std = _normalize_numbers(text[0], text), _normalize_numbers(text[1], text)
    else:
        raw = str(text).strip()
        if ";" in raw:
            m, s = raw.split(";", 1)
            parts = (m.split(","), s.split(","))
        elif raw.count(",") == 1:
            m, s = raw.split(",")
            parts = ([m], [s])
        else:
            raise EvalkitError(f"cannot read normalize {raw!r} {_NORMALIZE_HELP}")
        mean, std = _normalize_numbers(parts[0], raw), _normalize_numbers(parts[1], raw)
    if not mean or not std or not all(math.isfinite(v) for v in mean + std):
        raise EvalkitError(f"normalize needs finite means and positive finite stds, got {text!r}")
    if any(v <= 0 for v in std):
        raise EvalkitError(f"normalize needs finite means and positive finite stds, got {text!r}")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise EvalkitError(
            f"normalize has {len(mean)} means but {len(std)} stds (give one per channel, or one)"
        )
    return mean, std


def parse_value(text: str) -> bool | int | float | str:
    """A ``KEY=VALUE`` value: ``true``/``false`` (any case) a bool, then an int, then a finite
    float, else the text itself. NaN and infinities are refused: no defense or analysis
    parameter means anything at them, and a typo such as ``inf`` should not run for hours."""
    raw = text.strip()
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            number = kind(raw)
        except ValueError:
            continue
        if not math.isfinite(number):
            raise EvalkitError(f"the value {raw!r} must be a finite number")
        return number
    return raw


def parse_key_values(items: Sequence[str] | None, flag: str = "--param") -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the repeatable ``--param`` / ``--option`` flags) into a dict,
    each value read by :func:`parse_value`. A missing ``=``, an empty key or a key given
    twice (the second would silently win) is a one-line error naming ``flag``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise EvalkitError(f"{flag} {item!r} must be KEY=VALUE (e.g. {flag} sap_frac=0.5)")
        if key in out:
            raise EvalkitError(f"{flag} {key} is given twice (give each key once)")
        try:
            out[key] = parse_value(value)
        except EvalkitError as err:
            raise EvalkitError(f"{flag} {key}={value.strip()}: {err}") from None
    return out
