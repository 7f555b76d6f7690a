"""Robustness reports: run directories (and analysis folders) -> one self-contained HTML / PDF.

``build_report(run_dirs, "report.html", analysis_dirs=..., pdf="report.pdf")`` is the API;
``evalkit report`` is the CLI around it.
"""

from reports.builder import build_report, render_html
from reports.runs import AnalysisData, ReportError, RunData, load_analysis, load_run

__all__ = [
    "AnalysisData",
    "ReportError",
    "RunData",
    "build_report",
    "load_analysis",
    "load_run",
    "render_html",
]
