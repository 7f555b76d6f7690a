"""Assemble run and analysis records into the template context and render one HTML file.

The HTML is self-contained (inline CSS, figures as ``data:`` URIs, no JavaScript at all) and
carries a Content-Security-Policy that forbids scripts and network fetches, so a report mailed
around or opened from disk shows the same thing everywhere. Jinja2 autoescaping is on: every
string from a run directory (checkpoint paths, configs, flag messages) is shown as text.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from evalkit.utils.io import atomic_write_text
from reports import plots
from reports.analysis_view import analysis_context
from reports.curve import curve_context
from reports.diagnostics_view import diagnostics_context, health_context
from reports.fmt import MISSING, pct, pretty
from reports.intervals import clean_ci, method_note, pct_ci, row_ci
from reports.layout import analysis_tables, board_table, run_tables
from reports.perclass import per_class_rows
from reports.provenance import (
    adaptive_context,
    cost_parts,
    cost_totals,
    fingerprint_rows,
    sanity_budget,
)
from reports.runs import (
    AnalysisData,
    ReportError,
    RunData,
    as_float,
    eps_key,
    fmt_eps,
    load_analysis,
    load_run,
)
from reports.scoring import (
    all_draws_row,
    broken_by_context,
    clean_context,
    headline_context,
    probe_ids,
    scoring_context,
    worst_rows,
)

__all__ = ["MISSING", "build_report", "pct", "pretty", "render_html", "run_context"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


def _pivot(run: RunData) -> dict[str, Any]:
    """Robust accuracy as a table: one row per attack (sanity probes marked), one column per
    eps, plus the worst case and, for a Monte-Carlo run, the worst case on all draws."""
    eps_values = sorted({eps_key(r) for r in run.results} | {eps_key(r) for r in run.worst_case})
    eps_values = [e for e in eps_values if e == e]  # drop NaN
    attacks: dict[str, dict[float, Any]] = {}
    for r in run.results:
        attacks.setdefault(str(r["attack"]), {})[eps_key(r)] = pct_ci(
            r.get("robust_accuracy"), row_ci(r, run)
        )
    probes = probe_ids(run)
    rows = [
        {
            "attack": a,
            "probe": a in probes,
            "cells": [cells[e] if e in cells else "" for e in eps_values],
        }
        for a, cells in attacks.items()
    ]
    worst = {eps_key(r): pct_ci(r.get("robust_accuracy"), row_ci(r, run)) for r in run.worst_case}
    return {
        "eps": [fmt_eps(e) for e in eps_values],
        "rows": rows,
        "cumulative": any(r.get("cumulative") for r in run.results),
        "worst": [worst[e] if e in worst else "" for e in eps_values],
        "all_draws": all_draws_row(run, eps_values),
        "any_probe": bool(probes),
    }


DETAIL_SKIP = {
    "attack",
    "eps",
    "eps_value",
    "robust_accuracy",
    "cumulative",
    "white_box",
    "details",
    "robust_accuracy_ci",
}


def describe_details(value: Any) -> str:
    """An attack's ``details`` record (e.g. AutoAttack: what ran, what was skipped and why, the
    EOT iterations per sub-attack) as one line of text."""
    if not isinstance(value, dict):
        return pretty(value) if value is not None else ""
    parts = []
    for key, item in value.items():
        if item in (None, "", [], {}):
            continue
        if isinstance(item, dict):
            text = ", ".join(f"{k} {pretty(v)}" for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            text = ", ".join(pretty(v) for v in item)
        else:
            text = pretty(item)
        parts.append(f"{key}: {text}")
    return "; ".join(parts)


def _details(run: RunData) -> dict[str, Any]:
    """Every scalar the harness recorded per (attack, eps) row (counts, steps, loss, EOT,
    probe, through_mask), plus the attack's ``details`` record as text."""
    keys: list[str] = []
    for r in run.results:
        for k, v in r.items():
            if k not in DETAIL_SKIP and k not in keys and not isinstance(v, (dict, list)):
                keys.append(k)
    keys = [k for k in keys if any(r.get(k) is not None for r in run.results)]  # drop all-empty
    has_details = any(isinstance(r.get("details"), dict) for r in run.results)
    rows = [
        {
            "attack": r["attack"],
            "eps": fmt_eps(r.get("eps")),
            "acc": pct_ci(r.get("robust_accuracy"), row_ci(r, run)),
            "cells": [pretty(r.get(k)) if k in r else "" for k in keys],
            "details": describe_details(r.get("details")),
        }
        for r in run.results
    ]
    return {"keys": keys, "rows": rows, "has_details": has_details}


def _kv(obj: Any) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return []
    return [(str(k), pretty(v)) for k, v in obj.items()]


def _table(items: Any) -> dict[str, Any] | None:
    """A list of dicts as a table (union of keys), e.g. the protocol's attack list."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return None
    keys: list[str] = []
    for item in items:
        keys.extend(k for k in item if k not in keys)
    keys = [
        k for k in keys if any(i.get(k) not in (None, "", {}, []) for i in items)
    ]  # drop all-empty
    rows: list[list[str]] = []
    for item in items:
        row = [pretty(item.get(k, "")) if k in item else "" for k in keys]
        if row not in rows:  # e.g. one probe plan recorded once per eps
            rows.append(row)
    return {"keys": keys, "rows": rows}


def _protocol(run: RunData) -> dict[str, Any]:
    proto = run.summary.get("protocol") if isinstance(run.summary.get("protocol"), dict) else {}
    scalars, tables = [], []
    for key, value in proto.items():
        table = _table(value)
        if table is not None:
            tables.append((str(key), table))
        else:
            scalars.append((str(key), pretty(value)))
    preset = proto.get("preset") or run.config.get("preset") or run.summary.get("preset")
    return {
        "preset": preset,
        "scalars": scalars,
        "tables": tables,
        "seed": run.summary.get("seed"),
        "adaptive": adaptive_context(run),
        "config": _kv(run.config),
    }


TRAIN_KEYS = (
    "defense_spec",
    "defense",
    "epochs",
    "n_train_used",
    "batch_size",
    "lr",
    "schedule",
    "eps",
    "attack_steps",
    "attack_step_size",
    "beta",
    "objective_beta",
    "defense_params",
    "seed",
)


def _model_card(run: RunData) -> dict[str, Any]:
    m = run.model
    tc = m.get("train_config") if isinstance(m.get("train_config"), dict) else {}
    main = [(k, pretty(tc[k])) for k in TRAIN_KEYS if tc.get(k) not in (None, {}, "")]
    history = m.get("history") if isinstance(m.get("history"), list) else []
    return {
        "fields": [
            (k, pretty(m.get(k)))
            for k in (
                "path",
                "arch",
                "dataset",
                "defense",
                "epoch",
                "num_classes",
                "input_size",
                "foreign",
            )
            if m.get(k) is not None
        ],
        "defense_params": _kv(m.get("defense_params")),
        "arch_kwargs": _kv(m.get("arch_kwargs")),
        "train_main": main or _kv(tc),
        "train_config": _kv(tc),
        "history_plot": plots.history_plot(history),
        "history_single": plots.history_single(history),
        "history_len": len(history),
        "fingerprints": fingerprint_rows(run),
    }


def run_context(run: RunData, anchor: str) -> dict[str, Any]:
    """Everything the template shows for one run."""
    pc_rows = per_class_rows(run)
    head = headline_context(run)
    robust_label = f"worst case @ {head['eps']}" if head else "robust"
    ctx = {
        "anchor": anchor,
        "label": run.label,
        "name": run.name,
        "dir": str(run.path),
        "schema_version": run.schema_version,
        "n": run.n_examples,
        "clean": pct(run.clean_accuracy),
        "clean_detail": clean_context(run),
        "scoring": scoring_context(run),
        "headline": head,
        "worst_rows": worst_rows(run),
        "broken_by": broken_by_context(run),
        "flags": run.flags,
        "card": _model_card(run),
        "protocol": _protocol(run),
        "pivot": _pivot(run),
        "diagnostics": diagnostics_context(run),
        "health": health_context(run),
        "details": _details(run),
        "eps_plot": plots.eps_curve(run),
        "curve": curve_context(run),
        "per_class": [
            {
                **r,
                "clean_pct": pct_ci(r.get("clean"), r.get("clean_ci")),
                "robust_pct": pct_ci(r.get("robust"), r.get("robust_ci")),
            }
            for r in pc_rows
        ],
        "interval_note": method_note(run),
        "per_class_label": robust_label,
        "per_class_plot": plots.per_class_plot(pc_rows, robust_label),
        "cost": cost_totals(run),
        "cost_parts": cost_parts(run),
        "sanity_budget": sanity_budget(run),
        "environment": _kv(run.summary.get("environment")),
    }
    ctx["tables"] = run_tables(ctx)
    return ctx


def _worst_cell(run: RunData, eps: float) -> str:
    """The run's worst case at ``eps`` with its interval ("" when it did not run that eps)."""
    row = next((r for r in run.worst_case if eps_key(r) == eps_key(eps)), None)
    if row is None or as_float(row.get("robust_accuracy")) is None:
        return ""
    return pct_ci(row.get("robust_accuracy"), row_ci(row, run))


def leaderboard(runs: Sequence[RunData], anchors: Sequence[str]) -> dict[str, Any]:
    """Runs ranked by worst-case robust accuracy at the largest eps every run evaluated.

    Ranking at a shared eps keeps the comparison fair; when runs share none, each run's own
    largest eps is used and the table says so.
    """
    eps_sets = [{eps_key(r) for r in run.worst_case} for run in runs]
    common = set.intersection(*eps_sets) if eps_sets else set()
    all_eps = sorted(set().union(*eps_sets)) if eps_sets else []
    rank_eps = max(common) if common else None

    def score(run: RunData) -> float:
        value = (
            run.worst_at(rank_eps)
            if rank_eps is not None
            else (as_float(run.headline["robust_accuracy"]) if run.headline else None)
        )
        return -1.0 if value is None else value

    order = sorted(
        range(len(runs)), key=lambda i: (-score(runs[i]), -(runs[i].clean_accuracy or 0))
    )
    rows = []
    for rank, i in enumerate(order, 1):
        run = runs[i]
        flags = run.flags
        rows.append(
            {
                "rank": rank,
                "anchor": anchors[i],
                "label": run.label,
                "name": run.name,
                "clean": pct_ci(run.clean_accuracy, clean_ci(run)),
                "score": pct(score(run)) if score(run) >= 0 else MISSING,
                "cells": [_worst_cell(run, e) for e in all_eps],
                "n": run.n_examples,
                "flags": len(flags),
                "preset": _protocol(run)["preset"],
                "scoring": scoring_context(run)["short"],
            }
        )
    board = {
        "rank_eps": fmt_eps(rank_eps) if rank_eps is not None else None,
        "eps": [fmt_eps(e) for e in all_eps],
        "rows": rows,
        "plot": plots.comparison_plot([runs[i] for i in order], [runs[i].label for i in order]),
    }
    board["table"] = board_table(board)
    return board


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,  # every value from a run directory is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty
    return env


def render_html(
    runs: Sequence[RunData],
    analyses: Sequence[AnalysisData] = (),
    *,
    title: str | None = None,
    findings: Sequence[dict[str, Any]] = (),
) -> str:
    """The report as one HTML string. ``findings`` are a study's verdicts (claim, verdict,
    numbers, explanation), shown first when given."""
    if not runs and not analyses:
        raise ReportError(
            "nothing to report: pass at least one folder written by 'evalkit attack' "
            "(or --analysis DIR written by 'evalkit analyze')"
        )
    from evalkit import __version__

    used: set[str] = set()
    anchors = [_slug(f"run-{run.name}", used) for run in runs]
    contexts = [run_context(run, a) for run, a in zip(runs, anchors)]
    n_flags = sum(len(c["flags"]) for c in contexts)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title
            or (
                "Robustness report"
                + (f": {runs[0].label}" if len(runs) == 1 else f" ({len(runs)} models)")
            ),
            findings=[_finding_context(f) for f in findings],
            generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            version=__version__,
            runs=contexts,
            board=leaderboard(runs, anchors) if len(runs) > 1 else None,
            analyses=[_analysis_view(a, _slug(f"analysis-{_study(a)}", used)) for a in analyses],
            n_flags=n_flags,
        )
    )


def _analysis_view(data: AnalysisData, anchor: str) -> dict[str, Any]:
    ctx = {**analysis_context(data), "anchor": anchor}
    ctx["tables_view"] = analysis_tables(ctx)
    return ctx


def _study(data: AnalysisData) -> str:
    return str(data.record.get("study") or data.path.resolve().name)


def _finding_context(f: dict[str, Any]) -> dict[str, Any]:
    numbers = f.get("numbers") or {}
    return {
        "claim": str(f.get("claim", "")),
        "verdict": str(f.get("verdict", "")),
        "css": re.sub(r"[^a-z]+", "-", str(f.get("verdict", "")).lower()),
        "explanation": str(f.get("explanation", "")),
        "mechanism": str(f.get("mechanism", "")),
        "numbers": [(str(k), pretty(v)) for k, v in numbers.items() if not isinstance(v, dict)],
    }


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    analysis_dirs: Sequence[str | Path] = (),
    pdf: str | Path | None = None,
    title: str | None = None,
    findings: Sequence[dict[str, Any]] = (),
) -> dict[str, Path]:
    """Render run (and analysis) directories to ``out`` (HTML) and optionally ``pdf``.

    Returns the written paths, keyed ``html`` and ``pdf``.
    """
    for target, flag in ((Path(out), "-o"), (Path(pdf) if pdf is not None else None, "--pdf")):
        if target is not None and target.is_dir():
            raise ReportError(
                f"{flag} {target} is a folder (give a file name, e.g. {target / 'report.html'})"
            )
    runs = [load_run(d) for d in run_dirs]
    analyses = [load_analysis(d) for d in analysis_dirs]
    html = render_html(runs, analyses, title=title, findings=findings)
    out = Path(out)
    atomic_write_text(out, html)
    written = {"html": out}
    if pdf is not None:
        from reports.pdf import html_to_pdf

        written["pdf"] = html_to_pdf(html, pdf)
    for path in written.values():
        path.chmod(0o644)  # a report is meant to be shared (the atomic writer creates 0600 files)
    return written
