"""``evalkit report``: flags -> :func:`evalkit.reporting.report` (run directories into one HTML
and optionally PDF report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Render one or more evaluation run directories (written by 'evalkit attack --out DIR') into a
single self-contained HTML file: model card and training history per checkpoint, the protocol
actually run, robust accuracy per attack and eps with the worst case, accuracy-vs-eps and
per-class plots, sanity flags, cost and environment. With several runs a leaderboard sorted by
worst-case robust accuracy comes first. --analysis adds the plots and findings of
'evalkit analyze' folders. Figures are embedded; the file fetches nothing and runs no scripts.
--pdf also writes a PDF of the same page (needs WeasyPrint and the Pango system library).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="render run directories into an HTML (and PDF) robustness report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="evaluation run directories (with summary.json)"
    )
    p.add_argument(
        "--analysis",
        action="append",
        default=[],
        metavar="DIR",
        help="an 'evalkit analyze' output folder (with analysis.json); repeatable (default: none)",
    )
    p.add_argument(
        "-o",
        "--out",
        default="report.html",
        metavar="FILE",
        help="HTML file to write (default: report.html)",
    )
    p.add_argument(
        "--pdf",
        default=None,
        metavar="FILE",
        help="also write the report as a PDF, e.g. report.pdf (default: HTML only)",
    )
    p.add_argument("--title", default=None, help="report title (default: derived from the runs)")
    return p


def run(args: argparse.Namespace) -> int:
    from evalkit.reporting import report

    html = report(args.runs, analyses=args.analysis, out=args.out, pdf=args.pdf, title=args.title)
    print(f"HTML report: {Path(html).resolve()}", file=sys.stdout)
    if args.pdf:
        print(f"PDF report: {Path(args.pdf).resolve()}", file=sys.stdout)
    return 0
