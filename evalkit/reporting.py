"""``evalkit.report``: evaluation runs (and analyses) -> one self-contained HTML (and PDF) report.

>>> from evalkit import evaluate, report                          # doctest: +SKIP
>>> r = evaluate(model, (x, y), eps=8/255, out="runs/mine")       # doctest: +SKIP
>>> report([r], out="report.html")                                # doctest: +SKIP

A thin front of :func:`reports.builder.build_report` that also takes the result objects of
:func:`evalkit.evaluate` (anything with ``.run_dir``) and :func:`evalkit.analyze` (anything with
``.out``), besides run and analysis folders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError


def _folder(item: Any, attr: str, what: str, needs: str) -> Path:
    """A folder path from a path-like or an object carrying it as ``attr``."""
    if isinstance(item, (str, Path)):
        return Path(item)
    value = getattr(item, attr, None)
    if value is None:
        raise EvalkitError(
            f"report(): {what} {type(item).__name__} has no {attr} "
            f"(pass folders, or results computed with out=... so they were written: {needs})"
        )
    return Path(value)


def _as_list(items: Any) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, (str, Path)) or not isinstance(items, Iterable):
        return [items]
    return list(items)


def report(
    runs: Any,
    *,
    analyses: Any = (),
    out: str | Path = "report.html",
    pdf: str | Path | None = None,
    title: str | None = None,
    findings: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Render evaluation runs into ``out`` (HTML) and, with ``pdf``, a PDF of the same page.

    Args:
        runs: one or several run directories (folders with ``summary.json``) or results of
            :func:`evalkit.evaluate` with a ``run_dir`` (i.e. evaluated with ``out=...``); may
            be empty when ``analyses`` are given.
        analyses: analysis folders (with ``analysis.json``) or results of
            :func:`evalkit.analyze` (their ``out``); their plots and findings are added.
        out: HTML file to write (not a folder).
        pdf: also write this PDF (needs WeasyPrint and the Pango system library).
        title: report title (default: derived from the runs).
        findings: study verdicts (``Finding.to_dict()`` records) shown first.

    Returns:
        The HTML path.

    Raises:
        EvalkitError: a result without a run directory, a missing/invalid folder, ``out`` or
            ``pdf`` naming a folder, or a PDF that cannot be made.
    """
    from reports.builder import build_report

    run_dirs = [_folder(r, "run_dir", "run", "evaluate(..., out=DIR)") for r in _as_list(runs)]
    analysis_dirs = [
        _folder(a, "out", "analysis", "analyze(..., out=DIR)") for a in _as_list(analyses)
    ]
    if not run_dirs and not analysis_dirs:
        raise EvalkitError("report(): nothing to report (give run directories or results)")
    written = build_report(
        run_dirs,
        out,
        analysis_dirs=analysis_dirs,
        pdf=pdf,
        title=title,
        findings=[dict(f) for f in findings],
    )
    return Path(written["html"])


__all__ = ["report"]
