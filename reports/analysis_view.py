"""One analysis folder (written by ``evalkit analyze`` / :func:`evalkit.analyze`) as template
context: its finding, per-model scalars as one matrix, the layers each model was analysed at,
its figures (embedded as ``data:`` URIs) and its small tables (embedded as HTML tables).

Tables longer than :data:`MAX_TABLE_ROWS` rows or wider than :data:`MAX_TABLE_COLUMNS` columns
(e.g. one row per channel) are named with their file and size instead of being embedded.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

import numpy as np

from reports import plots
from reports.fmt import MISSING, pretty
from reports.runs import AnalysisData, TableFile

MAX_TABLE_ROWS = 80
MAX_TABLE_COLUMNS = 24
MAX_LIST = 12


def flatten(obj: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested dicts as one level with ``a · b`` keys; lists longer than 12 become a count."""
    out = {} if out is None else out
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            flatten(v, f"{prefix} · {k}" if prefix else str(k), out)
    elif isinstance(obj, list) and len(obj) > MAX_LIST:
        out[prefix] = f"[{len(obj)} values]"
    else:
        out[prefix] = obj
    return out


def flat_pairs(obj: Any) -> list[tuple[str, str]]:
    """``(key, text)`` pairs of :func:`flatten`."""
    return [(k, pretty(v)) for k, v in flatten(obj).items()]


def scalar_matrix(findings: Any) -> dict[str, Any] | None:
    """Per-model scalars ``{model: {name: value or nested dict}}`` as one table: a row per
    (flattened) name, a column per model. None when ``findings`` is not keyed by model."""
    if (
        not isinstance(findings, dict)
        or not findings
        or not all(isinstance(v, dict) for v in findings.values())
    ):
        return None
    flat = {str(m): flatten(v) for m, v in findings.items()}
    names: list[str] = []
    for v in flat.values():
        names.extend(k for k in v if k not in names)
    rows = [[n] + [pretty(v[n]) if n in v else MISSING for v in flat.values()] for n in names]
    return {"models": list(flat), "rows": rows}


def _is_grouped(findings: Any) -> bool:
    """``{model: {group: {name: scalar}}}``: every model maps groups (e.g. layers) to flat
    dicts of scalars."""
    return (
        isinstance(findings, dict)
        and bool(findings)
        and all(
            isinstance(v, dict)
            and v
            and all(
                isinstance(g, dict)
                and g
                and not any(isinstance(x, (dict, list)) for x in g.values())
                for g in v.values()
            )
            for v in findings.values()
        )
    )


def grouped_table(findings: Any, group: str = "group") -> dict[str, Any] | None:
    """Per-model scalars nested one level deeper (``{model: {layer: {name: value}}}``) as one
    long table: a row per (model, group), a column per scalar name. None for other shapes."""
    if not _is_grouped(findings):
        return None
    names: list[str] = []
    for by_group in findings.values():
        for values in by_group.values():
            names.extend(str(k) for k in values if str(k) not in names)
    rows = [
        [str(model), str(g)] + [pretty(values[n]) if n in values else MISSING for n in names]
        for model, by_group in findings.items()
        for g, values in by_group.items()
    ]
    return {"columns": ["model", group, *names], "rows": rows}


def _ordered(mapping: Any, order: list[str]) -> Any:
    """``mapping`` with its keys in ``order`` first (analysis.json is written key-sorted)."""
    if not isinstance(mapping, dict) or not order:
        return mapping
    first = {k: mapping[k] for k in order if k in mapping}
    return {**first, **{k: v for k, v in mapping.items() if k not in first}}


def _cell(value: Any) -> tuple[str, bool]:
    """(text, is it a number) of one CSV cell: floats to 4 significant digits, NaN as MISSING."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(float(value))):
        return MISSING, True
    if isinstance(value, (bool, np.bool_)):
        return str(value), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}", True
    return str(value), False


def table_context(table: TableFile) -> dict[str, Any]:
    """An analysis table as ``{name, css, description, file, columns, rows}`` with rows of
    ``(text, numeric)`` cells (embedded), or with ``rows`` None and ``reason`` (too large, or
    unreadable)."""
    import pandas as pd

    base = {
        "name": table.name,
        "css": "table-" + re.sub(r"[^A-Za-z0-9_-]+", "-", table.name),
        "description": table.description,
        "file": table.path.name,
        "columns": [],
        "rows": None,
        "reason": "",
    }
    try:
        df = pd.read_csv(table.path)
    except Exception as exc:  # noqa: BLE001 - a broken table must not fail the report
        return {**base, "reason": f"unreadable ({type(exc).__name__})"}
    if len(df) > MAX_TABLE_ROWS or len(df.columns) > MAX_TABLE_COLUMNS:
        return {
            **base,
            "reason": f"{len(df):,} rows x {len(df.columns)} columns, not embedded",
        }
    return {
        **base,
        "columns": [str(c) for c in df.columns],
        "rows": [[_cell(v) for v in row] for row in df.itertuples(index=False, name=None)],
    }


def layers_by_model(params: Any) -> list[tuple[str, str]]:
    """``(model, "layer3, layer4")`` when the analysis records its layers per model."""
    layers = params.get("layers") if isinstance(params, dict) else None
    if isinstance(layers, dict):
        return [
            (str(m), ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
            for m, v in layers.items()
        ]
    return []


def _ordered_layers(params: Any, order: list[str]) -> Any:
    if isinstance(params, dict) and isinstance(params.get("layers"), dict):
        return {**params, "layers": _ordered(params["layers"], order)}
    return params


def analysis_context(data: AnalysisData) -> dict[str, Any]:
    """Finding, scalar results, layers, embedded plots and tables of one analysis folder."""
    rec = data.record
    models = rec.get("models")
    order = [str(m["label"]) for m in models or [] if isinstance(m, dict) and "label" in m]
    findings = _ordered(rec.get("findings", rec.get("scalars", rec.get("results", {}))), order)
    params = rec.get("params")
    layers = layers_by_model(_ordered_layers(params, order))
    grouped = grouped_table(findings, "layer" if layers else "group")
    matrix = None if grouped else scalar_matrix(findings)
    return {
        "name": data.path.resolve().name,
        "dir": str(data.path),
        "study": rec.get("study", ""),
        "finding": rec.get("finding") or rec.get("summary") or "",
        "models": _models_table(models),
        "models_text": pretty(models) if models and not _models_table(models) else "",
        "matrix": matrix,
        "grouped": grouped,
        "scalars": flat_pairs(findings) if findings and matrix is None and grouped is None else [],
        "layers": layers,
        "params": flat_pairs(params) if isinstance(params, dict) else [],
        "notes": [str(n) for n in rec.get("notes") or []],
        "images": [(caption, plots.file_to_data_uri(path)) for caption, path in data.images],
        "tables": [table_context(t) for t in data.tables],
    }


def _models_table(items: Any) -> dict[str, Any] | None:
    """The analysis's model list (dicts) as a table over the union of their keys."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return None
    keys: list[str] = []
    for item in items:
        keys.extend(k for k in item if k not in keys)
    keys = [k for k in keys if any(i.get(k) not in (None, "", {}, []) for i in items)]
    return {"keys": keys, "rows": [[pretty(i[k]) if k in i else "" for k in keys] for i in items]}
