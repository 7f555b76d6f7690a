"""What a run's numbers mean and where its breaks came from: the scoring semantics, clean
accuracy, the worst case per eps and its "first broken by" breakdown.

The harness (summary.json schema 2, docs/run-directory.md) scores a deterministic model exactly
(a point is robust when its clean input and every candidate of every attack, sanity probes
included, are classified correctly) and a randomized model by Monte Carlo: each candidate is
classified ``draws`` times, a point's robust score is the minimum share of correct draws over its
candidates, robust accuracy is the mean score (with its Monte-Carlo standard error) and "correct
on all draws" counts the points whose score is 1. A report of a randomized model shows both.
Schema-1 run directories hold none of these keys; every block then shows
:data:`reports.fmt.MISSING`.
"""

from __future__ import annotations

from typing import Any

from reports.fmt import MISSING, count, pct
from reports.intervals import bounds_text, clean_ci, row_ci
from reports.runs import RunData, as_float, eps_key, fmt_eps


def scoring_context(run: RunData) -> dict[str, Any]:
    """``{semantics, badge, short, draws, description, mc}`` for the run's scoring line.

    ``semantics`` is ``exact``, ``monte-carlo`` or None (not recorded: a schema-1 run);
    ``badge`` is the text shown under the headline, ``short`` the leaderboard's.
    """
    scoring = run.scoring
    semantics = scoring.get("semantics")
    draws = as_float(scoring.get("draws"))
    n_draws = str(int(draws)) if draws is not None else "?"
    if run.monte_carlo:
        badge = f"Monte Carlo · {n_draws} draws per candidate"
        short = f"Monte Carlo ({n_draws} draws)"
    elif semantics:
        badge = "exact (deterministic, one pass per candidate)"
        short = "exact"
    else:
        badge = short = MISSING
    return {
        "semantics": str(semantics) if semantics else None,
        "badge": badge,
        "short": short,
        "draws": int(draws) if draws is not None else None,
        "description": str(scoring.get("description") or ""),
        "mc": run.monte_carlo,
    }


def clean_context(run: RunData) -> dict[str, str]:
    """Clean accuracy (mean over draws for a randomized model), its Monte-Carlo standard error,
    the share correct on every draw, and the count correct on every draw (all in %, as text)."""
    s = run.summary
    return {
        "mean": pct(s.get("clean_accuracy")),
        "ci": bounds_text(clean_ci(run)),
        "se": pct(s.get("clean_mc_std_error")),
        "all_draws": pct(s.get("clean_accuracy_all_draws")),
        "n_correct": count(s.get("n_clean_correct")),
    }


def worst_rows(run: RunData) -> list[dict[str, str]]:
    """One row per eps of the worst case: robust accuracy (mean robust score), its 95% interval,
    its Monte-Carlo standard error, the share correct on all draws, and the count of robust points."""
    return [
        {
            "eps": fmt_eps(r.get("eps") if r.get("eps") is not None else r.get("eps_value")),
            "acc": pct(r.get("robust_accuracy")),
            "ci": bounds_text(row_ci(r, run)),
            "se": pct(r.get("mc_std_error")),
            "all_draws": pct(r.get("robust_accuracy_all_draws")),
            "n_robust": count(r.get("n_robust")),
        }
        for r in run.worst_case
    ]


def headline_context(run: RunData) -> dict[str, str] | None:
    """The worst case at the largest eps: robust accuracy, and for Monte Carlo its s.e. and the
    share correct on all draws."""
    head = run.headline
    if not head:
        return None
    return {
        "eps": fmt_eps(head["eps"] if head.get("eps") is not None else head.get("eps_value")),
        "acc": pct(head.get("robust_accuracy")),
        "ci": bounds_text(row_ci(head, run)),
        "se": pct(head.get("mc_std_error")),
        "all_draws": pct(head.get("robust_accuracy_all_draws")),
    }


def probe_ids(run: RunData) -> set[str]:
    """Attack ids of the sanity probes (scored rows whose breaks count in the worst case)."""
    return {str(r["attack"]) for r in run.results if r.get("probe")}


def broken_by_context(run: RunData) -> dict[str, Any] | None:
    """The "first broken by" breakdown of the worst case: per eps, how many points each source
    (``clean``, then each attack in protocol order, sanity probes included) took down, how many
    stayed robust, and the total (which equals the number of examples when the record is
    complete). None when no worst-case row records ``broken_by`` (schema 1)."""
    rows = [r for r in run.worst_case if isinstance(r.get("broken_by"), dict)]
    if not rows:
        return None
    order = ["clean"] + list(dict.fromkeys(str(r["attack"]) for r in run.results))
    extra = sorted({str(k) for r in rows for k in r["broken_by"]} - set(order))
    sources = [s for s in order + extra if any(s in r["broken_by"] for r in rows)]
    probes = probe_ids(run)
    out = []
    for r in rows:
        counts = {str(k): as_float(v) or 0.0 for k, v in r["broken_by"].items()}
        robust = as_float(r.get("n_robust"))
        total = sum(counts.values()) + (robust or 0.0)
        out.append(
            {
                "eps": fmt_eps(r.get("eps") if r.get("eps") is not None else r.get("eps_value")),
                "cells": [count(counts[s]) if s in counts else "0" for s in sources],
                "robust": count(robust),
                "total": count(total),
            }
        )
    return {
        "sources": [{"id": s, "probe": s in probes} for s in sources],
        "rows": out,
        "n": count(run.n_examples),
    }


def all_draws_row(run: RunData, eps_columns: list[float]) -> list[str] | None:
    """For a Monte-Carlo run: the worst case's "correct on all draws" per eps column of the
    robust-accuracy table (None for an exact or schema-1 run)."""
    if not run.monte_carlo:
        return None
    by_eps = {eps_key(r): r.get("robust_accuracy_all_draws") for r in run.worst_case}
    return [pct(by_eps.get(e)) if e in by_eps else "" for e in eps_columns]
