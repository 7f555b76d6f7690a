"""The 95% interval of every proportion the report shows, read from summary.json.

Run directories written since intervals were added hold ``*_ci`` pairs next to each accuracy
(``clean_accuracy_ci``, ``results[].robust_accuracy_ci``, ``worst_case[].robust_accuracy_ci``,
``per_class[].clean_accuracy_ci`` / ``robust_accuracy_ci``; method in ``intervals``,
docs/protocol.md). For an older run with *exact* scoring the interval is derived from the
recorded counts (Clopper-Pearson on ``n_robust`` of ``n_examples``, the same method); a
Monte-Carlo run without recorded intervals shows none (:data:`reports.fmt.MISSING`), since its
interval needs the per-point scores.
"""

from __future__ import annotations

from typing import Any

from reports.fmt import MISSING, pct
from reports.runs import RunData, as_float


def valid(ci: Any) -> tuple[float, float] | None:
    """``(low, high)`` from a recorded ``[low, high]`` pair, else None."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        low, high = as_float(ci[0]), as_float(ci[1])
        if low is not None and high is not None:
            return low, high
    return None


def _exact(run: RunData) -> bool:
    return str(run.scoring.get("semantics", "")).lower() == "exact"


def derived(count: Any, run: RunData) -> tuple[float, float] | None:
    """Clopper-Pearson from a count of ``run.n_examples`` (exact scoring only)."""
    k, n = as_float(count), run.n_examples
    if not _exact(run) or k is None or not n:
        return None
    from evalkit.evaluation.intervals import clopper_pearson

    return clopper_pearson(k, n)


def row_ci(row: dict[str, Any], run: RunData) -> tuple[float, float] | None:
    """The interval of a result or worst-case row's ``robust_accuracy``."""
    return valid(row.get("robust_accuracy_ci")) or derived(row.get("n_robust"), run)


def clean_ci(run: RunData) -> tuple[float, float] | None:
    """The interval of the clean accuracy."""
    s = run.summary
    return valid(s.get("clean_accuracy_ci")) or derived(s.get("n_clean_correct"), run)


def bounds_text(ci: tuple[float, float] | None) -> str:
    """``[36.7, 48.1]`` (percent, one decimal), or :data:`MISSING`."""
    if ci is None:
        return MISSING
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def pct_ci(value: Any, ci: tuple[float, float] | None) -> str:
    """``42.33 [36.7, 48.1]``: the accuracy in % and its interval (just the accuracy when no
    interval is known, :data:`MISSING` when there is no accuracy)."""
    text = pct(value)
    if text == MISSING or ci is None:
        return text
    return f"{text} {bounds_text(ci)}"


def method_note(run: RunData) -> str:
    """One sentence saying how the run's intervals were computed."""
    block = run.summary.get("intervals")
    if isinstance(block, dict) and block.get("description"):
        return f"95% intervals: {block['description']}."
    if _exact(run):
        return "95% intervals: exact binomial (Clopper-Pearson), derived from the recorded counts."
    return "95% intervals: not recorded in this run directory."
