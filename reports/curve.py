"""The robustness curve of a run (summary.json ``curve``, written by ``evaluate(curve=True)``):
robust accuracy at every eps from the minimum-norm attack, drawn beside the fixed-eps worst
cases, with the budgets where the two disagree.

Reads only the run's summary (untrusted: every value goes through :func:`as_float` and is
shown as text); returns None for runs without a curve, so the report shows nothing for them.
"""

from __future__ import annotations

from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

from reports.fmt import pct, pretty
from reports.plots import RC, figure_to_data_uri
from reports.runs import RunData, as_float, fmt_eps


def _points(block: dict[str, Any]) -> list[tuple[float, float]]:
    eps, acc = block.get("eps"), block.get("robust_accuracy")
    if not isinstance(eps, list) or not isinstance(acc, list):
        return []
    pts = [(as_float(e), as_float(a)) for e, a in zip(eps, acc)]
    return sorted((e, a) for e, a in pts if e is not None and a is not None)


def curve_plot(run: RunData, block: dict[str, Any]) -> str | None:
    """Robust accuracy vs eps: the curve as a line, the fixed-eps worst cases (before and
    after the curve's breaks joined them) as markers at the budgets."""
    pts = _points(block)
    if len(pts) < 2:
        return None
    rows = [r for r in block.get("by_budget") or [] if isinstance(r, dict)]
    with rc_context(RC):
        fig = Figure(figsize=(5.2, 3.2))
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(
            [e for e, _ in pts],
            [100 * a for _, a in pts],
            color="#1f77b4",
            lw=1.8,
            label=f"curve ({pretty(block.get('attack'))}, minimum norm)",
        )
        for key, marker, color, label in (
            ("fixed_eps_worst_case", "s", "black", "fixed-eps attacks' worst case"),
            ("worst_case", "x", "#d62728", "worst case (all attacks)"),
        ):
            marks = [(as_float(r.get("eps_value")), as_float(r.get(key))) for r in rows]
            marks = [(e, a) for e, a in marks if e is not None and a is not None]
            if marks:
                ax.plot(
                    [e for e, _ in marks],
                    [100 * a for _, a in marks],
                    ls="none",
                    marker=marker,
                    ms=6,
                    color=color,
                    label=label,
                )
        norm = {"linf": "L∞", "l2": "L2"}.get(str(block.get("norm", "")).lower(), "")
        ax.set_xlabel(f"eps ({norm + ' ' if norm else ''}radius in [0,1] pixel space)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=7, loc="upper right")
        return figure_to_data_uri(fig)


def curve_context(run: RunData) -> dict[str, Any] | None:
    """What the template shows for a run's curve, or None without one."""
    block = run.summary.get("curve")
    if not isinstance(block, dict):
        return None
    rows = []
    budget_rows = [r for r in block.get("by_budget") or [] if isinstance(r, dict)]
    # summary.json keeps the protocol's budget order (the headline eps first); a table read
    # top to bottom as a curve wants increasing eps.
    for r in sorted(budget_rows, key=lambda r: as_float(r.get("eps_value")) or 0.0):
        rows.append(
            {
                "eps": fmt_eps(r.get("eps_value")),
                "curve": pct(r.get("curve")),
                "fixed": pct(r.get("fixed_eps_worst_case")),
                "worst": pct(r.get("worst_case")),
                "only_curve": pretty(r.get("points_only_curve_broke")),
                "only_fixed": pretty(r.get("points_only_fixed_eps_broke")),
            }
        )
    cost = block.get("cost") if isinstance(block.get("cost"), dict) else {}
    fwd, bwd = as_float(cost.get("forward_passes")), as_float(cost.get("backward_passes"))
    return {
        "attack": pretty(block.get("attack")),
        "plot": curve_plot(run, block),
        "rows": rows,
        "n_attacked": pretty(block.get("n_attacked")),
        "n_found": pretty(block.get("n_found")),
        "median_norm": pretty(block.get("median_norm")),
        "cost": f"{int((fwd or 0) + (bwd or 0)):,} propagations, {pretty(cost.get('time_s'))} s",
    }
