"""Read evaluation run directories and analysis directories into plain, tolerant records.

The harness and the analysis tools are written by others and grow new keys over time, so
this module is the single place that knows their file layout. Everything optional defaults
to empty; only a missing or unreadable ``summary.json`` is an error (the user pointed at the
wrong folder).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError

SEVERITY_ORDER = {
    "critical": 0,
    "error": 0,
    "high": 1,
    "warning": 2,
    "warn": 2,
    "medium": 2,
    "info": 3,
    "low": 3,
}


class ReportError(EvalkitError):
    """A report input (run or analysis directory) is missing or unreadable."""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(
            f"{what} not found: {path} (pass a directory written by "
            f"'evalkit {'attack' if 'summary' in path.name else 'analyze'}')"
        ) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc} (rerun the command that wrote it)") from None


def fmt_eps(eps: Any) -> str:
    """Show eps as ``8/255`` when it is a multiple of 1/255 (how papers write it), else 4 digits."""
    value = eps_value(eps)
    if value is None:
        return str(eps)
    if value == 0:
        return "0"
    k = value * 255
    if abs(k - round(k)) < 1e-4 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{value:.4g}"


def as_float(value: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / NaN values."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def eps_value(eps: Any) -> float | None:
    """Eps as a float from a number, a label like ``"8/255"``, or a result row (``eps_value``)."""
    if isinstance(eps, dict):
        return (
            eps_value(eps.get("eps_value"))
            if eps.get("eps_value") is not None
            else eps_value(eps.get("eps"))
        )
    value = as_float(eps)
    if value is None and isinstance(eps, str):
        num, _, den = eps.strip().partition("/")
        try:
            value = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            return None
    return value


def eps_key(eps: Any) -> float:
    """Eps rounded so 8/255 written by two runs (as a label or a float) compares equal."""
    value = eps_value(eps)
    return round(value, 8) if value is not None else float("nan")


@dataclass
class RunData:
    """One evaluation run directory, normalised for rendering."""

    path: Path
    name: str
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> dict[str, Any]:
        model = self.summary.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def clean_accuracy(self) -> float | None:
        return as_float(self.summary.get("clean_accuracy"))

    @property
    def n_examples(self) -> int | None:
        value = as_float(self.summary.get("n_examples"))
        return int(value) if value is not None else None

    @property
    def schema_version(self) -> int:
        """1 for run directories written before the rewritten harness (no ``schema_version``)."""
        value = as_float(self.summary.get("schema_version"))
        return int(value) if value is not None else 1

    @property
    def scoring(self) -> dict[str, Any]:
        """``{semantics: exact | monte-carlo, draws, description}``; empty for schema-1 runs."""
        scoring = self.summary.get("scoring")
        return scoring if isinstance(scoring, dict) else {}

    @property
    def monte_carlo(self) -> bool:
        """True when the run scored a randomized model by Monte Carlo over several draws."""
        return str(self.scoring.get("semantics", "")).lower() == "monte-carlo"

    @property
    def results(self) -> list[dict[str, Any]]:
        """Result rows, one per (attack, eps): a row repeated verbatim is shown once. The masking
        diagnostics' rows are left out (their breaks are in the worst case; their independent
        numbers are shown in their own section, :mod:`reports.diagnostics_view`)."""
        rows = self.summary.get("results") or []
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, float]] = set()
        for r in rows:
            if not isinstance(r, dict) or "attack" not in r or r.get("diagnostic"):
                continue
            key = (str(r["attack"]), eps_key(r))
            if key in seen:
                continue
            seen.add(key)
            out.append(r)
        return out

    @property
    def worst_case(self) -> list[dict[str, Any]]:
        rows = [r for r in (self.summary.get("worst_case") or []) if isinstance(r, dict)]
        if not rows and self.results:  # derive it: the minimum over attacks at each eps
            best: dict[float, dict[str, Any]] = {}
            for r in self.results:
                acc = as_float(r.get("robust_accuracy"))
                key = eps_key(r)
                if acc is not None and (key not in best or acc < best[key]["robust_accuracy"]):
                    best[key] = {
                        "eps": r.get("eps"),
                        "eps_value": eps_value(r),
                        "robust_accuracy": acc,
                        "derived": True,
                    }
            rows = list(best.values())
        return sorted(rows, key=eps_key)

    @property
    def headline(self) -> dict[str, Any] | None:
        """The worst case at the largest eps evaluated: the number a leaderboard ranks by."""
        rows = [r for r in self.worst_case if as_float(r.get("robust_accuracy")) is not None]
        return rows[-1] if rows else None

    def worst_at(self, eps: float) -> float | None:
        for r in self.worst_case:
            if eps_key(r) == eps_key(eps):
                return as_float(r.get("robust_accuracy"))
        return None

    @property
    def flags(self) -> list[dict[str, Any]]:
        flags = []
        for f in self.summary.get("flags") or []:
            if isinstance(f, dict):
                flags.append(f)
            else:
                flags.append({"id": "", "severity": "warning", "message": str(f)})
        return sorted(
            flags, key=lambda f: SEVERITY_ORDER.get(str(f.get("severity", "")).lower(), 2)
        )

    @property
    def label(self) -> str:
        """A short human name: arch + defense, falling back to the directory name."""
        arch = self.model.get("arch")
        defense = self.model.get("defense")
        if arch and defense:
            return f"{arch} · {defense}"
        return self.name


@dataclass
class TableFile:
    """A table an analysis wrote (CSV inside its folder), as listed in ``analysis.json``."""

    name: str
    description: str
    path: Path
    rows: int | None = None


@dataclass
class AnalysisData:
    """One analysis directory: its JSON record plus the plot and table files it lists."""

    path: Path
    record: dict[str, Any]
    images: list[tuple[str, Path]]  # (caption, existing file inside the directory)
    tables: list[TableFile] = field(default_factory=list)


def load_run(path: str | Path) -> RunData:
    """Read ``summary.json`` (required) and ``config.json`` (optional) from a run directory."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(
            f"run directory not found: {path} (pass folders written by 'evalkit attack --out')"
        )
    summary = _read_json(path / "summary.json", "summary.json")
    if not isinstance(summary, dict):
        raise ReportError(f"{path / 'summary.json'} is not a JSON object (rerun 'evalkit attack')")
    config: dict[str, Any] = {}
    if (path / "config.json").is_file():
        loaded = _read_json(path / "config.json", "config.json")
        config = loaded if isinstance(loaded, dict) else {}
    return RunData(path=path, name=path.resolve().name, summary=summary, config=config)


IMAGE_SUFFIXES = {".png", ".svg", ".jpg", ".jpeg"}


def _collect_files(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(caption, relative path) pairs from the ``files`` entry, whatever its nesting."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, str):
        out.append((prefix or Path(obj).stem, obj))
    elif isinstance(obj, dict) and any(k in obj for k in ("png", "svg", "path", "file")):
        # a figure entry {"name", "png", "svg", "caption"}: one image, PNG preferred; an entry
        # marked "in_report": false stays in the folder only
        if obj.get("in_report") is False:
            return out
        rel = obj.get("png") or obj.get("path") or obj.get("file") or obj.get("svg")
        if isinstance(rel, str):
            out.append(
                (str(obj.get("caption") or obj.get("name") or prefix or Path(rel).stem), rel)
            )
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.extend(_collect_files(value, f"{prefix} · {key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            out.extend(_collect_files(value, prefix))
    return out


def _inside(root: Path, target: Path) -> bool:
    """True when ``target`` (resolved) lies inside the folder ``root`` (resolved)."""
    return root in target.parents


def _table_files(root: Path, files: Any) -> list[TableFile]:
    """The CSV tables listed under ``files.tables`` that exist inside the analysis folder."""
    entries = files.get("tables") if isinstance(files, dict) else None
    out: list[TableFile] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("csv"), str):
            continue
        target = (root / entry["csv"]).resolve()
        if target.suffix.lower() != ".csv" or not target.is_file() or not _inside(root, target):
            continue
        rows = as_float(entry.get("rows"))
        out.append(
            TableFile(
                name=str(entry.get("name") or target.stem),
                description=str(entry.get("description") or ""),
                path=target,
                rows=int(rows) if rows is not None else None,
            )
        )
    return out


def load_analysis(path: str | Path) -> AnalysisData:
    """Read ``analysis.json`` and resolve its plot files, refusing paths that leave the folder."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(
            f"analysis directory not found: {path} (pass folders written by 'evalkit analyze --out')"
        )
    record = _read_json(path / "analysis.json", "analysis.json")
    if not isinstance(record, dict):
        raise ReportError(
            f"{path / 'analysis.json'} is not a JSON object (rerun 'evalkit analyze')"
        )
    root = path.resolve()
    images: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    pairs = _collect_files(record.get("files", {}))
    if not pairs:  # no listing: take the plots lying in the folder
        pairs = [
            (p.stem, p.name) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    for caption, rel in pairs:
        target = (path / rel).resolve()
        if target.suffix.lower() not in IMAGE_SUFFIXES or target in seen or not target.is_file():
            continue
        if not _inside(root, target):  # a relative path must not escape the analysis folder
            continue
        seen.add(target)
        images.append((caption, target))
    # prefer PNG when the same plot is also given as SVG
    pngs = {p.with_suffix("") for _, p in images if p.suffix.lower() == ".png"}
    images = [
        (c, p) for c, p in images if not (p.suffix.lower() == ".svg" and p.with_suffix("") in pngs)
    ]
    return AnalysisData(
        path=path,
        record=record,
        images=images,
        tables=_table_files(root, record.get("files")),
    )
