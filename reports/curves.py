"""Accuracy vs eps with 95% error bars: one plotting function for every curve of the report.

:func:`accuracy_vs_eps` draws any list of :class:`Series` (points ``(eps, accuracy, low,
high)``), so another curve (e.g. a minimum-norm attack's robustness curve) is overlaid by adding
a series: ``accuracy_vs_eps([*run_series(run), extra])``. :func:`run_series` gives a run's
per-attack curves and its worst case, :func:`worst_series` only the worst case (the
leaderboard's comparison plot uses one per run). Clean accuracy sits at eps = 0 with its own
interval. Legends sit outside the axes, right of the data, so no line end is hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reports.intervals import clean_ci, row_ci
from reports.runs import RunData, as_float, eps_value, fmt_eps

WORST_STYLE = {"color": "black", "lw": 2.0, "ls": "--", "marker": "s", "ms": 4.5, "zorder": 5}


@dataclass
class Series:
    """One curve: ``points`` are ``(eps, accuracy, low, high)`` with accuracy and bounds in
    [0, 1] (bounds None when unknown); ``style`` holds matplotlib line keywords; ``bars``: draw
    the interval as error bars."""

    label: str
    points: list[tuple[float, float, float | None, float | None]]
    style: dict = field(default_factory=dict)
    bars: bool = True


def _with_clean(run: RunData, points: list) -> list:
    clean = run.clean_accuracy
    if clean is None:
        return sorted(points)
    ci = clean_ci(run)
    return [(0.0, clean, *(ci or (None, None))), *sorted(points)]


def worst_series(run: RunData, label: str = "worst case", style: dict | None = None) -> Series:
    """The run's worst case per eps (clean accuracy at eps 0), with intervals."""
    pts = []
    for r in run.worst_case:
        e, a = eps_value(r), as_float(r.get("robust_accuracy"))
        if e is not None and a is not None:
            ci = row_ci(r, run)
            pts.append((e, a, *(ci or (None, None))))
    return Series(label, _with_clean(run, pts), dict(WORST_STYLE if style is None else style))


def run_series(run: RunData) -> list[Series]:
    """Per-attack curves (thin, faint error bars) and the worst case (bold, dashed)."""
    by_attack: dict[str, list] = {}
    for r in run.results:
        e, a = eps_value(r), as_float(r.get("robust_accuracy"))
        if e is not None and a is not None:
            ci = row_ci(r, run)
            by_attack.setdefault(str(r["attack"]), []).append((e, a, *(ci or (None, None))))
    out = [
        Series(attack, _with_clean(run, pts), {"lw": 1.0, "marker": "o", "ms": 3, "alpha": 0.85})
        for attack, pts in sorted(by_attack.items())
    ]
    worst = worst_series(run)
    if len(worst.points) > (1 if run.clean_accuracy is not None else 0):
        out.append(worst)
    return out


def accuracy_vs_eps(
    series: Sequence[Series],
    *,
    norm: str = "",
    ylabel: str = "accuracy (%)",
    width: float = 6.4,
) -> str | None:
    """The figure as a ``data:`` URI (None when no series has a point). Error bars are the 95%
    intervals; x ticks are the eps values of the points."""
    from reports.plots import PALETTE, RC, figure_to_data_uri, legend_outside, rc_context

    series = [s for s in series if s.points]
    if not series:
        return None
    from matplotlib.figure import Figure

    with rc_context(RC):
        fig = Figure(figsize=(width, 3.3))
        ax = fig.add_subplot(1, 1, 1)
        colors = iter(PALETTE)
        for s in series:
            style = dict(s.style)
            style.setdefault("color", next(colors, "#7f7f7f"))
            xs = [p[0] for p in s.points]
            ys = [100 * p[1] for p in s.points]
            if s.bars and any(p[2] is not None for p in s.points):
                lows = [100 * (p[1] - p[2]) if p[2] is not None else 0.0 for p in s.points]
                highs = [100 * (p[3] - p[1]) if p[3] is not None else 0.0 for p in s.points]
                strong = style.get("lw", 1.0) >= 1.5
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lows, highs],
                    capsize=3 if strong else 2,
                    elinewidth=1.2 if strong else 0.7,
                    label=s.label,
                    **style,
                )
            else:
                ax.plot(xs, ys, label=s.label, **style)
        ticks = sorted({p[0] for s in series for p in s.points})
        ax.set_xticks(ticks)
        ax.set_xticklabels([fmt_eps(t) for t in ticks], rotation=45 if len(ticks) > 5 else 0)
        norm_text = {"linf": "L∞", "l2": "L2"}.get(norm.lower(), "")
        ax.set_xlabel(f"eps ({norm_text + ' ' if norm_text else ''}radius, [0, 1] pixel scale)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
        legend_outside(ax)
        fig.tight_layout()
        return figure_to_data_uri(fig)
