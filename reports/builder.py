"""Assemble run and analysis records into the template context and render one HTML file.

The HTML is self-contained (inline CSS, figures as ``data:`` URIs, no JavaScript at all) and
carries a Content-Security-Policy that forbids scripts and network fetches, so a report mailed
around or opened from disk shows the same thing everywhere. Jinja2 autoescaping is on: every
string from a run directory (checkpoint paths, configs, flag messages) is shown as text.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from evalkit.utils.io import atomic_write_text
from reports import plots
from reports.perclass import per_class_rows
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

TEMPLATE_DIR = Path(__file__).parent / "templates"


def pct(value: Any, digits: int = 2) -> str:
    """0.4567 -> '45.67' (the unit is in the column header); missing -> '–'."""
    v = as_float(value)
    return "–" if v is None else f"{100 * v:.{digits}f}"


def pretty(value: Any) -> str:
    """Compact text for a config value: numbers to 4 significant digits, containers as JSON."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


def _pivot(run: RunData) -> dict[str, Any]:
    """Robust accuracy as a table: one row per attack, one column per eps, plus the worst case."""
    eps_values = sorted({eps_key(r) for r in run.results} | {eps_key(r) for r in run.worst_case})
    eps_values = [e for e in eps_values if e == e]  # drop NaN
    attacks: dict[str, dict[float, Any]] = {}
    for r in run.results:
        attacks.setdefault(str(r["attack"]), {})[eps_key(r)] = r.get("robust_accuracy")
    rows = [
        {"attack": a, "cells": [pct(cells.get(e)) if e in cells else "" for e in eps_values]}
        for a, cells in attacks.items()
    ]
    worst = {eps_key(r): r.get("robust_accuracy") for r in run.worst_case}
    return {
        "eps": [fmt_eps(e) for e in eps_values],
        "rows": rows,
        "cumulative": any(r.get("cumulative") for r in run.results),
        "worst": [pct(worst.get(e)) if e in worst else "" for e in eps_values],
    }


DETAIL_SKIP = {"attack", "eps", "eps_value", "robust_accuracy", "cumulative", "white_box"}


def _details(run: RunData) -> dict[str, Any]:
    """Every scalar the harness recorded per (attack, eps) row, e.g. counts, steps, loss, EOT."""
    keys: list[str] = []
    for r in run.results:
        for k, v in r.items():
            if k not in DETAIL_SKIP and k not in keys and not isinstance(v, (dict, list)):
                keys.append(k)
    keys = [k for k in keys if any(r.get(k) is not None for r in run.results)]  # drop all-empty
    rows = [
        {
            "attack": r["attack"],
            "eps": fmt_eps(r.get("eps")),
            "acc": pct(r.get("robust_accuracy")),
            "cells": [pretty(r.get(k)) if k in r else "" for k in keys],
        }
        for r in run.results
    ]
    return {"keys": keys, "rows": rows}


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
    return {
        "keys": keys,
        "rows": [[pretty(i.get(k, "")) if k in i else "" for k in keys] for i in items],
    }


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
    adaptive = run.summary.get("adaptive") or []
    return {
        "preset": preset,
        "scalars": scalars,
        "tables": tables,
        "seed": run.summary.get("seed"),
        "adaptive": _table(adaptive) if _table(adaptive) else None,
        "adaptive_text": [pretty(a) for a in adaptive] if adaptive and not _table(adaptive) else [],
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
        "history_len": len(history),
    }


def _cost(run: RunData) -> list[tuple[str, str]]:
    cost = run.summary.get("cost") if isinstance(run.summary.get("cost"), dict) else {}
    out = []
    for k, v in cost.items():
        f = as_float(v)
        if f is not None and k.endswith("_s"):
            out.append((k, f"{f:.1f} s"))
        elif f is not None and float(f).is_integer():
            out.append((k, f"{int(f):,}"))
        else:
            out.append((k, pretty(v)))
    return out


def run_context(run: RunData, anchor: str) -> dict[str, Any]:
    """Everything the template shows for one run."""
    head = run.headline
    pc_rows = per_class_rows(run)
    robust_label = f"worst case @ {fmt_eps(head['eps'])}" if head else "robust"
    return {
        "anchor": anchor,
        "label": run.label,
        "name": run.name,
        "dir": str(run.path),
        "n": run.n_examples,
        "clean": pct(run.clean_accuracy),
        "headline": {"eps": fmt_eps(head["eps"]), "acc": pct(head["robust_accuracy"])}
        if head
        else None,
        "flags": run.flags,
        "card": _model_card(run),
        "protocol": _protocol(run),
        "pivot": _pivot(run),
        "details": _details(run),
        "eps_plot": plots.eps_curve(run),
        "per_class": [
            {**r, "clean_pct": pct(r.get("clean")), "robust_pct": pct(r.get("robust"))}
            for r in pc_rows
        ],
        "per_class_label": robust_label,
        "per_class_plot": plots.per_class_plot(pc_rows, robust_label),
        "cost": _cost(run),
        "environment": _kv(run.summary.get("environment")),
    }


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
                "clean": pct(run.clean_accuracy),
                "score": pct(score(run)) if score(run) >= 0 else "–",
                "cells": [
                    pct(run.worst_at(e)) if run.worst_at(e) is not None else "" for e in all_eps
                ],
                "n": run.n_examples,
                "flags": len(flags),
                "preset": _protocol(run)["preset"],
            }
        )
    return {
        "rank_eps": fmt_eps(rank_eps) if rank_eps is not None else None,
        "eps": [fmt_eps(e) for e in all_eps],
        "rows": rows,
        "plot": plots.comparison_plot([runs[i] for i in order], [runs[i].label for i in order]),
    }


def _flatten_scalars(obj: Any, prefix: str = "", out: list | None = None) -> list[tuple[str, str]]:
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten_scalars(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, list) and len(obj) > 12:
        out.append((prefix, f"[{len(obj)} values]"))
    else:
        out.append((prefix, pretty(obj)))
    return out


def _matrix(findings: Any) -> dict[str, Any] | None:
    """Per-model scalar dicts ``{model: {name: value}}`` as one table: a row per name, a column per model."""
    if (
        not isinstance(findings, dict)
        or not findings
        or not all(isinstance(v, dict) for v in findings.values())
    ):
        return None
    models = [str(m) for m in findings]
    names: list[str] = []
    for v in findings.values():
        names.extend(k for k in v if k not in names)
    rows = [[n] + [pretty(v.get(n)) if n in v else "" for v in findings.values()] for n in names]
    return {"models": models, "rows": rows}


def analysis_context(data: AnalysisData) -> dict[str, Any]:
    """Finding, scalar results and embedded plots of one analysis directory."""
    rec = data.record
    findings = rec.get("findings", rec.get("scalars", rec.get("results", {})))
    matrix = _matrix(findings)
    models = rec.get("models")
    return {
        "name": data.path.resolve().name,
        "dir": str(data.path),
        "study": rec.get("study", ""),
        "finding": rec.get("finding") or rec.get("summary") or "",
        "models": _table(models) if _table(models) else None,
        "models_text": pretty(models) if models and not _table(models) else "",
        "matrix": matrix,
        "scalars": _flatten_scalars(findings) if findings and matrix is None else [],
        "params": _flatten_scalars(rec.get("params"))
        if isinstance(rec.get("params"), dict)
        else [],
        "notes": [str(n) for n in rec.get("notes") or []],
        "images": [(caption, plots.file_to_data_uri(path)) for caption, path in data.images],
    }


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
            analyses=[analysis_context(a) for a in analyses],
            n_flags=n_flags,
        )
    )


def _finding_context(f: dict[str, Any]) -> dict[str, Any]:
    numbers = f.get("numbers") or {}
    return {
        "claim": str(f.get("claim", "")),
        "verdict": str(f.get("verdict", "")),
        "css": re.sub(r"[^a-z]+", "-", str(f.get("verdict", "")).lower()),
        "explanation": str(f.get("explanation", "")),
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
