"""Per-class clean and robust accuracy, from ``summary.json`` or, failing that, ``examples.parquet``.

A robust model can look fine on average while one class collapses, so the report always tries
to show the per-class view. The harness stores ``per_class`` as a list of
``{class, name, n, clean_accuracy, robust_accuracy: {eps_label: acc}}`` (worst case per eps);
older or foreign shapes are accepted too. All are normalised to rows
``{cls, name, n, clean, robust}`` with ``robust`` taken at the headline eps.
"""

from __future__ import annotations

from typing import Any

from reports.intervals import valid
from reports.runs import RunData, as_float, eps_key, fmt_eps


def class_names_for(run: RunData) -> list[str]:
    """Class names of the run's dataset, when evalkit knows the dataset."""
    dataset = run.model.get("dataset") or run.config.get("dataset")
    if not dataset:
        return []
    try:
        from evalkit.data import dataset_info

        return list(dataset_info(str(dataset)).class_names)
    except Exception:  # an unknown dataset name is not worth failing a report over
        return []


def _at_eps(value: Any, eps: Any) -> float | None:
    """A scalar, or the entry for ``eps`` of a dict keyed by eps / a list of {eps, ...} rows."""
    if isinstance(value, dict):
        for k, v in value.items():
            if eps_key(k) == eps_key(eps) or str(k) == fmt_eps(eps):
                return as_float(v)
        return None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and eps_key(item) == eps_key(eps):
                return as_float(item.get("robust_accuracy"))
        return None
    return as_float(value)


def _from_summary(run: RunData, eps: Any) -> list[dict[str, Any]]:
    pc = run.summary.get("per_class")
    rows: list[dict[str, Any]] = []
    if isinstance(pc, dict) and isinstance(pc.get("clean"), list):  # columnar shape
        robust = pc.get("worst_case", pc.get("robust", []))
        if isinstance(robust, dict):
            robust = next((v for k, v in robust.items() if eps_key(k) == eps_key(eps)), [])
        counts = pc.get("n") or []
        for k, clean in enumerate(pc["clean"]):
            rows.append(
                {
                    "cls": k,
                    "clean": as_float(clean),
                    "robust": as_float(robust[k]) if k < len(robust) else None,
                    "n": counts[k] if k < len(counts) else None,
                }
            )
        return rows
    if isinstance(pc, dict):  # keyed by class
        pc = [{"class": k, **v} for k, v in pc.items() if isinstance(v, dict)]
    if isinstance(pc, list):
        for i, entry in enumerate(pc):
            if not isinstance(entry, dict):
                continue
            robust = entry.get("worst_case", entry.get("robust_accuracy", entry.get("robust")))
            robust_ci = entry.get("robust_accuracy_ci")
            rows.append(
                {
                    "cls": entry.get("class", entry.get("label", i)),
                    "name": entry.get("name"),
                    "clean": as_float(entry.get("clean_accuracy", entry.get("clean"))),
                    "robust": _at_eps(robust, eps),
                    "n": entry.get("n", entry.get("n_examples")),
                    "clean_ci": valid(entry.get("clean_accuracy_ci")),
                    "robust_ci": valid(_ci_at_eps(robust_ci, eps)),
                }
            )
    return rows


def _ci_at_eps(value: Any, eps: Any) -> Any:
    """The ``[low, high]`` entry for ``eps`` of a dict keyed by eps label."""
    if isinstance(value, dict):
        for k, v in value.items():
            if eps_key(k) == eps_key(eps) or str(k) == fmt_eps(eps):
                return v
    return None


def _worst_column(columns: Any, eps: Any, suffix: str) -> str | None:
    return next(
        (
            c
            for c in columns
            if c.startswith("worst@")
            and c.endswith(suffix)
            and eps_key(c[len("worst@") : -len(suffix)]) == eps_key(eps)
        ),
        None,
    )


def _from_examples(run: RunData, eps: Any) -> list[dict[str, Any]]:
    """Fallback: per-class means of the parquet's per-example columns.

    Clean: ``clean_p`` (probability correct; 0/1 for exact scoring) or else ``clean_correct``
    or ``clean_pred == label``. Robust: ``worst@EPS:score`` (the robust score, so a Monte-Carlo
    run gives the same mean as the summary) or else ``worst@EPS:robust``.
    """
    path = run.path / "examples.parquet"
    if not path.is_file():
        return []
    try:
        import pandas as pd

        df = pd.read_parquet(path)
    except Exception:
        return []
    if "label" not in df.columns:
        return []
    if "clean_p" in df.columns:
        clean = df["clean_p"].astype(float)
    elif "clean_correct" in df.columns:
        clean = df["clean_correct"].astype(bool).astype(float)
    elif "clean_pred" in df.columns:
        clean = (df["clean_pred"] == df["label"]).astype(float)
    else:
        return []
    score_col = _worst_column(df.columns, eps, ":score")
    robust_col = _worst_column(df.columns, eps, ":robust")
    robust = None
    if score_col:
        robust = df[score_col].astype(float)
    elif robust_col:
        robust = df[robust_col].astype(bool).astype(float)
    from evalkit.evaluation.intervals import score_interval

    draws = int(as_float(run.scoring.get("draws")) or 1)
    rows = []
    for cls, idx in df.groupby("label").groups.items():
        rows.append(
            {
                "cls": int(cls),
                "n": int(len(idx)),
                "clean": float(clean.loc[idx].mean()),
                "robust": float(robust.loc[idx].mean()) if robust is not None else None,
                "clean_ci": tuple(score_interval(clean.loc[idx], draws).bounds),
                "robust_ci": (
                    tuple(score_interval(robust.loc[idx], draws).bounds)
                    if robust is not None
                    else None
                ),
            }
        )
    return rows


def per_class_rows(run: RunData) -> list[dict[str, Any]]:
    """Rows ``{cls, name, n, clean, robust}`` sorted by class, named from the dataset when known."""
    head = run.headline
    eps = head if head else None
    rows = _from_summary(run, eps) or _from_examples(run, eps)
    names = class_names_for(run)
    for r in rows:
        if r.get("name"):
            r["name"] = str(r["name"])
            continue
        try:
            k = int(r["cls"])
        except (TypeError, ValueError):
            k = None
        r["name"] = names[k] if k is not None and 0 <= k < len(names) else str(r["cls"])
    try:
        rows.sort(key=lambda r: int(r["cls"]))
    except (TypeError, ValueError):
        pass
    return rows
