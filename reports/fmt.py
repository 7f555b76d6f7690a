"""Text formatting shared by the report's blocks: percentages, config values, missing values.

A value the run directory does not hold (an older schema, a check that did not run) is shown
as :data:`MISSING`, never as 0 or an empty cell that could be mistaken for a number.
"""

from __future__ import annotations

import json
from typing import Any

from reports.runs import as_float

MISSING = "—"


def pct(value: Any, digits: int = 2) -> str:
    """0.4567 -> '45.67' (the unit is in the column header); missing -> :data:`MISSING`."""
    v = as_float(value)
    return MISSING if v is None else f"{100 * v:.{digits}f}"


def count(value: Any) -> str:
    """An integer count with thousands separators; missing -> :data:`MISSING`."""
    v = as_float(value)
    return MISSING if v is None else f"{int(round(v)):,}"


def seconds(value: Any) -> str:
    """A duration in seconds, one decimal; missing -> :data:`MISSING`."""
    v = as_float(value)
    return MISSING if v is None else f"{v:.1f} s"


def pretty(value: Any) -> str:
    """Compact text for a config value: numbers to 4 significant digits, containers as JSON."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
